"""Comparing nights: each target's run against its previous one, in KernelCI's categories.

Regression, fixed, still failing, new and missing targets, in OSSTest's words
("REGR. vs. <run>", "fail like <run>").  Lab and harness errors (ERROR,
ABORTED) are never a regression: the software under test did not fail, the
lab did.  A known issue is never an excuse: a lane that passed and now fails
is a regression whichever entry the failure matches ("REGR. ... (matches
known issue ID)"), so the nightly exits as one and bisects it.  Pure functions over RunRecords or run.json-shaped mappings (the
dashboard's index rows): no files, no clock.
"""

from __future__ import annotations

import enum
from typing import Iterable, Mapping

import attr

from ..errors import Status
from .record import RunRecord


class Change(str, enum.Enum):
    REGRESSION = "regression"  # FAIL or KNOWN now, did not fail before
    STILL_FAILING = "still-failing"  # failed before too ("fail like")
    INFRA = "infra"  # ERROR/ABORTED: the lab or the harness broke, not the software
    FIXED = "fixed"  # PASS now, FAIL/KNOWN before
    NEW = "new"  # no previous run of this board
    MISSING = "missing"  # ran last time, not this time
    PASS = "pass"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


_FAILED = (Status.FAIL, Status.KNOWN)
_INFRA = (Status.ERROR, Status.ABORTED, Status.RUNNING)


def verdict(run) -> Status:
    """A run's verdict, from a RunRecord or a run.json-shaped mapping."""
    v = run.get("verdict") if isinstance(run, Mapping) else run.verdict
    return Status(str(v))


def run_id(run) -> str:
    return run.get("run_id") if isinstance(run, Mapping) else run.run_id


def known_id(run) -> str | None:
    """The known issue a failed run's deciding step matched, if any."""
    if run is None or verdict(run) is not Status.KNOWN:
        return None
    steps = run.get("steps", []) if isinstance(run, Mapping) else run.steps
    for step in steps:  # RunRecord steps, run.json dicts (the dashboard's rows have no ids)
        known = step.get("known") if isinstance(step, Mapping) else getattr(step, "known", None)
        if isinstance(known, Mapping) and known.get("id"):
            return str(known["id"])
    return None


def change_between(previous, current) -> Change:
    """How one target's `current` run compares with its `previous` run (either may be None)."""
    if current is None:
        return Change.MISSING
    now = verdict(current)
    if now in _INFRA:
        return Change.INFRA
    if previous is None:
        return Change.NEW
    before = verdict(previous)
    if now is Status.FAIL:
        # A KNOWN before is no excuse: the failure is no longer explained.
        return Change.STILL_FAILING if before is Status.FAIL else Change.REGRESSION
    if now is Status.KNOWN:
        # A known issue explains a failure, it does not excuse it: failing where the lane
        # passed is a regression even when tonight's failure matches an entry.
        return Change.STILL_FAILING if before in _FAILED else Change.REGRESSION
    if now is Status.PASS:
        return Change.FIXED if before in _FAILED else Change.PASS
    return Change.SKIP


@attr.s(frozen=True, auto_attribs=True)
class TargetChange:
    """One target's current run against its previous one."""

    target: str
    change: Change
    previous: object = None  # RunRecord or run.json mapping
    current: object = None

    def wording(self) -> str:
        """OSSTest's words for what happened to the board."""
        prev = run_id(self.previous) if self.previous is not None else None
        was = verdict(self.previous).value if self.previous is not None else None
        known = known_id(self.current)
        return {
            Change.REGRESSION: f"REGR. vs. {prev}" + (f" (was {was})" if was != "PASS" else "")
                               + (f" (matches known issue {known})" if known else ""),
            Change.STILL_FAILING: f"fail like {prev}"
                                  + (f" (known issue {known})" if known else ""),
            Change.INFRA: "lab/harness error, not a regression",
            Change.FIXED: f"fixed, {was} in {prev}",
            Change.NEW: "new board",
            Change.MISSING: f"not run (last run {prev}, {was})",
            Change.PASS: "pass",
            Change.SKIP: "skipped",
        }[self.change]


@attr.s(frozen=True, auto_attribs=True)
class Comparison:
    entries: tuple  # of TargetChange, sorted by target

    def of(self, change: Change) -> list[TargetChange]:
        return [e for e in self.entries if e.change is change]

    @property
    def regressions(self) -> list[TargetChange]:
        return self.of(Change.REGRESSION)

    def counts(self) -> dict[Change, int]:
        return {c: len(self.of(c)) for c in Change}


def compare(previous: Mapping[str, object], current: Mapping[str, object]) -> Comparison:
    """Each target's current run against its previous one (pure: no files, no clock)."""
    targets = sorted(set(previous) | set(current))
    return Comparison(tuple(TargetChange(t, change_between(previous.get(t), current.get(t)),
                                         previous.get(t), current.get(t)) for t in targets))


# --------------------------------------------------------------------------- baselines

def night(run) -> str:
    """A run's night: the UTC date it started."""
    start = run.get("start") if isinstance(run, Mapping) else run.start_time
    return start[:10]


def previous_runs(history: Iterable[RunRecord], current: Mapping[str, RunRecord]) -> dict:
    """Each board's newest run before its current one.

    A board with no current run is included (as missing) only if it ran on
    the last night before tonight: a board retired months ago is no news.
    """
    def key(r):
        return (r.start_time, r.run_id)

    prev: dict[str, RunRecord] = {}
    for r in history:
        cur = current.get(r.lane)
        if cur is not None and key(r) >= key(cur):
            continue
        if r.lane not in prev or key(r) > key(prev[r.lane]):
            prev[r.lane] = r
    tonight = min((night(c) for c in current.values()), default="9999")
    earlier = [night(p) for p in prev.values() if night(p) < tonight]
    last_night = max(earlier, default=None)
    return {b: r for b, r in prev.items()
            if b in current or (last_night is not None and night(r) >= last_night)}


def newest_night(history: Iterable[RunRecord]) -> dict[str, RunRecord]:
    """The newest run of each board that ran on the newest night of `history`."""
    runs = list(history)
    if not runs:
        return {}
    last = max(night(r) for r in runs)
    out: dict[str, RunRecord] = {}
    for r in runs:
        if night(r) == last and (r.lane not in out or
                                 (r.start_time, r.run_id) > (out[r.lane].start_time,
                                                             out[r.lane].run_id)):
            out[r.lane] = r
    return out
