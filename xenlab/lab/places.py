"""Places on a labgrid coordinator: hold a remote board for one run, always give it back.

A remote board is a labgrid *place*: its resources (the UART, the TFTP
directory) are offered by an exporter on the lab host and matched into the
place on the coordinator.  `acquire_place` holds a place for one run and gives
it back in every case (pass, fail, timeout, Ctrl-C, SIGTERM): stale locks
from cancelled jobs are labgrid's most reported pain (labgrid #1739).
It drives `labgrid-client`, whose messages we map to one-line `FarmError`s
naming the component at fault.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import XenlabError
from .signals import sigterm_as_interrupt, signals_deferred

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's own default


class FarmError(XenlabError):
    """The lab failed us: one line naming the component (coordinator, place,
    exporter, TFTP server, power) and a stable classification."""

    def __init__(self, component: str, classification: str, message: str):
        self.component = component
        self.classification = classification
        # The message names the component in its own words ("coordinator X unreachable").
        super().__init__(message if component in message else f"{component}: {message}")


# --------------------------------------------------------------------------- labgrid-client

def labgrid_tool(name: str) -> str:
    # The venv's tool beside this interpreter first: PATH may hold another labgrid.
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FarmError("labgrid", "harness-config", f"{name} not found (pip install labgrid)")
    return found


def coordinator_address(coordinator: str | None = None, env=None) -> str:
    """The coordinator as labgrid itself picks it: argument, env option, LG_COORDINATOR."""
    if coordinator:
        return coordinator
    if env is not None:
        value = env.config.get_option("coordinator_address", "")
        if value:
            return value
    return os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def client(coordinator: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    cmd = [labgrid_tool("labgrid-client"), "-x", coordinator, *args]
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="0")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FarmError("coordinator", "coordinator-unreachable",
                        f"coordinator {coordinator} did not answer `labgrid-client {' '.join(args)}` "
                        f"within {timeout:.0f} s") from None


def client_error(proc: subprocess.CompletedProcess) -> str:
    lines = [l.strip() for l in (proc.stderr + "\n" + proc.stdout).splitlines() if l.strip()]
    errors = [l for l in lines if "Error" in l or "error" in l]
    text = (errors or lines or [f"exit status {proc.returncode}"])[-1]
    return re.sub(r"^(labgrid-client: |Server error: )?(Error: )?", "", text)


def client_failure(name: str, coordinator: str, proc: subprocess.CompletedProcess) -> FarmError:
    text = proc.stderr + proc.stdout
    msg = client_error(proc)
    if "Could not connect to coordinator" in text or "coordinator is unavailable" in text:
        return FarmError("coordinator", "coordinator-unreachable",
                         f"coordinator {coordinator} unreachable")
    if "matches nothing" in text or re.search(r"place .* not found", text):
        return FarmError("place", "place-not-found",
                         f"place {name} not found on coordinator {coordinator}")
    if "orphaned resource" in text or "no matching remote resource" in text:
        exporter = re.search(r"exporter (\S+) disconnected", text)
        # The host that exports the place is gone (its exporter disconnected): the lab's.
        return FarmError("exporter", "lab-host-lost",
                         f"lab host {exporter.group(1) + ' ' if exporter else ''}of place "
                         f"{name} lost: its exporter is not connected to coordinator "
                         f"{coordinator}")
    return FarmError("place", "place-error", f"place {name}: {msg}")


def place_holder(name: str, coordinator: str) -> str | None:
    """Who holds the place ("host/user"), or None when it is free."""
    proc = client(coordinator, "-p", name, "show")
    if proc.returncode != 0:
        raise client_failure(name, coordinator, proc)
    m = re.search(r"^\s*acquired:\s*(\S+)", proc.stdout, re.M)
    return None if m is None or m.group(1) == "None" else m.group(1)


def client_identity() -> str:
    """Who labgrid-client says we are: the "host/user" a place is acquired by."""
    return (f"{os.environ.get('LG_HOSTNAME') or socket.gethostname()}/"
            f"{os.environ.get('LG_USERNAME') or getpass.getuser()}")


class PlaceLease:
    """A place we acquired; `release()` is idempotent and never raises."""

    def __init__(self, name: str, coordinator: str):
        self.name = name
        self.coordinator = coordinator
        self.released = False
        self.waited = 0.0
        self.lost: str | None = None  # why the place's exporter is gone, once seen
        self.freed: dict | None = None  # the killed run of this host whose place was freed
        self.guard = None  # this host's lock on the place (run/placeguard.py), dropped with it
        self.renewer = None  # the lease the janitor reads (lab/janitor.py), ended first
        self._lock = threading.Lock()

    @classmethod
    def acquire(cls, name: str, coordinator: str | None = None, timeout: float = 0.0,
                poll: float = 2.0) -> PlaceLease:
        """Acquire `name`, waiting up to `timeout` s while someone else holds it."""
        coordinator = coordinator_address(coordinator)
        start = time.monotonic()
        holder = None
        while True:
            proc = client(coordinator, "-p", name, "acquire")
            if proc.returncode == 0:
                lease = cls(name, coordinator)
                lease.waited = round(time.monotonic() - start, 1)
                _HELD[id(lease)] = lease
                return lease
            text = proc.stderr + proc.stdout
            m = re.search(r"already acquired by (\S+?)\.?(\s|$)", text)
            if m:
                holder = m.group(1)
            elif "You have already acquired place" in text:  # this host and user hold it
                holder = f"{client_identity()} (this host and user, by hand or another tool)"
            else:
                raise client_failure(name, coordinator, proc)
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                raise FarmError("place", "place-busy",
                                f"place {name} is held by {holder}"
                                + (f" for longer than the {timeout:.0f} s wait" if timeout
                                   else " (no wait asked)"))
            time.sleep(min(poll, left))

    def check(self) -> None:
        """Raise FarmError(lab-host-lost) if the place's exporter went away."""
        proc = client(self.coordinator, "-p", self.name, "env")
        if proc.returncode != 0:
            err = client_failure(self.name, self.coordinator, proc)
            if err.classification == "lab-host-lost":
                self.lost = str(err)
            raise err

    def release(self) -> bool:
        """Give the place back; True when it is no longer ours."""
        with self._lock:
            if self.released:
                return True
            # A second Ctrl-C must not leave the place locked halfway through.
            with signals_deferred():
                if self.renewer is not None:  # the lease first: the janitor need not act
                    self.renewer.stop()
                    self.renewer = None
                ok = release_place(self.name, self.coordinator)
            self.released = ok
            if ok:
                _HELD.pop(id(self), None)
            if self.guard is not None:
                self.guard.release()
            return ok


