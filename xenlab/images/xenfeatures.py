"""What the Xen under test can drive, read from its own binary and its xen.config.

Xen matches device-tree nodes by `compatible` against string tables its
drivers declare (DT_MATCH_COMPATIBLE), and those strings are in the
hypervisor binary as NUL-terminated literals.  So the binary answers "does
this Xen have a driver for that UART / that GIC" for any build, Debian's or
one built here, without its source.  xen.config (when the set has one) says
which Kconfig option would have brought the driver in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import attr

from ..errors import XenlabError
from ..schema import read_data
from .cache import cache_root


@attr.s(frozen=True, auto_attribs=True)
class Driver:
    """A Xen driver found by compatible: its source and the option that builds it."""

    name: str
    kconfig: str  # without CONFIG_
    compatibles: tuple[str, ...]


# The words of the hint only (driver, option, compatibles), read from xen.git's
# xen/drivers/char/*.c (DT_MATCH_COMPATIBLE) and Makefile at TABLE_READ_FROM, with
# fsl,imx8qm-lpuart from RELEASE-4.17.0 (11560248ff), which master renamed. Which Xen
# drives a compatible is never read from here: its binary says (known_xens).
TABLE_READ_FROM = "xen.git master at c447b7308b13 (2026-08-20)"
UART_DRIVERS = (
    Driver("pl011", "HAS_PL011", ("arm,pl011", "arm,sbsa-uart")),
    Driver("ns16550", "HAS_NS16550", ("ns16550", "ns16550a", "snps,dw-apb-uart",
                                      "brcm,bcm2835-aux-uart")),
    Driver("cadence-uart", "HAS_CADENCE_UART", ("cdns,uart-r1p8", "cdns,uart-r1p12")),
    Driver("exynos4210-uart", "HAS_EXYNOS4210", ("samsung,exynos4210-uart",)),
    Driver("omap-uart", "HAS_OMAP", ("ti,omap4-uart", "ti,am654-uart")),
    Driver("scif-uart", "HAS_SCIF", ("renesas,scif", "renesas,scifa", "renesas,hscif")),
    Driver("mvebu-uart", "HAS_MVEBU", ("marvell,armada-3700-uart",)),
    Driver("meson-uart", "HAS_MESON", ("amlogic,meson-uart", "amlogic,meson6-uart",
                                       "amlogic,meson8-uart", "amlogic,meson8b-uart",
                                       "amlogic,meson-gx-uart")),
    Driver("imx-lpuart", "HAS_IMX_LPUART", ("fsl,imx8qxp-lpuart", "fsl,imx8qm-lpuart")),
    Driver("imx-uart", "HAS_IMX_UART", ("fsl,imx6q-uart",)),
    Driver("linflex-uart", "HAS_LINFLEX", ("fsl,s32v234-linflexuart", "nxp,s32g2-linflexuart",
                                           "nxp,s32g3-linflexuart")),
)
# xen/arch/arm/include/asm/gic.h (DT_MATCH_GIC_V2, DT_MATCH_GIC_V3) at TABLE_READ_FROM
GIC_DRIVERS = (
    Driver("gic-v2", "GICV2", ("arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a7-gic",
                               "arm,cortex-a9-gic", "arm,arm11mp-gic", "arm,gic-v2")),
    Driver("gic-v3", "GICV3", ("arm,gic-v3",)),
)
GIC_COMPATIBLES = frozenset(c for d in GIC_DRIVERS for c in d.compatibles)

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$|^# (CONFIG_\w+) is not set$")
_VERSION = re.compile(rb"xen,xen-(\d+\.\d+)\0")  # the hypervisor node Xen makes for Dom0


def driver_for(compatible: str, table=UART_DRIVERS) -> Driver | None:
    return next((d for d in table if compatible in d.compatibles), None)


@attr.s(frozen=True, eq=False)
class XenFeatures:
    """The compatibles one Xen binary matches, its version and its Kconfig."""

    binary: Path = attr.ib()
    version: str = attr.ib()  # as the image set names it, e.g. 4.17.5
    config: dict | None = attr.ib()  # xen.config, None when the set has none
    _data: bytes = attr.ib(repr=False)

    @classmethod
    def load(cls, binary: Path, version: str = "", config: Path | None = None) -> "XenFeatures":
        data = Path(binary).read_bytes()
        if not version:
            m = _VERSION.search(data)
            version = m.group(1).decode() if m else "?"
        cfg = _read_config(Path(config)) if config is not None and Path(config).is_file() else None
        return cls(Path(binary), version, cfg, data)

    def matches(self, compatible: str) -> bool:
        """Whether this Xen has a driver table entry for `compatible`."""
        # Tail-merged string tables may keep it inside a longer literal: find its end.
        return bool(compatible) and compatible.encode() + b"\0" in self._data

    def enabled(self, symbol: str) -> bool | None:
        """CONFIG_`symbol` in xen.config: True, False ("is not set"), None (not offered, or no config)."""
        value = (self.config or {}).get(f"CONFIG_{symbol}")
        return None if value is None else value in ("y", "m")

    def offered(self, symbol: str) -> bool:
        """Whether this Xen's Kconfig has the option at all (set or not)."""
        return f"CONFIG_{symbol}" in (self.config or {})


def known_xens(arch: str) -> list[XenFeatures]:
    """Every distinct Xen binary of `arch` in the cache's image sets (the bundled sets,
    trixie's, every tree built here), by version: what the hint reads which Xen drives
    which UART from."""
    found: dict[str, XenFeatures] = {}
    for manifest in sorted((cache_root() / "sets").glob(f"{arch}-*/manifest.json")):
        try:
            info = json.loads(read_data(manifest, "image set manifest"))
            xen = next(a for a in info["artifacts"] if a["name"] == "xen")
            if xen["sha256"] not in found:
                found[xen["sha256"]] = XenFeatures.load(manifest.parent / "xen",
                                                        str(info["xen_version"]))
        except (XenlabError, OSError, ValueError, RecursionError, KeyError, TypeError,
                StopIteration):
            continue  # a set being built, or broken: the images check says so, not the hint
    return sorted(found.values(), key=lambda x: version_key(x.version))


def version_key(version: str) -> tuple[int, ...]:
    """'4.20.5-pre' -> (4, 20, 5): unknown parts count as 0."""
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3]) or (0,)


def xen_under_test(images) -> XenFeatures:
    """What an image set's Xen drives, from its binary and xen.config (for the doctor)."""
    config = images.dir / "xen.config" if "xen.config" in images.artifacts else None
    return XenFeatures.load(images.path("xen"), images.xen_version, config)


def _read_config(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        if (m := _SET.match(line)):
            out[m.group(1) or m.group(3)] = m.group(2) if m.group(1) else "n"
    return out
