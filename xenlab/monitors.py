"""What must never appear on a board's console: one table for the live strategy
and for explaining a recorded log (LAVA's monitors, Xen's panic path).

Harmless under QEMU and deliberately absent: "CPU0 has no enable method",
"Guests without CPU erratum workarounds can deadlock", "vGICD: unhandled word
write", "Unhandled SMC/HVC" (shared/notes/qemu-xen.md).
"""

from __future__ import annotations

import re

import attr

UBOOT_BANNER = re.compile(r"^U-Boot (20\d\d\.\d\d\S*)")  # not "U-Boot SPL 20..": that precedes it


@attr.s(frozen=True, auto_attribs=True)
class Monitor:
    """A console line that proves a failure."""

    regex: re.Pattern = attr.ib(converter=re.compile)
    status: str  # "FAIL": the software under test; "ERROR": the lab
    classification: str  # "{guest}" becomes dom0 or domu, by stage
    after_boot: bool = False  # counts only once the boot has started

    @property
    def live_pattern(self) -> str:
        """The regex for a console stream, where lines start after a newline."""
        return "(?m)" + self.regex.pattern


MONITORS: tuple[Monitor, ...] = (
    Monitor(r"Panic on CPU \d+", "FAIL", "xen-panic"),
    Monitor(r"Xen BUG at ", "FAIL", "xen-bug"),
    Monitor(r"Assertion '.+' failed", "FAIL", "xen-bug"),
    Monitor(r"Kernel panic - not syncing", "FAIL", "{guest}-panic"),
    # The bootloader's banner again after the boot started: the board reset.
    Monitor(UBOOT_BANNER.pattern, "FAIL", "uboot-reset-loop", after_boot=True),
    Monitor(r"TFTP error: 'File not found'", "ERROR", "tftp-file-missing"),
    Monitor(r"TFTP error: trying to overwrite reserved memory", "ERROR", "tftp-load-error"),
    Monitor(r"Bad Linux ARM(64 Image| zImage) magic", "FAIL", "boot-image-format"),
    # Printed only by debug builds' early printk (seed §6.3): firmware left the CPU in EL1 or secure.
    Monitor(r"- Xen must be entered in NS EL2 mode -", "FAIL", "xen-not-hyp-mode"),
)
