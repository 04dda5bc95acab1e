"""Command-line arguments checked before any work starts: one line, exit 2.

A path that does not exist, a file where a directory belongs or a directory
that cannot be written would otherwise surface minutes later, deep in a
build or a boot, as a Python traceback.  Each check is an argparse `type`,
so the message names the option and the value; `ArgumentParser.error`
prints it as xenlab's one error line instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..run.record import safe_name
from ..errors import XenlabError

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with xenlab's error line ("xenlab: error: argument --dtb: ...")."""

    def error(self, message):
        print(f"xenlab: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _fail(value, why: str):
    raise argparse.ArgumentTypeError(f"{str(value)!r}: {why}")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def existing_file(value: str) -> str:
    path = Path(value)
    if not path.exists():
        _fail(value, "no such file")
    if not path.is_file():
        _fail(value, "not a file")
    if not os.access(path, os.R_OK):
        _fail(value, "cannot be read")
    return value  # as typed: callers make Paths, labgrid wants str


def existing_dir(value: str) -> str:
    path = Path(value)
    if not path.exists():
        _fail(value, "no such directory")
    if not path.is_dir():
        _fail(value, "not a directory")
    return value  # as typed: callers make Paths, labgrid wants str


def writable_dir(value: str) -> str:
    """A directory that exists and can be written into (a mounted card, a TFTP root)."""
    existing_dir(value)
    if not os.access(value, os.W_OK | os.X_OK):
        _fail(value, "cannot be written")
    return value  # as typed: callers make Paths, labgrid wants str


def output_file(value: str) -> str:
    """A file to write: not a directory, in a directory that exists and can be written."""
    path = Path(value)
    if not value or path.is_dir():
        _fail(value, "is a directory, not a file name")
    parent = path.parent
    if not parent.is_dir():
        _fail(value, f"directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        _fail(value, "cannot be written")
    return value  # as typed: callers make Paths, labgrid wants str


def output_dir(value: str) -> str:
    """A directory to write into, made if needed: not a file, and writable where it starts."""
    path = Path(value)
    if not value:
        _fail(value, "empty directory name")
    if path.exists() and not path.is_dir():
        _fail(value, "is a file, not a directory")
    base = _nearest_existing(path)
    if not base.is_dir():
        _fail(value, f"{str(base)!r} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        _fail(value, f"{str(base)!r} cannot be written")
    return value  # as typed: callers make Paths, labgrid wants str


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number >= 0 or number == float("inf"):  # also refuses nan
        _fail(value, "not a number of seconds")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        _fail(value, "not a whole number")
    if number < 1:
        _fail(value, "must be at least 1")
    return number


def port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        _fail(value, "not a TCP port")
    if not 0 <= number <= 65535:
        _fail(value, "not a TCP port (0-65535)")
    return number


def run_name(value: str) -> str:
    try:
        return safe_name(value, "run")
    except XenlabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def text(value: str) -> str:
    if not value.strip():
        _fail(value, "must not be empty")
    return value
