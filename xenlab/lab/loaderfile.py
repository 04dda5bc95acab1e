"""The files an emulated board's loader places, handed over as a file.

A board whose firmware QEMU cannot run (the ZCU102: its U-Boot needs Xilinx's PMU
firmware) is loaded by QEMU itself (BootPlan.qemu_loader_args): Xen as `-kernel`
with the plan's DTB, the other files by `-device loader` at the plan's addresses.
XenQEMUDriver takes those arguments directly. A board wired as in a lab is powered
by the lab's own script (ExternalPowerDriver), which cannot be handed arguments per
run: `QEMULoaderFileDriver` writes them, one per line, to the file its resource
names, and the power script (scripts/bench-qemu --loader-file) gives them to QEMU.
On hardware the same place is a JTAG loader's (xsdb's `dow -data FILE ADDR`).
"""

from __future__ import annotations

import re
from pathlib import Path

import attr
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.step import step

from ..errors import XenlabError
from ..images.cache import atomic_write
from .sdcard import HostFile

# What the power script accepts, as BootPlan.qemu_loader_args makes it: an option,
# then its value; a path is absolute, without a comma (QEMU splits at commas).
_PATH = r"/[^,\n]+"
LOADER_ARG_RES = {
    "-kernel": re.compile(_PATH),
    "-dtb": re.compile(_PATH),
    "-device": re.compile(rf"loader,file={_PATH},addr=0x[0-9a-f]+,force-raw=on"),
}


def check_loader_args(args: list[str], where: str) -> None:
    """Refuse what QEMU's loader list must not hold: an option xenlab does not write,
    a value that would also be an option, a relative path."""
    if len(args) % 2:
        raise XenlabError(f"{where}: an option without its value: {args[-1]!r}")
    for option, value in zip(args[::2], args[1::2]):
        value_re = LOADER_ARG_RES.get(option)
        if value_re is None:
            raise XenlabError(f"{where}: {option!r} is not a loader option "
                              f"(only {', '.join(LOADER_ARG_RES)})")
        if not value_re.fullmatch(value):
            raise XenlabError(f"{where}: {option} {value!r} is not what xenlab writes")


@target_factory.reg_resource
@attr.s(eq=False)
class QEMULoaderFile(HostFile):
    """The file the lab's power script reads QEMU's loader arguments from.

    Args:
        path (str): the file (the power script's `--loader-file`)
    """


@target_factory.reg_driver
@attr.s(eq=False)
class QEMULoaderFileDriver(Driver):
    """Writes the plan's loader arguments where the power script reads them at power-on."""

    bindings = {"file": "QEMULoaderFile"}

    @step(args=["args"])
    def write(self, args: list[str]) -> Path:
        check_loader_args(args, f"target {self.target.name}")
        path = Path(self.file.path)
        atomic_write(path, "".join(f"{a}\n" for a in args))
        return path
