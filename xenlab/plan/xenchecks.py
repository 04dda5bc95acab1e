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
from ..images.xenfeatures import (GIC_COMPATIBLES, GIC_DRIVERS, TABLE_READ_FROM, UART_DRIVERS,
                                  XenFeatures, driver_for, known_xens, version_key)
from .dtb import DtbInfo
from .profile import BoardProfile
from .uart import console_uart

E, W, I = Severity.ERROR, Severity.WARN, Severity.INFO
FRAGMENTS_HINT = "a Kconfig fragment in hypervisor/configs/ for `xenlab images build --xen-config`"
_HMP_UNSAFE = re.compile(r"(^|\s)hmp-unsafe(=(1|y|yes|on|true|enable))?(\s|$)")


def xen_findings(profile: BoardProfile, info: DtbInfo, xen: XenFeatures) -> list[Finding]:
    return _uart_driver(profile, info, xen) + _gic(info, xen, profile.arch)


def _missing(what: str, node: str, compatibles: list[str], xen: XenFeatures, table,
             arch: str) -> str:
    """Why this Xen lacks the driver, and what would bring it: which Xen binaries xenlab
    has drive it (images/xenfeatures.known_xens), else where the driver's name was read."""
    for compat in compatibles:
        driver = driver_for(compat, table)
        if driver is None:
            continue
        option = f"CONFIG_{driver.kconfig}"
        if xen.enabled(driver.kconfig) is False:
            return (f"this Xen was built without {option} ({driver.name}, for {compat}): turn it "
                    f"on with {FRAGMENTS_HINT}")
        drivers_it = sorted({x.version for x in known_xens(arch) if x.matches(compat)},
                            key=version_key)
        if drivers_it:
            return (f"{compat} is driven by {driver.name} ({option}) in Xen "
                    f"{', '.join(drivers_it)}, whose binary xenlab has; this is Xen "
                    f"{xen.version}: test that Xen")
        # Not offered: a driver newer than this Xen, or one for another architecture.
        offered = "" if xen.config is None or xen.offered(driver.kconfig) else \
            f"; this Xen's Kconfig has no {option}"
        return (f"{compat} is driven by {driver.name} ({option}) in {TABLE_READ_FROM}, and by "
                f"no Xen binary xenlab has{offered}: build a Xen that has it (xenlab images "
                "build --xen-source)")
    return (f"no Xen xenlab knows has a {what} driver for {', '.join(compatibles) or node}: "
            "xen/drivers/char lists the UARTs Xen drives")


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
                    _missing("UART", node, compatibles, xen, UART_DRIVERS, profile.arch) +
                    " (seed §8.6; earlyprintk needs a driver too)")]


def _gic(info: DtbInfo, xen: XenFeatures, arch: str) -> list[Finding]:
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
                    _missing("GIC", path, compatibles, xen, GIC_DRIVERS, arch))]


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
