"""Which QEMU processes a harness started, so the next run can stop one a SIGKILL left.

A harness killed with SIGKILL runs no teardown: its QEMU is re-parented to
init and keeps a core busy for ever.  Each QEMU is therefore written down
under `<cache>/state/<target>/` (pid, start time and command line of QEMU and
of the harness) while it runs.  The next run on that target stops the ones
whose harness is gone, and only when pid, start time and command line all
still match: a recycled pid, a live run or another host's process is never
touched.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

from ..images.cache import cache_root

_SAFE = re.compile(r"[A-Za-z0-9_.-]+")
TERM_WAIT_S = 2.0  # for a stale QEMU to go on SIGTERM before SIGKILL


def state_dir(target: str) -> Path:
    """The per-target state directory (target names are checked by the plugin; again here)."""
    if not _SAFE.fullmatch(target) or target.startswith("."):
        raise ValueError(f"not a target name for a state directory: {target!r}")
    return cache_root() / "state" / target


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces or ')': split after the last one.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="surrogateescape").split("\0")[:-1] if raw else []


def same_process(pid, started, argv=None) -> bool:
    """True if `pid` is still the process that started at `started` (with `argv`)."""
    if not isinstance(pid, int) or pid <= 1 or started is None:
        return False
    if start_time(pid) != started:
        return False
    return argv is None or cmdline(pid) == argv


def write(target: str, pid: int, argv: list[str]) -> Path:
    """Note QEMU `pid` started with `argv` by this process; returns the file to remove.

    Raises OSError (or ValueError for a target name no directory can have).
    """
    directory = state_dir(target)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"qemu-{pid}.json"
    entry = {"pid": pid, "start": start_time(pid), "cmdline": list(argv),
             "harness_pid": os.getpid(), "harness_start": start_time(os.getpid()),
             "host": socket.gethostname()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    tmp.replace(path)  # a reader sees a whole entry or none
    return path


def remove(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def reap_stale(target: str) -> list[dict]:
    """Stop every QEMU on `target` whose harness is gone; return the entries stopped."""
    try:
        entries = sorted(state_dir(target).glob("qemu-*.json"))
    except (OSError, ValueError):
        return []
    stopped = []
    host = socket.gethostname()
    for path in entries:
        try:
            entry = json.loads(path.read_text())
            pid, argv = entry["pid"], entry["cmdline"]
        except (OSError, ValueError, KeyError, TypeError):
            remove(path)  # not an entry we wrote whole: nothing to match it against
            continue
        if entry.get("host") != host:
            continue  # a cache shared between hosts: that process is not ours to judge
        if same_process(entry.get("harness_pid"), entry.get("harness_start")):
            continue  # its run is alive: its QEMU is in use
        if same_process(pid, entry.get("start"), argv):
            _stop(pid)
            stopped.append(entry)
        remove(path)
    return stopped


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_WAIT_S
        while time.monotonic() < deadline:
            if _zombie(pid):
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:].startswith("Z")
