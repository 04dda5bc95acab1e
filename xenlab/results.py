"""Run records: ``results/<board>/<run-id>/{run.json, console.log, junit.xml, diagnostics/}``.

A `RunRecord` rewrites run.json atomically after every change, so a crash, a
SIGKILL or Ctrl-C at any moment leaves a complete record on disk: the last
state the run reached (RUNNING, or ABORTED with the reason).  The verdict
separates the software under test from the lab (KernelCI's model): FAIL when
Xen, Dom0 or the DomU misbehaved, ERROR when the lab or the harness did.
results/README.md documents every field.

Console transcripts are read here too: `parse_console_facts` finds the
versions that ran, `classify_console` explains a failure from what the
board printed.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import re
import secrets
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import attr
import junit_xml

from .cache import atomic_write
from .monitors import MONITORS, UBOOT_BANNER
from .errors import XenlabError

if TYPE_CHECKING:
    from .known_issues import KnownIssue

SCHEMA_VERSION = 1
RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Status(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"  # Xen, Dom0 or the DomU misbehaved
    ERROR = "ERROR"  # the lab or the harness: power, serial, TFTP, no U-Boot, no image set
    SKIP = "SKIP"  # not run, with a reason
    KNOWN = "KNOWN"  # a FAIL/ERROR that matches a known issue: reported with its label
    RUNNING = "RUNNING"  # run.json written mid-run (or left so by a SIGKILL)
    ABORTED = "ABORTED"  # Ctrl-C, a crash, a killed QEMU: the run did not end normally

    def __str__(self) -> str:
        return self.value


_STEP_RESULTS = (Status.PASS, Status.FAIL, Status.ERROR, Status.SKIP)


def safe_name(value, what: str) -> str:
    """`value` if it is a safe board or run name, else a one-line XenlabError.

    Such names become directory names under the results root, so they must
    never contain a separator, be `.`/`..` or start with a dot or dash.
    """
    # fullmatch: with match(), "$" would let a trailing newline through.
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or value in (".", ".."):
        raise XenlabError(f"{what} name {value!r} must match {NAME_RE.pattern}")
    return value


def _inside(root: Path, *names: str) -> Path:
    """root/names..., refusing anything that resolves outside root (e.g. via a symlink)."""
    base = root.resolve()
    path = base.joinpath(*names).resolve()
    if path == base or base not in path.parents:
        raise XenlabError(f"{'/'.join(names)} resolves to {path}, outside the results root {base}")
    return path


def _now() -> str:
    # Milliseconds: runs started in the same second still sort in order.
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    # The random suffix keeps parallel runs started in the same second apart.
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- the record

@attr.s(auto_attribs=True)
class Step:
    name: str
    status: Status = Status.RUNNING
    started: str = attr.ib(factory=_now)
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


def _json_default(value):
    # A fact of an odd type must never make run.json unwritable for the rest of the run.
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


@attr.s(auto_attribs=True, eq=False)
class RunRecord:
    """One run of one board: what ran, each step's outcome, the verdict."""

    path: Path  # results/<board>/<run-id>
    board: str
    run_id: str
    target: str
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

    # -- files

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def console_log(self) -> Path:
        """Written by the strategy's console recorder; the record only refers to it."""
        return self.path / "console.log"

    @property
    def junit_xml(self) -> Path:
        return self.path / "junit.xml"

    @property
    def diagnostics(self) -> Path:
        return self.path / "diagnostics"

    # -- life cycle

    @classmethod
    def start(cls, root: Path, board: str, *, target: str, arch: str, tester: str | None,
              run_id: str | None = None, info: dict | None = None) -> RunRecord:
        """Create ``root/<board>/<run-id>/`` and write run.json with verdict RUNNING."""
        safe_name(board, "board")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        board_dir = _inside(root, board)
        board_dir.mkdir(exist_ok=True)
        for _ in range(5):
            rid = safe_name(run_id, "run") if run_id is not None else new_run_id()
            path = _inside(root, board, rid)
            try:
                path.mkdir()  # exclusive: two runs can never share a directory
                break
            except FileExistsError:
                if run_id is not None:
                    raise XenlabError(f"run {rid} of board {board} already exists: {path}") from None
        else:
            raise XenlabError(f"could not create a fresh run directory under {board_dir}")
        (path / "diagnostics").mkdir()
        record = cls(path=path, board=board, run_id=rid, target=target, arch=arch,
                     tester=tester, host=socket.gethostname(), start_time=_now(),
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

        With `known`, a FAIL/ERROR becomes KNOWN; the real status stays in
        `original_status` and the issue's id, label, link and culprit in `known`.
        """
        status = Status(status)
        if status not in _STEP_RESULTS:
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
                step.original_status, step.status = status, Status.KNOWN
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
            self.end_time = _now()
            self.save()
            self.write_junit()
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
            now = _dt.datetime.now(_dt.timezone.utc)
            for step in self.steps:
                if step.status is Status.RUNNING:
                    step.status, step.reason = status, reason
                    step.classification = step.classification or "aborted"
                    started = _dt.datetime.fromisoformat(step.started.replace("Z", "+00:00"))
                    step.duration_s = round((now - started).total_seconds(), 3)
            self.verdict, self.verdict_reason, self.classification = Status.ABORTED, reason, "aborted"
            self.end_time = _now()
            self.save()
            self.write_junit()  # an aborted run still shows up in CI

    # -- files on disk

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA_VERSION,
            "board": self.board,
            "target": self.target,
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

    def save(self) -> None:
        with self._lock:
            text = json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"
            atomic_write(self.run_json, text)

    @classmethod
    def load(cls, path: Path | str) -> RunRecord:
        """Read a run directory (or its run.json) back, e.g. for `results show`."""
        path = Path(path)
        file = path / "run.json" if path.is_dir() else path
        try:
            d = json.loads(file.read_text())
        except OSError as e:
            raise XenlabError(f"cannot read run record: {e.strerror}", where=str(file)) from None
        except ValueError as e:
            raise XenlabError(f"not a valid run record ({e})", where=str(file)) from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA_VERSION:
            raise XenlabError(f"unknown run record schema {d.get('schema') if isinstance(d, dict) else None!r}"
                              f" (this xenlab reads {SCHEMA_VERSION})", where=str(file))
        record = cls(path=file.parent, board=d["board"], run_id=d["run_id"], target=d["target"],
                   arch=d["arch"], tester=d["tester"], host=d["host"], start_time=d["start"],
                   end_time=d.get("end"), info=d.get("info") or {},
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
    what = first.known["label"] if first.status is Status.KNOWN and first.known else first.message
    reason = f"{first.name}: {what}" if what else first.name
    later = [s.name for s in bad[1:]]
    if later:
        reason += f" (then {', '.join(later)})"
    return first.status, reason, first.classification


def list_runs(root: Path | str = RESULTS_DIR, board: str | None = None) -> list[RunRecord]:
    """Every readable run under root (or under one board), newest first."""
    root = Path(root)
    if board is not None:
        board_dirs = [root / safe_name(board, "board")]
    else:
        board_dirs = sorted(root.iterdir()) if root.is_dir() else []
    runs = []
    for board_dir in board_dirs:
        if not NAME_RE.fullmatch(board_dir.name) or not board_dir.is_dir():
            continue
        for run_dir in board_dir.iterdir():
            # A directory without run.json was created by a run killed in its first millisecond.
            if NAME_RE.fullmatch(run_dir.name) and (run_dir / "run.json").is_file():
                try:
                    runs.append(RunRecord.load(run_dir))
                except XenlabError:
                    continue
    runs.sort(key=lambda r: (r.start_time, r.run_id), reverse=True)
    return runs


# --------------------------------------------------------------------------- console text

# labgrid's VT100 pattern (labgrid.util.re_vt100), so the recorder and we agree.
_VT100 = re.compile(r"(\x1b\[|\x9b)[^@-_a-z]*[@-_a-z]|\x1b[@-_a-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Prefixes before a message: Xen's "(XEN) ", a guest's "(d1) ", a dom0less
# DomU's "DOM1: ", and "[    1.234567] " timestamps (Linux, Xen's console_timestamps).
_PREFIX = re.compile(r"^(?:\s*(?:\(XEN\)|\(d\d+\)|DOM\d+:|\[\s*\d+\.\d+\]))+\s*")


def clean_lines(text: str) -> list[str]:
    """Console text as lines, without escapes, control characters or blank lines.

    Lines end "\\r\\r\\r\\n" on the Xen console, and typed echo interleaves
    with VT100 queries (`\\x1b[6n`); both are noise to every reader here.
    """
    text = _VT100.sub("", text).replace("\r", "")
    lines = (_CONTROL.sub("", line).rstrip() for line in text.split("\n"))
    return [line for line in lines if line.strip()]


def _body(line: str) -> str:
    return _PREFIX.sub("", line)


_XEN_BANNER = re.compile(r"Xen version (\d+\.\d+[^\s(]*)")
_LINUX = re.compile(r"Linux version (\S+)")
_XL_GUEST = re.compile(r"\bxl\s+(?:-\S+\s+)*(?:create|console)\b")


def parse_console_facts(text: str) -> dict:
    """The versions that really ran, read from a console transcript.

    Keys (only those found): uboot_version, xen_version, xen_changeset,
    xen_build_id, dom0_kernel, domU_kernel.  The first Linux banner after
    Xen's is Dom0's; the DomU's is the next one after an `xl create`/`xl
    console`, or one a dom0less DomU prints through Xen (`(XEN) DOM1: `).
    """
    facts: dict = {}
    xen_seen = xl_seen = False
    for line in clean_lines(text):
        body = _body(line)
        if "uboot_version" not in facts and (m := UBOOT_BANNER.match(body)):
            facts["uboot_version"] = m.group(1)
        elif not xen_seen and (m := _XEN_BANNER.search(body)):
            facts["xen_version"], xen_seen = m.group(1), True
        elif xen_seen and "xen_changeset" not in facts and "Latest ChangeSet:" in body:
            value = body.split("Latest ChangeSet:", 1)[1].strip()
            if value:
                facts["xen_changeset"] = value
        elif xen_seen and "xen_build_id" not in facts and (m := re.search(r"build-id: ([0-9a-f]+)", body)):
            facts["xen_build_id"] = m.group(1)
        elif xen_seen and (m := _LINUX.search(body)):
            if re.search(r"\bDOM\d+:", line) or ("dom0_kernel" in facts and xl_seen):
                facts.setdefault("domU_kernel", m.group(1))
            else:
                facts.setdefault("dom0_kernel", m.group(1))
        elif "dom0_kernel" in facts and _XL_GUEST.search(line):
            xl_seen = True
    return facts


_BOOT_STARTED = re.compile(r"^U-Boot 20\d\d|Starting kernel|^\(XEN\)")
CONTEXT_LINES = 4


def classify_console(text: str, stage: str) -> tuple[Status, str, list[str]] | None:
    """Explain a failure from the console: (status, classification, evidence) or None.

    The earliest matching line wins: what follows a panic (a reset, a
    second banner) is its consequence.  A kernel panic is Dom0's unless the
    stage is a DomU one.  Evidence is the line with a few lines before it.
    """
    guest = "domu" if "domu" in stage.lower() else "dom0"
    lines = clean_lines(text)
    booted = False
    for i, line in enumerate(lines):
        body = _body(line)
        for mon in MONITORS:
            if mon.after_boot and not booted:
                continue
            if mon.regex.search(body):
                evidence = lines[max(0, i - CONTEXT_LINES):i + 1]
                return Status(mon.status), mon.classification.format(guest=guest), evidence
        booted = booted or bool(_BOOT_STARTED.search(line))
    return None


def console_excerpt(path: Path | str, around: str, lines: int = 20) -> str:
    """About `lines` clean console lines around the last one containing `around`.

    Three quarters come before it (what led there), the rest after (a Xen
    panic prints its reason on the line after "Panic on CPU").  Without a
    match, the last `lines` lines.  "" when there is no console log.
    """
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    all_lines = clean_lines(text)
    needle = " ".join(clean_lines(around)).strip()
    hit = next((i for i in range(len(all_lines) - 1, -1, -1)
                if needle and needle in all_lines[i]), None)
    if hit is None:
        return "\n".join(all_lines[-lines:])
    before = lines * 3 // 4
    return "\n".join(all_lines[max(0, hit - before):hit + lines - before])


# --------------------------------------------------------------------------- reports

def junit_report(record: RunRecord) -> str:
    """junit.xml: one suite for the board, one case per step."""
    cases = []
    for step in record.steps:
        case = junit_xml.TestCase(step.name, classname=f"xenlab.{record.board}",
                                  elapsed_sec=step.duration_s or 0.0, timestamp=step.started)
        head = f"[{step.classification}] {step.message}" if step.classification else step.message
        if step.status in (Status.FAIL, Status.ERROR, Status.ABORTED):
            output = "\n".join(step.evidence)
            excerpt = console_excerpt(record.console_log, step.evidence[-1]) if step.evidence else ""
            if excerpt:
                output += f"\n--- console.log around the failure ---\n{excerpt}"
            if step.status is Status.FAIL:
                case.add_failure_info(head or "failed", output, step.classification)
            else:
                case.add_error_info(head or step.reason or step.status.value, output,
                                    step.classification or step.status.value.lower())
        elif step.status is Status.KNOWN:
            known = step.known or {}
            case.add_skipped_info(f"known issue: {known.get('label', '?')} ({known.get('link', '')})",
                                  f"{step.original_status}: {head}\n" + "\n".join(step.evidence))
        elif step.status is Status.SKIP:
            case.add_skipped_info(step.reason or "skipped")
        cases.append(case)
    props = {"run_id": record.run_id, "target": record.target, "arch": record.arch,
             "tester": record.tester, "verdict": record.verdict.value,
             "image_set_hash": record.info.get("image_set_hash"),
             "xen_version": record.info.get("xen_version")}
    suite = junit_xml.TestSuite(record.board, cases, hostname=record.host, id=record.run_id,
                                timestamp=record.start_time,
                                properties={k: str(v) for k, v in props.items() if v is not None})
    return junit_xml.to_xml_report_string([suite], prettyprint=True, encoding="utf-8")


def format_run(record: dict | RunRecord) -> str:
    """`xenlab results show`: the steps as a table, then the verdict."""
    d = record.to_dict() if isinstance(record, RunRecord) else record
    info = d.get("info") or {}
    image_set = info.get("image_set_hash") or "-"
    out = [f"board {d['board']}  run {d['run_id']}  ({d.get('arch', '?')}, {d.get('tester', '?')}"
           f" on {d.get('host', '?')})",
           f"Xen {info.get('xen_version') or '?'}  image set {image_set[:16]}  "
           f"started {d.get('start')}  ended {d.get('end') or '-'}",
           "",
           f"{'step':<24} {'status':<8} {'seconds':>8}  classification"]
    for s in d.get("steps", []):
        secs = "" if s.get("duration_s") is None else f"{s['duration_s']:.1f}"
        cls = s.get("classification") or ""
        if s["status"] == "KNOWN" and s.get("known"):
            cls = f"{cls} — known: {s['known']['label']} ({s['known']['link']})".lstrip(" —")
        elif s["status"] == "SKIP" and s.get("reason"):
            cls = s["reason"]
        out.append(f"{s['name']:<24} {s['status']:<8} {secs:>8}  {cls}".rstrip())
    cls = f" [{d['classification']}]" if d.get("classification") else ""
    why = f": {d['verdict_reason']}" if d.get("verdict_reason") else ""
    out += ["", f"verdict: {d['verdict']}{cls}{why}"]
    return "\n".join(out)
