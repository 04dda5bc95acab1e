"""The doctor's checks that depend on the Xen under test, not only on the board.

A DTB can be perfect and Xen still print nothing: its console UART needs a
driver *in this Xen*, and so does the GIC.  Heterogeneous cores (hmp_findings, a
board check the doctor runs without images) are refused by Xen unless told
otherwise.  The answers come from the hypervisor binary and
its xen.config (images/xenfeatures.py), so they hold for any build.
"""

from __future__ import annotations

import re

from ..errors import Finding, Severity
from ..images.xenfeatures import GIC_COMPATIBLES, GIC_DRIVERS, UART_DRIVERS, XenFeatures, driver_for
from .dtb import DtbInfo
from .profile import BoardProfile
from .uart import console_uart

E, W, I = Severity.ERROR, Severity.WARN, Severity.INFO
FRAGMENTS_HINT = "a Kconfig fragment in hypervisor/configs/ for `xenlab images build --xen-config`"
_HMP_UNSAFE = re.compile(r"(^|\s)hmp-unsafe(=(1|y|yes|on|true|enable))?(\s|$)")


def xen_findings(profile: BoardProfile, info: DtbInfo, xen: XenFeatures) -> list[Finding]:
    return _uart_driver(profile, info, xen) + _gic(info, xen)


def _missing(what: str, node: str, compatibles: list[str], xen: XenFeatures, table) -> str:
    """Why this Xen lacks the driver, and what would bring it."""
    for compat in compatibles:
        driver = driver_for(compat, table)
        if driver is None:
            continue
        option = f"CONFIG_{driver.kconfig}"
        if xen.enabled(driver.kconfig) is False:
            return (f"this Xen was built without {option} ({driver.name}, for {compat}): turn it "
                    f"on with {FRAGMENTS_HINT}")
        if driver.since and _line(xen.version) < _line(driver.since):
            return (f"{compat} is driven by {driver.name} ({option}) from Xen {driver.since}; "
                    f"this is Xen {xen.version}: test a newer Xen")
        if xen.config is not None and not xen.offered(driver.kconfig):
            return (f"{compat} is driven by {driver.name} ({option}), which this Xen's Kconfig "
                    "does not offer for this architecture")
        return f"{compat} is driven by {driver.name} ({option}), which this Xen lacks"
    return (f"no Xen release xenlab knows has a {what} driver for {', '.join(compatibles) or node}: "
            "xen/drivers/char lists the UARTs Xen drives")


def _line(version: str) -> tuple[int, ...]:
    """'4.17.5' -> (4, 17); unknown parts count as 0."""
    parts = re.findall(r"\d+", version)[:2]
    return tuple(int(p) for p in parts) or (0,)


def _uart_driver(profile: BoardProfile, info: DtbInfo, xen: XenFeatures) -> list[Finding]:
    uart = console_uart(profile, info)
    node = info.resolve(uart.dtuart) if uart.dtuart else None
    if node is None:
        return []  # console_findings already says so
    compatibles = info.compatibles(node)
    if any(xen.matches(c) for c in compatibles):
        return []
    shown = ", ".join(compatibles) or "no compatible"
    return [Finding(E, "uart-no-driver",
                    f"dtuart {uart.dtuart} -> {node} ({shown}): Xen {xen.version} has no driver "
                    "for it, so Xen will print nothing",
                    _missing("UART", node, compatibles, xen, UART_DRIVERS) +
                    " (seed §8.6; earlyprintk needs a driver too)")]


def _gic(info: DtbInfo, xen: XenFeatures) -> list[Finding]:
    gics = [(p, c) for p, c in info.interrupt_controllers() if GIC_COMPATIBLES & set(c)
            or any(x.startswith("arm,gic") for x in c)]
    if not gics:
        return [Finding(W, "gic-missing", "the DTB has no GIC interrupt controller Xen knows",
                        "Xen on Arm needs a GICv2 or GICv3 ("
                        + ", ".join(c for d in GIC_DRIVERS for c in d.compatibles) + ")")]
    path, compatibles = gics[0]
    if any(xen.matches(c) for c in compatibles):
        return []
    return [Finding(E, "gic-unsupported",
                    f"{path} ({', '.join(compatibles)}): Xen {xen.version} has no driver for "
                    "this interrupt controller and panics early",
                    _missing("GIC", path, compatibles, xen, GIC_DRIVERS))]


def hmp_findings(profile: BoardProfile, info: DtbInfo) -> list[Finding]:
    cores = [c.compatible for c in info.cpus() if c.compatible]
    kinds = sorted(set(cores))
    if len(kinds) < 2 or _HMP_UNSAFE.search(profile.xen_cmdline):
        return []
    boot = cores[0]
    others = len([c for c in cores if c != boot])
    return [Finding(W, "cpus-heterogeneous",
                    f"the DTB has CPUs of {len(kinds)} types ({', '.join(kinds)}): Xen brings up "
                    f"only the boot CPU's type ({boot}) and leaves {others} CPUs off",
                    "Xen refuses CPUs unlike the boot CPU unless the command line has hmp-unsafe=true "
                    "(key 'xen.cmdline'); with it, pin each guest's vCPUs to one type (seed §6.3)")]
