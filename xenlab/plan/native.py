"""The native boot: the Dom0 kernel, its initramfs and the host DTB, without Xen (seed §7).

The seed's advice before any Xen: boot the kernel natively on the board, so
that driver and command-line problems are solved before Xen is involved.
xenlab does it when Dom0 fails under Xen, to say whose failure it is: a kernel
that boots natively failed because of Xen; one that fails natively too is the
kernel's or the board's.

The plan is data, as the Xen plan is: the same files (Dom0's kernel and
initramfs, the profile's DTB) laid out once, and rendered as U-Boot commands.
The command line is Dom0's without its Xen console (`console=hvc0`,
`earlycon=xen`): with no `console=`, Linux takes the UART `/chosen/stdout-path`
names, and a bare `earlycon` its early console too.  Files are placed 64 MiB
into RAM: an arm32 zImage decompresses itself to the start of RAM, and an
arm64 Image that cannot stay where it is moves there.
"""

from __future__ import annotations

import os
from pathlib import Path

import attr

from ..errors import XenlabError
from ..images.cache import sha256_file
from ..images.imageformat import image_info
from .loadnames import _check_file, load_path
from .bootplan import (FDT_BOOT_PAD, FDT_PAGE, FDT_RESIZE_RSV, Placement,
                       _fdt_content_size, write_boot_script)
from .chosen import command_line
from .dtb import DtbInfo
from .layout import SCRIPT_SLOT, MiB, align, human, layout, place_script
from .profile import BoardProfile, Region, check_cmdline

NATIVE_START = 64 * MiB  # past what a kernel decompresses or moves to at the start of RAM
XEN_CONSOLE = ("console=hvc", "earlycon=xen", "earlyprintk=xen")


def native_cmdline(dom0_cmdline: str) -> str:
    """Dom0's command line for the bare board: its Xen console dropped, stdout-path's taken."""
    words = [w for w in dom0_cmdline.split() if not w.startswith(XEN_CONSOLE)]
    return " ".join(words + ["earlycon"])


@attr.s(frozen=True, auto_attribs=True)
class NativePlan:
    profile: BoardProfile
    placements: tuple[Placement, ...]  # dom0-kernel, dom0-ramdisk, dtb
    script_addr: int
    bootargs: str
    has_chosen: bool = True
    load_dir: str = ""  # as BootPlan's

    @classmethod
    def build(cls, profile: BoardProfile, kernel: os.PathLike, ramdisk: os.PathLike,
              dtb: os.PathLike) -> "NativePlan":
        wanted = [("dom0-kernel", Path(kernel)), ("dom0-ramdisk", Path(ramdisk)), ("dtb", Path(dtb))]
        names = {"dom0-kernel": Path(kernel).name, "dom0-ramdisk": Path(ramdisk).name,
                 "dtb": f"{profile.name}.dtb"}
        for role, path in wanted:
            _check_file(role, path, names[role])
        bootargs = native_cmdline(profile.dom0.cmdline)
        why = check_cmdline(bootargs)
        if why:
            raise XenlabError(f"native command line {bootargs!r} {why}", where=profile.where)
        info = DtbInfo.load(Path(dtb))
        mem = profile.memory
        busy = list(mem.reserved) + [Region(a, b, f"{why} in the DTB")
                                     for a, b, why in info.reserved_regions()
                                     if a < mem.end and mem.start < b]
        script_addr = place_script(profile, busy, None)
        busy.append(Region(script_addr, script_addr + SCRIPT_SLOT, "boot script slot"))
        spans = {"dom0-kernel": image_info(Path(kernel)).effective_size,
                 "dom0-ramdisk": Path(ramdisk).stat().st_size,
                 # /chosen/bootargs, and what booti/bootz add (initrd, memory) in place
                 "dtb": align(_fdt_content_size(Path(dtb)) + FDT_RESIZE_RSV + len(bootargs)
                              + 0x400, FDT_PAGE) + FDT_BOOT_PAD}
        placed = layout(profile, wanted, spans, busy, {}, mem.start + NATIVE_START)
        placements = tuple(Placement(role, names[role], path, placed[role], path.stat().st_size,
                                     sha256_file(path), spans[role]) for role, path in wanted)
        return cls(profile, placements, script_addr, bootargs, info.node("/chosen") is not None)

    def placement(self, role: str) -> Placement:
        return next(p for p in self.placements if p.role == role)

    def files(self) -> dict[str, Path]:
        """Load name -> file, what the TFTP directory (or boot partition) must hold."""
        return {p.filename: p.path for p in self.placements}

    def uboot_prelude(self) -> list[str]:
        return list(self.profile.uboot.init_commands)

    def uboot_commands(self) -> list[str]:
        """Load the three files, write /chosen/bootargs, boot the kernel with its initramfs."""
        load = self.profile.load_command
        kernel, ramdisk, dtb = (self.placement(r) for r in ("dom0-kernel", "dom0-ramdisk", "dtb"))
        cmds = [f"{load} {p.addr:#x} {load_path(self.load_dir, p.filename)}" for p in self.placements]
        cmds += [f"fdt addr {dtb.addr:#x}", f"fdt resize {FDT_PAGE:#x}"]
        if not self.has_chosen:
            cmds.append("fdt mknode / chosen")
        cmds.append(f'fdt set /chosen bootargs "{command_line(self.bootargs)}"')
        high = "0xffffffffffffffff" if self.profile.arch == "arm64" else "0xffffffff"
        # Everything stays where the plan put it (booti/bootz would copy DTB and initrd high).
        cmds += [f"setenv fdt_high {high}", f"setenv initrd_high {high}"]
        # An arm64 Image boots with booti, an arm32 zImage with bootz: the profile's command.
        cmds.append(f"{self.profile.boot_command} {kernel.addr:#x} {ramdisk.addr:#x}:{ramdisk.size:#x} "
                    f"{dtb.addr:#x}")
        return cmds

    def script_commands(self, script_name: str = "boot.scr") -> list[str]:
        return [f"{self.profile.load_command} {self.script_addr:#x} {script_name}",
                f"source {self.script_addr:#x}"]

    def boot_script(self, path: os.PathLike) -> Path:
        return write_boot_script(self.profile, self.uboot_commands(), path)

    def table(self) -> str:
        rows = [("role", "file", "start", "end", "size")]
        rows += [(p.role, p.filename, f"{p.addr:#x}", f"{p.end:#x}", human(p.size))
                 for p in self.placements]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
