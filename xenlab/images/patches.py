"""hypervisor/patches: the patches a Xen build can take, and applying one to a work tree."""

from __future__ import annotations

import shutil
from pathlib import Path

from .manifest import HYPERVISOR_DIR

PATCHES_DIR = HYPERVISOR_DIR / "patches"
# --apply-fix NAME (or a variant's xen_patches) -> hypervisor/patches/FILE
FIXES = {"psr-mode": "psr-mode.patch", "dom0less-console": "dom0less-console.patch",
         "gzip-unaligned": "gzip-unaligned.patch"}


def apply_fix(fix: str, source_tree: Path, tree: Path, attempt) -> None:
    """Apply hypervisor/patches/<fix> to the work tree, from the source's own files: the
    tree may hold the patch from its last build, and a patch whose context survives its
    own change would apply twice."""
    patch = PATCHES_DIR / FIXES[fix]
    for rel in patched_files(patch):
        if (source_tree / rel).is_file():
            shutil.copyfile(source_tree / rel, tree / rel)
    attempt.run(["patch", "-p1", "-N", "-r", "-", "-i", str(patch)], tree, f"apply fix {fix}")


def patched_files(patch: Path) -> list[str]:
    """The tree-relative files a -p1 patch changes (its "+++ b/..." lines)."""
    out = []
    for line in patch.read_text().splitlines():
        if line.startswith("+++ "):
            name = line[4:].split("\t")[0].strip()
            rel = name.split("/", 1)[1] if "/" in name else name
            if rel and ".." not in Path(rel).parts and not rel.startswith("/"):
                out.append(rel)
    return out
