"""The nightly summary: what changed since last night, as plain text for a cron mail.

It reads the run records and their comparison (`xenlab.run.compare`): KernelCI's categories between
two runs (regression, fixed, still failing, new and missing boards) in
OSSTest's words ("REGR. vs. <run>", "fail like <run>").  Lab and harness
errors (ERROR, ABORTED) are listed apart and are never a regression: the
software under test did not fail, the lab did (KernelCI's status model).
The exit status is non-zero on regressions only.  Records that could not be
read are listed last ("COULD NOT READ", one line each): a broken run.json is
news, and it never stops the mail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..console_text import clean_lines
from ..run.bisectstate import explaining
from ..run.compare import Change, Comparison, night, verdict
from ..run.record import RunRecord, Unreadable

ORDER = (Change.REGRESSION, Change.STILL_FAILING, Change.INFRA, Change.FIXED,
         Change.NEW, Change.MISSING, Change.SKIP, Change.PASS)
TITLES = {Change.REGRESSION: "REGRESSIONS", Change.STILL_FAILING: "STILL FAILING",
          Change.INFRA: "LAB / HARNESS ERRORS",
          Change.FIXED: "FIXED", Change.NEW: "NEW BOARDS", Change.MISSING: "MISSING BOARDS",
          Change.SKIP: "SKIPPED", Change.PASS: "PASS"}
COUNTED = {Change.REGRESSION: "regression(s)", Change.STILL_FAILING: "still failing",
           Change.INFRA: "lab/harness error(s)",
           Change.FIXED: "fixed", Change.NEW: "new board(s)", Change.MISSING: "missing board(s)",
           Change.SKIP: "skipped", Change.PASS: "pass"}
EXCERPT_LINES = 12


def format_summary(comparison: Comparison, results: Path | None = None,
                   unreadable: Sequence[Unreadable] = (), bisections: Sequence = ()) -> str:
    """The cron mail: a headline of counts, then one section per category.

    A regression carries a console excerpt around its evidence (the
    regressions-only mails KernelCI users ask for, #1583).  `unreadable`: the
    records that could not be read, listed last with their reason.
    """
    counts = comparison.counts()
    nights = sorted({night(e.current) for e in comparison.entries if e.current is not None})
    head = ", ".join([f"{counts[c]} {COUNTED[c]}" for c in ORDER if counts[c]]
                     + ([f"{len(unreadable)} could not be read"] if unreadable else []))
    out = [f"xenlab nightly {nights[-1] if nights else '(no runs)'}: "
           f"{sum(e.current is not None for e in comparison.entries)} board(s) ran; "
           f"{head or 'nothing to compare'}"]
    for change in ORDER:
        entries = comparison.of(change)
        if not entries:
            continue
        out += ["", TITLES[change]]
        if change is Change.PASS:  # "rpi4 (1 skipped)": a skipped step never passed
            labels = [e.current.verdict_label if isinstance(e.current, RunRecord) else "PASS"
                      for e in entries]
            out.append("  " + ", ".join(e.target + label.removeprefix("PASS")
                                        for e, label in zip(entries, labels)))
            continue
        for e in entries:
            run = e.current if e.current is not None else e.previous
            v = verdict(run).value
            why = run.verdict_reason if isinstance(run, RunRecord) \
                else run.get("verdict_reason", "")
            cls = run.classification if isinstance(run, RunRecord) else run.get("classification")
            line = f"  {e.target:<20} {v:<7} {e.wording()}"
            if e.change is not Change.MISSING and (why or cls):
                line += f"  {why}" + (f" [{cls}]" if cls else "")
            out.append(line)
            if e.change is not Change.MISSING and isinstance(run, RunRecord):
                log = run.console_log
                shown = log.relative_to(results) if results and _under(log, results) else log
                out.append(f"      log {shown}")
                if e.change is Change.REGRESSION:
                    out += ["      | " + l for l in run.failure_excerpt(EXCERPT_LINES).splitlines()]
                    b = explaining(bisections, run.target, run.run_id)
                    if b is not None:
                        out.append(f"      bisection {b.id}: {_bisected(b)}")
    if unreadable:
        out += ["", "COULD NOT READ"] + [f"  {_one_line(u.reason)}" for u in unreadable]
    return "\n".join(out)


def _bisected(b) -> str:
    d = b.data
    if d.get("first_bad"):
        return f"first bad commit {d['first_bad']['commit']} {_one_line(d['first_bad']['subject'])}"
    if d.get("candidates"):
        return "first bad commit one of " + ", ".join(c["commit"][:12] for c in d["candidates"])
    return f"{d['status']} after {len(d['probes'])} probe(s)"


def _one_line(text: str) -> str:
    """Text from a record as one line of a mail: no newline, escape or control character."""
    return " ".join(" ".join(clean_lines(str(text))).split())


def _under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False
