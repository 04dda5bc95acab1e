"""The board health gate (LAVA's health check): boot to U-Boot (or Dom0) before the real work.

A board that fails it is out of service for this run: its record says ERROR,
`health-check-failed`, culprit lab, and no smoke test runs on it, so a broken
lab never counts as a Xen failure.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import StageFailure, XenlabError
from ..lab import places
from ..lab.failures import stage_failure
from .record import RunRecord, default_results_dir

HEALTH_UNAVAILABLE = 3  # exit status of `xenlab health` for a board taken out of service
HEALTH_DEPTHS = ("uboot", "dom0")


def health_check(target, depth: str = "uboot", results: Path | str | None = None,
                 tester: str | None = "health-check", run_id: str | None = None):
    """Boot `target` to U-Boot (or Dom0) and power it off.

    Returns None when the board is healthy. Otherwise the board is marked
    unavailable: a run record with verdict ERROR, classification
    `health-check-failed`, culprit lab (see `mark_unavailable`) is written
    under `results` and returned, the console log kept in it.
    """
    if depth not in HEALTH_DEPTHS:
        raise XenlabError(f"health check depth {depth!r}: one of {', '.join(HEALTH_DEPTHS)}")
    root = Path(results) if results is not None else default_results_dir()
    strategy = target.get_driver("XenStrategy")
    scratch = Path(tempfile.mkdtemp(prefix="xenlab-health-"))
    console = scratch / "console.log"
    failure: StageFailure | None = None
    started = time.monotonic()
    try:
        strategy.record_to(console)
        try:
            strategy.transition(depth)
        except Exception as exc:  # StrategyError around the real cause
            failure = stage_failure(exc, depth)
    finally:
        with contextlib.suppress(Exception):
            if strategy.broken is None:
                strategy.transition("off")
            else:  # a broken strategy refuses transitions
                strategy.cut_power()
        if strategy.recorder is not None:
            strategy.recorder.close()
            strategy.recorder = None
    try:
        if failure is None:
            return None
        record = mark_unavailable(root, target.name, failure, depth=depth,
                                  duration=time.monotonic() - started,
                                  arch=strategy.profile.arch if strategy.profile else "?",
                                  profile=strategy.profile.name if strategy.profile else None,
                                  tester=tester, console_log=console, run_id=run_id)
        return record
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def mark_unavailable(root: Path | str, target: str, failure: StageFailure, *,
                     depth: str = "uboot", duration: float = 0.0, arch: str = "?",
                     profile: str | None = None, tester: str | None = None,
                     console_log: Path | None = None, run_id: str | None = None) -> RunRecord:
    """Write the run record that takes `target` out of service: ERROR, health-check-failed, lab."""
    record = RunRecord.start(Path(root), target, profile=profile, arch=arch, tester=tester,
                             run_id=run_id,
                             info={"kind": "health-check", "depth": depth, "culprit": "lab",
                                   "available": False})
    if console_log is not None and Path(console_log).exists():
        shutil.copyfile(console_log, record.console_log)
    record.step_finished("health_check", "ERROR", duration, classification="health-check-failed",
                         message=f"{failure.stage} stage {failure.status} "
                                 f"[{failure.classification}]: {failure.message}",
                         evidence=failure.evidence)
    record.finish("ERROR", f"health check to {depth} failed: {failure.classification}: "
                           f"{failure.message}", classification="health-check-failed")
    return record


def gate(farm_target, env, depth: str, results, tester: str, run_id: str | None = None,
         place_wait: float = 60.0) -> RunRecord | None:
    """The health gate for one farm target (holding its place if it has one); see health_check."""
    try:
        lease = places.acquire_place(farm_target.place, places.coordinator_address(env=env),
                                     place_wait) if farm_target.place else contextlib.nullcontext()
        with lease:
            return health_check(env.get_target(farm_target.name), depth, results, tester,
                                run_id=run_id)
    except places.FarmError as exc:  # the place itself is the lab's failure
        return mark_unavailable(results, farm_target.name,
                                StageFailure("place", "ERROR", exc.classification, str(exc)),
                                depth=depth, profile=farm_target.profile, tester=tester,
                                run_id=run_id)
