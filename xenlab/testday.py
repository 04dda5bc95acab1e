"""`xenlab testday`: the smoke test on every board of the farm at once, then the wiki table.

Xen's Test Days keep a per-board results table on the wiki ("Xen ARM Manual
Smoke Test/Results"); it never gained momentum because filling it by hand was
work.  Here each board runs in its own pytest subprocess (labgrid #1554: one
session per target is what works), progress is read from the run.json each
child rewrites after every step, and the table comes out ready to paste, in
MediaWiki and Markdown.  `nightly` reuses `run_farm`.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterable, Sequence, TextIO

import attr

from .errors import XenlabError
from .results import RunRecord, Status, new_run_id, safe_name

REPO = Path(__file__).resolve().parent.parent
TESTCASES = REPO / "testcases"
POLL_S = 0.5
TERMINATE_WAIT_S = 30  # a child needs a moment to mark its record ABORTED and power off


# --------------------------------------------------------------------------- the farm

@attr.s(frozen=True, auto_attribs=True)
class FarmTarget:
    """A XenStrategy target of the farm and what its board profile says."""

    name: str
    board: str  # board profile name (boards/<board>.yaml)
    arch: str
    remote: bool  # behind a labgrid coordinator (RemotePlace): needs a lock


def _named(items) -> dict:
    """labgrid accepts resources/drivers as a mapping or a list of one-key mappings."""
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items or []:
        if isinstance(item, dict):
            out.update(item)
    return out


def load_farm(farm: Path | str, names: Sequence[str] = ()) -> list[FarmTarget]:
    """The farm's XenStrategy targets (or those named), with arch from their profiles."""
    from labgrid.config import Config
    from labgrid.exceptions import InvalidConfigError, NoConfigFoundError

    from .boards import load_profile
    from .pytest_plugin import xen_targets

    farm = Path(farm)
    if not farm.is_file():
        raise XenlabError(f"farm file {farm} not found")
    try:
        config = Config(str(farm))
    except (InvalidConfigError, NoConfigFoundError) as exc:
        raise XenlabError(str(exc), where=str(farm)) from None

    # The same selection the pytest plugin makes, so testday runs what pytest would.
    available = xen_targets(SimpleNamespace(config=config))
    if not available:
        raise XenlabError("no target with a XenStrategy driver", where=str(farm))
    for name in names:
        if name not in available:
            raise XenlabError(f"--boards {name}: no XenStrategy target of that name "
                              f"(the farm has: {', '.join(available)})", where=str(farm))
    targets = []
    for name in names or available:
        data = config.get_targets()[name] or {}
        strategy = _named(data.get("drivers")).get("XenStrategy") or {}
        board = (strategy.get("board") if isinstance(strategy, dict) else None) \
            or config.get_target_option(name, "xenlab_board", None)
        if not board:
            raise XenlabError(f"target {name}: no board profile (options: xenlab_board)",
                              where=str(farm))
        profile = load_profile(str(board))
        resources = _named(data.get("resources"))
        remote = any(key == "RemotePlace" or
                     (isinstance(args, dict) and args.get("cls") == "RemotePlace")
                     for key, args in resources.items())
        targets.append(FarmTarget(name, profile.name, profile.arch, remote))
    return targets


# --------------------------------------------------------------------------- locks

def acquire(target: FarmTarget) -> None:
    """Reserve the board before its child starts: a no-op for now.

    Local targets (QEMU, a board on this host's serial port) need no lock,
    and the pytest plugin already holds a RemotePlace target's place for
    the length of its run (xenlab.farm), so taking it here too would
    deadlock.  This is the hook for a reservation that must span more than
    one run (a Test Day's worth); whatever it takes, `release` gives back,
    and the runner calls that on every path out, Ctrl-C included (stale
    locks: labgrid #1739).
    """


def release(target: FarmTarget) -> None:
    """Give back what `acquire` took; must be safe to call after a failed acquire."""


# --------------------------------------------------------------------------- the runner

