"""Which boot image format a file has, read from its header (Linux boot protocol).

U-Boot's `booti` takes an arm64 Image (Documentation/arm64/booting.rst) and
`bootz` an arm32 zImage (Documentation/arm/booting.rst); Xen follows both
protocols (seed §8.2).  The headers also say how much memory the image needs
once it runs (its bss lies past the end of the file), which the boot plan
must keep free.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from pathlib import Path

import attr

ARM64_IMAGE_MAGIC = b"ARM\x64"  # at offset 0x38 of an arm64 Image (booti)
ZIMAGE_MAGIC = 0x016F2818  # at offset 0x24 of an arm32 zImage (bootz), little-endian

# The image format each U-Boot boot command accepts.
BOOT_COMMAND_FORMAT = {"booti": "arm64-image", "bootz": "zimage"}


@attr.s(frozen=True, auto_attribs=True)
class ImageInfo:
    format: str  # 'arm64-image', 'zimage', 'gzip' or 'unknown'
    file_size: int
    # Bytes the image occupies once running, bss included (>= file_size);
    # file_size when the header does not say.
    effective_size: int
    # arm64 Image flags bit 3: the 2 MiB-aligned base may be anywhere in RAM.
    # Without it U-Boot's booti moves the image to the start of RAM.
    anywhere: bool | None = None


def _head(path: Path, n: int = 0x40) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _format_of(head: bytes) -> str:
    if len(head) >= 0x3C and head[0x38:0x3C] == ARM64_IMAGE_MAGIC:
        return "arm64-image"
    if len(head) >= 0x28 and struct.unpack_from("<I", head, 0x24)[0] == ZIMAGE_MAGIC:
        return "zimage"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    return "unknown"


def image_format(path: Path) -> str:
    """'arm64-image', 'zimage', 'gzip' or 'unknown'."""
    return _format_of(_head(path))


def image_info(path: Path) -> ImageInfo:
    """Format and memory footprint from the header; 'unknown' for unreadable files."""
    head = _head(path)
    fmt = _format_of(head)
    try:
        size = os.path.getsize(path)
    except OSError:
        return ImageInfo("unknown", 0, 0)
    if fmt == "arm64-image":
        # text_offset (u64 @8), image_size (u64 @16, 0 on kernels before 3.17), flags (u64 @24)
        _text_offset, image_size, flags = struct.unpack_from("<QQQ", head, 8)
        return ImageInfo(fmt, size, max(size, image_size), bool(flags & (1 << 3)))
    if fmt == "zimage":
        # start and end (u32 @0x28, @0x2c): Xen's arm32 header puts _end - start here
        start, end = struct.unpack_from("<II", head, 0x28)
        return ImageInfo(fmt, size, max(size, end - start if end > start else 0))
    return ImageInfo(fmt, size, size)


_XEN_MINOR = re.compile(rb"xen,xen-(\d+)\.(\d+)\0")
# Xen's version.c keeps the compiler string, then XEN_EXTRAVERSION (".5", "-rc", ".0-rc2").
_EXTRA = re.compile(rb"(?:gcc|clang)[\x20-\x7e]*\d\0+(\.[0-9][\x21-\x7e]*|-[\x21-\x7e]+)\0")


def xen_version(path: Path) -> str | None:
    """The version of a Xen hypervisor image ("4.17.5"), read from the binary itself.

    The major and minor numbers are in the "xen,xen-X.Y" compatible Xen gives
    its device-tree node; the rest is XEN_EXTRAVERSION beside the compiler
    string.  None for a file that is no Xen.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    m = _XEN_MINOR.search(data)
    if m is None:
        return None
    extra = _EXTRA.search(data)
    return f"{int(m.group(1))}.{int(m.group(2))}" + (extra.group(1).decode() if extra else "")


def xen_line(version: str) -> str:
    """'4.20.5-pre' -> '4.20': Xen's domctl/sysctl interfaces are stable within a line only."""
    return ".".join(re.split(r"[.-]", version)[:2])


def xen_version_of(debian_version: str) -> str:
    """'4.17.5+72-g01140da4e8-1' -> '4.17.5' (what Xen prints in its banner)."""
    return re.match(r"^(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", debian_version).group(1)
