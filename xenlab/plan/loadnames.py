"""Load names: what U-Boot's shell and a TFTP server are given to fetch a file by.

A name (and a run's staging directory) is one word to U-Boot's shell, so it is checked
before it reaches a command; a plan loads every file from its run's own directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import attr

from ..errors import XenlabError

# A load name is one word to U-Boot's shell and to a TFTP server.
FILENAME_RE = re.compile(r"^[A-Za-z0-9._+,=@%~-]+$")


def staged_in(plan, directory: str):
    """The plan (a BootPlan or NativePlan) loading its files from `directory` on the server:
    each run stages into a directory of its own, so no run loads another run's file."""
    return attr.evolve(plan, load_dir=_check_name("staging directory", directory, directory))


def load_path(load_dir: str, filename: str) -> str:
    return f"{load_dir}/{filename}" if load_dir else filename


def script_load_name(name: str) -> str:
    """A boot script's file name, checked like every load name (ImageBuilder's UBOOT_SCRIPT)."""
    return _check_name("boot script", name, name)


def _check_name(what: str, name: str, shown) -> str:
    if not FILENAME_RE.match(name):
        bad = next((c for c in name if not FILENAME_RE.match(c)), None)
        why = "is empty" if bad is None else f"contains {bad!r}"
        raise XenlabError(f"{what} {str(shown)!r}: load name {name!r} {why}, which U-Boot's shell would "
                          "split or interpret (allowed: letters, digits and ._+,=@%~-)")
    return name


def _check_file(role: str, path: Path, name: str) -> str:
    _check_name(f"{role} file", name, path)
    if not path.is_file():
        raise XenlabError(f"{role} file {path} not found")
    if path.stat().st_size == 0:
        raise XenlabError(f"{role} file {path} is empty")
    return name
