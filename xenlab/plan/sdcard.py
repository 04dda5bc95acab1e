"""A board's SD card written as one image file, from its profile and a boot plan.

What goes on it is the profile's `sdcard:` data: the board's own U-Boot
written raw where its boot ROM looks (Allwinner: 8 KiB in), and a FAT boot
partition from 1 MiB holding the plan's files and boot.scr when U-Boot loads
from the card (`fatload mmc 0:1`), plus the files the board's ROM firmware
reads by name (the Pi's `u-boot.bin` and DTB).  No root and no loop device:
sfdisk writes the partition table into the file, mtools the FAT.

The card is built aside and renamed into place, so an emulator started on it
never reads half a card.  Beside it, `boot/` holds a copy of the ROM
firmware's files: QEMU stands in for that firmware (raspi4b's `-kernel
u-boot.bin -dtb ...`) and reads them from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import attr

from ..errors import XenlabError
from ..images.cache import atomic_copy
from .bootplan import BootPlan
from .firmware import debian_file, source_dtb
from .profile import BoardProfile
from .stage import stage

PARTITION_START = 1 << 20  # the boot partition's first byte: sector 2048, as SD cards ship
TOOLS = {"sfdisk": "fdisk", "mformat": "mtools", "mcopy": "mtools"}


@attr.s(frozen=True, auto_attribs=True)
class CardImage:
    path: Path  # the card image
    boot_dir: Path  # the ROM firmware's files, for an emulator that stands in for it
    files: tuple[str, ...]  # what the boot partition holds
    bootloader: Path | None  # what was written raw at the bootloader offset


def write_card(profile: BoardProfile, plan: BootPlan | None, image: os.PathLike) -> CardImage:
    """Write `image` (and `<image dir>/boot/`) as the profile's card with the plan's files."""
    card = profile.sdcard
    if card is None:
        raise XenlabError(f"board {profile.name} has no sdcard section: nothing says how its "
                          "card is laid out", where=profile.where)
    size = card.size_mb << 20
    if card.size_mb & (card.size_mb - 1):
        raise XenlabError(f"key 'sdcard.size_mb': {card.size_mb} is not a power of two (QEMU's "
                          "SD card model takes no other size)", where=profile.where)
    image = Path(image)
    image.parent.mkdir(parents=True, exist_ok=True)
    boot_dir = image.parent / "boot"
    boot_dir.mkdir(exist_ok=True)
    uboot = (debian_file(profile.firmware.uboot, profile.where, "firmware.uboot.debian")
             if profile.firmware and profile.firmware.uboot else None)
    sources = {"uboot": uboot}

    tmp = image.with_name(f".{image.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.truncate(size)
        on_partition: list[str] = []
        if card.boot_partition:
            _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(tmp)],
                 f"start={PARTITION_START // 512}, type=c\n", profile)
            _run(["mformat", "-i", f"{tmp}@@{PARTITION_START}", "-F", "-v", "BOOT", "::"], None, profile)
            with tempfile.TemporaryDirectory(prefix="xenlab-card-") as staged:
                names = []
                if plan is not None and profile.loads_from_card:
                    names = [f.name for f in stage(plan, staged)]
                for name, what in card.firmware_files:
                    src = sources[what] if what == "uboot" else source_dtb(profile)
                    shutil.copyfile(src, Path(staged) / name)
                    atomic_copy(src, boot_dir / name, durable=False)
                    names.append(name)
                if names:
                    _run(["mcopy", "-i", f"{tmp}@@{PARTITION_START}", "-o",
                          *[str(Path(staged) / n) for n in names], "::"], None, profile)
                on_partition = names
        if card.bootloader_offset is not None:
            blob = uboot.read_bytes()
            end = card.bootloader_offset + len(blob)
            if card.boot_partition and end > PARTITION_START:
                raise XenlabError(f"firmware.uboot ({len(blob)} bytes at "
                                  f"{card.bootloader_offset:#x}) runs into the boot partition at "
                                  "1 MiB", where=profile.where)
            with open(tmp, "r+b") as f:
                f.seek(card.bootloader_offset)
                f.write(blob)
        os.replace(tmp, image)
    except OSError as exc:
        raise XenlabError(f"cannot write the SD card image {image}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return CardImage(image, boot_dir, tuple(on_partition),
                     uboot if card.bootloader_offset is not None else None)


def _run(cmd: list[str], stdin: str | None, profile: BoardProfile) -> None:
    if shutil.which(cmd[0]) is None:
        raise XenlabError(f"{cmd[0]} not found (Debian package {TOOLS[cmd[0]]}); "
                          f"it writes the SD card of board {profile.name}")
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip() or "no message").splitlines()[-1]
        raise XenlabError(f"{cmd[0]} failed writing the SD card of board {profile.name}: {msg}")
