"""A run's steps and the verdict they add up to (KernelCI's model: the board apart from the software)."""

from __future__ import annotations

import datetime as _dt
from typing import Sequence

import attr

from ..errors import Status

STEP_RESULTS = (Status.PASS, Status.FAIL, Status.ERROR, Status.SKIP)


def now() -> str:
    # Milliseconds: runs started in the same second still sort in order.
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attr.s(auto_attribs=True)
class Step:
    name: str
    status: Status = Status.RUNNING
    started: str = attr.ib(factory=now)
    duration_s: float | None = None
    classification: str | None = None
    message: str = ""
    evidence: list[str] = attr.ib(factory=list)
    reason: str = ""
    original_status: Status | None = None  # what a KNOWN step really was
    known: dict | None = None  # id, label, link, culprit of the matching known issue

    @classmethod
    def from_dict(cls, d: dict) -> Step:
        d = dict(d)
        d["status"] = Status(d["status"])
        if d.get("original_status"):
            d["original_status"] = Status(d["original_status"])
        return cls(**d)


def compute_verdict(steps: Sequence[Step]) -> tuple[Status, str, str | None]:
    """(verdict, reason, classification) of a finished run.

    The first step that is not PASS/SKIP decides: later failures are usually
    its consequences (no Dom0, no DomU).  A KNOWN step therefore decides only
    when no unexplained FAIL/ERROR came before it.  Later failures are still
    named in the reason, so a known issue never hides a new one.
    """
    if not steps:
        # The verdict must come from what ran, never from "no error seen".
        return Status.ERROR, "no steps were recorded", "harness-no-steps"
    bad = [s for s in steps if s.status not in (Status.PASS, Status.SKIP)]
    if not bad:
        if all(s.status is Status.SKIP for s in steps):
            return Status.SKIP, f"{steps[0].name}: {steps[0].reason}", None
        return Status.PASS, "", None
    first = bad[0]
    what = first.known["label"] if first.known else first.message
    reason = f"{first.name}: {what}" if what else first.name
    later = [s.name for s in bad[1:]]
    if later:
        reason += f" (then {', '.join(later)})"
    return first.status, reason, first.classification


def verdict_label(verdict: str, statuses: Sequence[str], native=None) -> str:
    """A verdict as every table shows it: a PASS whose run skipped steps says how many
    ("PASS (2 skipped)"): a skipped step was never shown to work; a run whose Dom0 kernel
    was booted without Xen says how that went ("FAIL (native: boots)", seed §7)."""
    skipped = sum(1 for status in statuses if status == "SKIP")
    label = f"{verdict} ({skipped} skipped)" if verdict == "PASS" and skipped else verdict
    if isinstance(native, dict) and native.get("result") in ("boots", "fails"):
        label += f" (native: {native['result']})"
    return label
