"""`xenlab bisect`: from a board's regression to the first bad Xen commit (issue 15).

The end-to-end test bisects a real history: Debian's Xen 4.17.5 and 16 commits
(tests/support/xenrepo.py), one of which makes Xen panic while it constructs
Dom0 and one of which does not compile.  Every probe is a real cross-build and
a real boot of the QEMU board up to `xen_boots`; the bisection is interrupted
with Ctrl-C after its second probe and resumed.  If QEMU or the build cannot
run here, this fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xenlab.errors import Status, XenlabError
from xenlab.reports import dashboard, nightly
from xenlab.run import bisect, compare
from xenlab.run.bisectgit import BisectClone
from xenlab.run.bisectstate import Bisection, read_bisections
from xenlab.run.record import RunRecord, scan_runs
from xenlab.run.steps import Step, compute_verdict

from support.xenrepo import BROKEN_AT, FAULT_AT, make_history

REPO = Path(__file__).resolve().parent.parent
XENLAB = [sys.executable, "-m", "xenlab.cli"]


def xenlab(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*XENLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def one_line(proc: subprocess.CompletedProcess, *wanted: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(w in lines[0] for w in wanted), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def small_repo(tmp_path_factory) -> tuple[Path, dict]:
    """A git repository with a fork: main a-b-c, side branch off a."""
    repo = tmp_path_factory.mktemp("small") / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    shas = {}
    for name in ("a", "b", "c"):
        (repo / "f").write_text(name)
        subprocess.run([*git, "add", "f"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", name], check=True)
        shas[name] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    subprocess.run([*git, "checkout", "-q", "-b", "side", shas["a"]], check=True)
    (repo / "g").write_text("side")
    subprocess.run([*git, "add", "g"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "side"], check=True)
    shas["side"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return repo, shas


@pytest.mark.parametrize("case,expect", [
    ("rev-missing", ("--good nosuchrev: no such commit in",)),
    ("same", ("--good and --bad are the same commit", "nothing to bisect")),
    ("not-ancestor", ("is not an ancestor of --bad",)),
    ("not-git", ("is not a git repository",)),
    ("option-as-rev", ("--bad '--upload-pack=x' is not a revision",)),
    ("unknown-step", ("--step xen_bots: no such step in the dom0 smoke test", "xen_boots")),
])
def test_bad_input_is_one_line(small_repo, tmp_path, case, expect):
    repo, shas = small_repo
    good, bad, tree, step = shas["a"], shas["c"], str(repo), []
    if case == "rev-missing":
        good = "nosuchrev"
    elif case == "same":
        good = bad = "main"
    elif case == "not-ancestor":
        good, bad = shas["side"], shas["c"]
    elif case == "not-git":
        tree = str(tmp_path)
    elif case == "option-as-rev":
        bad = "--upload-pack=x"
    elif case == "unknown-step":
        step = ["--step", "xen_bots"]
    proc = xenlab("bisect", "--xen-source", tree, f"--good={good}", f"--bad={bad}", "--target", "qemu-arm64",
                  "--results", str(tmp_path / "results"), *step)
    one_line(proc, *expect)
    assert not (tmp_path / "results" / ".bisect").exists()  # refused before anything started


def test_resume_and_from_need_what_they_name(tmp_path):
    one_line(xenlab("bisect", "--resume", "bisect-nope", "--results", str(tmp_path)),
             "no bisection bisect-nope under")
    one_line(xenlab("bisect", "--from", "20260101T000000Z-abcdef", "--results", str(tmp_path)),
             "--from 20260101T000000Z-abcdef: no such run under")
    one_line(xenlab("bisect", "--good", "a", "--results", str(tmp_path)),
             "give --xen-source, --bad, --target")


def test_skips_that_leave_git_undecided_give_every_candidate(small_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("XENLAB_CACHE", str(tmp_path / "cache"))
    repo, shas = small_repo
    with BisectClone(repo, (shas["a"], shas["c"])) as clone:
        said = clone.start(shas["a"], shas["c"])
        assert clone.outcome(said) is None and clone.head() == shas["b"]
        said = clone.mark(shas["b"], "skip")
        assert clone.outcome(said) == [shas["b"], shas["c"]]  # as git bisect lists them
        said = clone.start(shas["a"], shas["c"], [(shas["b"], "good")])  # a resumed bisection
        assert clone.outcome(said) == [shas["c"]]
    assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True,
                          text=True).stdout == ""


# --------------------------------------------------------------------------- verdicts

def _record(root: Path, target: str, run_id: str, start: str, steps: list[Step],
            xen_build: dict | None = None, **info) -> RunRecord:
    r = RunRecord(path=root / target / run_id, target=target, profile="qemu-virt-arm64", run_id=run_id,
                  arch="arm64", tester="t", host="h", start_time=start, end_time=start,
                  info={"xen_build": xen_build, **info}, steps=steps)
    r.verdict, r.verdict_reason, r.classification = compute_verdict(steps)
    r.path.mkdir(parents=True)
    r.save(durable=False)
    r.console_log.write_text("(XEN) Xen version 4.17.5\n(XEN) Panic on CPU 0:\n(XEN) it broke\n")
    return r


def _steps(*spec) -> list[Step]:
    return [Step(name, Status(status), "2026-12-01T00:00:00Z", 1.0, cls, evidence=["(XEN) it broke"] if cls else [])
            for name, status, cls in spec]


def test_judge_says_good_bad_or_the_labs(tmp_path):
    def judged(*spec, step="xen_boots", expected="xen-panic"):
        r = _record(tmp_path, "t", f"r{len(list(tmp_path.glob('t/*')))}", "2026-12-01T00:00:00Z", _steps(*spec))
        return bisect.judge(r, step, expected)[:2]

    assert judged(("uboot", "PASS", None), ("xen_boots", "PASS", None)) == ("good", "xen_boots PASS")
    assert judged(("uboot", "PASS", None), ("xen_boots", "FAIL", "xen-panic"))[0] == "bad"
    verdict, why = judged(("uboot", "PASS", None), ("xen_boots", "FAIL", "xen-silent"))
    assert verdict == "bad" and "not [xen-panic] as bisected" in why  # bad, the difference noted
    verdict, why = judged(("uboot", "FAIL", "uboot-reset"), ("xen_boots", "SKIP", None))
    assert verdict == "bad" and why.endswith("before xen_boots")
    assert judged(("uboot", "ERROR", "tftp-timeout"), ("xen_boots", "SKIP", None))[0] == "error"
    assert bisect.judge(None, "xen_boots", None)[0] == "error"


# --------------------------------------------------------------------------- from a regression

GIT_BUILD = {"kind": "git", "tree": "/src/xen", "config_fragments": ["debug"], "patches": [],
             "version": "4.17.5", "config": "debug"}


def _nights(root: Path, good_build: dict, bad_build: dict):
    _record(root, "qemu-arm64", "20261201T020000Z-aaaaaa", "2026-12-01T02:00:00Z",
            _steps(("uboot", "PASS", None), ("xen_boots", "PASS", None)), good_build)
    bad = _record(root, "qemu-arm64", "20261202T020000Z-bbbbbb", "2026-12-02T02:00:00Z",
                  _steps(("uboot", "PASS", None), ("xen_boots", "FAIL", "xen-panic")), bad_build)
    return bad, scan_runs(root)[0]


def test_a_regression_gives_the_range_target_and_step(tmp_path):
    bad, history = _nights(tmp_path, dict(GIT_BUILD, commit="1" * 40), dict(GIT_BUILD, commit="2" * 40))
    req = bisect.from_regression(bad, history)
    assert (req.good, req.bad, req.tree, req.target) == ("1" * 40, "2" * 40, Path("/src/xen"), "qemu-arm64")
    assert (req.step, req.classification, req.configs, req.from_run) == \
        ("xen_boots", "xen-panic", ("debug",), "20261202T020000Z-bbbbbb")
    # A probe of an earlier bisection is never the night before.
    _record(tmp_path, "qemu-arm64", "bisect-x-p01", "2026-12-01T12:00:00Z",
            _steps(("uboot", "PASS", None), ("xen_boots", "PASS", None)), dict(GIT_BUILD, commit="3" * 40),
            bisection={"id": "bisect-x", "commit": "3" * 40, "probe": 1})
    assert bisect.from_regression(bad, scan_runs(tmp_path)[0]).good == "1" * 40


@pytest.mark.parametrize("good_build,expect", [
    ({"kind": "debian-package", "version": "4.17.5"}, "was not built from a git tree (debian-package)"),
    (dict(GIT_BUILD, commit="1" * 40, tree="/src/other"), "bisect one tree"),
    (dict(GIT_BUILD, commit="1" * 40, config_fragments=[]), "config differs"),
])
def test_a_regression_that_cannot_be_bisected_is_one_line(tmp_path, good_build, expect):
    bad, history = _nights(tmp_path, good_build, dict(GIT_BUILD, commit="2" * 40))
    with pytest.raises(XenlabError, match=re.escape(expect)):
        bisect.from_regression(bad, history)
    # nightly --bisect says why, for each regression it leaves alone
    comparison = compare.compare(compare.previous_runs(history, {bad.lane: bad}), {bad.lane: bad})
    (line,) = bisect.bisect_regressions(comparison, history, REPO / "farm.yaml", tmp_path, "t")
    assert line.startswith("qemu-arm64: not bisected: ") and expect in line


def test_a_regression_whose_kernel_fails_without_xen_too_is_not_bisected(tmp_path):
    """Seed §7: the same Dom0 kernel fails on the bare board: not Xen's to bisect."""
    bad, history = _nights(tmp_path, dict(GIT_BUILD, commit="1" * 40), dict(GIT_BUILD, commit="2" * 40))
    bad.set_info(native={"result": "fails", "console": "native-console.log"})
    comparison = compare.compare(compare.previous_runs(history, {bad.lane: bad}), {bad.lane: bad})
    (line,) = bisect.bisect_regressions(comparison, history, REPO / "farm.yaml", tmp_path, "t")
    assert line == ("qemu-arm64: not bisected: its Dom0 kernel fails without Xen too "
                    "(native: fails)")


