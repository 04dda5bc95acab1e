"""What the cache serves is what was built: a set's artifacts checked against its
manifest.json before they are served, and the files a tester puts into a set checked
before they go in.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import XenlabError
from .cache import atomic_write, sha256_file
from .imageformat import image_format
from .manifest import Manifest

# Artifact name -> override option name (`--xen PATH`, `--dom0-kernel PATH` ...).
OVERRIDABLE = ("xen", "dom0-kernel", "domU-kernel", "dom0-rootfs.cpio.gz",
               "domU-rootfs.cpio.gz", "domU-disk.img")
KERNEL_ARTIFACTS = ("xen", "dom0-kernel", "domU-kernel")
# Beside manifest.json: each artifact's size, mtime and inode when its sha256 last matched,
# so a warm run hashes nothing it has checked before (a rewrite changes the mtime).
VERIFIED = ".verified.json"


class CorruptSet(XenlabError):
    """An artifact no longer matches the set's manifest.json: the cache must not serve it."""


def verify_artifacts(directory: Path, artifacts) -> dict[str, str]:
    """Every artifact checked against manifest.json, by size and sha256 (hashing only
    what changed since its last check): {name: sha256}, or CorruptSet naming the first
    that differs."""
    artifacts = list(artifacts)
    stamps = _read_stamps(directory / VERIFIED)
    fresh = {}
    for a in artifacts:
        try:
            st = (directory / a.name).stat()
        except OSError as exc:
            raise CorruptSet(f"{a.name}: {exc.strerror}, but the set's manifest lists it",
                             where=str(directory)) from None
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino, a.sha256]
        if stamps.get(a.name) != stamp:
            if st.st_size != a.size:
                raise CorruptSet(f"{a.name}: {st.st_size} bytes, the set's manifest says "
                                 f"{a.size}", where=str(directory))
            actual = sha256_file(directory / a.name)
            if actual != a.sha256:
                raise CorruptSet(f"{a.name}: sha256 {actual[:16]}… does not match the "
                                 f"set's manifest ({a.sha256[:16]}…)", where=str(directory))
        fresh[a.name] = stamp
    if fresh != stamps:
        try:
            atomic_write(directory / VERIFIED, json.dumps(fresh), durable=False)
        except OSError:
            pass  # a read-only cache: check again next time
    return {a.name: a.sha256 for a in artifacts}


def _read_stamps(path: Path) -> dict:
    try:
        if not path.is_file() or path.stat().st_size > 1 << 16:
            return {}
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def discard_set(directory: Path) -> None:
    """Take a broken set out of the cache: renamed first, so no reader sees half of it."""
    aside = directory.with_name(f".tmp-discard-{directory.name}-{os.getpid()}")
    try:
        os.rename(directory, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def check_overrides(m: Manifest, overrides: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    checked = {}
    for name, path in overrides.items():
        if name not in OVERRIDABLE:
            raise XenlabError(f"cannot override '{name}' (choose from {', '.join(OVERRIDABLE)})",
                              where=f"--{name}")
        path = Path(path)
        if not path.is_file():
            raise XenlabError(f"no such file: {path}", where=f"--{name}")
        if name in KERNEL_ARTIFACTS and image_format(path) != m.image_format:
            raise XenlabError(f"{path} is not a {m.arch} kernel image "
                              f"(expected {m.image_format}, found {image_format(path)})",
                              where=f"--{name}")
        if name.endswith(".cpio.gz") and Path(path).read_bytes()[:2] != b"\x1f\x8b":
            raise XenlabError(f"{path} is not a gzip'd cpio archive", where=f"--{name}")
        checked[name] = (path, sha256_file(path))
    return checked
