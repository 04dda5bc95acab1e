"""A target held for one pytest run: a RemotePlace's place, or a local board's lock.

The place (or lock, lab/boardlock.py) is acquired before labgrid looks at the target
and released after the board's own teardown; a second run waits --xenlab-place-wait
seconds for it, then ends as the lab's ERROR. An exporter that vanished mid-run makes
the run the lab's ERROR.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from ..errors import StageFailure
from ..lab import janitor, places
from ..lab.boardlock import BoardLock
from .record import RunRecord


def hold_place(request, env, root: Path, farm_target, finished: list):
    """Acquire a RemotePlace target's place, or a local target's lock; released at
    teardown, or at exit."""
    wait = request.config.getoption("--xenlab-place-wait")
    try:
        if farm_target.place is None:
            lease = BoardLock.acquire(farm_target.name, wait)
        else:
            lease = hold_remote(farm_target.place, places.coordinator_address(env=env), wait)
    except places.FarmError as exc:
        record = RunRecord.start(root, farm_target.name, profile=farm_target.profile,
                                 tester=request.config.getoption("--xenlab-tester"),
                                 run_id=request.config.getoption("--xenlab-run-id"),
                                 info={"place": farm_target.place} if farm_target.place else None)
        record.step_finished("place", "ERROR", 0.0, classification=exc.classification,
                             message=str(exc))
        record.finish()
        finished.append(record.path)
        pytest.fail(f"xenlab: {exc}", pytrace=False)
    request.addfinalizer(lease.release)  # runs after the board's own teardown
    return lease


def hold_remote(place: str, coordinator: str, wait: float) -> places.PlaceLease:
    """Acquire a remote place, first taking this host's lock on it (lab/boardlock.py).

    labgrid keeps a place acquired by its "host/user" when the client that acquired it
    is SIGKILLed, and refuses that host's next acquire. The kernel drops the killed
    run's lock, and the holder the lock file still names is dead: a place then held by
    this host and user is that run's, and it is released before it is acquired again
    (the run powers the board off before its boot, as every run does). A place acquired
    by hand, with no dead run behind it, is waited for like any busy place."""
    start = time.monotonic()
    digest = hashlib.sha256(f"{coordinator}/{place}".encode()).hexdigest()[:12]
    guard = BoardLock.acquire(f"place-{digest}", wait)
    try:
        freed = None
        if guard.freed and places.place_holder(place, coordinator) == places.client_identity():
            if places.release_place(place, coordinator):
                freed = guard.freed
        lease = places.PlaceLease.acquire(place, coordinator,
                                          timeout=max(0.0, wait - (time.monotonic() - start)))
    except BaseException:
        guard.release()
        raise
    lease.guard, lease.freed = guard, freed
    lease.waited = guard.waited + lease.waited
    # Renewed while this run lives: a janitor frees the place once a killed run's lapses.
    lease.renewer = janitor.LeaseRenewer(coordinator, place)
    return lease


def name_holder(lease, run_id: str) -> None:
    """A lock names the run that holds it (what a waiting run prints, what frees it)."""
    lock = lease if isinstance(lease, BoardLock) else lease.guard
    if lock is not None:
        lock.note(run_id)


def check_place(b, lease) -> None:
    """A place whose exporter vanished mid-run makes the run the lab's ERROR."""
    if lease is None:
        return
    if isinstance(lease, BoardLock):
        b.record.set_info(board_lock={"waited_s": lease.waited, "freed": lease.freed})
        return
    b.record.set_info(place=lease.name, place_wait_s=lease.waited)
    if lease.freed:  # a killed run of this host left it acquired: freed, never the board's fault
        b.record.set_info(place_freed={**lease.freed, "powered_off_before_boot": True})
    if lease.lost:  # already blamed on the step it broke
        return
    try:
        lease.check()
    except places.FarmError as exc:
        b.record.step_finished("place", "ERROR", 0.0, classification=exc.classification,
                               message=str(exc))


def place_lost(b, status: str, classification: str, message: str):
    """An ERROR on a remote board whose exporter is gone is the exporter's (labgrid
    itself then fails oddly, e.g. KeyError 'params' while polling the place)."""
    lease = getattr(b, "lease", None)
    if lease is None or isinstance(lease, BoardLock) or status != "ERROR":
        return classification, message
    try:
        lease.check()
    except places.FarmError as exc:
        if exc.classification == "lab-host-lost":
            b.failure = StageFailure(b.failure.stage if b.failure else "place", "ERROR",
                                     exc.classification, str(exc))
            return exc.classification, f"{exc} ({message})"
    return classification, message
