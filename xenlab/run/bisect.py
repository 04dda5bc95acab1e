"""`xenlab bisect`: from a board's regression to the first bad Xen commit, per board.

OSSTest bisects the Xen Project's own flights; xenlab does it on any farm board.
git bisect chooses each commit (bisectgit); a probe builds it (the build cache
and the bisection's own work directory make that incremental), boots the board
and runs the smoke test up to and including the step being bisected.  The
verdicts are the issue's:

- the step passes: good;
- it fails the same way (step and classification): bad; another way (another
  classification, or an earlier step failed): bad too, the difference noted;
- the commit does not build: skip, the build log kept beside the bisection;
- the lab or the harness errs (ERROR): once more, then skip.

Every probe is a run record tagged `info.bisection` (id, commit, probe), and
the bisection's own record (bisectstate) is rewritten after each probe, so
Ctrl-C leaves it resumable: `xenlab bisect --resume ID` replays the verdicts
into git and goes on.
"""

from __future__ import annotations

import ast
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

import attr

from ..errors import Status, XenlabError
from ..images.imageset import build_image_set
from ..lab.signals import sigterm_as_interrupt
from ..plan.variant import load_variant
from . import compare
from .bisectgit import BisectClone, check_range, commit_of, describe, toplevel
from .bisectstate import Bisection, now
from .farmfile import load_farm
from .record import RunRecord, new_run_id, safe_name, scan_runs
from .runner import TESTCASES, TargetRun, run_all

EXCERPT_LINES = 16
_LAB = (Status.ERROR, Status.ABORTED, Status.RUNNING)


