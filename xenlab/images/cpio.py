"""Reproducible root file systems: a tree described in memory, written as gzip'd cpio.

Same tree, same bytes: entries are sorted, owners are root, mtimes are zero,
inode numbers are assigned in order and gzip carries no timestamp, so the
image-set hash in a run record names exactly what booted.
"""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path, PurePosixPath

import attr


@attr.s(frozen=True, auto_attribs=True)
class TreeEntry:
    mode: int  # full st_mode, type bits included
    data: bytes = b""  # file content, or symlink target
    rdev: tuple[int, int] = (0, 0)


class RootfsTree:
    """The files of a root file system, keyed by absolute POSIX path."""

    def __init__(self) -> None:
        self.entries: dict[str, TreeEntry] = {}

    @staticmethod
    def _norm(path: str) -> str:
        p = str(PurePosixPath("/") / path)
        if ".." in PurePosixPath(p).parts:
            raise ValueError(f"path escapes the root: {path}")
        return p

    def _parents(self, path: str) -> None:
        for parent in reversed(PurePosixPath(path).parents):
            if str(parent) != "/" and str(parent) not in self.entries:
                self.entries[str(parent)] = TreeEntry(stat.S_IFDIR | 0o755)

    def dir(self, path: str, mode: int = 0o755) -> None:
        path = self._norm(path)
        self._parents(path)
        self.entries[path] = TreeEntry(stat.S_IFDIR | mode)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = self._norm(path)
        self._parents(path)
        self.entries[path] = TreeEntry(stat.S_IFREG | mode, data)

    def copy(self, path: str, src: Path, mode: int | None = None) -> None:
        if mode is None:
            mode = 0o755 if os.access(src, os.X_OK) else 0o644
        self.file(path, Path(src).read_bytes(), mode)

    def symlink(self, path: str, target: str) -> None:
        path = self._norm(path)
        self._parents(path)
        self.entries[path] = TreeEntry(stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        path = self._norm(path)
        self._parents(path)
        self.entries[path] = TreeEntry(stat.S_IFCHR | mode, rdev=(major, minor))

    def __contains__(self, path: str) -> bool:
        return self._norm(path) in self.entries

    def cpio(self) -> bytes:
        """The tree as a newc cpio archive (the format the kernel unpacks)."""
        out = bytearray()
        for ino, (path, entry) in enumerate(sorted(self.entries.items()), start=1):
            _newc(out, path.lstrip("/"), entry, ino)
        _newc(out, "TRAILER!!!", TreeEntry(0), 0)
        return bytes(out)

    def write_cpio_gz(self, dest: Path) -> None:
        with open(dest, "wb") as raw:
            # mtime=0 and no file name in the header: byte-identical output.
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0, filename="") as gz:
                gz.write(self.cpio())


def _newc(out: bytearray, name: str, entry: TreeEntry, ino: int) -> None:
    name_b = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = [ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(name_b), 0]
    out += b"070701" + b"".join(b"%08X" % f for f in fields)
    out += name_b
    out += b"\0" * (-len(out) % 4)
    out += entry.data
    out += b"\0" * (-len(out) % 4)


def read_cpio_gz(path: Path) -> dict[str, TreeEntry]:
    """Parse a gzip'd newc archive back (for checks and tests)."""
    data = gzip.decompress(Path(path).read_bytes())
    entries: dict[str, TreeEntry] = {}
    pos = 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise ValueError(f"{path}: not a newc cpio archive at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries["/" + name] = TreeEntry(fields[1], body, (fields[9], fields[10]))
