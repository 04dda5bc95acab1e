"""The farm runner: the smoke test on many targets at once, one pytest child per target.

labgrid #1554: one session per target is what works.  Each child writes its
own run record; the runner reads those records for live progress (rich on a
terminal, a line per change in a log), passes each target through the health
gate first when asked, and makes sure every record has ended however the
child did.  Ctrl-C or SIGTERM stops every child the same way (SIGTERM, which
the plugin turns into ABORTED records).  Test Day and the nightly both use it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

import attr
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..errors import Status, XenlabError
from ..lab.signals import sigterm_as_interrupt
from ..images.imageset import build_image_set
from .farmfile import FarmTarget
from .health import HEALTH_UNAVAILABLE
from .record import RunRecord, Unreadable, new_run_id, read_runs, safe_name

REPO = Path(__file__).resolve().parent.parent.parent
TESTCASES = REPO / "testcases"
POLL_S = 0.5
# A child marks its record ABORTED and powers off within 5 s (bounded QEMU power-off);
# twice that, then SIGKILL to its group (QEMU included).
TERMINATE_WAIT_S = 10


@attr.s(eq=False)
class TargetRun:
    """One target's pytest child, and what its run record says so far."""

    target: FarmTarget = attr.ib()
    run_id: str = attr.ib()
    results: Path = attr.ib()
    proc: subprocess.Popen | None = attr.ib(default=None)
    log_path: Path | None = attr.ib(default=None)  # pytest's own output
    started: float | None = attr.ib(default=None)  # monotonic
    ended: float | None = attr.ib(default=None)
    returncode: int | None = attr.ib(default=None)
    record: RunRecord | None = attr.ib(default=None)  # the last one read
    image_set: Path | None = attr.ib(default=None)  # the set to boot (XENLAB_IMAGE_SET)
    variant: str | None = attr.ib(default=None)  # a board variant (XENLAB_VARIANT); None: dom0 smoke
    build: str | None = attr.ib(default=None)  # the matrix's name for the Xen it boots
    until: str | None = attr.ib(default=None)  # the last step to run (XENLAB_UNTIL); None: all
    tags: dict | None = attr.ib(default=None)  # facts for the record's info (XENLAB_RUN_INFO)

    def env(self) -> dict:
        env = dict(os.environ)
        if self.image_set is not None:
            env["XENLAB_IMAGE_SET"] = str(self.image_set)
        if self.variant is not None:
            env["XENLAB_VARIANT"] = self.variant
        if self.until is not None:
            env["XENLAB_UNTIL"] = self.until
        if self.tags:
            env["XENLAB_RUN_INFO"] = json.dumps(self.tags)
        return env

    @property
    def label(self) -> str:
        """The row's name: the target, and the variant and build it runs."""
        return " ".join(filter(None, [self.target.name, self.variant, self.build]))

    @property
    def run_dir(self) -> Path:
        return self.results / self.target.name / self.run_id

    @property
    def done(self) -> bool:
        return self.returncode is not None

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.started

    def read(self) -> RunRecord | None:
        # run.json is replaced atomically after each step: a read sees a whole file or none.
        if (self.run_dir / "run.json").is_file():
            try:
                self.record = RunRecord.load(self.run_dir)
            except XenlabError:
                pass
        return self.record

    def status_line(self) -> str:
        return f"{self.label:<20} {self.elapsed():6.0f}s  {self.doing()}"

    def doing(self) -> str:
        """What the target is doing, from its record: the step in progress or the verdict."""
        r = self.record
        if not self.started:
            return "waiting"
        if self.done:
            if r is None:
                return f"pytest exited {self.returncode}"
            what = r.verdict_label
            if r.verdict_reason and r.verdict is not Status.PASS:
                what += f"  {r.verdict_reason}"
            return what
        if r is None or not r.steps:
            return "preparing (image set, boot plan)"
        last = r.steps[-1]
        what = f"step {len(r.steps)} {last.name}"
        return what if last.status is Status.RUNNING else f"{what} {last.status.value}"


def pytest_command(farm: Path, target: str, results: Path, tester: str, run_id: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "--lg-env", str(farm), str(TESTCASES),
            "--xenlab-target", target, "--xenlab-results", str(results),
            "--xenlab-tester", tester, "--xenlab-run-id", run_id,
            "-p", "no:cacheprovider", "-q"]


