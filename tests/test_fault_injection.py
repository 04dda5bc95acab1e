"""Fault injection without QEMU: a recorded console replayed as a board (tests/support/fakeboard.py)
through the same strategy, plugin and run record as a real run.

Each scenario asserts the verdict, the classification, and that console.log and
run.json were kept.
"""

import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.fakeboard import PROFILE, FakeBoard, env_file

# The recorded console's QEMU (7.2) made a virt DTB without /aliases; QEMU >= 9.0 adds them.
NO_ALIASES = "  - remove: /aliases\n    why: the virt DTB as QEMU 7.2 made it\n"
from xenlab.images.imageset import build_image_set
from xenlab.run.record import RunRecord

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BOOT_STEPS = "uboot or xen_boots or dom0_boots or xl_info or xl_list"


def _env_file(tmp_path, board: FakeBoard, profile: Path = PROFILE, power_on: str | None = None):
    return env_file(tmp_path, board, profile, power_on)


def _pytest_cmd(env: Path, results: Path, extra=()) -> list[str]:
    return [sys.executable, "-m", "pytest", "--lg-env", str(env), str(REPO / "testcases"),
            "--xenlab-results", str(results), "-k", BOOT_STEPS, "-p", "no:cacheprovider", "-q",
            "-p", "no:randomly", *extra]