@attr.s(eq=False)
class BoardRun:
    """One target's pytest child, and what its run.json says so far."""

    target: FarmTarget = attr.ib()
    run_id: str = attr.ib()
    results: Path = attr.ib()
    proc: subprocess.Popen | None = attr.ib(default=None)
    log_path: Path | None = attr.ib(default=None)  # pytest's own output
    started: float | None = attr.ib(default=None)  # monotonic
    ended: float | None = attr.ib(default=None)
    returncode: int | None = attr.ib(default=None)
    snapshot: dict | None = attr.ib(default=None)  # the last run.json read

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

    def read(self) -> dict | None:
        # run.json is replaced atomically after each step: a read sees a whole file or none.
        try:
            self.snapshot = json.loads((self.run_dir / "run.json").read_text())
        except (OSError, ValueError):
            pass
        return self.snapshot

    def status_line(self) -> str:
        return f"{self.target.name:<20} {self.elapsed():6.0f}s  {self.doing()}"

    def doing(self) -> str:
        """What the board is doing, from its run.json: the step in progress or the verdict."""
        d = self.snapshot or {}
        steps = d.get("steps") or []
        if not self.started:
            what = "waiting"
        elif self.done:
            what = d.get("verdict") or f"pytest exited {self.returncode}"
            reason = d.get("verdict_reason")
            if reason and what != "PASS":
                what += f"  {reason}"
        elif not steps:
            what = "preparing (image set, boot plan)"
        else:
            last = steps[-1]
            what = f"step {len(steps)} {last['name']}"
            if last["status"] != "RUNNING":
                what += f" {last['status']}"
        return what


def pytest_command(farm: Path, target: str, results: Path, tester: str, run_id: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "--lg-env", str(farm), str(TESTCASES),
            "--xenlab-target", target, "--xenlab-results", str(results),
            "--xenlab-tester", tester, "--xenlab-run-id", run_id,
            "-p", "no:cacheprovider", "-q"]


class Progress:
    """One line per board: redrawn in place on a terminal, printed on change otherwise."""

    def __init__(self, runs: Sequence[BoardRun], out: TextIO):
        self.runs = runs
        self.out = out
        self.tty = out.isatty()
        self.drawn = 0
        self.last: dict[str, str] = {}

    def update(self, final: bool = False) -> None:
        if self.tty:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}A")  # back to the first board's line
            for run in self.runs:
                self.out.write("\r\x1b[K" + run.status_line() + "\n")
            self.drawn = len(self.runs)
        else:
            for run in self.runs:
                # A log gets a line per change, not per tick.
                doing = run.doing()
                if self.last.get(run.target.name) != doing and (run.started or final):
                    self.out.write(run.status_line() + "\n")
                    self.last[run.target.name] = doing
        self.out.flush()


def health_command(farm: Path, target: str, results: Path, tester: str, run_id: str,
                   depth: str) -> list[str]:
    return [sys.executable, "-m", "xenlab.farm", "health", "--farm", str(farm),
            "--target", target, "--depth", depth, "--results", str(results),
            "--tester", tester, "--run-id", run_id]