def test_the_bisection_shows_beside_its_regression(tmp_path):
    results = tmp_path / "results"
    bad, history = _nights(results, dict(GIT_BUILD, commit="1" * 40), dict(GIT_BUILD, commit="2" * 40))
    b = Bisection.new(results, id="bisect-shown", tree="/src/xen", good="1" * 40, bad="2" * 40,
                      target="qemu-arm64", variant=None, step="xen_boots", classification="xen-panic",
                      configs=["debug"], fixes=[], from_run=bad.run_id)
    b.probes.append({"n": 1, "commit": "3" * 40, "subject": "xen: <b>bold</b>", "verdict": "bad",
                     "why": "xen_boots FAIL [xen-panic]", "run_id": "bisect-shown-p01", "build_s": 9.0,
                     "boot_s": 6.0, "build_log": None})
    b.data.update(status="done", first_bad={"commit": "3" * 40, "subject": "xen: <b>bold</b>",
                                            "author_date": "2026-11-11T12:00:00+00:00", "excerpt": "(XEN) Panic"})
    b.save()
    out = tmp_path / "site"
    dashboard.build(results, out)
    index = (out / "index.html").read_text()
    assert "bisected: first bad commit" in index and 'href="bisect/bisect-shown.html"' in index
    assert "<b>bold</b>" not in index and "&lt;b&gt;bold&lt;/b&gt;" in index  # escaped
    page = (out / "bisect" / "bisect-shown.html").read_text()
    assert "3" * 40 in page and 'href="../runs/qemu-arm64/bisect-shown-p01.html"' in page
    comparison = compare.compare(compare.previous_runs(history, {bad.lane: bad}), {bad.lane: bad})
    mail = nightly.format_summary(comparison, results, (), read_bisections(results)[0])
    assert f"bisection bisect-shown: first bad commit {'3' * 40} xen: <b>bold</b>" in mail
    # A damaged bisect.json is one line on the index, never a broken dashboard.
    (results / ".bisect" / "bisect-shown" / "bisect.json").write_text('{"schema": 1, "id": 3}')
    dashboard.build(results, out)
    assert "bisect.json: key" in (out / "index.html").read_text()


