"""`xenlab nightly`: refresh the image sets, run the farm, say what changed since last time.

The summary is plain text for a cron mail: KernelCI's categories between
two runs (regression, fixed, still failing, new and missing boards) in
OSSTest's words ("REGR. vs. <run>", "fail like <run>").  Lab and harness
errors (ERROR, ABORTED) are listed apart and are never a regression: the
software under test did not fail, the lab did (KernelCI's status model).
The exit status is non-zero on regressions only.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Iterable, Mapping

import attr

from .errors import XenlabError
from .results import RunRecord, Status, console_excerpt, list_runs


class Change(str, enum.Enum):
    REGRESSION = "regression"  # FAIL now, did not fail before
    STILL_FAILING = "still-failing"  # failed before too ("fail like")
    KNOWN = "known"  # a known issue showed up: reported, not a regression
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


def classify(previous, current) -> Change:
    """How one board's `current` run compares with its `previous` run (either may be None)."""
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
        return Change.STILL_FAILING if before in _FAILED else Change.KNOWN
    if now is Status.PASS:
        return Change.FIXED if before in _FAILED else Change.PASS
    return Change.SKIP


@attr.s(frozen=True, auto_attribs=True)
class Entry:
    board: str
    change: Change
    previous: object = None  # RunRecord or run.json mapping
    current: object = None

    def wording(self) -> str:
        """OSSTest's words for what happened to the board."""
        prev = run_id(self.previous) if self.previous is not None else None
        was = verdict(self.previous).value if self.previous is not None else None
        return {
            Change.REGRESSION: f"REGR. vs. {prev}" + (f" (was {was})" if was != "PASS" else ""),
            Change.STILL_FAILING: f"fail like {prev}",
            Change.KNOWN: f"known issue, passed in {prev}",
            Change.INFRA: "lab/harness error, not a regression",
            Change.FIXED: f"fixed, {was} in {prev}",
            Change.NEW: "new board",
            Change.MISSING: f"not run (last run {prev}, {was})",
            Change.PASS: "pass",
            Change.SKIP: "skipped",
        }[self.change]


@attr.s(frozen=True, auto_attribs=True)
class Comparison:
    entries: tuple  # of Entry, sorted by board

    def of(self, change: Change) -> list[Entry]:
        return [e for e in self.entries if e.change is change]

    @property
    def regressions(self) -> list[Entry]:
        return self.of(Change.REGRESSION)

    def counts(self) -> dict[Change, int]:
        return {c: len(self.of(c)) for c in Change}


def compare(previous: Mapping[str, object], current: Mapping[str, object]) -> Comparison:
    """Each board's current run against its previous one (pure: no files, no clock)."""
    boards = sorted(set(previous) | set(current))
    return Comparison(tuple(Entry(b, classify(previous.get(b), current.get(b)),
                                  previous.get(b), current.get(b)) for b in boards))


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
        cur = current.get(r.board)
        if cur is not None and key(r) >= key(cur):
            continue
        if r.board not in prev or key(r) > key(prev[r.board]):
            prev[r.board] = r
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
        if night(r) == last and (r.board not in out or
                                 (r.start_time, r.run_id) > (out[r.board].start_time,
                                                             out[r.board].run_id)):
            out[r.board] = r
    return out


# --------------------------------------------------------------------------- summary

ORDER = (Change.REGRESSION, Change.STILL_FAILING, Change.KNOWN, Change.INFRA, Change.FIXED,
         Change.NEW, Change.MISSING, Change.SKIP, Change.PASS)
TITLES = {Change.REGRESSION: "REGRESSIONS", Change.STILL_FAILING: "STILL FAILING",
          Change.KNOWN: "KNOWN ISSUES", Change.INFRA: "LAB / HARNESS ERRORS",
          Change.FIXED: "FIXED", Change.NEW: "NEW BOARDS", Change.MISSING: "MISSING BOARDS",
          Change.SKIP: "SKIPPED", Change.PASS: "PASS"}
COUNTED = {Change.REGRESSION: "regression(s)", Change.STILL_FAILING: "still failing",
           Change.KNOWN: "known issue(s)", Change.INFRA: "lab/harness error(s)",
           Change.FIXED: "fixed", Change.NEW: "new board(s)", Change.MISSING: "missing board(s)",
           Change.SKIP: "skipped", Change.PASS: "pass"}