def health_command(farm: Path, target: str, results: Path, tester: str, run_id: str,
                   depth: str) -> list[str]:
    return [sys.executable, "-m", "xenlab.cli", "health", "--farm", str(farm),
            "--target", target, "--depth", depth, "--results", str(results),
            "--tester", tester, "--run-id", run_id]


class Progress:
    """One row per target: a live rich table on a terminal, a line per change otherwise."""

    def __init__(self, runs: Sequence[TargetRun], out: TextIO):
        self.runs = runs
        self.out = out
        self.last: dict[str, str] = {}
        self.live = None
        if out.isatty():
            self.live = Live(self._table(), console=Console(file=out), auto_refresh=False,
                             transient=False)
            self.live.start()

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, pad_edge=False)
        for column in ("target", "seconds", "doing"):
            table.add_column(column, justify="right" if column == "seconds" else "left")
        for run in self.runs:
            # Verdict reasons quote the console: Text, so rich reads no markup in them.
            table.add_row(Text(run.label), f"{run.elapsed():.0f}", Text(run.doing()))
        return table

    def update(self, final: bool = False) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            if final:
                self.live.stop()
            return
        for run in self.runs:
            doing = run.doing()
            if self.last.get(run.label) != doing and (run.started or final):
                self.out.write(run.status_line() + "\n")
                self.last[run.label] = doing
        self.out.flush()


def _gate(run: TargetRun, farm: Path, tester: str, depth: str) -> bool:
    """The health gate; False when the target was marked unavailable (its record written)."""
    run.started = time.monotonic()
    gate = subprocess.run(health_command(farm, run.target.name, run.results, tester,
                                         run.run_id, depth),
                          cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=run.env())
    if gate.returncode == HEALTH_UNAVAILABLE and (run.run_dir / "run.json").is_file():
        run.returncode = gate.returncode
        run.ended = time.monotonic()
        run.read()
        return False
    return True  # healthy; a gate that broke itself leaves the verdict to the smoke test


def _start(run: TargetRun, farm: Path, tester: str, logs: Path, health: str = "none") -> None:
    if health != "none" and not _gate(run, farm, tester, health):
        return
    run.log_path = logs / f"{run.target.name}-{run.run_id}.log"
    with open(run.log_path, "wb") as log:
        # A session of its own: Ctrl-C reaches the runner only, which then stops
        # every child the same way.
        run.proc = subprocess.Popen(
            pytest_command(farm, run.target.name, run.results, tester, run.run_id),
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=run.env())
    run.started = time.monotonic()


def _reap(run: TargetRun, tester: str) -> None:
    """The child has ended: make sure its record has ended too, with pytest's log beside it."""
    run.ended = run.ended or time.monotonic()
    tail = _tail(run.log_path)
    if not (run.run_dir / "run.json").is_file():
        # pytest died before the plugin wrote a record (farm error, import error):
        # still a row in the table, as a harness ERROR, never a silent gap.
        record = RunRecord.start(run.results, run.target.name, profile=run.target.profile,
                                 arch=run.target.arch or "?", tester=tester,
                                 run_id=run.run_id, reuse_empty=True)
        record.finish(Status.ERROR, f"pytest exited {run.returncode} before the run started"
                      + (f": {tail}" if tail else ""), classification="harness-pytest-exit")
    else:
        record = RunRecord.load(run.run_dir)
        if record.end_time is None:  # killed too hard for the plugin to close it
            record.abort(f"pytest exited {run.returncode} without ending the run"
                         + (f": {tail}" if tail else ""))
    if run.log_path and run.log_path.exists():
        shutil.move(str(run.log_path), record.path / "pytest.log")
        run.log_path = record.path / "pytest.log"
    run.read()


def _tail(path: Path | None) -> str:
    """The last meaningful line of pytest's output (its error, usually)."""
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except (OSError, AttributeError):
        return ""
    errors = [l for l in lines if l.startswith(("ERROR", "E ", "xenlab"))]
    return (errors or lines or [""])[-1][:200]