# --------------------------------------------------------------------------- end to end

def _wait_for_probes(state: Path, n: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(json.loads(state.read_text())["probes"]) >= n:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no {n} probes in {state} within {timeout:.0f} s: {proc.poll()}")


def test_bisect_finds_the_injected_fault_interrupted_and_resumed(tmp_path):
    tree = tmp_path / "xen"
    shas = make_history(tree)
    results = tmp_path / "results"
    args = ["--results", str(results)]
    proc = subprocess.Popen([*XENLAB, "bisect", "--xen-source", str(tree), "--good", shas[0], "--bad", "HEAD",
                             "--target", "qemu-arm64", "--step", "xen_boots", "--id", "bisect-e2e", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = results / ".bisect" / "bisect-e2e" / "bisect.json"
    try:
        _wait_for_probes(state, 2, proc, 900)
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C, during the third probe's build or boot
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    stopped = Bisection.load(results, "bisect-e2e")
    assert stopped.data["status"] == "interrupted" and len(stopped.probes) == 2
    assert "xenlab bisect --resume bisect-e2e" in out
    resumed = xenlab("bisect", "--resume", "bisect-e2e", *args)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    done = Bisection.load(results, "bisect-e2e")
    d = done.data
    print(resumed.stdout)  # the probe times, for the log
    assert d["status"] == "done" and d["first_bad"]["commit"] == shas[FAULT_AT], resumed.stdout
    assert d["first_bad"]["subject"] == "xen/arm: construct Dom0 differently (the injected fault)"
    assert "injected fault while constructing Dom0" in d["first_bad"]["excerpt"]
    assert d["classification"] == "xen-panic"
    # The fixed history bisects the same way every time (support/xenrepo.py): c8 good,
    # c12 skip (it does not build), c10 bad, c9 good: 4 probes, interrupted or not.
    assert [(shas.index(p["commit"]), p["verdict"]) for p in done.probes] == \
        [(8, "good"), (BROKEN_AT, "skip"), (FAULT_AT, "bad"), (9, "good")], done.probes
    skipped = [p for p in done.probes if p["verdict"] == "skip"]
    assert [p["commit"] for p in skipped] == [shas[BROKEN_AT]]  # the commit that does not build
    log = done.dir / skipped[0]["build_log"]
    assert "this is not C" in log.read_text() and "does not build" in skipped[0]["why"]
    assert f"first bad commit: {shas[FAULT_AT]}" in resumed.stdout and "probe time: median" in resumed.stdout
    for p in done.probes:
        if p["verdict"] == "skip":
            continue
        record = RunRecord.load(results / "qemu-arm64" / p["run_id"])
        assert record.info["bisection"] == {"id": "bisect-e2e", "commit": p["commit"], "probe": p["n"]}
        assert record.info["xen_build"]["commit"] == p["commit"]
        assert [s.name for s in record.steps] == ["uboot", "xen_boots"]  # up to the bisected step
        assert record.lane == "qemu-arm64 [bisect]"  # never a night's baseline
    assert subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], capture_output=True,
                          text=True).stdout == ""  # the tester's tree is never touched
    again = xenlab("bisect", "--resume", "bisect-e2e", *args)
    one_line(again, "bisection bisect-e2e is done already: first bad commit")


# --------------------------------------------------------------------------- hostile state files

@pytest.mark.parametrize("kind,why", [
    ("fifo", "cannot read bisection state: not a regular file"),
    ("deep", "not valid JSON (maximum recursion depth exceeded"),
    ("huge", "cannot read bisection state: larger than 16 MiB"),
])
def test_a_hostile_bisection_state_is_one_line_for_resume_and_listed_by_the_dashboard(
        tmp_path, kind, why):
    """Issue 28: a FIFO (which would block a reader for ever), a 200,000-deep nesting and a
    file larger than any state: one line and exit 2 for --resume within seconds, and the
    dashboard builds and lists the file as unreadable."""
    results = tmp_path / "results"
    state = results / ".bisect" / kind / "bisect.json"
    state.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(state)
    elif kind == "deep":
        state.write_text("[" * 200_000 + "]" * 200_000)
    else:
        with state.open("wb") as f:
            f.truncate(17 << 20)
    # A FIFO or a runaway parse would hang: each command has 30 s, a hang fails it.
    resume = subprocess.run([*XENLAB, "bisect", "--resume", kind, "--results", str(results)],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    one_line(resume, str(state), why)
    built = subprocess.run([*XENLAB, "dashboard", "--results", str(results), "--out",
                            str(tmp_path / "dash")], cwd=REPO, capture_output=True, text=True,
                           timeout=30)
    assert built.returncode == 0 and "Traceback" not in built.stderr, built.stderr
    index = (tmp_path / "dash" / "index.html").read_text()
    assert why.split(" (")[0] in index and kind in index


def test_a_bisection_without_its_optional_keys_is_read_and_shown(tmp_path):
    """A schema-valid state without variant, from_run, started, ...: its page is built."""
    results = tmp_path / "results"
    state = results / ".bisect" / "bare" / "bisect.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"schema": 1, "id": "bare", "tree": "/src/xen", "good": "a" * 40,
                                 "bad": "b" * 40, "target": "qemu-arm64", "step": "xen_boots",
                                 "status": "done", "probes": []}))
    (b,) = read_bisections(results)[0]
    assert b.data["variant"] is None and b.data["from_run"] is None and b.data["candidates"] == []
    built = subprocess.run([*XENLAB, "dashboard", "--results", str(results), "--out",
                            str(tmp_path / "dash")], cwd=REPO, capture_output=True, text=True,
                           timeout=30)
    assert built.returncode == 0 and "Traceback" not in built.stderr, built.stderr
    assert "/src/xen" in (tmp_path / "dash" / "bisect" / "bare.html").read_text()
