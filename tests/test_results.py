"""Run records, console facts and failure classification (xenlab.results)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from xenlab.errors import XenlabError
from xenlab.console_text import clean_lines
from xenlab.console_text import excerpt as console_excerpt
from xenlab.errors import Status
from xenlab.lab.monitors import classify as classify_console
from xenlab.lab.monitors import parse_console_facts
from xenlab.run.junit import format_run
from xenlab.run.record import RunRecord, list_runs, safe_name

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent
TRANSCRIPT = (DATA / "qemu-arm64-console.log").read_text()
BOARD = "qemu-virt-arm64"


def start(root: Path, board: str = BOARD, **kw) -> RunRecord:
    return RunRecord.start(root, board, profile="qemu-virt-arm64", arch="arm64", tester="alice",
                           **kw)


def on_disk(record: RunRecord) -> dict:
    return json.loads(record.run_json.read_text())


def inject(text: str, after: str, block: str) -> str:
    """The transcript with `block` inserted after the first line containing `after`."""
    i = text.index(after)
    i = text.index("\n", i) + 1
    return text[:i] + block + text[i:]


# The same shape as the real transcript: Xen's lines end \r\r\r\n.
XEN_PANIC = ("(XEN) ****************************************\r\r\r\n"
             "(XEN) Panic on CPU 0:\r\r\r\n"
             "(XEN) Assertion 'd->arch.vgic.handler' failed at vgic.c:120\r\r\r\n"
             "(XEN) ****************************************\r\r\r\n"
             "(XEN) Reboot in five seconds...\r\r\r\n")


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".", "..", "with space", "a;b", ".hidden",
                                 "-rf", "x" * 65, "ok\n", "/abs", "a\\b", None, 3])
def test_safe_name_rejects(bad):
    with pytest.raises(XenlabError) as e:
        safe_name(bad, "target")
    assert "target name" in str(e.value) and repr(bad) in str(e.value)


@pytest.mark.parametrize("good", ["qemu-virt-arm64", "zcu102", "rpi4.b", "A_1", "x" * 64])
def test_safe_name_accepts(good):
    assert safe_name(good, "run") == good


def test_start_refuses_names_that_escape_the_root(tmp_path):
    root = tmp_path / "results"
    for board in ("../evil", "..", "a/b"):
        with pytest.raises(XenlabError):
            start(root, board)
    with pytest.raises(XenlabError):
        start(root, run_id="../../etc")
    assert not (tmp_path / "evil").exists()


def test_a_schema_1_record_still_loads_as_target_and_profile(tmp_path):
    """Records written before "target"/"profile" (schema 1 said "board") still load."""
    old = {"schema": 1, "board": "qemu-arm64", "target": "qemu-arm64", "arch": "arm64",
           "tester": "ci", "host": "lab", "run_id": "20250101T000000Z-abcdef",
           "start": "2025-01-01T00:00:00.000Z", "end": "2025-01-01T00:00:30.000Z",
           "info": {"board_profile": "qemu-virt-arm64", "xen_version": "4.17.5"},
           "steps": [{"name": "uboot", "status": "PASS", "started": "2025-01-01T00:00:00.000Z",
                      "duration_s": 0.4}],
           "verdict": "PASS", "verdict_reason": "", "classification": None, "harness_pid": None}
    run = tmp_path / "qemu-arm64" / old["run_id"]
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(old))
    (loaded,) = list_runs(tmp_path)
    assert (loaded.target, loaded.profile, loaded.verdict) == ("qemu-arm64", "qemu-virt-arm64",
                                                               Status.PASS)
    assert loaded.to_dict()["schema"] == 2 and "board" not in loaded.to_dict()


def test_start_refuses_a_board_dir_symlinked_outside(tmp_path):
    root, outside = tmp_path / "results", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / BOARD).symlink_to(outside)
    with pytest.raises(XenlabError, match="outside the results root"):
        start(root)
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- life cycle

def test_lifecycle_writes_complete_json_after_every_call(tmp_path):
    rec = start(tmp_path, info={"overrides": {"xen.cmdline": "sched=null"}})
    run_dir = tmp_path / BOARD / rec.run_id
    assert rec.path == run_dir.resolve() and (run_dir / "diagnostics").is_dir()
    assert rec.console_log == rec.path / "console.log" and not rec.console_log.exists()
    d = on_disk(rec)
    assert d["verdict"] == "RUNNING" and d["end"] is None and d["steps"] == []
    assert d["schema"] == 2 and d["target"] == BOARD and d["tester"] == "alice"
    assert d["profile"] == "qemu-virt-arm64" and "board" not in d
    assert d["info"] == {"overrides": {"xen.cmdline": "sched=null"}}

    rec.set_info(xen_version="4.17.5", image_set_hash="ab" * 32)
    assert on_disk(rec)["info"]["xen_version"] == "4.17.5"

    rec.step_started("uboot")
    assert on_disk(rec)["steps"][0]["status"] == "RUNNING"
    rec.step_finished("uboot", Status.PASS, 0.4321)
    rec.step_started("xen")
    assert [s["status"] for s in on_disk(rec)["steps"]] == ["PASS", "RUNNING"]
    rec.step_finished("xen", "PASS", 3.5)
    assert rec.finish() is Status.PASS

    d = on_disk(rec)
    assert d["verdict"] == "PASS" and d["end"] and d["end"] >= d["start"]
    assert [(s["name"], s["status"], s["duration_s"]) for s in d["steps"]] == [
        ("uboot", "PASS", 0.432), ("xen", "PASS", 3.5)]
    assert d["info"]["image_set_hash"] == "ab" * 32
    assert (rec.path / "junit.xml").is_file()
    # No temporary files are left beside run.json.
    assert sorted(p.name for p in rec.path.iterdir()) == ["diagnostics", "junit.xml", "run.json"]

    loaded = RunRecord.load(rec.path)
    assert loaded.to_dict() == d
    assert RunRecord.load(rec.run_json).verdict is Status.PASS


def test_odd_facts_never_break_the_record(tmp_path):
    rec = start(tmp_path)
    rec.set_info(image_set=tmp_path / "set", features={"net", "disk"}, when=object())
    info = on_disk(rec)["info"]
    assert info["image_set"] == str(tmp_path / "set") and info["features"] == ["disk", "net"]
    rec.step_finished("uboot", "PASS", 1)  # later writes still work
    assert on_disk(rec)["steps"][0]["status"] == "PASS"


def test_finish_is_final(tmp_path):
    rec = start(tmp_path)
    rec.step_finished("uboot", "PASS", 1)
    rec.finish()
    rec.abort("teardown blew up")  # e.g. an exception while powering off
    assert on_disk(rec)["verdict"] == "PASS"


def test_explicit_verdict(tmp_path):
    rec = start(tmp_path)
    rec.finish(Status.ERROR, "image set missing: run `xenlab images build`",
               classification="image-set-missing")
    d = on_disk(rec)
    assert (d["verdict"], d["classification"]) == ("ERROR", "image-set-missing")
    assert d["verdict_reason"].startswith("image set missing")


def test_unfinished_step_is_a_harness_error(tmp_path):
    rec = start(tmp_path)
    rec.step_started("dom0")
    assert rec.finish() is Status.ERROR
    assert on_disk(rec)["steps"][0]["classification"] == "harness-step-unfinished"


def test_parallel_runs_of_one_board_get_distinct_dirs(tmp_path):
    n = 8
    barrier = threading.Barrier(n)
    records, errors = [], []

    def run():
        barrier.wait()
        try:
            records.append(start(tmp_path))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.path for r in records}) == n
    assert len(list((tmp_path / BOARD).iterdir())) == n


def test_same_run_id_twice_is_refused(tmp_path):
    start(tmp_path, run_id="nightly-1")
    with pytest.raises(XenlabError, match="already exists"):
        start(tmp_path, run_id="nightly-1")


def test_list_runs_newest_first(tmp_path):
    a = start(tmp_path)
    a.finish(Status.PASS)
    time.sleep(0.01)
    b = start(tmp_path)
    time.sleep(0.01)
    c = start(tmp_path, board="qemu-virt-arm32")
    (tmp_path / BOARD / "half-made").mkdir()  # killed before its first run.json
    (tmp_path / BOARD / "notes.txt").write_text("not a run")
    assert [r.run_id for r in list_runs(tmp_path)] == [c.run_id, b.run_id, a.run_id]
    assert [r.run_id for r in list_runs(tmp_path, target=BOARD)] == [b.run_id, a.run_id]
    assert list_runs(tmp_path / "nothing-here") == []
    with pytest.raises(XenlabError):
        list_runs(tmp_path, target="../x")


# --------------------------------------------------------------------------- crashes

CHILD = """
import sys
from pathlib import Path
from xenlab.run.record import RunRecord
rec = RunRecord.start(Path(sys.argv[1]), "qemu-virt-arm64", profile="qemu-virt-arm64", arch="arm64",
                      tester="ci", run_id="victim")