def _gate(run: BoardRun, farm: Path, tester: str, depth: str) -> bool:
    """The board health gate (LAVA's health check): boot to U-Boot (or Dom0) first.

    A board that fails it is out of service for this run: its record says
    ERROR, health-check-failed, culprit lab, and no smoke test runs on it, so
    a broken lab never counts as a Xen failure.
    """
    run.started = time.monotonic()
    gate = subprocess.run(health_command(farm, run.target.name, run.results, tester,
                                         run.run_id, depth),
                          cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    from .farm import HEALTH_UNAVAILABLE

    if gate.returncode == HEALTH_UNAVAILABLE and (run.run_dir / "run.json").is_file():
        run.returncode = gate.returncode
        run.ended = time.monotonic()
        run.read()
        return False
    return True  # healthy; a gate that broke itself leaves the verdict to the smoke test


def _start(run: BoardRun, farm: Path, tester: str, logs: Path, health: str = "none") -> None:
    acquire(run.target)
    if health != "none" and not _gate(run, farm, tester, health):
        release(run.target)
        return
    run.log_path = logs / f"{run.target.name}.log"
    with open(run.log_path, "wb") as log:
        # A session of its own: Ctrl-C reaches testday only, which then stops
        # every child the same way (SIGTERM, which the plugin turns into ABORTED).
        run.proc = subprocess.Popen(
            pytest_command(farm, run.target.name, run.results, tester, run.run_id),
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    run.started = time.monotonic()


def _reap(run: BoardRun, tester: str) -> None:
    """The child has ended: release its board and make sure its record has ended too."""
    run.ended = run.ended or time.monotonic()
    release(run.target)
    record_dir = run.run_dir
    if run.log_path and record_dir.is_dir():
        shutil.move(str(run.log_path), record_dir / "pytest.log")
        run.log_path = record_dir / "pytest.log"
    tail = _tail(run.log_path)
    if not (record_dir / "run.json").is_file():
        # pytest died before the plugin wrote a record (farm error, import error):
        # still a row in the table, as a harness ERROR, never a silent gap.
        if record_dir.is_dir():  # killed between mkdir and the first save
            record = RunRecord(path=record_dir, board=run.target.name, run_id=run.run_id,
                               target=run.target.name, arch=run.target.arch, tester=tester,
                               host=socket.gethostname(), start_time=_utc_now())
        else:
            record = RunRecord.start(run.results, run.target.name, target=run.target.name,
                                     arch=run.target.arch, tester=tester, run_id=run.run_id)
            if run.log_path:
                shutil.move(str(run.log_path), record.path / "pytest.log")
                run.log_path = record.path / "pytest.log"
        record.finish(Status.ERROR, f"pytest exited {run.returncode} before the run started"
                      + (f": {tail}" if tail else ""), classification="harness-pytest-exit")
    else:
        record = RunRecord.load(record_dir)
        if record.end_time is None:  # killed too hard for the plugin to close it
            record.abort(f"pytest exited {run.returncode} without ending the run"
                         + (f": {tail}" if tail else ""))
    run.read()


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


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
             out: TextIO = sys.stdout, health: str = "none") -> tuple[list[BoardRun], bool]:
    """Run the smoke test on `targets`, at most `jobs` at a time; (runs, interrupted).

    Every board's run shares one run id, so a Test Day (or a night) is one id
    across the results tree.  Ctrl-C (or SIGTERM) stops every child, waits
    for them to close their records, and returns what there is.
    """
    farm = Path(farm).resolve()
    results = Path(results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    run_id = safe_name(run_id or new_run_id(), "run")
    jobs = max(1, jobs or len(targets))
    # Outside every board directory: a name starting with a dot is no board (NAME_RE).
    logs = results / ".testday" / run_id
    logs.mkdir(parents=True, exist_ok=True)
    runs = [BoardRun(t, run_id, results) for t in targets]
    progress = Progress(runs, out)
    interrupted = False

    def _sigterm(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    old = signal.signal(signal.SIGTERM, _sigterm) if _main_thread() else None
    try:
        while not all(r.done for r in runs):
            for run in runs:
                if run.proc is None and not run.done and \
                        sum(r.proc is not None and not r.done for r in runs) < jobs:
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
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        for run in runs:  # never leave a lock behind, whatever happened
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


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _stop(runs: Sequence[BoardRun], tester: str) -> None:
    for run in runs:
        if run.proc is not None and run.proc.poll() is None:
            run.proc.terminate()
    deadline = time.monotonic() + TERMINATE_WAIT_S
    for run in runs:
        if run.proc is None or run.done:
            continue
        try:
            run.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C: no more waiting
            _kill(run)
        run.returncode = run.proc.returncode
        _reap(run, tester)


def _kill(run: BoardRun) -> None:
    try:
        os.killpg(run.proc.pid, signal.SIGKILL)  # QEMU too, it is in the child's session
    except ProcessLookupError:
        pass
    run.proc.wait()


# --------------------------------------------------------------------------- the table

STATUS_COLOUR = {"PASS": "#cfc", "FAIL": "#fcc", "ERROR": "#fdb", "KNOWN": "#ffc",
                 "SKIP": "#eee", "ABORTED": "#ddd", "RUNNING": "#ddf"}


@attr.s(frozen=True, auto_attribs=True)
class Row:
    board: str
    arch: str
    tester: str
    date: str
    xen: str
    steps: dict  # step name -> status
    verdict: str
    known: tuple  # (label, link) of each KNOWN step, in step order
    log: str  # console.log, relative to the table's directory


def table_rows(records: Iterable[RunRecord], base: Path) -> tuple[list[str], list[Row]]:
    """(step names, rows): steps are the union of the records' steps in first-seen order."""
    steps: list[str] = []
    rows = []
    for r in records:
        for s in r.steps:
            if s.name not in steps:
                steps.append(s.name)
        known = []
        for s in r.steps:
            issue = (s.known.get("label", ""), s.known.get("link", "")) if s.known else None
            if s.status is Status.KNOWN and issue and issue not in known:
                known.append(issue)
        log = r.console_log if r.console_log.exists() or not (r.path / "pytest.log").exists() \
            else r.path / "pytest.log"
        rows.append(Row(board=r.board, arch=r.arch, tester=r.tester, date=r.start_time[:10],
                        xen=r.info.get("xen_version") or "-",
                        steps={s.name: s.status.value for s in r.steps},
                        verdict=r.verdict.value, known=tuple(known),
                        log=os.path.relpath(log, base)))
    return steps, rows


# Mid-line wiki syntax: cell separators, links, templates, bold/italic, signatures,
# header separators.  Line-start syntax (-, *, #, :, =) cannot occur: a cell never
# starts a line.  "__" would start a magic word such as __NOTOC__.
_WIKI_ESC = {c: f"&#{ord(c)};" for c in "|[]{}'~!"}


def _wiki(text: str) -> str:
    # Entities render as the character but never as table or link syntax.
    text = html.escape(" ".join(str(text).split()), quote=False)
    return "".join(_WIKI_ESC.get(c, c) for c in text).replace("__", "&#95;&#95;")


def _md(text: str) -> str:
    text = " ".join(str(text).split()).replace("\\", "\\\\")
    for c in "|*[]`":
        text = text.replace(c, "\\" + c)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _safe_url(link: str) -> str | None:
    return link if link.startswith(("https://", "http://")) and not any(
        c in link for c in " \t\n|[]<>\"") else None


def wiki_table(steps: Sequence[str], rows: Sequence[Row]) -> str:
    head = ["Board", "Arch", "Tester", "Date", "Xen", *steps, "Result", "Known issues", "Log"]
    out = ['{| class="wikitable sortable"', "! " + " !! ".join(_wiki(h) for h in head)]
    for row in rows:
        cells = [_wiki(row.board), _wiki(row.arch), _wiki(row.tester), _wiki(row.date),
                 _wiki(row.xen)]
        for status in [row.steps.get(s, "") for s in steps] + [row.verdict]:
            cells.append(f'style="background:{STATUS_COLOUR[status]}" | {status}'
                         if status in STATUS_COLOUR else "-")
        known = []
        for label, link in row.known:
            url = _safe_url(link)
            known.append(f"[{url} {_wiki(label)}]" if url else _wiki(label))
        cells.append(", ".join(known))
        cells.append(f"<code>{_wiki(row.log)}</code>")  # a wiki cannot link to a local file
        out += ["|-", "| " + " || ".join(cells)]
    out.append("|}")
    return "\n".join(out) + "\n"


def markdown_table(steps: Sequence[str], rows: Sequence[Row]) -> str:
    head = ["Board", "Arch", "Tester", "Date", "Xen", *steps, "Result", "Known issues", "Log"]
    out = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        known = []
        for label, link in row.known:
            url = _safe_url(link)
            known.append(f"[{_md(label)}]({url})" if url else _md(label))
        cells = [_md(row.board), _md(row.arch), _md(row.tester), row.date, _md(row.xen),
                 *[row.steps.get(s, "-") for s in steps], row.verdict, ", ".join(known),
                 f"[{_md(Path(row.log).name)}]({_md(row.log).replace(' ', '%20')})"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_tables(records: Sequence[RunRecord], results: Path, date: str | None = None) \
        -> tuple[Path, Path, str]:
    """Write results/testday-<date>.{wiki,md} (a -2, -3... suffix rather than overwrite)."""
    results = Path(results)
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    steps, rows = table_rows(records, results)
    stem, n = f"testday-{date}", 1
    while (results / f"{stem}.wiki").exists() or (results / f"{stem}.md").exists():
        n += 1
        stem = f"testday-{date}-{n}"
    md = markdown_table(steps, rows)
    (results / f"{stem}.wiki").write_text(wiki_table(steps, rows))
    (results / f"{stem}.md").write_text(md)
    return results / f"{stem}.wiki", results / f"{stem}.md", md


def finished_records(runs: Sequence[BoardRun], *, aborted: bool = True) -> list[RunRecord]:
    """The records of the runs that ended, in farm order (ABORTED ones only if `aborted`)."""
    out = []
    for run in runs:
        if run.started is None or not (run.run_dir / "run.json").is_file():
            continue
        record = RunRecord.load(run.run_dir)
        if record.verdict is not Status.RUNNING and \
                (aborted or record.verdict is not Status.ABORTED):
            out.append(record)
    return out


# --------------------------------------------------------------------------- command

def board_list(text: str | None) -> list[str]:
    if not text:
        return []
    names = [n.strip() for n in text.split(",")]
    for name in names:
        if not name:
            raise XenlabError(f"--boards {text!r}: empty board name")
    return list(dict.fromkeys(names))


def cmd_testday(args, log: Callable[[str], None] = print) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise XenlabError(f"--jobs {args.jobs}: must be at least 1")
    if not args.tester.strip():
        raise XenlabError(f"--tester {args.tester!r}: name who ran the tests")
    targets = load_farm(args.farm, board_list(args.boards))
    results = Path(args.results)
    log(f"Test Day: {len(targets)} board(s) from {args.farm}, tester {args.tester}, "
        f"results in {results}")
    runs, interrupted = run_farm(args.farm, targets, results, args.tester, args.jobs,
                                 health=args.health)
    # After Ctrl-C the runs it stopped have no result to post; a child that
    # died on its own is a result (ABORTED) and stays in the table.
    records = finished_records(runs, aborted=not interrupted)
    if interrupted:
        stopped = [r.target.name for r in runs if r.target.name not in {x.board for x in records}]
        log(f"interrupted: {', '.join(stopped) or 'no board'} left out of the table")
    if not records:
        log("no board finished: no table written")
        return 130 if interrupted else 1
    wiki, md_path, md = write_tables(records, results)
    log("")
    log(md.rstrip())
    log("")
    log(f"wrote {wiki} and {md_path} (paste the .wiki into \"Xen ARM Manual Smoke Test/Results\")")
    if interrupted:
        return 130
    return 0 if all(r.verdict is Status.PASS for r in records) and len(records) == len(runs) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("testday", help="run the smoke test on every farm board in "
                                              "parallel and write the Test Day results table")
    p.add_argument("--farm", default="farm.yaml", help="labgrid env file (default: farm.yaml)")
    p.add_argument("--boards", help="comma-separated targets (default: every XenStrategy target)")
    p.add_argument("--tester", required=True, help="your name, as it goes into the table")
    p.add_argument("--results", default="results", help="results directory (default: results)")
    p.add_argument("--jobs", type=int, help="boards at once (default: all)")
    p.add_argument("--health", default="uboot", choices=["none", "uboot", "dom0"],
                   help="health gate before the smoke test: boot each board this far first; "
                        "one that fails is marked unavailable (ERROR, lab), not run "
                        "(default: uboot)")
    p.set_defaults(func=cmd_testday)
