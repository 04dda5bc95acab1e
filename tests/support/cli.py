"""`xenlab` as a tester types it, in a child process, and what a bad input must print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
XENLAB = [sys.executable, "-m", "xenlab.cli"]


def xenlab(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*XENLAB, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=kw.pop("timeout", 1800), **kw)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one `xenlab:` line naming what is wrong, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    errors = [l for l in proc.stderr.splitlines() if l.startswith("xenlab:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