def smoke_steps(dom0less: bool) -> list[str]:
    """The smoke test's steps, in order: testcases/test_smoke.py's, or the variants'."""
    mode = "dom0less" if dom0less else "dom0"
    for path in sorted(TESTCASES.glob("test_*.py")):
        text = path.read_text()
        if f'xenlab_mode("{mode}")' in text:
            return [n.name[5:] for n in ast.parse(text).body
                    if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    return []


@attr.s(frozen=True, auto_attribs=True)
class Request:
    """A bisection to start: the range, the board and what to watch."""

    tree: Path
    good: str
    bad: str
    target: str
    variant: str | None = None
    step: str | None = None  # None: the first failing step of the --bad commit, probed first
    classification: str | None = None  # the failure bisected, when a record says it
    configs: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()
    from_run: str | None = None


def request(farm_path, tree: str, good: str, bad: str, target: str, variant: str | None = None,
            step: str | None = None, configs=()) -> Request:
    """A Request with every argument checked first: one line for the first bad one."""
    top = toplevel(tree)
    good_sha, bad_sha = commit_of(top, good, "--good"), commit_of(top, bad, "--bad")
    check_range(top, good_sha, bad_sha)
    farm_target = load_farm(farm_path).target(target)
    fixes = ()
    if variant:
        v = load_variant(variant)
        v.require_board(farm_target.profile)
        configs = tuple(configs) or v.xen_configs
        fixes = v.xen_patches
    steps = smoke_steps(bool(variant))
    if step is not None and step not in steps:
        raise XenlabError(f"--step {step}: no such step in the {'variant' if variant else 'dom0'} smoke "
                          f"test (steps: {', '.join(steps)})")
    return Request(top, good_sha, bad_sha, farm_target.name, variant, step, configs=tuple(configs),
                   fixes=fixes)


def from_regression(bad: RunRecord, history) -> Request:
    """What bisecting a regression takes, from its run record and the run before it in its lane:
    the good and bad commits of one tree, the target, variant, failing step and failure."""
    where = f"run {bad.run_id} of {bad.target}"
    failing = next((s for s in bad.steps if s.status in (Status.FAIL, Status.KNOWN)), None)
    if bad.verdict not in (Status.FAIL, Status.KNOWN) or failing is None:
        raise XenlabError(f"{where} did not fail ({bad.verdict.value}): nothing to bisect")
    previous = compare.previous_runs(history, {bad.lane: bad}).get(bad.lane)
    if previous is None:
        raise XenlabError(f"{where}: no earlier run in its lane ({bad.lane}) to take the good build from")
    passed = next((s for s in previous.steps if s.name == failing.name), None)
    if passed is None or passed.status is not Status.PASS:
        raise XenlabError(f"{where}: the run before it ({previous.run_id}) did not pass "
                          f"{failing.name} either: no good build to start from")
    builds = [r.info.get("xen_build") or {} for r in (previous, bad)]
    for r, b in zip((previous, bad), builds):
        if b.get("kind") != "git" or not b.get("commit") or not b.get("tree"):
            raise XenlabError(f"run {r.run_id}'s Xen was not built from a git tree "
                              f"({b.get('kind') or 'no build'}): nothing to bisect")
    if builds[0]["tree"] != builds[1]["tree"]:
        raise XenlabError(f"{where}: its Xen came from {builds[1]['tree']}, the good run's "
                          f"({previous.run_id}) from {builds[0]['tree']}: bisect one tree")
    if builds[0].get("config_fragments") != builds[1].get("config_fragments"):
        raise XenlabError(f"{where}: its Xen config differs from the good run's ({previous.run_id})")
    return Request(Path(builds[1]["tree"]), builds[0]["commit"], builds[1]["commit"], bad.target,
                   bad.info.get("variant"), failing.name, failing.classification,
                   tuple(builds[1].get("config_fragments") or ()), tuple(builds[1].get("patches") or ()),
                   bad.run_id)


def find_run(results: Path, run_id: str, target: str | None = None) -> tuple[RunRecord, list]:
    """The failing record of run `run_id` (on `target`), and the history to compare it with."""
    safe_name(run_id, "run")
    history, _ = scan_runs(results)
    mine = [r for r in history if r.run_id == run_id and (target is None or r.target == target)]
    failed = [r for r in mine if r.verdict in (Status.FAIL, Status.KNOWN)]
    if not mine:
        raise XenlabError(f"--from {run_id}: no such run under {results}"
                          + (f" for target {target}" if target else ""))
    if len(failed) > 1:
        raise XenlabError(f"--from {run_id}: it failed on several targets "
                          f"({', '.join(r.target for r in failed)}): name one with --target")
    return (failed or mine)[0], history


# --------------------------------------------------------------------------- running it

class Bisector:
    """Runs (or resumes) one bisection; `run()` returns its record."""

    def __init__(self, farm_path: Path, results: Path, tester: str, out: TextIO = sys.stdout,
                 build_log=lambda m: None):
        self.farm_path = Path(farm_path).resolve()
        self.results = Path(results).resolve()
        self.tester = tester
        self.out = out
        self.build_log = build_log

    def start(self, req: Request, bisection_id: str | None = None) -> Bisection:
        if bisection_id and len(bisection_id) > 50:  # its probes add -pNN-K to name their runs
            raise XenlabError(f"--id {bisection_id!r}: at most 50 characters")
        state = Bisection.new(self.results, id=safe_name(bisection_id or f"bisect-{new_run_id()}",
                                                         "bisection"),
                              tree=str(req.tree), good=req.good, bad=req.bad, target=req.target,
                              variant=req.variant, step=req.step or "", classification=req.classification,
                              configs=list(req.configs), fixes=list(req.fixes), from_run=req.from_run)
        return self.run(state)

    def resume(self, bisection_id: str) -> Bisection:
        state = Bisection.load(self.results, bisection_id)
        if state.done:
            raise XenlabError(f"bisection {bisection_id} is done already: {self.summary(state)}")
        state.data.update(status="running", ended=None)
        return self.run(state)

    def run(self, state: Bisection) -> Bisection:
        d = state.data
        self.target = load_farm(self.farm_path).target(d["target"])
        try:
            with sigterm_as_interrupt(), BisectClone(Path(d["tree"]), (d["good"], d["bad"])) as clone:
                if not d["step"]:  # learn the step from the bad commit itself
                    clone.start(d["good"], d["bad"])
                    self._probe(state, clone, d["bad"], until=None)
                    if state.probes[-1]["verdict"] != "bad":
                        return self._end(state, "failed", f"the --bad commit {d['bad'][:12]} does not "
                                         f"fail: {state.probes[-1]['why']}")
                said = clone.start(d["good"], d["bad"], state.marks())
                while (outcome := clone.outcome(said)) is None:
                    sha = clone.head()
                    self._probe(state, clone, sha, until=d["step"])
                    said = clone.mark(sha, state.probes[-1]["verdict"])
                self._found(state, clone, outcome)
        except KeyboardInterrupt:
            return self._end(state, "interrupted", "interrupted: go on with "
                             f"`xenlab bisect --resume {state.id} --results {self.results}`")
        except XenlabError as exc:
            self._end(state, "failed", str(exc))
            raise
        return self._end(state, "done", "")

    def _end(self, state: Bisection, status: str, reason: str) -> Bisection:
        state.data.update(status=status, reason=reason, ended=now())
        state.save()
        return state

    # ----------------------------------------------------------------- one probe
    def _probe(self, state: Bisection, clone: BisectClone, sha: str, until: str | None) -> None:
        d = state.data
        n = len(state.probes) + 1
        commit = describe(clone.path, sha)
        self.out.write(f"probe {n}: {commit.short()}\n")
        self.out.flush()
        clone.checkout(sha)
        probe = {"n": n, "commit": sha, "subject": commit.subject, "run_id": None, "build_log": None}
        t0 = time.monotonic()
        try:
            images = build_image_set(self.target.arch, xen_source=str(clone.path),
                                     xen_config=tuple(d["configs"]), fixes=tuple(d.get("fixes") or ()),
                                     log=self.build_log)
        except XenlabError as exc:
            log = getattr(exc, "log", None)
            if log is None:  # not the build failing (a bad fragment, no disk): bisecting can't go on
                raise
            kept = state.dir / f"probe-{n:02d}-build.log"
            shutil.copyfile(log, kept)
            probe.update(verdict="skip", why=f"does not build: {str(exc).split('; log:')[0]}",
                         build_s=round(time.monotonic() - t0, 1), boot_s=None, build_log=kept.name)
            return self._record(state, probe)
        probe["build_s"] = round(time.monotonic() - t0, 1)
        for attempt in (1, 2):
            run = TargetRun(self.target, self._run_id(state, n), self.results, image_set=images.dir,
                            variant=d["variant"], until=until,
                            tags={"bisection": {"id": state.id, "commit": sha, "probe": n}})
            _, interrupted = run_all([run], self.farm_path, self.results, self.tester, 1,
                                     self.out if self.out.isatty() else _Quiet())
            if interrupted:
                raise KeyboardInterrupt
            verdict, why, failure = judge(run.record, until or d["step"], d["classification"])
            probe.update(run_id=run.run_id, attempts=attempt, boot_s=round(run.elapsed(), 1))
            if verdict != "error":
                break
        if verdict == "error":
            verdict, why = "skip", f"the lab failed twice: {why}"
        if until is None and verdict == "bad":  # the --bad commit: what is bisected from now on
            d["step"], d["classification"] = failure
        elif verdict == "bad" and d["classification"] is None and failure[0] == d["step"]:
            d["classification"] = failure[1]
        probe.update(verdict=verdict, why=why)
        self._record(state, probe)

    def _run_id(self, state: Bisection, n: int) -> str:
        """<bisection>-pNN, or -pNN-2 ... when an earlier try (a retry, an interrupted probe) has it."""
        base = f"{state.id}-p{n:02d}"
        taken = lambda rid: (self.results / state.data["target"] / rid).exists()  # noqa: E731
        return next(rid for k in range(1, 100) if not taken(rid := base if k == 1 else f"{base}-{k}"))

    def _record(self, state: Bisection, probe: dict) -> None:
        state.probes.append(probe)
        state.save()
        times = ", ".join(f"{k[:-2]} {probe[k]:.0f} s" for k in ("build_s", "boot_s") if probe.get(k) is not None)
        self.out.write(f"  {probe['verdict']}: {probe['why']}" + (f" ({times})" if times else "") + "\n")
        self.out.flush()

    # ----------------------------------------------------------------- the answer
    def _found(self, state: Bisection, clone: BisectClone, outcome: list[str]) -> None:
        commits = [describe(clone.path, sha) for sha in outcome]
        entries = []
        for c in commits:
            entry = {"commit": c.sha, "subject": c.subject, "author_date": c.author_date, "run_id": None}
            bad = next((p for p in state.probes if p["commit"] == c.sha and p["verdict"] == "bad"), None)
            record = self._record_of(state, bad["run_id"]) if bad and bad.get("run_id") else None
            if record is None and c.sha == state.data["bad"] and state.data.get("from_run"):
                record = self._record_of(state, state.data["from_run"])
            if record is not None:
                entry.update(run_id=record.run_id, excerpt=record.failure_excerpt(EXCERPT_LINES))
            entries.append(entry)
        if len(entries) == 1:
            state.data["first_bad"] = entries[0]
        else:
            state.data["candidates"] = entries

    def _record_of(self, state: Bisection, run_id: str) -> RunRecord | None:
        try:
            return RunRecord.load(self.results / state.data["target"] / run_id)
        except XenlabError:
            return None

    @staticmethod
    def summary(state: Bisection) -> str:
        d = state.data
        if d.get("first_bad"):
            return f"first bad commit {d['first_bad']['commit'][:12]} {d['first_bad']['subject']}"
        if d.get("candidates"):
            return f"{len(d['candidates'])} candidates (skipped commits left git undecided)"
        return d.get("reason") or d["status"]


def judge(record: RunRecord | None, step: str | None, expected: str | None):
    """(verdict, why, (step, classification)) of a probe's run: good, bad, or error (the lab's)."""
    if record is None:
        return "error", "the probe left no run record", (None, None)
    steps = record.steps
    failed = next((s for s in steps if s.status not in (Status.PASS, Status.SKIP)), None)
    mine = next((s for s in steps if s.name == step), None) if step else None
    if failed is None and record.verdict is Status.PASS and \
            (step is None or (mine is not None and mine.status is Status.PASS)):
        return "good", f"{step or 'every step'} PASS", (None, None)
    if failed is None or failed.status in _LAB or record.verdict in (Status.ERROR, Status.ABORTED):
        what = failed or record
        return "error", (getattr(what, "classification", None) or record.verdict_reason
                         or record.verdict.value), (None, None)
    said = f"{failed.name} {failed.status.value} [{failed.classification}]"
    if step is None or failed.name == step:
        if expected and failed.classification != expected:
            return "bad", f"{said}, not [{expected}] as bisected", (failed.name, failed.classification)
        return "bad", said, (failed.name, failed.classification)
    return "bad", f"{said}, before {step}", (failed.name, failed.classification)


class _Quiet:
    """Where the runner's progress goes when the bisection prints its own lines."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def bisect_regressions(comparison, history, farm_path, results: Path, tester: str,
                       out: TextIO = sys.stdout) -> list[str]:
    """`nightly --bisect`: a bisection for each regression built from a tree; a line each."""
    lines = []
    for entry in comparison.regressions:
        native = entry.current.info.get("native") if isinstance(entry.current, RunRecord) else None
        if isinstance(native, dict) and native.get("result") == "fails":
            # Seed §7: the same kernel fails on the bare board too: not Xen's to bisect.
            lines.append(f"{entry.target}: not bisected: its Dom0 kernel fails without Xen too "
                         "(native: fails)")
            continue
        try:
            req = from_regression(entry.current, history)
        except XenlabError as exc:
            lines.append(f"{entry.target}: not bisected: {exc}")
            continue
        state = Bisector(farm_path, results, tester, out).start(req)
        lines.append(f"{entry.target}: bisection {state.id}: {Bisector.summary(state)}")
        if state.data["status"] == "interrupted":
            raise KeyboardInterrupt
    return lines