evidence = ["(XEN) d0v0: vGICD: unhandled word write 0x000000ffffffff to ICACTIVER%d" % i
            for i in range(2000)]  # big writes widen the window a torn write would show in
print("ready", flush=True)
i = 0
while True:
    rec.step_started("step-%d" % i)
    rec.step_finished("step-%d" % i, "PASS", 0.1, evidence=evidence)
    rec.set_info(counter=i)
    i += 1
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_sigkill_mid_write_leaves_complete_json(tmp_path, delay):
    run_json = tmp_path / BOARD / "victim" / "run.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        # A reader (a dashboard) polling while the run writes sees whole files only.
        reads, deadline = 0, time.monotonic() + delay
        while time.monotonic() < deadline:
            json.loads(run_json.read_text())
            reads += 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    d = json.loads(run_json.read_text())
    assert d["verdict"] == "RUNNING" and d["run_id"] == "victim"
    assert all(s["status"] in ("PASS", "RUNNING") for s in d["steps"])
    # A record left RUNNING by a killed process still loads for reports.
    # The file still says RUNNING; a reader sees that its writer was killed.
    assert json.loads((tmp_path / BOARD / "victim" / "run.json").read_text())["verdict"] == "RUNNING"
    loaded = RunRecord.load(tmp_path / BOARD / "victim")
    assert (loaded.verdict, loaded.classification) == (Status.ABORTED, "harness-killed")