def run_farm(farm: Path | str, targets: Sequence[FarmTarget], results: Path | str, tester: str,
             jobs: int | None = None, run_id: str | None = None,
             out: TextIO = sys.stdout, health: str = "none",
             image_sets: dict | None = None) -> tuple[list[TargetRun], bool]:
    """Run the smoke test on `targets`, at most `jobs` at a time; (runs, interrupted).

    `image_sets` maps an arch to the image set its targets boot (a Test Day's
    release candidate); without one a target boots its bundled set.

    Every target's run shares one run id, so a Test Day (or a night) is one id
    across the results tree.  Ctrl-C (or SIGTERM) stops every child, waits
    for them to close their records, and returns what there is.
    """
    farm = Path(farm).resolve()
    results = Path(results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    run_id = safe_name(run_id or new_run_id(), "run")
    for t in targets:
        safe_name(t.name, "target")  # it names a directory under results
    jobs = max(1, jobs or len(targets))
    # Outside every target directory: a name starting with a dot is no target (NAME_RE).
    logs = results / ".runner" / run_id
    logs.mkdir(parents=True, exist_ok=True)
    runs = [TargetRun(t, run_id, results, image_set=(image_sets or {}).get(t.arch))
            for t in targets]
    return run_all(runs, farm, results, tester, jobs, out, health, logs)


def run_all(runs: Sequence[TargetRun], farm: Path, results: Path, tester: str, jobs: int,
            out: TextIO, health: str = "none", logs: Path | None = None
            ) -> tuple[list[TargetRun], bool]:
    """Run `runs`, at most `jobs` at a time and one per target (a board runs one thing)."""
    runs = list(runs)
    logs = logs or results / ".runner" / runs[0].run_id
    logs.mkdir(parents=True, exist_ok=True)
    progress = Progress(runs, out)
    interrupted = False
    try:
        with sigterm_as_interrupt():
            while not all(r.done for r in runs):
                for run in runs:
                    busy = {r.target.name for r in runs if r.proc is not None and not r.done}
                    if run.proc is None and not run.done and run.target.name not in busy \
                            and len(busy) < jobs:
                        _start(run, farm, tester, logs, health)
                for run in runs:
                    if run.proc is not None and not run.done:
                        run.read()
                        code = run.proc.poll()
                        if code is not None:
                            run.returncode = code
                            _reap(run, tester)
                progress.update()
                if not all(r.done for r in runs):
                    time.sleep(POLL_S)
    except KeyboardInterrupt:
        interrupted = True
        _stop(runs, tester)
    finally:
        for run in runs:  # never leave a child behind, whatever happened
            if run.proc is not None and not run.done:
                _kill(run)
                run.returncode = run.proc.returncode
                _reap(run, tester)
        progress.update(final=True)
        shutil.rmtree(logs, ignore_errors=True)
        try:
            logs.parent.rmdir()
        except OSError:
            pass
    return runs, interrupted


def _stop(runs: Sequence[TargetRun], tester: str) -> None:
    live = [run for run in runs if run.proc is not None and not run.done]
    for run in live:
        if run.proc.poll() is None:
            run.proc.terminate()
    deadline = time.monotonic() + TERMINATE_WAIT_S
    hurry = False
    for run in live:
        try:
            if not hurry:
                run.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:  # a second Ctrl-C: no more waiting, for any child
            hurry = True
        if run.proc.poll() is None:
            _kill(run)
        run.returncode = run.proc.returncode
        _reap(run, tester)


def _kill(run: TargetRun) -> None:
    try:
        os.killpg(run.proc.pid, signal.SIGKILL)  # QEMU too, it is in the child's session
    except ProcessLookupError:
        pass
    run.proc.wait()


def finished_records(runs: Sequence[TargetRun], *,
                     aborted: bool = True) -> tuple[list[RunRecord], list[Unreadable]]:
    """The records of the runs that ended, in farm order (ABORTED ones only if `aborted`),
    and the runs whose record could not be read (listed, never fatal to the report)."""
    records, unreadable = read_runs(run.run_dir for run in runs if run.started is not None
                                    and (run.run_dir / "run.json").is_file())
    return [r for r in records if r.verdict is not Status.RUNNING
            and (aborted or r.verdict is not Status.ABORTED)], unreadable


def candidate_sets(targets, xen_source: str | None, xen_config=(), log=print,
                   build_log=lambda m: None) -> dict:
    """A release candidate (--xen-source) built once per arch: arch -> image set directory."""
    if not xen_source:
        if xen_config:
            raise XenlabError("--xen-config configures a build: add --xen-source",
                              where="--xen-config")
        return {}
    sets = {}
    for arch in sorted({t.arch for t in targets}):
        image_set = build_image_set(arch, xen_source=xen_source, xen_config=xen_config,
                                    log=build_log)
        log(f"Xen under test ({arch}): {image_set.xen['version']} {image_set.xen['config']} "
            f"({image_set.xen['changeset']}), image set {image_set.dir.name}")
        sets[arch] = image_set.dir
    return sets