EXCERPT_LINES = 12


def format_summary(comparison: Comparison, results: Path | None = None) -> str:
    """The cron mail: a headline of counts, then one section per category.

    A regression carries a console excerpt around its evidence (the
    regressions-only mails KernelCI users ask for, #1583).
    """
    counts = comparison.counts()
    nights = sorted({night(e.current) for e in comparison.entries if e.current is not None})
    head = ", ".join(f"{counts[c]} {COUNTED[c]}" for c in ORDER if counts[c])
    out = [f"xenlab nightly {nights[-1] if nights else '(no runs)'}: "
           f"{sum(e.current is not None for e in comparison.entries)} board(s) ran; "
           f"{head or 'nothing to compare'}"]
    for change in ORDER:
        entries = comparison.of(change)
        if not entries:
            continue
        out += ["", TITLES[change]]
        if change is Change.PASS:
            out.append("  " + ", ".join(e.board for e in entries))
            continue
        for e in entries:
            run = e.current if e.current is not None else e.previous
            v = verdict(run).value
            why = run.verdict_reason if isinstance(run, RunRecord) \
                else run.get("verdict_reason", "")
            cls = run.classification if isinstance(run, RunRecord) else run.get("classification")
            line = f"  {e.board:<20} {v:<7} {e.wording()}"
            if e.change is not Change.MISSING and (why or cls):
                line += f"  {why}" + (f" [{cls}]" if cls else "")
            out.append(line)
            if e.change is not Change.MISSING and isinstance(run, RunRecord):
                log = run.console_log
                shown = log.relative_to(results) if results and _under(log, results) else log
                out.append(f"      log {shown}")
                if e.change is Change.REGRESSION:
                    out += ["      | " + l for l in _excerpt(run).splitlines()]
    return "\n".join(out)


def _under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _excerpt(run: RunRecord) -> str:
    bad = next((s for s in run.steps if s.status not in (Status.PASS, Status.SKIP)), None)
    around = bad.evidence[-1] if bad and bad.evidence else ""
    return console_excerpt(run.console_log, around, lines=EXCERPT_LINES)


# --------------------------------------------------------------------------- command

def cmd_nightly(args, log=print) -> int:
    from .testday import board_list, finished_records, load_farm, run_farm

    results = Path(args.results)
    farm = Path(args.farm)
    targets = load_farm(farm, board_list(args.boards)) \
        if not (args.no_run and args.skip_images) else []
    if not args.skip_images:
        from .images import build_image_set
        for arch in sorted({t.arch for t in targets}):
            image_set = build_image_set(arch, log=lambda m: print(m, file=sys.stderr))
            log(f"image set {arch}: {image_set.dir.name} (Xen {image_set.xen_version})")
    if args.no_run:
        history = list_runs(results) if results.is_dir() else []
        current = newest_night(history)
        if not current:
            raise XenlabError(f"--no-run: no runs under {results} to compare")
    else:
        runs, interrupted = run_farm(farm, targets, results, args.tester, args.jobs,
                                     health=args.health)
        if interrupted:
            log("nightly interrupted: no comparison")
            return 130
        current = {r.board: r for r in finished_records(runs)}
        history = list_runs(results)
    comparison = compare(previous_runs(history, current), current)
    log(format_summary(comparison, results.resolve()))
    return 1 if comparison.regressions else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("nightly", help="refresh images, run the farm, compare with the "
                                              "previous runs (regressions exit non-zero)")
    p.add_argument("--farm", default="farm.yaml", help="labgrid env file (default: farm.yaml)")
    p.add_argument("--boards", help="comma-separated targets (default: every XenStrategy target)")
    p.add_argument("--results", default="results", help="results directory (default: results)")
    p.add_argument("--skip-images", action="store_true", help="do not rebuild the image sets")
    p.add_argument("--no-run", action="store_true",
                   help="do not run the farm: compare the newest night already recorded")
    p.add_argument("--tester", default="nightly", help="recorded as the tester (default: nightly)")
    p.add_argument("--jobs", type=int, help="boards at once (default: all)")
    p.add_argument("--health", default="uboot", choices=["none", "uboot", "dom0"],
                   help="health gate before the run (default: uboot; see xenlab testday)")
    p.set_defaults(func=cmd_nightly)
