"""The Test Day table (xenlab.reports.testday), the farm runner (xenlab.run.runner) and
the farm file reader (xenlab.run.farmfile).

The table is checked against the records it came from (fabricated runs of
every verdict); the runner against fake pytest children (Ctrl-C, a child
that ignores SIGTERM, one that dies before writing a record) and once for
real: `xenlab testday` boots the QEMU board.
"""

from __future__ import annotations

import _thread
import io
import re
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import support.fabricate as bench
from xenlab import cli
from xenlab.cli import build_parser
from xenlab.errors import Status, XenlabError
from xenlab.reports import testday
from xenlab.run import runner
from xenlab.run.farmfile import FarmTarget, load_farm
from xenlab.run.record import RunRecord, list_runs

REPO = Path(__file__).resolve().parent.parent


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
    runs = sorted(list_runs(tmp_path), key=lambda r: r.target)
    assert [r.verdict for r in runs] == list(verdicts.values())
    return runs


def test_markdown_rows_match_the_records(records, tmp_path):
    wiki, md_path, md = testday.write_tables(records, tmp_path, date="2025-01-01")
    assert md_path == tmp_path / "testday-2025-01-01.md" and md_path.read_text() == md
    head, rows = md_rows(md)
    steps = [s.name for s in records[0].steps]
    assert head == ["Board", "Arch", "Tester", "Date", "Xen", "Xen build", "Firmware", "Boot",
                    *steps, "Result", "Known issues", "Log"]
    for record, row in zip(records, rows, strict=True):
        assert row["Board"] == record.target and row["Arch"] == record.arch
        assert row["Tester"] == record.tester and row["Date"] == record.start_time[:10]
        assert row["Xen"] == record.info["xen_version"]
        assert row["Result"] == record.verdict_label
        assert row["Firmware"] == row["Boot"] == "-"  # the fabricated records say neither
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
        assert cells[:8] == [record.target, record.arch, record.tester, record.start_time[:10],
                             "4.17.5", "-", "-", "-"]
        statuses = [c.split(" | ")[-1] for c in cells[8:8 + n_steps + 1]]
        assert statuses == [s.status.value for s in record.steps] + [record.verdict_label]
        assert cells[-1] == f"<code>{record.target}/{record.run_id}/console.log</code>"
    known = rows[3][-2]
    assert known == f"[{bench.KNOWN['link']} {bench.KNOWN['label']}]"
    assert 'style="background:#fcc" | FAIL' in text


def test_steps_are_the_union_in_first_seen_order(tmp_path):
    a = RunRecord.start(tmp_path, "a", arch="arm64", tester="t")
    for name in ("uboot", "xen_boots"):
        a.step_finished(name, "PASS", 1)
    a.finish()
    b = RunRecord.start(tmp_path, "b", arch="arm32", tester="t")
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
    r = RunRecord.start(tmp_path, "b", arch="arm64", tester=nasty)
    r.step_finished("uboot", "PASS", 1)
    r.finish()
    steps, rows = testday.table_rows([r], tmp_path)
    head, md = md_rows(testday.markdown_table(steps, rows))
    assert len(md[0]) == len(head) and md[0]["Result"] == "PASS"
    assert "<b>" not in md[0]["Tester"] and "\n" not in md[0]["Tester"]
    wiki = testday.wiki_table(steps, rows)
    row = next(l for l in wiki.splitlines() if l.startswith("| "))
    assert len(row[2:].split(" || ")) == 8 + 1 + 1 + 2
    for syntax in ("[[", "{{", "'''", "~~~", "__NOTOC", "<b>", " | Bob"):
        assert syntax not in row


def test_tables_are_not_overwritten(records, tmp_path):
    first = testday.write_tables(records, tmp_path, date="2025-01-01")
    second = testday.write_tables(records[:1], tmp_path, date="2025-01-01")
    assert first[0].name == "testday-2025-01-01.wiki"
    assert second[0].name == "testday-2025-01-01-2.wiki"


# --------------------------------------------------------------------------- the farm

def test_load_farm_reads_targets_and_arch():
    from xenlab.plan.profile import load_profile

    farm = load_farm(REPO / "farm.yaml")
    arm64 = FarmTarget("qemu-arm64", "qemu-virt-arm64", "arm64",
                       frozenset({"pv-block", "network"}), None)
    assert farm.targets["qemu-arm64"] == arm64
    assert all(t.arch == load_profile(t.profile).arch for t in farm.targets.values())
    assert farm.select(["qemu-arm64"]) == [arm64]
    assert not arm64.remote


