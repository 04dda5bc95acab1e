"""One run per local board: a lock file under the target's state directory.

A remote target is held through its labgrid place; a local one (QEMU on this host, a
bench board) has nothing that stops a second run from powering it, staging into its
TFTP directory or writing its card while the first run boots. Each run therefore holds
`<cache>/state/<target>/run.lock` with flock(2) while the board is its own.

The kernel drops a flock when its holder dies, however it dies (SIGKILL included), so a
killed run never leaves the board locked; the holder it names (pid, run id, start) is
then found stale and the next run says in its record that it freed it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import attr

from .pidfile import same_process, start_time, state_dir
from .places import FarmError

LOCK_NAME = "run.lock"
POLL_S = 0.2


@attr.s(auto_attribs=True)
class BoardLock:
    """The held lock of one local target (released at teardown, or by the kernel at exit)."""

    target: str
    path: Path
    fd: int
    waited: float = 0.0
    freed: dict | None = None  # the holder a killed run left written in the file

    @classmethod
    def acquire(cls, target: str, timeout: float, run_id: str = "") -> "BoardLock":
        """Hold `target`, waiting up to `timeout` s for the run that holds it; FarmError
        `board-busy` naming the holder when it does not end in time."""
        path = state_dir(target) / LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        start = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise FarmError(f"target {target}", "board-busy",
                                    f"target {target} is busy: {_describe(_holder(fd))} holds "
                                    f"it; waited {waited:.0f} s (--xenlab-place-wait)")
                time.sleep(POLL_S)
        except BaseException:
            os.close(fd)
            raise
        lock = cls(target, path, fd, round(time.monotonic() - start, 1))
        previous = _holder(fd)
        # A holder whose process is gone was killed: the kernel freed its lock.
        if previous and not same_process(previous.get("pid"), previous.get("start")):
            lock.freed = previous
        lock.note(run_id)
        return lock

    def note(self, run_id: str) -> None:
        """Say in the lock file who holds it: what a second run prints while it waits."""
        holder = {"pid": os.getpid(), "start": start_time(os.getpid()), "run_id": run_id,
                  "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        data = json.dumps(holder).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)  # nobody holds it: no holder to name or to free
        except OSError:
            pass
        os.close(self.fd)  # closing the last descriptor drops the flock
        self.fd = -1


def _holder(fd: int) -> dict | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another run"
    return (f"run {holder.get('run_id') or '?'} (pid {holder.get('pid')}, since "
            f"{holder.get('since')})")
