"""The toolstack half of a Xen build, cached apart from the hypervisor's.

`xl`, the libraries and the helpers do not depend on the hypervisor's Kconfig
nor on the hypervisor-only sources (xen/arch/arm, xen/common, most of
xen/drivers ...), so the builds of one tree with other fragments, and the
commits of a bisection that touch only the hypervisor, share one toolstack:
`make dist-tools` (about 50 s of a 75 s build here) runs once per toolstack.
The key is every other file's content (public headers, xen/Makefile's version
and the x86 code tools/tests reads included), the patches, the toolchain and
the configure line.  An entry is `dist/install` without what a Dom0 doesn't
need, entered by rename like every cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .cache import build_aside, cache_root

# Sources only the hypervisor compiles: a change there leaves the toolstack as it is.
HYPERVISOR_ONLY = ("xen/arch/arm/", "xen/arch/riscv/", "xen/arch/ppc/", "xen/common/", "xen/drivers/",
                   "xen/crypto/", "xen/test/", "xen/tools/", "xen/scripts/")
TOOLS_READ = ("xen/drivers/vpci/",)  # ...but tools/tests builds vpci.c
# What a Dom0 needs of dist/install; headers, static libraries and docs stay behind.
SKIP_INSTALLED = ("usr/include", "usr/share", "boot", "usr/lib/debug")


def builds_tools(name: str) -> bool:
    """Whether the source file `name` (tree-relative) can change the toolstack."""
    return not name.startswith(HYPERVISOR_ONLY) or name.startswith(TOOLS_READ)


def tools_key(index: dict, material: dict) -> str:
    """The toolstack's key: the digests of the files it can depend on, and `material`
    (arch, toolchain versions, configure line, the patches applied)."""
    h = hashlib.sha256(json.dumps(material, sort_keys=True).encode())
    for name in sorted(index):
        if builds_tools(name):
            h.update(f"{name}\0{index[name][2]}\n".encode())
    return h.hexdigest()[:32]


def cached_tools(arch: str, key: str) -> Path | None:
    path = cache_root() / "xen-tools" / f"{arch}-{key}"
    return path if path.is_dir() else None


def store_tools(tree: Path, arch: str, key: str) -> Path:
    """The work tree's dist/install (after `make dist-tools`) into the cache."""
    final = cache_root() / "xen-tools" / f"{arch}-{key}"
    if not final.is_dir():
        installed = tree / "dist" / "install"
        with build_aside(final) as out:
            shutil.copytree(installed, out, symlinks=True, dirs_exist_ok=True,
                            ignore=lambda d, names: [n for n in names if os.path.relpath(
                                os.path.join(d, n), installed) in SKIP_INSTALLED or n.endswith(".a")])
    return final


def link_tools(tools: Path, out: Path) -> None:
    """A cached toolstack into a build's tools/: hard links, the cache's own filesystem."""
    shutil.copytree(tools, out, symlinks=True, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links refused
        shutil.copy2(src, dst)
