"""Run records: ``results/<target>/<run-id>/{run.json, console.log, junit.xml, diagnostics/}``.

A `RunRecord` rewrites run.json atomically after every change, so a crash, a
SIGKILL or Ctrl-C at any moment leaves a complete record on disk: the last
state the run reached (RUNNING, or ABORTED with the reason).  The verdict
separates the software under test from the lab (KernelCI's model): FAIL when
Xen, Dom0 or the DomU misbehaved, ERROR when the lab or the harness did.
results/README.md documents every field.  Every writer and every reader of
run.json goes through `RunRecord`; old records (schema 1, which said "board")
still load.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import attr

from ..console_text import excerpt
from ..errors import Status, XenlabError
from ..schema import read_data
from ..images.cache import atomic_write
from . import resultsdisk
from .junit import junit_report
from .recordschema import SCHEMA_VERSION, check_record
from .runnames import NAME_RE, _inside, default_results_dir, new_run_id, safe_name  # noqa: F401  (its readers')
from .steps import STEP_RESULTS, Step, compute_verdict, now, verdict_label

if TYPE_CHECKING:
    from .known_issues import KnownIssue

# --------------------------------------------------------------------------- the record

def _json_default(value):
    # A fact of an odd type must never make run.json unwritable for the rest of the run.
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def _no_constant(name: str):
    # json accepts NaN and Infinity; the writer never emits them and a time of NaN
    # would poison every sum and plot that reads it.
    raise ValueError(f"{name} is not a JSON number")


@attr.s(auto_attribs=True, eq=False)
class RunRecord:
    """One run of one target: what ran, each step's outcome, the verdict."""

    path: Path  # results/<target>/<run-id>
    target: str  # the labgrid target (the farm's name for the board)
    profile: str | None  # its board profile (boards/<profile>.yaml), once known
    run_id: str
    arch: str
    tester: str | None
    host: str
    start_time: str  # ISO 8601 UTC; "start" in run.json (start() is the constructor)
    end_time: str | None = None
    info: dict = attr.ib(factory=dict)
    steps: list[Step] = attr.ib(factory=list)
    verdict: Status = Status.RUNNING
    verdict_reason: str = ""
    classification: str | None = None
    harness_pid: int | None = None  # who writes this record, to spot one that was killed
    _lock: threading.RLock = attr.ib(factory=threading.RLock, repr=False)
    disk_full: str | None = attr.ib(default=None, repr=False)  # why the results disk is full

    @property
    def lane(self) -> str:
        """The target, and the board variant it ran if any: runs compare within one lane
        (a matrix run of qemu-arm64 dom0less is no baseline for its dom0 smoke test)."""
        info = self.info if isinstance(self.info, dict) else {}
        # A bisection's probes share a lane of their own: never a night's baseline.
        tags = [v for v in (info.get("variant"), "bisect" if info.get("bisection") else None)
                if isinstance(v, str) and v]
        return f"{self.target} [{' '.join(tags)}]" if tags else self.target

    @property
    def verdict_label(self) -> str:
        """The verdict as tables show it (steps.verdict_label): "PASS (1 skipped)"."""
        return verdict_label(self.verdict.value, [s.status.value for s in self.steps],
                             self.info.get("native") if isinstance(self.info, dict) else None)

    # -- files

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def console_log(self) -> Path:
        """Written by the strategy's console recorder; the record only refers to it."""
        return self.path / "console.log"
    def failure_excerpt(self, lines: int) -> str:
        """About `lines` console lines around the first failed step's last evidence line
        (the nightly mail's regressions, a bisection's first bad commit)."""
        bad = next((s for s in self.steps if s.status not in (Status.PASS, Status.SKIP)), None)
        return excerpt(self.console_log, bad.evidence[-1] if bad and bad.evidence else "", lines=lines)

    @property
    def junit_xml(self) -> Path:
        return self.path / "junit.xml"

    @property
    def diagnostics(self) -> Path:
        return self.path / "diagnostics"

    # -- life cycle

    @classmethod
    def start(cls, root: Path, target: str, *, profile: str | None = None, arch: str = "?",
              tester: str | None = None, run_id: str | None = None,
              info: dict | None = None, reuse_empty: bool = False) -> RunRecord:
        """Create ``root/<target>/<run-id>/`` and write run.json with verdict RUNNING.

        `reuse_empty`: a directory of that run id without run.json (a run killed
        before its first save) is taken over instead of refused.
        """
        safe_name(target, "target")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        target_dir = _inside(root, target)
        target_dir.mkdir(exist_ok=True)
        for _ in range(5):
            rid = safe_name(run_id, "run") if run_id is not None else new_run_id()
            path = _inside(root, target, rid)
            try:
                path.mkdir()  # exclusive: two runs can never share a directory
                break
            except FileExistsError:
                if reuse_empty and run_id is not None and not (path / "run.json").exists():
                    break
                if run_id is not None:
                    raise XenlabError(f"run {rid} of target {target} already exists: {path}") from None
        else:
            raise XenlabError(f"could not create a fresh run directory under {target_dir}")
        (path / "diagnostics").mkdir(exist_ok=True)
        resultsdisk.keep_space(path)
        record = cls(path=path, target=target, profile=profile, run_id=rid, arch=arch,
                     tester=tester, host=socket.gethostname(), start_time=now(),
                     info=dict(info or {}), harness_pid=os.getpid())
        record.save()
        return record

    def set_info(self, **facts) -> None:
        """Record facts about what ran: xen_version, image_set_hash, overrides, ..."""
        with self._lock:
            self.info.update(facts)
            self.save()

    def step_started(self, name: str) -> Step:
        with self._lock:
            step = Step(name)
            self.steps.append(step)
            self.save()
            return step

    def step_finished(self, name: str, status: Status | str, duration: float, *,
                      classification: str | None = None, message: str = "",
                      evidence: Iterable[str] = (), reason: str = "",
                      known: KnownIssue | None = None) -> Step:
        """Close the running step `name` (or add it, if it was never started).

        With `known`, a FAIL/ERROR becomes KNOWN (a `lab` culprit's: the lab's ERROR,
        never a board's verdict); the real status stays in `original_status` and the
        issue's id, label, link and culprit in `known`.
        """
        status = Status(status)
        if status not in STEP_RESULTS:
            raise ValueError(f"a step ends PASS, FAIL, ERROR or SKIP, not {status}")
        if known is not None and status not in (Status.FAIL, Status.ERROR):
            raise ValueError(f"only a FAIL or ERROR can be a known issue, not {status}")
        with self._lock:
            step = next((s for s in reversed(self.steps)
                         if s.name == name and s.status is Status.RUNNING), None)
            if step is None:
                step = Step(name)
                self.steps.append(step)
            step.status = status
            step.duration_s = round(float(duration), 3)
            step.classification = classification
            step.message = message
            step.evidence = [str(line) for line in evidence]
            step.reason = reason
            if known is not None:
                step.original_status = status
                step.status = Status.ERROR if known.culprit == "lab" else Status.KNOWN
                step.known = known.to_dict()
            self.save()
            return step

    def finish(self, verdict: Status | str | None = None, reason: str = "", *,
               classification: str | None = None) -> Status:
        """End the run: compute (or set) the verdict, write run.json and junit.xml.

        Once a run has ended (finished or aborted) later calls change nothing:
        a teardown error after finish() must not rewrite its verdict.
        """
        with self._lock:
            if self.end_time is not None:
                return self.verdict
            for step in self.steps:
                if step.status is Status.RUNNING:  # a harness bug, not the board's fault
                    step.status, step.classification = Status.ERROR, "harness-step-unfinished"
                    step.message = "the step was started but never finished"
            if verdict is None:
                self.verdict, computed, self.classification = compute_verdict(self.steps)
                self.verdict_reason = reason or computed
            else:
                self.verdict = Status(verdict)
                self.verdict_reason, self.classification = reason, classification
            self.end_time = now()
            self.save()
            self.write_junit()
            resultsdisk.give_back(self.path)
            return self.verdict

    def abort(self, reason: str, status: Status | str = Status.ABORTED) -> None:
        """The run ends abnormally (Ctrl-C, a crash, QEMU killed): mark it ABORTED.

        The step in progress gets `status`: ABORTED when the user stopped the
        run, ERROR when the lab broke under it.
        """
        status = Status(status)
        if status not in (Status.ABORTED, Status.ERROR):
            raise ValueError(f"an aborted step is ABORTED or ERROR, not {status}")
        with self._lock:
            if self.end_time is not None:
                return
            at = _dt.datetime.now(_dt.timezone.utc)
            for step in self.steps:
                if step.status is Status.RUNNING:
                    step.status, step.reason = status, reason
                    step.classification = step.classification or "aborted"
                    started = _dt.datetime.fromisoformat(step.started.replace("Z", "+00:00"))
                    step.duration_s = round((at - started).total_seconds(), 3)
            self.verdict, self.verdict_reason, self.classification = Status.ABORTED, reason, "aborted"
            self.end_time = now()
            self.save()
            self.write_junit()  # an aborted run still shows up in CI
            resultsdisk.give_back(self.path)

    # -- files on disk

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA_VERSION,
            "target": self.target,
            "profile": self.profile,
            "arch": self.arch,
            "tester": self.tester,
            "host": self.host,
            "run_id": self.run_id,
            "start": self.start_time,
            "end": self.end_time,
            "info": self.info,
            "steps": [attr.asdict(s, value_serializer=lambda _i, _a, v:
                                  v.value if isinstance(v, Status) else v) for s in self.steps],
            "verdict": self.verdict.value,
            "verdict_reason": self.verdict_reason,
            "classification": self.classification,
            "harness_pid": self.harness_pid,
        }

    def json_text(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"

    def end_on_full_disk(self, exc: OSError) -> None:
        """The results disk is full: end the run (resultsdisk.py); raises ResultsDiskFull."""
        with self._lock:
            resultsdisk.end_on_full_disk(self, exc)

    def save(self, durable: bool = True) -> None:
        with self._lock:
            try:
                atomic_write(self.run_json, self.json_text(), durable)
            except OSError as exc:
                if not resultsdisk.is_full(exc):
                    raise
                resultsdisk.end_on_full_disk(self, exc)

    @classmethod
    def load(cls, path: Path | str) -> RunRecord:
        """Read a run directory (or its run.json) back, e.g. for `results show`."""
        path = Path(path)
        file = path / "run.json" if path.is_dir() else path
        try:
            d = json.loads(read_data(file, "run record"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            raise XenlabError(f"not a valid run record ({str(e)[:120]})", where=str(file)) from None
        d = check_record(d, str(file))
        record = cls(path=file.parent, target=d["target"], profile=d.get("profile"),
                     run_id=d["run_id"], arch=d["arch"], tester=d.get("tester"), host=d["host"],
                     start_time=d["start"], end_time=d.get("end"), info=d.get("info") or {},
                     steps=[Step.from_dict(s) for s in d.get("steps", [])],
                     verdict=Status(d["verdict"]), verdict_reason=d.get("verdict_reason", ""),
                     classification=d.get("classification"), harness_pid=d.get("harness_pid"))
        if record.verdict is Status.RUNNING and record.orphaned():
            # The writer was killed (SIGKILL, OOM, power): say so instead of RUNNING forever.
            record.verdict = Status.ABORTED
            record.classification = "harness-killed"
            record.verdict_reason = (f"the harness (pid {record.harness_pid} on {record.host}) "
                                     "ended without finishing the run")
        return record

    def orphaned(self) -> bool:
        """True when the process writing this record on this host is gone."""
        if self.harness_pid is None or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.harness_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def write_junit(self) -> None:
        atomic_write(self.junit_xml, junit_report(self))


@attr.s(frozen=True, auto_attribs=True)
class Unreadable:
    """A run directory whose run.json could not be read, and the one line that says why."""

    path: Path
    reason: str  # "results/t/r/run.json: key 'steps[0].status': 'BOGUS' is not one of ..."


def scan_runs(root: Path | str | None = None,
              target: str | None = None) -> tuple[list[RunRecord], list[Unreadable]]:
    """Every run under root (or under one target), newest first, and those that could not be read.

    Reports build everything they can and list the unreadable ones: one
    truncated or hand-edited run.json must never take a report down.
    """
    root = Path(root) if root is not None else default_results_dir()
    if target is not None:
        target_dirs = [root / safe_name(target, "target")]
    else:
        target_dirs = sorted(root.iterdir()) if root.is_dir() else []
    # A directory without run.json was created by a run killed in its first millisecond.
    runs, unreadable = read_runs(
        run_dir for target_dir in target_dirs
        if NAME_RE.fullmatch(target_dir.name) and target_dir.is_dir()
        for run_dir in sorted(target_dir.iterdir())
        if NAME_RE.fullmatch(run_dir.name) and (run_dir / "run.json").exists())
    runs.sort(key=lambda r: (r.start_time, r.run_id), reverse=True)
    return runs, unreadable


def read_runs(run_dirs: Iterable[Path]) -> tuple[list[RunRecord], list[Unreadable]]:
    """The records of `run_dirs`, in order, and the ones that could not be read."""
    runs, unreadable = [], []
    for run_dir in run_dirs:
        try:
            runs.append(RunRecord.load(run_dir))
        except XenlabError as exc:
            unreadable.append(Unreadable(run_dir, str(exc)))
    return runs, unreadable


def list_runs(root: Path | str | None = None, target: str | None = None) -> list[RunRecord]:
    """Every readable run under root (or under one target), newest first."""
    return scan_runs(root, target)[0]