def test_load_farm_errors_are_one_line(tmp_path):
    with pytest.raises(XenlabError, match=r"no XenStrategy target 'nope' .*qemu-arm64"):
        load_farm(REPO / "farm.yaml").select(["nope"])
    with pytest.raises(XenlabError, match="farm file .*missing.yaml not found"):
        load_farm(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("targets:\n  other:\n    drivers: {ShellDriver: {}}\n")
    with pytest.raises(XenlabError, match="no target with a XenStrategy driver"):
        load_farm(empty)


def test_remote_targets_are_flagged_for_locks(tmp_path):
    farm = tmp_path / "farm.yaml"
    farm.write_text(textwrap.dedent("""\
        targets:
          lab-rpi4:
            features: [network]
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
    assert list(load_farm(farm).targets.values()) == [
        FarmTarget("lab-rpi4", "rpi4", "arm64", frozenset({"network"}), "rpi4-1"),
        FarmTarget("lab-zcu", "zcu102", "arm64", frozenset(), "zcu102-1")]


def test_bad_options_are_one_line_errors():
    # --jobs 0 is refused while parsing (tests/test_bad_inputs.py).
    with pytest.raises(XenlabError, match="--targets 'a,,b': empty"):
        cli.cmd_testday(_args("--tester", "x", "--targets", "a,,b"))


# --------------------------------------------------------------------------- the runner

FAKE = textwrap.dedent("""\
    import os, signal, sys, time
    from pathlib import Path
    from xenlab.run.record import RunRecord
    mode, target, results, tester, run_id = sys.argv[1:]
    if mode == "crash":
        print("ERROR: the farm file is broken"); sys.exit(4)
    r = RunRecord.start(Path(results), target, arch="arm64", tester=tester,
                        run_id=run_id) if mode != "early" else None
    if r: r.set_info(xen_version="4.17.5", image_set_env=os.environ.get("XENLAB_IMAGE_SET"))
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
    monkeypatch.setattr(runner, "pytest_command", command)
    monkeypatch.setattr(runner, "POLL_S", 0.05)
    monkeypatch.setattr(runner, "TERMINATE_WAIT_S", 1.0)

    def targets(*names):
        return [FarmTarget(n, "qemu-virt-arm64", "arm64", frozenset(), None) for n in names]
    targets.farm = script  # any existing file: the fake never reads it
    targets.use = lambda *names: monkeypatch.setattr(
        cli.commands, "load_farm", lambda path: SimpleNamespace(select=lambda chosen: targets(*names)))
    return targets


def test_runner_records_every_board_and_reports_progress(fake, tmp_path):
    out = io.StringIO()
    runs, interrupted = runner.run_farm(fake.farm, fake("pass-a", "fail-b", "crash-c"),
                                         tmp_path / "res", "Tess", jobs=2, out=out)
    assert not interrupted
    verdicts = {r.target.name: RunRecord.load(r.run_dir).verdict for r in runs}
    assert verdicts == {"pass-a": Status.PASS, "fail-b": Status.FAIL, "crash-c": Status.ERROR}
    assert len({r.run_id for r in runs}) == 1  # one Test Day, one run id
    crashed = RunRecord.load(runs[2].run_dir)
    assert crashed.classification == "harness-pytest-exit"
    assert "pytest exited 4" in crashed.verdict_reason and "farm file is broken" in crashed.verdict_reason
    assert (runs[2].run_dir / "pytest.log").is_file()
    lines = out.getvalue().splitlines()
    assert any(l.startswith("pass-a") and l.endswith("PASS") for l in lines)
    assert any(l.startswith("fail-b") and "FAIL" in l and "xen_boots" in l for l in lines)
    assert not any("\r" in l or "\x1b" in l for l in lines)  # not a tty: plain lines
    assert not (tmp_path / "res" / ".runner").exists()


def test_ctrl_c_stops_children_and_keeps_what_finished(fake, tmp_path, capsys, monkeypatch):
    results = tmp_path / "res"
    fake.use("pass-a", "hang-b", "stubborn-c")
    timer = threading.Timer(2.0, _thread.interrupt_main)
    timer.start()
    try:
        code = cli.cmd_testday(_args("--farm", str(fake.farm), "--tester", "T", "--health", "none",
                                         "--results", str(results)))
    finally:
        timer.cancel()
    assert code == 130
    records = {r.target: r for r in list_runs(results)}
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


def test_a_child_that_dies_is_an_aborted_row(fake, tmp_path, monkeypatch, capsys):
    fake.use("pass-a", "die-b")
    results = tmp_path / "res"
    code = cli.cmd_testday(_args("--farm", str(fake.farm), "--tester", "T",
                                     "--results", str(results)))
    assert code == 1
    _, rows = md_rows(next(results.glob("testday-*.md")).read_text())
    assert [(r["Board"], r["Result"], r["uboot"]) for r in rows] == \
        [("pass-a", "PASS", "PASS"), ("die-b", "ABORTED", "ABORTED")]
    (died,) = list_runs(results, "die-b")
    assert "pytest exited -9 without ending the run" in died.verdict_reason


def test_a_child_killed_before_its_first_save_is_an_error_row(fake, tmp_path):
    runs, _ = runner.run_farm(fake.farm, fake("early-a"), tmp_path, "T", out=io.StringIO())
    record = RunRecord.load(runs[0].run_dir)
    assert record.verdict is Status.ERROR and record.classification == "harness-pytest-exit"


def test_exit_status_is_non_zero_unless_every_board_passes(fake, tmp_path, monkeypatch, capsys):
    fake.use("pass-a", "pass-b")
    args = _args("--farm", str(fake.farm), "--tester", "T", "--health", "none", "--results", str(tmp_path / "1"))
    assert cli.cmd_testday(args) == 0
    fake.use("pass-a", "fail-b")
    args = _args("--farm", str(fake.farm), "--tester", "T", "--health", "none", "--results", str(tmp_path / "2"))
    assert cli.cmd_testday(args) == 1


# --------------------------------------------------------------------------- for real

REAL_BOARDS = ["nanopi-neo", "orangepi-pc", "rpi4", "zcu102"]


def test_testday_boots_the_real_boards_emulated(tmp_path, capsys):
    """`xenlab testday --farm farm.yaml --targets nanopi-neo,orangepi-pc,rpi4,zcu102`: each
    board on QEMU's model of its own SoC, through its own U-Boot from Debian (the ZCU102
    through QEMU's loader), two at a time; one table naming each board's Xen, firmware and
    boot medium. If QEMU cannot run here this fails: a skipped boot is not a pass."""
    results = tmp_path / "results"
    args = _args("--farm", str(REPO / "farm.yaml"), "--tester", "New User", "--jobs", "2",
                 "--targets", ",".join(REAL_BOARDS), "--results", str(results))
    code = cli.cmd_testday(args)
    out = capsys.readouterr().out
    records = {r.target: r for r in list_runs(results)}
    assert sorted(records) == sorted(REAL_BOARDS)
    assert code == 0, out + " / ".join(f"{r.target}: {RunRecord.load(r.path).verdict_reason}"
                                       for r in records.values())
    md = next(results.glob("testday-*.md")).read_text()
    assert md in out  # printed, too
    head, rows = md_rows(md)
    assert len(rows) == 4
    assert head[:8] == ["Board", "Arch", "Tester", "Date", "Xen", "Xen build", "Firmware", "Boot"]
    wiki = next(results.glob("testday-*.wiki")).read_text()
    medium = {"nanopi-neo": "TFTP", "orangepi-pc": "SD card", "rpi4": "SD card",
              "zcu102": "QEMU loader"}
    machine = {"nanopi-neo": "orangepi-pc", "orangepi-pc": "orangepi-pc", "rpi4": "raspi4b",
               "zcu102": "xlnx-zcu102"}
    for row in rows:
        record = records[row["Board"]]
        console = (record.path / "console.log").read_text(errors="replace")
        assert record.tester == "New User" and record.verdict is Status.PASS
        assert record.profile == record.target  # the shipped profile of that board
        assert row["Xen"] == record.info["xen_version"] == record.info["expected_xen_version"]
        assert row["Boot"] == record.info["boot_medium"] == medium[record.target]
        assert f"-M {machine[record.target]}" in row["Firmware"]
        assert re.search(r"QEMU (9|1\d)\.\d+\.\d+ ", row["Firmware"]), row["Firmware"]
        statuses = {s.name: s.status for s in record.steps}
        if record.target == "zcu102":  # no firmware QEMU can run: its loader stood in
            assert statuses.pop("uboot") is Status.SKIP
            skip = next(s for s in record.steps if s.name == "uboot")
            assert "QEMU's loader" in skip.reason
            assert row["Result"] == "PASS (1 skipped)" and record.verdict_label == row["Result"]
            # All four A53s, with the GIC where QEMU's 4 KiB aliasing puts a contiguous GICC.
            assert "Brought up 4 CPUs" in console and "gic_cpu_addr=00000000f902f000" in console
            assert "QEMU's ZynqMP GIC" in record.info["target_dtb_fixups"][0]
        else:
            assert row["Firmware"].startswith("U-Boot 2023.01+dfsg-2+deb12u3 (u-boot-")
            # The board's own U-Boot answered (the Pi's prints no banner on the mini UART
            # before it relocates; the H3's SPL and U-Boot do).
            assert row["Firmware"].startswith(record.info["firmware"] + " on QEMU ")
            assert "Hit any key to stop autoboot" in console
            assert row["Result"] == "PASS"
        assert set(statuses.values()) == {Status.PASS}, statuses
        assert re.search(r"Xen version 4\.17\.\d+", console) and "XENLAB-DOMU-READY" in console
        assert record.target in wiki
    # What each board is made of, seen on its console.
    consoles = {t: (records[t].path / "console.log").read_text(errors="replace") for t in records}
    assert "Brought up 4 CPUs" in consoles["nanopi-neo"]  # through U-Boot's PSCI
    assert "gic_dist_addr=0000000001c81000" in consoles["nanopi-neo"]  # the H3's GIC-400
    assert "Brought up 4 CPUs" in consoles["rpi4"]  # through armstub8's spin-table
    assert "U-Boot> " in consoles["rpi4"]  # rpi_4_defconfig's prompt
    for h3 in ("nanopi-neo", "orangepi-pc"):
        assert "U-Boot SPL 2023.01+dfsg-2+deb12u3" in consoles[h3]  # from the card's 8 KiB
        assert records[h3].info["uboot_version"].startswith("2023.01+dfsg-2+deb12u3")
    assert re.search(r"\d+ bytes read", consoles["orangepi-pc"])  # fatload from the card


def test_health_gate_takes_a_broken_board_out_of_service(tmp_path, capsys):
    """A board that cannot reach U-Boot is marked unavailable (ERROR, lab), never smoke-tested."""
    farm = tmp_path / "farm.yaml"
    farm.write_text((REPO / "farm.yaml").read_text()
                    .replace("$BASE/build/", str(REPO / "build") + "/")
                    .replace("u-boot-qemu-arm64: /usr/lib/u-boot/qemu_arm64/u-boot.bin",
                             "u-boot-qemu-arm64: /nonexistent/u-boot.bin"))
    results = tmp_path / "results"
    code = cli.cmd_testday(_args("--farm", str(farm), "--tester", "Gate", "--targets",
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


def test_a_release_candidate_is_built_once_per_arch_and_booted_by_every_board(fake, tmp_path,
                                                                             monkeypatch):
    """`xenlab testday --xen-source RC`: one build per arch; each board's child boots it."""
    built = []

    def build(arch, **kw):
        built.append((arch, kw["xen_source"], tuple(kw["xen_config"])))
        return SimpleNamespace(dir=tmp_path / f"set-{arch}", xen={
            "version": "4.21.0-rc3", "config": "debug", "changeset": "xen-4.21.0-rc3.tar.gz"})
    monkeypatch.setattr(runner, "build_image_set", build)
    monkeypatch.setattr(cli.commands, "load_farm", lambda path: SimpleNamespace(select=lambda names: [
        FarmTarget("pass-a", "qemu-virt-arm64", "arm64", frozenset(), None),
        FarmTarget("pass-b", "qemu-virt-arm64", "arm64", frozenset(), None),
        FarmTarget("pass-c", "qemu-virt-arm32", "arm32", frozenset(), None)]))
    results = tmp_path / "res"
    code = cli.cmd_testday(_args("--farm", str(fake.farm), "--tester", "T", "--health", "none",
                                 "--results", str(results), "--xen-source", "rc.tar.gz",
                                 "--xen-config", "debug"))
    assert code == 0
    assert built == [("arm32", "rc.tar.gz", ("debug",)), ("arm64", "rc.tar.gz", ("debug",))]
    booted = {r.target: r.info["image_set_env"] for r in list_runs(results)}
    assert booted == {"pass-a": str(tmp_path / "set-arm64"), "pass-b": str(tmp_path / "set-arm64"),
                      "pass-c": str(tmp_path / "set-arm32")}
