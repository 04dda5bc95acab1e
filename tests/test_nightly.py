"""The nightly comparison (xenlab.run.compare) on crafted runs, baselines, the summary
(xenlab.reports.nightly) and the command."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import support.fabricate as bench
from xenlab import cli
from xenlab.cli import build_parser
from xenlab.errors import Status, XenlabError
from xenlab.reports.nightly import format_summary
from xenlab.run import compare as nightly
from xenlab.run import runner
from xenlab.run.compare import Change, compare, previous_runs
from xenlab.run.compare import change_between as classify
from xenlab.run.farmfile import FarmTarget
from xenlab.run.record import RunRecord, list_runs

REPO = Path(__file__).resolve().parent.parent


def run(verdict: str, run_id: str = "r", start: str = "2025-01-02T02:00:00.000Z", **kw) -> dict:
    return {"verdict": verdict, "run_id": run_id, "start": start, "verdict_reason": "", **kw}


# --------------------------------------------------------------------------- classify

@pytest.mark.parametrize("before,now,change", [
    ("PASS", "FAIL", Change.REGRESSION),
    ("SKIP", "FAIL", Change.REGRESSION),
    ("KNOWN", "FAIL", Change.REGRESSION),  # the failure is no longer the known one
    ("ERROR", "FAIL", Change.REGRESSION),
    ("FAIL", "FAIL", Change.STILL_FAILING),
    ("FAIL", "KNOWN", Change.STILL_FAILING),
    ("KNOWN", "KNOWN", Change.STILL_FAILING),
    ("PASS", "KNOWN", Change.REGRESSION),  # a known issue explains, it never excuses
    ("SKIP", "KNOWN", Change.REGRESSION),
    ("FAIL", "PASS", Change.FIXED),
    ("KNOWN", "PASS", Change.FIXED),
    ("ERROR", "PASS", Change.PASS),  # the lab recovered: no news about the software
    ("PASS", "PASS", Change.PASS),
    ("PASS", "ERROR", Change.INFRA),  # the lab broke: never a regression
    ("PASS", "ABORTED", Change.INFRA),
    ("FAIL", "ERROR", Change.INFRA),
    ("PASS", "SKIP", Change.SKIP),
])
def test_classify(before, now, change):
    assert classify(run(before), run(now)) is change


def test_classify_new_and_missing():
    assert classify(None, run("FAIL")) is Change.NEW
    assert classify(None, run("ERROR")) is Change.INFRA
    assert classify(run("PASS"), None) is Change.MISSING


# --------------------------------------------------------------------------- compare

def test_compare_every_category_with_osstest_words():
    previous = {"reg": run("PASS", "p-reg"), "still": run("FAIL", "p-still"),
                "fixed": run("FAIL", "p-fixed"), "gone": run("PASS", "p-gone"),
                "lab": run("PASS", "p-lab"), "ok": run("PASS", "p-ok")}
    current = {"reg": run("FAIL", "c-reg"), "still": run("FAIL", "c-still"),
               "fixed": run("PASS", "c-fixed"), "lab": run("ERROR", "c-lab"),
               "ok": run("PASS", "c-ok"), "fresh": run("PASS", "c-fresh")}
    c = compare(previous, current)
    assert [e.target for e in c.entries] == sorted(set(previous) | set(current))
    by = {e.target: e for e in c.entries}
    assert by["reg"].change is Change.REGRESSION and by["reg"].wording() == "REGR. vs. p-reg"
    assert by["still"].change is Change.STILL_FAILING and by["still"].wording() == "fail like p-still"
    assert by["fixed"].change is Change.FIXED and "p-fixed" in by["fixed"].wording()
    assert by["gone"].change is Change.MISSING and by["gone"].current is None
    assert by["fresh"].change is Change.NEW
    assert by["lab"].change is Change.INFRA and "not a regression" in by["lab"].wording()
    assert [e.target for e in c.regressions] == ["reg"]
    assert c.counts()[Change.PASS] == 1


def test_compare_regression_after_known_names_what_it_was():
    c = compare({"b": run("KNOWN", "p1")}, {"b": run("FAIL", "c1")})
    assert c.regressions[0].wording() == "REGR. vs. p1 (was KNOWN)"


def test_a_known_issue_after_a_pass_is_a_regression_naming_the_issue():
    known = {"steps": [{"name": "xen_boots", "status": "KNOWN",
                        "known": {"id": "arm32-gzip-kernel-unaligned", "label": "l", "link": "k",
                                  "culprit": "xen"}}]}
    c = compare({"b": run("PASS", "p1")}, {"b": run("KNOWN", "c1", **known)})
    assert c.regressions[0].wording() == \
        "REGR. vs. p1 (matches known issue arm32-gzip-kernel-unaligned)"
    still = compare({"b": run("FAIL", "p1")}, {"b": run("KNOWN", "c1", **known)}).entries[0]
    assert still.change is Change.STILL_FAILING
    assert still.wording() == "fail like p1 (known issue arm32-gzip-kernel-unaligned)"


def test_compare_accepts_run_records(tmp_path):
    rec = RunRecord.start(tmp_path, "b", arch="arm64", tester="t")
    rec.finish(Status.FAIL, "xen_boots: panic", classification="xen-panic")
    prev = RunRecord.start(tmp_path, "b", arch="arm64", tester="t")
    prev.finish(Status.PASS)
    assert compare({"b": prev}, {"b": rec}).regressions[0].current is rec


def test_compare_is_pure():
    previous, current = {"b": run("PASS")}, {"b": run("FAIL")}
    compare(previous, current)
    assert previous == {"b": run("PASS")} and current == {"b": run("FAIL")}


# --------------------------------------------------------------------------- baselines

def _records(tmp_path, **kw):
    bench.fabricate(tmp_path, **kw)
    return list_runs(tmp_path)


def test_previous_runs_is_each_boards_run_before_the_current(tmp_path):
    history = _records(tmp_path, boards=3, nights=3, retries=False)
    current = nightly.newest_night(history)
    assert {r.start_time[:10] for r in current.values()} == {"2025-01-03"}
    prev = previous_runs(history, current)
    assert set(prev) == {"board-00", "board-01", "board-02"}
    assert all(p.start_time[:10] == "2025-01-02" for p in prev.values())


def test_missing_only_if_it_ran_the_night_before(tmp_path):
    bench.fabricate(tmp_path, boards=3, nights=2, retries=False)  # nights 0, 1
    for d in (tmp_path / "board-02").glob("20250102*"):  # board-02 did not run on night 1
        shutil.rmtree(d)
    bench.fabricate(tmp_path, boards=2, nights=1, first=2, retries=False)  # night 2: boards 0, 1
    history = list_runs(tmp_path)
    current = nightly.newest_night(history)
    assert set(current) == {"board-00", "board-01"}
    # board-02 last ran two nights ago: not "missing" tonight.
    assert "board-02" not in previous_runs(history, current)
    # ...but a board that ran last night and not tonight is.
    del current["board-01"]
    assert "board-01" in previous_runs(history, current)


# --------------------------------------------------------------------------- summary and command

def test_summary_for_a_cron_mail(tmp_path):
    bench.fabricate(tmp_path, boards=3, nights=1, retries=False)
    bench.fabricate(tmp_path, boards=3, nights=1, first=1, retries=False,
                    override={(0, 1): Status.FAIL, (1, 1): Status.ERROR})
    history = list_runs(tmp_path)
    current = nightly.newest_night(history)
    text = format_summary(compare(previous_runs(history, current), current), tmp_path)
    head, *rest = text.splitlines()
    assert head == ("xenlab nightly 2025-01-02: 3 board(s) ran; 1 regression(s), "
                    "1 lab/harness error(s), 1 pass")
    assert "REGRESSIONS" in rest and "LAB / HARNESS ERRORS" in rest
    reg = next(l for l in rest if l.startswith("  board-00"))
    prev_id = next(r.run_id for r in history if r.target == "board-00" and r.start_time < "2025-01-02")
    assert f"REGR. vs. {prev_id}" in reg and "[xen-panic]" in reg
    assert any("log board-00/" in l and l.endswith("console.log") for l in rest)
    assert any(l.startswith("      | ") and "Panic on CPU 0" in l for l in rest)  # excerpt


def _args(*argv):
    return build_parser().parse_args(["nightly", *argv])  # the xenlab command's own parser


def test_cmd_no_run_exits_non_zero_on_regressions(tmp_path, capsys):
    bench.fabricate(tmp_path, boards=2, nights=1, retries=False)
    bench.fabricate(tmp_path, boards=2, nights=1, first=1, retries=False,
                    override={(1, 1): Status.FAIL})
    args = _args("--results", str(tmp_path), "--no-run", "--skip-images")
    assert args.func(args) == 1
    assert "REGR. vs." in capsys.readouterr().out
    # The next night is clean again: "fixed", and exit 0.
    bench.fabricate(tmp_path, boards=2, nights=1, first=2, retries=False,
                    override={(1, 2): Status.PASS})
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "FIXED" in out and "REGR." not in out


def test_a_known_xen_issue_after_a_pass_is_a_regression_the_nightly_exits_on(tmp_path, capsys):
    """Issue 26: PASS, then a FAIL that matches a culprit: xen known issue: REGR., exit 1."""
    bench.fabricate(tmp_path, boards=2, nights=1, retries=False)
    bench.fabricate(tmp_path, boards=2, nights=1, first=1, retries=False,
                    override={(1, 1): Status.KNOWN})
    args = _args("--results", str(tmp_path), "--no-run", "--skip-images")
    assert args.func(args) == 1
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("  board-01"))
    assert "KNOWN" in line and "REGR. vs." in line
    assert f"(matches known issue {bench.KNOWN['id']})" in line
    assert out.index("REGRESSIONS") < out.index("board-01")


def test_cmd_no_run_without_results_is_a_one_line_error(tmp_path):
    args = _args("--results", str(tmp_path / "none"), "--no-run", "--skip-images")
    with pytest.raises(XenlabError, match="no runs under"):
        args.func(args)


FAKE = """\
import sys
from pathlib import Path
from xenlab.run.record import RunRecord
verdict, target, results, tester, run_id = sys.argv[1:]
r = RunRecord.start(Path(results), target, arch="arm64", tester=tester,
                    run_id=run_id)