def run_scenario(tmp_path, scenario, pytest_args=(), keep_board=None, **kw):
    board = FakeBoard(scenario)
    try:
        env = _env_file(tmp_path, board, **kw)
        results = tmp_path / "results"
        proc = subprocess.run(_pytest_cmd(env, results, pytest_args), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    finally:
        board.close()
    if keep_board is not None:
        keep_board.append(board)
    return proc, _only_run(results)


def _only_run(results: Path) -> Path:
    runs = list((results / "fake-arm64").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _first_bad(record):
    return next(s for s in record["steps"] if s["status"] not in ("PASS", "SKIP"))


def test_clean_replay_passes(tmp_path):
    """The replayed board itself is sound: the unmodified transcript passes."""
    proc, run = run_scenario(tmp_path, "clean")
    record = _record(run)
    assert record["verdict"] == "PASS", (record, proc.stdout[-3000:])
    assert [s["name"] for s in record["steps"]] == ["uboot", "xen_boots", "dom0_boots",
                                                     "xl_info", "xl_list"]
    assert record["info"]["xen_version"] == "4.17.5"
    assert "Xen version 4.17.5" in (run / "console.log").read_text(errors="replace")


@pytest.mark.parametrize("scenario,stage,status,classification,evidence", [
    ("hang-uboot", "uboot", "ERROR", "uboot-unreachable", "Hit any key"),
    ("tftp-missing", "uboot", "ERROR", "tftp-file-missing", "File not found"),
    ("hang-xen", "xen_boots", "FAIL", "stage-timeout:xen", None),
    # Issue 13: a panic while Xen builds Dom0 is Xen's failure, not Dom0's (a real console).
    ("xen-dom0-construction-panic", "xen_boots", "FAIL", "xen-panic", "Panic on CPU 0"),
    ("uboot-reset", "xen_boots", "FAIL", "uboot-reset-loop", "U-Boot 2023.01"),
    ("hang-dom0", "dom0_boots", "FAIL", "stage-timeout:dom0", None),
    ("dom0-wrong-root", "dom0_boots", "FAIL", "dom0-panic", "Kernel panic - not syncing"),
    ("hang-shell", "dom0_boots", "FAIL", "stage-timeout:shell", "XENLAB-DOM0-READY"),
    ("eof", "dom0_boots", "ERROR", "console-lost", None),
])
def test_fault_is_classified_and_kept(tmp_path, scenario, stage, status, classification, evidence):
    proc, run = run_scenario(tmp_path, scenario)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout.split("short test summary")[-1]
    record = _record(run)
    bad = _first_bad(record)
    assert (bad["name"], bad["status"], bad["classification"]) == (stage, status, classification), bad
    assert (record["verdict"], record["classification"]) == (status, classification)
    # Later steps are skipped with the reason, not failed again.
    after = record["steps"][[s["name"] for s in record["steps"]].index(stage) + 1:]
    assert after and all(s["status"] == "SKIP" and "did not boot" in s["reason"] for s in after)
    console = (run / "console.log").read_text(errors="replace")
    assert "U-Boot 2023.01" in console  # the whole stream was kept
    if evidence:
        assert any(evidence in line for line in bad["evidence"]), bad["evidence"]
    junit = (run / "junit.xml").read_text()
    assert classification in junit


def test_a_silent_xen_gets_the_seeds_hint_from_the_boards_dtb(tmp_path):
    """Issue 13: Xen silent after "Starting kernel" (a real console, dtuart: serial0 on a DTB
    without /aliases) is not a bare stage-timeout: it says the alias is missing and which
    path works, worked out from the board's DTB as the doctor does."""
    profile = tmp_path / "fake-arm64.yaml"
    profile.write_text(PROFILE.read_text().replace("dtuart: /pl011@9000000", "dtuart: serial0")
                       .replace("dtb_fixups:\n", "dtb_fixups:\n" + NO_ALIASES))
    # The doctor would stop this run before power-on (the next test): a tester who
    # knows the firmware adds /aliases at boot turns it off, and Xen is still silent.
    proc, run = run_scenario(tmp_path, "xen-silent", ["--xenlab-doctor", "off"], profile=profile)
    bad = _first_bad(_record(run))
    assert (bad["name"], bad["status"], bad["classification"]) == ("xen_boots", "FAIL", "xen-silent")
    assert "Xen printed nothing after 'Starting kernel ...'" in bad["message"]
    assert "'serial0' does not resolve: the DTB has no /aliases node" in bad["message"]
    assert "use dtuart=/pl011@9000000" in bad["message"], bad["message"]


def test_the_doctor_stops_a_board_it_can_see_will_fail_before_power_on(tmp_path):
    """Issue 13: the doctor runs before power-on in every run. The same board (dtuart:
    serial0, a DTB without /aliases) ends at once as ERROR board-setup with the doctor's
    lines in the record, instead of minutes of a silent Xen; the board is never powered."""
    profile = tmp_path / "fake-arm64.yaml"
    profile.write_text(PROFILE.read_text().replace("dtuart: /pl011@9000000", "dtuart: serial0")
                       .replace("dtb_fixups:\n", "dtb_fixups:\n" + NO_ALIASES))
    boards = []
    proc, run = run_scenario(tmp_path, "xen-silent", keep_board=boards, profile=profile)
    record = _record(run)
    bad = _first_bad(record)
    assert (bad["name"], bad["status"], bad["classification"]) == ("uboot", "ERROR", "board-setup")
    assert record["verdict"] == "ERROR"
    assert bad["message"].startswith("doctor: dtuart-alias-missing: ")
    assert bad["evidence"][0].startswith("error dtuart-alias-missing:")
    assert "use dtuart=/pl011@9000000" in bad["evidence"][0]
    assert any(line.startswith("info  console: dtuart serial0 (from profile)")
               for line in record["info"]["doctor"]), record["info"]["doctor"]
    assert boards[0].power_ons == 0
    assert bad["duration_s"] < 5, bad  # not a stage timeout
    assert all(s["status"] == "SKIP" for s in record["steps"][1:]), record["steps"]


def test_a_panic_while_xen_builds_dom0_is_xens_failure_and_says_why(tmp_path):
    """Issue 13: "Could not set up DOM0"-class panics come after LOADING DOMAIN 0. The Xen
    stage lasts until Xen hands the console over, so xen_boots fails (Dom0 never ran),
    and the message quotes the panic with the reason Xen printed after it."""
    proc, run = run_scenario(tmp_path, "xen-dom0-construction-panic")
    record = _record(run)
    steps = {s["name"]: s for s in record["steps"]}
    assert steps["uboot"]["status"] == "PASS"
    assert steps["xen_boots"]["status"] == "FAIL"
    assert steps["dom0_boots"]["status"] == "SKIP"
    assert "Panic on CPU 0: Failed to allocate requested dom0 memory. 12MB unallocated" in \
        steps["xen_boots"]["message"], steps["xen_boots"]["message"]
    assert "dom0-loading" in record["info"]["stage_marks"]
    assert "xen-handover" not in record["info"]["stage_marks"]


def test_garbage_on_the_console_does_not_break_the_boot(tmp_path):
    proc, run = run_scenario(tmp_path, "garbage")
    record = _record(run)
    assert record["verdict"] == "PASS", (_first_bad(record), proc.stdout[-2000:])
    assert (run / "console.log").stat().st_size > 10000


def test_shell_output_survives_xen_and_kernel_messages(tmp_path):
    """Xen's and the kernel's lines interleave with commands and prompts (labgrid #545/#1786)."""
    proc, run = run_scenario(tmp_path, "noisy-shell")
    record = _record(run)
    assert record["verdict"] == "PASS", (_first_bad(record), proc.stdout[-2000:])
    console = (run / "console.log").read_text(errors="replace")
    assert "crng init done" in console and "ICACTIVER4" in console


def test_power_failure_is_a_lab_error(tmp_path):
    proc, run = run_scenario(tmp_path, "clean", power_on="false")
    record = _record(run)
    bad = _first_bad(record)
    assert (bad["name"], bad["status"], bad["classification"]) == ("uboot", "ERROR", "power-failed")
    assert record["verdict"] == "ERROR"


def _hanging_in_dom0(tmp_path, board: FakeBoard, **popen) -> tuple[subprocess.Popen, Path]:
    """Start a run whose Dom0 stage hangs (with a long timeout); return once Dom0 boots."""
    slow = tmp_path / "slow.yaml"
    slow.write_text(PROFILE.read_text().replace("dom0: 3,", "dom0: 120,"))
    env = _env_file(tmp_path, board, profile=slow)
    results = tmp_path / "results"
    proc = subprocess.Popen(_pytest_cmd(env, results), cwd=tmp_path, **popen)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = list(results.glob("fake-arm64/*/console.log"))
        if logs and "Booting Linux" in logs[0].read_text(errors="replace"):
            return proc, results
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the replayed board never reached Dom0")


def test_ctrl_c_leaves_an_aborted_record_and_the_log(tmp_path):
    board = FakeBoard("hang-dom0")
    try:
        proc, results = _hanging_in_dom0(tmp_path, board, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        board.close()
    run = _only_run(results)
    record = _record(run)
    assert record["verdict"] == "ABORTED", (record, out[-2000:])
    assert record["verdict_reason"]
    assert record["end"]
    assert "Booting Linux" in (run / "console.log").read_text(errors="replace")


def test_killed_harness_leaves_the_log_and_a_running_record(tmp_path):
    """SIGKILL gives no chance to clean up: what was written is still whole."""
    board = FakeBoard("hang-dom0")
    try:
        proc, results = _hanging_in_dom0(tmp_path, board, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        proc.kill()
        proc.wait()
    finally:
        board.close()
    run = _only_run(results)
    record = _record(run)  # complete JSON despite the kill
    assert record["verdict"] == "RUNNING"
    assert [s["status"] for s in record["steps"]][:2] == ["PASS", "PASS"]
    # Readers see that the writer is gone: ABORTED, and why.
    loaded = RunRecord.load(run)
    assert loaded.verdict.value == "ABORTED" and loaded.classification == "harness-killed"
    assert str(record["harness_pid"]) in loaded.verdict_reason
    assert "Booting Linux" in (run / "console.log").read_text(errors="replace")


def test_silent_domu_is_diagnosed_as_an_early_trap(tmp_path):
    """A DomU that prints nothing: xenctx shows PC 0x0000000c, the seed's CONFIG_DEBUG_LL trap
    (the reply recorded from a real arm32 DomU storing to a UART it cannot see)."""
    board = FakeBoard("domu-silent")
    slow = tmp_path / "domu.yaml"
    slow.write_text(PROFILE.read_text())
    try:
        env = _env_file(tmp_path, board, profile=slow)
        results = tmp_path / "results"
        cmd = _pytest_cmd(env, results)
        cmd[cmd.index("-k") + 1] = BOOT_STEPS + " or domu_create_console"
        subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        board.close()
    run = _only_run(results)
    record = _record(run)
    bad = _first_bad(record)
    assert (bad["name"], bad["status"], bad["classification"]) == \
        ("domu_create_console", "FAIL", "domu-early-trap")
    assert "CONFIG_DEBUG_LL" in bad["message"] and "§10.1" in bad["message"]
    assert "PC:       0000000c" in (run / "diagnostics" / "xenctx-d1.txt").read_text()
    assert "Xen version" in (run / "diagnostics" / "xl-dmesg.txt").read_text()


def test_a_xen_panic_under_a_shell_step_ends_it_within_two_seconds(tmp_path):
    """Issue 26: a recorded console (a debug Xen's ASSERT in domain_kill, under `xl create`;
    tests/data/README.md) replayed in the middle of a shell step, then the console closes.
    The step is Xen's failure at once, quoting the assertion; the steps after it say the
    board went down instead of waiting on it."""
    boards = []
    proc, run = run_scenario(tmp_path, "xen-panic-in-shell", keep_board=boards,
                             pytest_args=["-k", BOOT_STEPS + " or domu or pv_"])
    record = _record(run)
    bad = _first_bad(record)
    assert (bad["name"], bad["status"], bad["classification"]) == \
        ("domu_create_console", "FAIL", "xen-bug"), bad
    assert "Assertion 'd->domain_id == 0' failed at common/domain.c:949" in bad["message"]
    assert any("domain_kill" in line for line in bad["evidence"]), bad["evidence"]
    started = dt.datetime.fromisoformat(bad["started"].replace("Z", "+00:00")).timestamp()
    reaction = started + bad["duration_s"] - boards[0].panic_sent_at
    assert 0 < reaction < 2.0, reaction
    after = {s["name"]: s for s in record["steps"][[s["name"] for s in record["steps"]]
                                                     .index(bad["name"]) + 1:]}
    assert sorted(after) == ["domu_shutdown_destroy", "pv_block", "pv_network"]
    assert all(s["status"] == "SKIP" for s in after.values())  # pv_*: the fake has no features
    assert after["domu_shutdown_destroy"]["reason"] == \
        "board went down in an earlier step: FAIL [xen-bug]"
    assert (record["verdict"], record["classification"]) == ("FAIL", "xen-bug")


def test_known_issue_is_reported_as_known_not_hidden(tmp_path):
    known = tmp_path / "known.yaml"
    known.write_text("""
- id: xl-0001
  target: fake-*
  arch: arm64
  step: xen_boots
  regex: "Failed to allocate requested dom0 memory"
  label: fault-injection panic
  link: https://example.invalid/xl-0001
  culprit: xen
""")
    board = FakeBoard("xen-dom0-construction-panic")
    try:
        env = _env_file(tmp_path, board)
        results = tmp_path / "results"
        cmd = _pytest_cmd(env, results) + ["--xenlab-known-issues", str(known)]
        subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        board.close()
    record = _record(_only_run(results))
    bad = next(s for s in record["steps"] if s["name"] == "xen_boots")
    assert bad["status"] == "KNOWN" and bad["original_status"] == "FAIL"
    assert bad["known"]["label"] == "fault-injection panic"
    assert bad["classification"] == "xen-panic"
    assert record["verdict"] == "KNOWN"


def test_a_dom0_that_cannot_find_its_root_keeps_the_cause_in_the_evidence(tmp_path):
    """Issue 13: a real console (rdinit=/nonexistent root=/dev/vda): the message quotes the
    panic line, and the evidence keeps the lines before the call trace that say why."""
    proc, run = run_scenario(tmp_path, "dom0-wrong-root")
    bad = _first_bad(_record(run))
    assert (bad["name"], bad["status"], bad["classification"]) == ("dom0_boots", "FAIL", "dom0-panic")
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in bad["message"]
    evidence = "\n".join(bad["evidence"])
    assert 'VFS: Cannot open root device "vda"' in evidence
    assert 'Please append a correct "root=" boot option' in evidence
    assert "---[ end Kernel panic" in evidence  # and the tail


def test_the_cause_is_kept_when_it_is_further_back_than_the_context(monkeypatch):
    """Linux lists the partitions between "Please append" and the panic on a board with disks."""
    from xenlab.lab import monitors
    text = (REPO / "tests" / "data" / "qemu-arm64-wrong-root.log").read_text(errors="replace")
    monkeypatch.setattr(monitors, "CONTEXT_LINES", 0)
    _, classification, evidence = monitors.classify(text, "dom0")
    assert classification == "dom0-panic"
    assert any("Please append a correct" in line for line in evidence), evidence
    assert any("VFS: Cannot open root device" in line for line in evidence), evidence


@pytest.fixture(scope="module")
def tester_rootfs_set():
    """An image set whose Dom0 rootfs is the tester's (here: any cpio, the board is replayed)."""
    bundled = build_image_set("arm64")
    return build_image_set("arm64", {"dom0-rootfs.cpio.gz": bundled.path("domU-rootfs.cpio.gz")})


def test_a_dom0_rootfs_without_xenlabs_marker_is_ready_at_its_shell(tmp_path, monkeypatch,
                                                                    tester_rootfs_set):
    """Issue 13: the tester's Dom0 prints no XENLAB-DOM0-READY and prompts '~ # '; the run
    passes the Dom0 stage at that prompt, not after the whole Dom0 timeout."""
    assert tester_rootfs_set.dom0_prompt and not tester_rootfs_set.info["dom0_ready_marker"]
    monkeypatch.setenv("XENLAB_IMAGE_SET", str(tester_rootfs_set.dir))
    proc, run = run_scenario(tmp_path, "tester-rootfs")
    record = _record(run)
    steps = {s["name"]: s for s in record["steps"]}
    assert steps["dom0_boots"]["status"] == "PASS", (record, proc.stdout[-2000:])
    assert steps["dom0_boots"]["duration_s"] < 30, steps["dom0_boots"]
    assert "XENLAB-DOM0-READY" not in (run / "console.log").read_text(errors="replace")


def test_every_recorded_console_says_how_it_was_recorded():
    """Issue 27: each console in tests/data is in its README, and none is typed by hand."""
    data = REPO / "tests" / "data"
    readme = (data / "README.md").read_text()
    for log in sorted(data.glob("*.log")):
        assert f"`{log.name}`" in readme, log.name
    fake = (REPO / "tests" / "support" / "fakeboard.py").read_text()
    # No console line typed into the fake: no Xen or kernel line in a string literal.
    typed = re.search(r"[\"']\(XEN\) \w|[\"']\[ +\d+\.\d+\] \w", fake)
    assert typed is None, fake[typed.start():typed.start() + 80]
