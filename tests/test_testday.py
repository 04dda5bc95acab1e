"""The Test Day runner and its wiki table (xenlab.testday).

The table is checked against the records it came from (fabricated runs of
every verdict); the runner against fake pytest children (Ctrl-C, a child
that ignores SIGTERM, one that dies before writing a record) and once for
real: `xenlab testday` boots the QEMU board.
"""

from __future__ import annotations

import _thread
import importlib.util
import io
import re
import shutil
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from xenlab.cli import build_parser
from xenlab import testday
from xenlab.errors import XenlabError
from xenlab.results import RunRecord, Status, list_runs
from xenlab.testday import FarmTarget

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_dashboard", REPO / "bench" / "dashboard.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _args(*argv):
    return build_parser().parse_args(["testday", *argv])  # the xenlab command's own parser


def md_rows(md: str) -> tuple[list[str], list[dict]]:
    """The Markdown table back as dicts (cells split on unescaped pipes)."""
    lines = md.strip().splitlines()

    def cells(line):
        return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    head = cells(lines[0])
    assert set(lines[1]) <= set("|-")
    return head, [dict(zip(head, cells(l), strict=True)) for l in lines[2:]]


# --------------------------------------------------------------------------- the table

@pytest.fixture
def records(tmp_path):
    verdicts = {0: Status.PASS, 1: Status.FAIL, 2: Status.ERROR, 3: Status.KNOWN, 4: Status.PASS}
    bench.fabricate(tmp_path, boards=5, nights=1, retries=False,
                    override={(b, 0): v for b, v in verdicts.items()})
    runs = sorted(list_runs(tmp_path), key=lambda r: r.board)
    assert [r.verdict for r in runs] == list(verdicts.values())
    return runs


def test_markdown_rows_match_the_records(records, tmp_path):
    wiki, md_path, md = testday.write_tables(records, tmp_path, date="2025-01-01")
    assert md_path == tmp_path / "testday-2025-01-01.md" and md_path.read_text() == md
    head, rows = md_rows(md)
    steps = [s.name for s in records[0].steps]
    assert head == ["Board", "Arch", "Tester", "Date", "Xen", *steps, "Result", "Known issues", "Log"]
    for record, row in zip(records, rows, strict=True):
        assert row["Board"] == record.board and row["Arch"] == record.arch
        assert row["Tester"] == record.tester and row["Date"] == record.start_time[:10]
        assert row["Xen"] == record.info["xen_version"]
        assert row["Result"] == record.verdict.value
        assert [row[s.name] for s in record.steps] == [s.status.value for s in record.steps]
        log = re.fullmatch(r"\[console\.log\]\((.+)\)", row["Log"]).group(1)
        assert (tmp_path / log).resolve() == record.console_log.resolve()
        if record.verdict is Status.KNOWN:
            assert row["Known issues"] == f"[{bench.KNOWN['label']}]({bench.KNOWN['link']})"
        else:
            assert row["Known issues"] == ""


def test_wiki_rows_match_the_records(records, tmp_path):
    wiki, _, _ = testday.write_tables(records, tmp_path, date="2025-01-01")
    text = wiki.read_text()
    assert text.startswith('{| class="wikitable sortable"\n! Board !! Arch') and text.endswith("|}\n")
    rows = [l[2:].split(" || ") for l in text.splitlines() if l.startswith("| ")]
    assert len(rows) == len(records)
    n_steps = len(records[0].steps)
    for record, cells in zip(records, rows, strict=True):
        assert cells[:5] == [record.board, record.arch, record.tester, record.start_time[:10],
                             "4.17.5"]
        statuses = [c.split(" | ")[-1] for c in cells[5:5 + n_steps + 1]]
        assert statuses == [s.status.value for s in record.steps] + [record.verdict.value]
        assert cells[-1] == f"<code>{record.board}/{record.run_id}/console.log</code>"
    known = rows[3][-2]
    assert known == f"[{bench.KNOWN['link']} {bench.KNOWN['label']}]"
    assert 'style="background:#fcc" | FAIL' in text


def test_steps_are_the_union_in_first_seen_order(tmp_path):
    a = RunRecord.start(tmp_path, "a", target="a", arch="arm64", tester="t")
    for name in ("uboot", "xen_boots"):
        a.step_finished(name, "PASS", 1)
    a.finish()
    b = RunRecord.start(tmp_path, "b", target="b", arch="arm32", tester="t")
    for name in ("uboot", "extra", "xen_boots"):
        b.step_finished(name, "PASS", 1)
    b.finish()
    steps, rows = testday.table_rows([a, b], tmp_path)
    assert steps == ["uboot", "xen_boots", "extra"]
    _, md = md_rows(testday.markdown_table(steps, rows))
    assert md[0]["extra"] == "-" and md[1]["extra"] == "PASS"
    assert md[0]["Xen"] == "-"  # never booted far enough to say: no guess