CTRL_C_CHILD = """
import sys, time
from pathlib import Path
from xenlab.run.record import RunRecord
rec = RunRecord.start(Path(sys.argv[1]), "qemu-virt-arm64", profile="qemu-virt-arm64", arch="arm64",
                      tester="ci", run_id="interrupted")
rec.step_finished("uboot", "PASS", 0.4)
rec.step_started("dom0")
try:
    print("ready", flush=True)  # inside the try: SIGINT may come at once
    time.sleep(60)
except KeyboardInterrupt:
    rec.abort("interrupted by the user (Ctrl-C)")
    sys.exit(130)
"""


def test_ctrl_c_aborts_with_reason(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, str(tmp_path)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == 130
    finally:
        if child.poll() is None:
            child.kill()
    run_dir = tmp_path / BOARD / "interrupted"
    d = json.loads((run_dir / "run.json").read_text())
    assert d["verdict"] == "ABORTED" and d["end"]
    assert d["verdict_reason"] == "interrupted by the user (Ctrl-C)"
    assert [(s["name"], s["status"]) for s in d["steps"]] == [("uboot", "PASS"), ("dom0", "ABORTED")]
    assert d["steps"][1]["duration_s"] >= 0
    suite = ET.parse(run_dir / "junit.xml").getroot().find("testsuite")
    assert suite.find("testcase[@name='dom0']/error") is not None


def test_killed_qemu_marks_the_step_error(tmp_path):
    rec = start(tmp_path)
    rec.step_started("xen")
    rec.abort("QEMU exited with status -9", status=Status.ERROR)
    d = on_disk(rec)
    assert d["verdict"] == "ABORTED" and d["steps"][0]["status"] == "ERROR"
    assert d["steps"][0]["reason"] == "QEMU exited with status -9"


# --------------------------------------------------------------------------- verdicts

def verdict_of(tmp_path, *steps) -> dict:
    rec = start(tmp_path)
    for name, status, extra in steps:
        rec.step_finished(name, status, 1.0, **extra)
    rec.finish()
    return on_disk(rec)


def test_verdict_all_pass_and_skip_is_pass(tmp_path):
    d = verdict_of(tmp_path, ("uboot", "PASS", {}), ("net", "SKIP", {"reason": "no bridge"}))
    assert (d["verdict"], d["classification"]) == ("PASS", None)


def test_verdict_is_the_first_failure(tmp_path):
    d = verdict_of(tmp_path, ("uboot", "PASS", {}),
                   ("xen", "FAIL", {"classification": "xen-panic", "message": "Panic on CPU 0"}),
                   ("dom0", "ERROR", {"classification": "console-lost"}))
    assert (d["verdict"], d["classification"]) == ("FAIL", "xen-panic")
    assert d["verdict_reason"] == "xen: Panic on CPU 0 (then dom0)"


def test_verdict_error_first(tmp_path):
    d = verdict_of(tmp_path, ("uboot", "ERROR", {"classification": "tftp-file-missing"}),
                   ("xen", "FAIL", {"classification": "stage-timeout:xen"}))
    assert (d["verdict"], d["classification"]) == ("ERROR", "tftp-file-missing")


def test_verdict_all_skipped_is_skip_and_no_steps_is_error(tmp_path):
    d = verdict_of(tmp_path, ("domu", "SKIP", {"reason": "board has no DomU image"}))
    assert d["verdict"] == "SKIP" and "no DomU image" in d["verdict_reason"]
    rec = start(tmp_path)
    assert rec.finish() is Status.ERROR  # never PASS because nothing failed


def test_step_status_is_validated(tmp_path):
    rec = start(tmp_path)
    for bad in ("RUNNING", "KNOWN", "ABORTED", "ok"):
        with pytest.raises(ValueError):
            rec.step_finished("x", bad, 1)


# --------------------------------------------------------------------------- console

def test_clean_lines_removes_escapes_and_carriage_returns():
    assert clean_lines("dom0# \x1b[6nxl list\r\r\r\n\r\r\r\n(XEN) a\x08b\r\n") == [
        "dom0# xl list", "(XEN) ab"]


def test_facts_from_real_transcript():
    facts = parse_console_facts(TRANSCRIPT)
    assert facts["uboot_version"] == "2023.01+dfsg-2+deb12u3"
    assert facts["xen_version"] == "4.17.5"
    assert facts["dom0_kernel"] == "6.1.0-50-cloud-arm64"
    assert facts["domU_kernel"] == "6.1.0-50-cloud-arm64"
    assert "xen_changeset" not in facts  # Debian's build prints none: absent, not empty


def test_facts_with_timestamps_changeset_build_id_and_crlf():
    text = ("U-Boot SPL 2024.01 (Jan 01 2024)\r\n"
            "U-Boot 2024.01-xilinx-v2024.1 (Jan 01 2024)\r\n"
            "\x1b[6n(XEN) [    0.000000] Xen version 4.19-unstable (user@example) (gcc) debug=y\r\r\r\n"
            "(XEN) [    0.000001] Latest ChangeSet: Tue Jan 2 2024 +0000 git:0123abc\r\r\r\n"
            "(XEN) [    0.000002] build-id: 9f2c1e0d4b\r\r\r\n"
            "[    0.000000] Linux version 6.6.0-xilinx (gcc) #1 SMP\r\n"
            "(XEN) DOM1: [    0.000000] Linux version 6.6.0-domu (gcc) #1 SMP\r\n")
    assert parse_console_facts(text) == {
        "uboot_version": "2024.01-xilinx-v2024.1", "xen_version": "4.19-unstable",
        "xen_changeset": "Tue Jan 2 2024 +0000 git:0123abc", "xen_build_id": "9f2c1e0d4b",
        "dom0_kernel": "6.6.0-xilinx", "domU_kernel": "6.6.0-domu"}


def test_dom0_rebooting_is_not_taken_for_the_domu():
    text = ("(XEN) Xen version 4.17.5 (x)\n[    0.0] Linux version 6.1.0-a (x)\n"
            "[    0.0] Linux version 6.1.0-a (x)\n")
    assert "domU_kernel" not in parse_console_facts(text)


def test_passing_run_classifies_as_none():
    assert classify_console(TRANSCRIPT, "domu") is None
    assert classify_console(TRANSCRIPT, "dom0") is None


def test_harmless_qemu_messages_do_not_match():
    text = ("Starting kernel ...\n"
            "(XEN) CPU0 has no enable method\n"
            "(XEN) **** Guests without CPU erratum workarounds can deadlock the system! ****\n"
            "(XEN) d0v0: vGICD: unhandled word write 0x000000ffffffff to ICACTIVER4\n"
            "(XEN) d0v0: Unhandled SMC/HVC: 0x84000050\n")
    assert classify_console(text, "dom0") is None


def test_xen_panic_in_real_transcript():
    text = inject(TRANSCRIPT, "Guests without CPU erratum", XEN_PANIC)
    status, cls, evidence = classify_console(text, "xen")
    assert (status, cls) == (Status.FAIL, "xen-panic")
    # What led to the panic, the panic line, then the reason Xen printed after it.
    assert evidence[-2] == "(XEN) Panic on CPU 0:"
    assert evidence[-3] == "(XEN) ****************************************"
    assert evidence[-1] == "(XEN) Assertion 'd->arch.vgic.handler' failed at vgic.c:120"
    assert 1 < len(evidence) <= 8 and all("\x1b" not in e and "\r" not in e for e in evidence)


def test_xen_assertion_and_bug():
    text = "Starting kernel ...\n(XEN) Assertion 'x == y' failed at common/sched/core.c:42\n"
    assert classify_console(text, "xen")[:2] == (Status.FAIL, "xen-bug")
    text = "(XEN) Xen BUG at page_alloc.c:1234\n"
    assert classify_console(text, "xen")[:2] == (Status.FAIL, "xen-bug")


def test_kernel_panic_is_dom0_or_domu_by_stage():
    block = "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
    dom0 = inject(TRANSCRIPT, "Linux version 6.1.0-50-cloud-arm64", block)
    status, cls, evidence = classify_console(dom0, "dom0")
    assert (status, cls) == (Status.FAIL, "dom0-panic")
    assert "VFS: Unable to mount root fs" in evidence[-1]
    domu = inject(TRANSCRIPT, "Parsing config from guest.cfg", block)
    assert classify_console(domu, "domu-boot")[1] == "domu-panic"


def test_second_uboot_banner_is_a_reset():
    # Xen reboots the board ("Reboot in five seconds") and U-Boot starts over.
    text = inject(TRANSCRIPT, "Guests without CPU erratum",
                  "\r\r\r\nU-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - 08:38:07 +0000)\r\r\r\n")
    status, cls, evidence = classify_console(text, "dom0")
    assert (status, cls) == (Status.FAIL, "uboot-reset-loop")
    assert evidence[-1].startswith("U-Boot 2023.01")
    # The first banner alone (a board that boots) is fine, SPL before it too.
    assert classify_console("U-Boot SPL 2023.01\nU-Boot 2023.01\n=> ", "uboot") is None


def test_the_earliest_failure_wins():
    text = inject(TRANSCRIPT, "Guests without CPU erratum",
                  XEN_PANIC + "U-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026)\r\n")
    assert classify_console(text, "xen")[1] == "xen-panic"


@pytest.mark.parametrize("line, status, cls", [
    ("TFTP error: 'File not found' (1)", Status.ERROR, "tftp-file-missing"),
    ("TFTP error: trying to overwrite reserved memory...", Status.ERROR, "tftp-load-error"),
    ("Bad Linux ARM64 Image magic!", Status.FAIL, "boot-image-format"),
    ("Bad Linux ARM zImage magic!", Status.FAIL, "boot-image-format"),
    ("- Xen must be entered in NS EL2 mode -", Status.FAIL, "xen-not-hyp-mode"),
])
def test_bootloader_and_early_failures(line, status, cls):
    text = f"=> tftpb 0x42000000 xen\r\n\x1b[6n{line}\r\n=> "
    status_, cls_, evidence = classify_console(text, "uboot")
    assert (status_, cls_) == (status, cls) and evidence[-1] == line


def test_console_excerpt(tmp_path):
    log = tmp_path / "console.log"
    log.write_text(inject(TRANSCRIPT, "Guests without CPU erratum", XEN_PANIC))
    excerpt = console_excerpt(log, "(XEN) Panic on CPU 0:", lines=20).splitlines()
    assert len(excerpt) == 20
    assert excerpt[15] == "(XEN) Panic on CPU 0:"  # 15 lines before it, 4 after
    assert "Assertion 'd->arch.vgic.handler' failed" in excerpt[16]
    assert console_excerpt(tmp_path / "missing.log", "x") == ""


# --------------------------------------------------------------------------- junit and show

def test_junit_structure(tmp_path):
    rec = start(tmp_path)
    rec.set_info(xen_version="4.17.5", image_set_hash="cd" * 32)
    text = inject(TRANSCRIPT, "Guests without CPU erratum", XEN_PANIC)
    rec.console_log.write_text(text)
    rec.step_finished("uboot", "PASS", 0.4)
    status, cls, evidence = classify_console(text, "xen")
    rec.step_finished("xen", status, 3.2, classification=cls, message="Xen panicked",
                      evidence=evidence)
    rec.step_finished("dom0", "ERROR", 0.5, classification="console-lost", message="EOF")
    rec.step_finished("domu", "SKIP", 0, reason="no Dom0 shell")
    rec.finish()

    root = ET.parse(rec.junit_xml).getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == BOARD and suite.get("hostname") and suite.get("timestamp")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("4", "1", "1", "1")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["image_set_hash"] == "cd" * 32
    assert props["xen_version"] == "4.17.5" and props["arch"] == "arm64"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["uboot", "xen", "dom0", "domu"]
    assert float(cases[1].get("time")) == pytest.approx(3.2)
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    failure = cases[1].find("failure")
    assert failure.get("type") == "xen-panic" and "Xen panicked" in failure.get("message")
    # The console excerpt around the failure, beyond the evidence lines.
    assert "console.log around the failure" in failure.text
    assert "Assertion 'd->arch.vgic.handler' failed at vgic.c:120" in failure.text
    assert cases[2].find("error").get("type") == "console-lost"
    assert cases[3].find("skipped").get("message") == "no Dom0 shell"


def test_format_run(tmp_path):
    rec = start(tmp_path)
    rec.set_info(xen_version="4.17.5", image_set_hash="0123456789abcdef" * 4)
    rec.step_finished("uboot", "PASS", 0.42)
    rec.step_finished("dom0", "FAIL", 45.0, classification="stage-timeout:dom0",
                      message="no dom0-ready within 180 s")
    rec.finish()
    table = format_run(json.loads(rec.run_json.read_text()))
    lines = table.splitlines()
    assert BOARD in lines[0] and "Xen 4.17.5" in lines[1] and "0123456789abcdef" in lines[1]
    assert any(l.split() == ["uboot", "PASS", "0.4"] for l in lines)
    assert any(l.split() == ["dom0", "FAIL", "45.0", "stage-timeout:dom0"] for l in lines)
    assert lines[-1] == ("verdict: FAIL [stage-timeout:dom0]: "
                         "dom0: no dom0-ready within 180 s")


def test_format_run_shows_a_known_issue_without_a_link_and_a_native_boot(tmp_path):
    """A record's known issue may lack its link (the schema allows it: the fuzzer's find)."""
    rec = start(tmp_path)
    d = json.loads(rec.run_json.read_text())
    d["steps"] = [{"name": "dom0", "status": "KNOWN", "duration_s": 1.0, "classification": "x",
                   "known": {"id": "k", "label": "a known thing"}}]
    d.update(verdict="FAIL", info={"native": {"result": "boots"}})
    table = format_run(d)
    assert "known: a known thing" in table and "(None)" not in table
    assert table.splitlines()[-1] == "verdict: FAIL (native: boots)"