_HELD: dict[int, PlaceLease] = {}


def release_place(name: str, coordinator: str | None = None) -> bool:
    """Release `name` if we hold it. Never raises: a failure is printed on stderr."""
    coordinator = coordinator_address(coordinator)
    for attempt in range(3):
        try:
            proc = client(coordinator, "-p", name, "release", timeout=20)
        except FarmError as exc:
            err = str(exc)
        else:
            if proc.returncode == 0 or "is not acquired" in proc.stderr + proc.stdout:
                return True
            if "different user" in proc.stderr:  # not ours (any more): never kick
                return True
            err = str(client_failure(name, coordinator, proc))
        time.sleep(0.5 * (attempt + 1))
    print(f"xenlab: could not release place {name}: {err}", file=sys.stderr)
    return False


@contextlib.contextmanager
def acquire_place(name: str, coordinator: str | None = None, timeout: float = 0.0):
    """Hold place `name` for the `with` block; released in every case.

    Waits up to `timeout` seconds while someone else holds it. Raises FarmError
    (coordinator-unreachable, place-not-found, place-busy, lab-host-lost).
    """
    lease = PlaceLease.acquire(name, coordinator, timeout)
    try:
        with sigterm_as_interrupt():
            yield lease
    finally:
        lease.release()


def release_all() -> None:
    """Release every place this process still holds (a last resort at exit)."""
    for lease in list(_HELD.values()):
        lease.release()


atexit.register(release_all)
