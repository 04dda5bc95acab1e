"""A small tmpfs to fill: a full disk for real, not a mocked ENOSPC."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    """`path` as a tmpfs of `size` for the block. Mounting needs root: CI runs the suite
    as root, and elsewhere the test fails, since a skipped check is not a pass."""
    if os.geteuid() != 0:
        pytest.fail("mounting a small tmpfs needs root: run the suite as root (CI does)",
                    pytrace=False)
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