r.step_finished("xen_boots", verdict, 0.1, classification="xen-panic" if verdict == "FAIL" else None)
r.finish()
"""


def test_cmd_runs_the_farm_and_compares_with_the_night_before(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    bench.fabricate(results, boards=3, nights=1, retries=False)  # last night: all PASS
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    tonight = {"board-00": "PASS", "board-01": "FAIL"}  # board-02 not run: missing
    farm = [FarmTarget(b, "qemu-virt-arm64", "arm64", frozenset(), None) for b in tonight]
    monkeypatch.setattr(cli.commands, "load_farm", lambda path: SimpleNamespace(select=lambda names: farm))
    monkeypatch.setattr(runner, "pytest_command", lambda farm, target, res, tester, rid: [
        sys.executable, str(script), tonight[target], target, str(res), tester, rid])
    monkeypatch.setattr(runner, "POLL_S", 0.05)
    args = _args("--results", str(results), "--skip-images")
    assert args.func(args) == 1
    out = capsys.readouterr().out
    prev = next(r.run_id for r in list_runs(results, "board-01") if r.tester == "nightly"
                and r.start_time.startswith("2025"))
    assert f"board-01             FAIL    REGR. vs. {prev}" in out
    assert "MISSING BOARDS" in out and "board-02" in out.split("MISSING BOARDS")[1]
    assert {r.tester for r in list_runs(results, "board-00")} == {"nightly"}
