"""Staging a boot plan: its files under their load names, and boot.scr, in one directory.

The directory is what U-Boot's load command reads: the FAT boot partition
of an SD card for `fatload mmc 0:1`, a TFTP root for `tftpb`.  Only the
plan's names go in (`BootPlan.files` and the script), each copied aside and
renamed into place, so a pulled card or a full disk leaves every file old or
new, never half of one.  Everything that would be refused is found before
the first byte is written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import attr

from ..errors import XenlabError
from ..images.cache import atomic_copy, sha256_file
from .bootplan import BootPlan

SCRIPT_NAME = "boot.scr"


@attr.s(frozen=True, auto_attribs=True)
class StagedFile:
    name: str  # the load name, the file's name in the directory
    size: int
    sha256: str
    state: str  # "new", "replaced" (--force), or "unchanged" (already there, same content)


def stage(plan: BootPlan, directory: os.PathLike, *, force: bool = False) -> list[StagedFile]:
    """Copy the plan's files and its boot.scr into `directory`, in load order, script first.

    A file of the same name with other content is refused unless `force`.
    """
    root = Path(directory)
    if not root.is_dir():
        raise XenlabError(f"staging directory {str(root)!r}: not a directory")
    files = plan.files()
    if SCRIPT_NAME in files:
        role = next(p.role for p in plan.placements if p.filename == SCRIPT_NAME)
        raise XenlabError(f"{role} file {files[SCRIPT_NAME]}: its load name {SCRIPT_NAME!r} is "
                          "the boot script's; rename it")
    with tempfile.TemporaryDirectory(prefix="xenlab-stage-") as tmp:
        script = plan.boot_script(Path(tmp) / SCRIPT_NAME)
        wanted = [(SCRIPT_NAME, script, sha256_file(script))]
        wanted += [(p.filename, p.path, p.sha256) for p in plan.placements]
        states = [_state(root / name, sha, force) for name, _, sha in wanted]
        staged = []
        for (name, path, sha), state in zip(wanted, states):
            if state != "unchanged":
                try:
                    atomic_copy(path, root / name)
                except OSError as exc:
                    raise XenlabError(f"cannot write {root / name}: {exc.strerror}") from None
            staged.append(StagedFile(name, path.stat().st_size, sha, state))
    return staged


def _state(dest: Path, sha256: str, force: bool) -> str:
    if not os.path.lexists(dest):
        return "new"
    if dest.is_dir():
        raise XenlabError(f"{dest}: a directory has the load name {dest.name!r}; move it away")
    # A link is compared by what it points at (a TFTP root labgrid staged into).
    if dest.is_file() and sha256_file(dest) == sha256:
        return "unchanged"
    if not force:
        raise XenlabError(f"{dest} exists with other content than the plan's {dest.name} "
                          f"(sha256 {sha256[:16]}); --force replaces it")
    return "replaced"