def test_cells_cannot_break_either_table(tmp_path):
    nasty = "Ann | Bob [[x]] {{tpl}} '''b''' ~~~~ __NOTOC__ <b>*x*</b>\nnext"
    r = RunRecord.start(tmp_path, "b", target="b", arch="arm64", tester=nasty)
    r.step_finished("uboot", "PASS", 1)
    r.finish()
    steps, rows = testday.table_rows([r], tmp_path)
    head, md = md_rows(testday.markdown_table(steps, rows))
    assert len(md[0]) == len(head) and md[0]["Result"] == "PASS"
    assert "<b>" not in md[0]["Tester"] and "\n" not in md[0]["Tester"]
    wiki = testday.wiki_table(steps, rows)
    row = next(l for l in wiki.splitlines() if l.startswith("| "))
    assert len(row[2:].split(" || ")) == 5 + 1 + 1 + 2
    for syntax in ("[[", "{{", "'''", "~~~", "__NOTOC", "<b>", " | Bob"):
        assert syntax not in row


def test_tables_are_not_overwritten(records, tmp_path):
    first = testday.write_tables(records, tmp_path, date="2025-01-01")
    second = testday.write_tables(records[:1], tmp_path, date="2025-01-01")
    assert first[0].name == "testday-2025-01-01.wiki"
    assert second[0].name == "testday-2025-01-01-2.wiki"


# --------------------------------------------------------------------------- the farm

def test_load_farm_reads_targets_and_arch():
    from xenlab.boards import load_profile

    targets = testday.load_farm(REPO / "farm.yaml")
    assert FarmTarget("qemu-arm64", "qemu-virt-arm64", "arm64", False) in targets
    assert all(t.arch == load_profile(t.board).arch for t in targets)
    assert testday.load_farm(REPO / "farm.yaml", ["qemu-arm64"]) == \
        [FarmTarget("qemu-arm64", "qemu-virt-arm64", "arm64", False)]


def test_load_farm_errors_are_one_line(tmp_path):
    with pytest.raises(XenlabError, match=r"--boards nope: no XenStrategy target .*qemu-arm64"):
        testday.load_farm(REPO / "farm.yaml", ["nope"])
    with pytest.raises(XenlabError, match="farm file .*missing.yaml not found"):
        testday.load_farm(tmp_path / "missing.yaml")


def test_remote_targets_are_flagged_for_locks(tmp_path):
    farm = tmp_path / "farm.yaml"
    farm.write_text(textwrap.dedent("""\
        targets:
          lab-rpi4:
            resources:
              RemotePlace: {name: rpi4-1}
            drivers:
              - XenStrategy: {board: rpi4}
          lab-zcu:
            options: {xenlab_board: zcu102}
            resources:
              board: {cls: RemotePlace, name: zcu102-1}
            drivers: {XenStrategy: {}}
          other:
            drivers: {ShellDriver: {}}
        """))
    assert testday.load_farm(farm) == [FarmTarget("lab-rpi4", "rpi4", "arm64", True),
                                       FarmTarget("lab-zcu", "zcu102", "arm64", True)]


def test_bad_options_are_one_line_errors():
    with pytest.raises(XenlabError, match="--jobs 0"):
        testday.cmd_testday(_args("--tester", "x", "--jobs", "0"))
    with pytest.raises(XenlabError, match="--boards 'a,,b': empty"):
        testday.cmd_testday(_args("--tester", "x", "--boards", "a,,b"))


# --------------------------------------------------------------------------- the runner

FAKE = textwrap.dedent("""\
    import os, signal, sys, time
    from pathlib import Path
    from xenlab.results import RunRecord
    mode, target, results, tester, run_id = sys.argv[1:]
    if mode == "crash":
        print("ERROR: the farm file is broken"); sys.exit(4)
    r = RunRecord.start(Path(results), target, target=target, arch="arm64", tester=tester,
                        run_id=run_id) if mode != "early" else None
    if r: r.set_info(xen_version="4.17.5")
    if mode in ("pass", "fail"):
        r.step_finished("uboot", "PASS", 0.1)
        r.step_finished("xen_boots", "PASS" if mode == "pass" else "FAIL", 0.2)
        r.finish(); sys.exit(0 if mode == "pass" else 1)
    if mode == "early":  # killed between the run directory's mkdir and its first save
        (Path(results) / target / run_id).mkdir(parents=True); os.kill(os.getpid(), signal.SIGKILL)
    if mode == "die":  # the OOM killer, say: no chance to close the record
        r.step_started("uboot"); os.kill(os.getpid(), signal.SIGKILL)
    def term(signum, frame):
        r.abort("SIGTERM"); sys.exit(2)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else term)
    r.step_started("uboot")
    time.sleep(60)
    """)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Targets whose "pytest" is FAKE in the mode named by the target."""
    script = tmp_path / "fake_pytest.py"
    script.write_text(FAKE)

    def command(farm, target, results, tester, run_id):
        return [sys.executable, str(script), target.split("-")[0], target, str(results), tester,
                run_id]
    monkeypatch.setattr(testday, "pytest_command", command)
    monkeypatch.setattr(testday, "POLL_S", 0.05)
    monkeypatch.setattr(testday, "TERMINATE_WAIT_S", 1.0)
    locks = []
    monkeypatch.setattr(testday, "acquire", lambda t: locks.append(("acquire", t.name)))
    monkeypatch.setattr(testday, "release", lambda t: locks.append(("release", t.name)))

    def targets(*names):
        return [FarmTarget(n, "qemu-virt-arm64", "arm64", False) for n in names]
    targets.locks = locks
    targets.farm = script  # any existing file: the fake never reads it
    return targets


def test_runner_records_every_board_and_reports_progress(fake, tmp_path):
    out = io.StringIO()
    runs, interrupted = testday.run_farm(fake.farm, fake("pass-a", "fail-b", "crash-c"),
                                         tmp_path / "res", "Tess", jobs=2, out=out)
    assert not interrupted
    verdicts = {r.target.name: RunRecord.load(r.run_dir).verdict for r in runs}
    assert verdicts == {"pass-a": Status.PASS, "fail-b": Status.FAIL, "crash-c": Status.ERROR}
    assert len({r.run_id for r in runs}) == 1  # one Test Day, one run id
    crashed = RunRecord.load(runs[2].run_dir)
    assert crashed.classification == "harness-pytest-exit"
    assert "pytest exited 4" in crashed.verdict_reason and "farm file is broken" in crashed.verdict_reason
    assert (runs[2].run_dir / "pytest.log").is_file()
    assert sorted(fake.locks) == sorted([(a, n) for n in ("pass-a", "fail-b", "crash-c")
                                         for a in ("acquire", "release")])
    lines = out.getvalue().splitlines()
    assert any(l.startswith("pass-a") and l.endswith("PASS") for l in lines)
    assert any(l.startswith("fail-b") and "FAIL" in l and "xen_boots" in l for l in lines)
    assert not any("\r" in l or "\x1b" in l for l in lines)  # not a tty: plain lines
    assert not (tmp_path / "res" / ".testday").exists()


def test_ctrl_c_stops_children_and_keeps_what_finished(fake, tmp_path, capsys, monkeypatch):
    results = tmp_path / "res"
    monkeypatch.setattr(testday, "load_farm",
                        lambda farm, names: fake("pass-a", "hang-b", "stubborn-c"))
    timer = threading.Timer(2.0, _thread.interrupt_main)
    timer.start()
    try:
        code = testday.cmd_testday(_args("--farm", str(fake.farm), "--tester", "T",
                                         "--results", str(results)))
    finally:
        timer.cancel()
    assert code == 130
    records = {r.board: r for r in list_runs(results)}
    assert records["pass-a"].verdict is Status.PASS
    assert records["hang-b"].verdict is Status.ABORTED  # the child closed it on SIGTERM
    assert records["hang-b"].verdict_reason == "SIGTERM"
    # Killed after the grace period: testday closed the record for it.
    assert records["stubborn-c"].verdict is Status.ABORTED
    assert "without ending the run" in records["stubborn-c"].verdict_reason
    out = capsys.readouterr().out
    assert "interrupted: hang-b, stubborn-c left out of the table" in out
    _, rows = md_rows(next(results.glob("testday-*.md")).read_text())
    assert [r["Board"] for r in rows] == ["pass-a"]
    assert sorted(a for a, _ in fake.locks) == ["acquire"] * 3 + ["release"] * 3


def test_a_child_that_dies_is_an_aborted_row(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(testday, "load_farm", lambda farm, names: fake("pass-a", "die-b"))
    results = tmp_path / "res"
    code = testday.cmd_testday(_args("--farm", str(fake.farm), "--tester", "T",
                                     "--results", str(results)))
    assert code == 1
    _, rows = md_rows(next(results.glob("testday-*.md")).read_text())
    assert [(r["Board"], r["Result"], r["uboot"]) for r in rows] == \
        [("pass-a", "PASS", "PASS"), ("die-b", "ABORTED", "ABORTED")]
    (died,) = list_runs(results, "die-b")
    assert "pytest exited -9 without ending the run" in died.verdict_reason


def test_a_child_killed_before_its_first_save_is_an_error_row(fake, tmp_path):
    runs, _ = testday.run_farm(fake.farm, fake("early-a"), tmp_path, "T", out=io.StringIO())
    record = RunRecord.load(runs[0].run_dir)
    assert record.verdict is Status.ERROR and record.classification == "harness-pytest-exit"


def test_exit_status_is_non_zero_unless_every_board_passes(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(testday, "load_farm", lambda farm, names: fake("pass-a", "pass-b"))
    args = _args("--farm", str(fake.farm), "--tester", "T", "--results", str(tmp_path / "1"))
    assert testday.cmd_testday(args) == 0
    monkeypatch.setattr(testday, "load_farm", lambda farm, names: fake("pass-a", "fail-b"))
    args = _args("--farm", str(fake.farm), "--tester", "T", "--results", str(tmp_path / "2"))
    assert testday.cmd_testday(args) == 1


# --------------------------------------------------------------------------- for real

@pytest.mark.skipif(shutil.which("qemu-system-aarch64") is None, reason="needs qemu-system-aarch64")
def test_testday_boots_the_qemu_boards(tmp_path, capsys):
    """`xenlab testday --farm farm.yaml --tester "New User"`: both QEMU boards, in parallel."""
    results = tmp_path / "results"
    args = _args("--farm", str(REPO / "farm.yaml"), "--tester", "New User",
                 "--results", str(results))
    code = testday.cmd_testday(args)
    out = capsys.readouterr().out
    records = {r.board: r for r in list_runs(results)}
    assert sorted(records) == ["qemu-arm32", "qemu-arm64"]
    assert code == 0, out + " / ".join(RunRecord.load(r.path).verdict_reason
                                       for r in records.values())
    md = next(results.glob("testday-*.md")).read_text()
    assert md in out  # printed, too
    head, rows = md_rows(md)
    assert len(rows) == 2
    wiki = next(results.glob("testday-*.wiki")).read_text()
    for row in rows:
        record = records[row["Board"]]
        assert record.tester == "New User" and record.verdict is Status.PASS
        assert (record.path / "console.log").stat().st_size > 0
        assert (record.path / "pytest.log").is_file()
        assert head[5:-3] == [s.name for s in record.steps]
        assert [row[s.name] for s in record.steps] == ["PASS"] * len(record.steps)
        assert row["Result"] == "PASS" and row["Tester"] == "New User"
        assert row["Arch"] == record.arch
        assert row["Xen"] == record.info["xen_version"] == record.info["expected_xen_version"]
        assert row["Log"] == f"[console.log]({record.board}/{record.run_id}/console.log)"
        assert record.board in wiki


def test_health_gate_takes_a_broken_board_out_of_service(tmp_path, capsys):
    """A board that cannot reach U-Boot is marked unavailable (ERROR, lab), never smoke-tested."""
    farm = tmp_path / "farm.yaml"
    farm.write_text((REPO / "farm.yaml").read_text()
                    .replace("$BASE/build/", str(REPO / "build") + "/")
                    .replace("u-boot-qemu-arm64: /usr/lib/u-boot/qemu_arm64/u-boot.bin",
                             "u-boot-qemu-arm64: /nonexistent/u-boot.bin"))
    results = tmp_path / "results"
    code = testday.cmd_testday(_args("--farm", str(farm), "--tester", "Gate", "--boards",
                                     "qemu-arm64", "--results", str(results)))
    assert "qemu-arm64" in capsys.readouterr().out  # the table was printed
    assert code == 1
    (record,) = list_runs(results)
    assert (record.verdict, record.classification) == (Status.ERROR, "health-check-failed")
    assert record.info["culprit"] == "lab" and record.info["available"] is False
    assert [s.name for s in record.steps] == ["health_check"]  # no smoke step ran
    assert "qemu-start-failed" in record.steps[0].message
    head, (row,) = md_rows(next(results.glob("testday-*.md")).read_text())
    assert row["Board"] == "qemu-arm64" and row["Result"] == "ERROR"
    assert "health_check" in head
