"""Known issues as data (xenlab.known_issues) and KNOWN steps in run records."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from xenlab.errors import XenlabError
from xenlab.lab import monitors
from xenlab.run.known_issues import CULPRITS, failure_text, load_known_issues, match
from xenlab.run.record import RunRecord

BUNDLED = Path(__file__).resolve().parent.parent / "boards" / "known-issues.yaml"

ENTRY = """
- id: {id}
  board: "{board}"
  step: "{step}"
  regex: '{regex}'
  label: "a label"
  link: "https://example.org/bug/1"
  culprit: {culprit}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "known-issues.yaml"
    path.write_text(text)
    return path


def entry(id="x", board="*", step="*", regex="boom", culprit="xen") -> str:
    return ENTRY.format(id=id, board=board, step=step, regex=regex, culprit=culprit)


def test_bundled_file_is_valid():
    issues = load_known_issues(BUNDLED)
    assert len(issues) >= 2
    assert len({i.id for i in issues}) == len(issues)
    assert all(i.culprit in CULPRITS and i.label and i.link for i in issues)
    assert load_known_issues() == issues  # the default is the bundled file


def test_bundled_entries_match_what_they_describe():
    issues = load_known_issues(BUNDLED)
    hotplug = failure_text("stage-timeout:domu", "no DomU shell within 180 s", [
        "libxl: error: libxl_aoutils.c:646:libxl__kill_xs_path: Device Model already exited",
        "libxl: error: killing execution of /etc/xen/scripts/block add because of timeout"])
    assert match("zcu102", "domu-create", hotplug, issues=issues).id == "hotplug-script-timeout"
    stall = "[  42.1] rcu: INFO: rcu_sched self-detected stall on CPU"
    assert match("qemu-virt-arm64", "dom0", stall, issues=issues).id == "tcg-rcu-stall"
    assert match("zcu102", "dom0", stall, issues=issues) is None  # real hardware: not TCG
    timeout = failure_text("stage-timeout:domu", "no DomU shell", [])
    assert match("qemu-virt-arm64", "domu", timeout, issues=issues) is None


def test_a_recorded_arm32_gzip_trap_is_the_known_xen_bug():
    # A real console (tests/data/README.md): classified as Xen's panic, then matched
    # by its evidence; another panic in kernel_probe's neighbourhood is not it.
    text = (BUNDLED.parent.parent / "tests" / "data" / "qemu-arm32-gzip-unaligned.log").read_text(
        errors="replace")
    status, classification, evidence = monitors.classify(text, "xen")
    assert (str(status), classification) == ("FAIL", "xen-panic")
    known = match("qemu-arm32", "xen_creates_every_domu",
                  failure_text(classification, "Panic on CPU 0", evidence))
    assert known is not None and known.id == "arm32-gzip-kernel-unaligned" and known.culprit == "xen"
    other = failure_text("xen-panic", "Panic on CPU 0", ["(XEN) Panic on CPU 0:",
                                                         "(XEN) Failed to allocate requested dom0 memory"])
    assert match("qemu-arm32", "xen_boots", other) is None


def test_harmless_noise_never_makes_a_failure_known():
    noise = failure_text("xen-panic", "Panic on CPU 0", [
        "(XEN) d0v0: Unhandled SMC/HVC: 0x84000050",
        "(XEN) d0v0: vGICD: unhandled word write 0x000000ffffffff to ICACTIVER4",
        "(XEN) Panic on CPU 0:"])
    assert match("qemu-virt-arm64", "xen", noise) is None


def test_board_and_step_globs_and_first_match_wins(tmp_path):
    path = write(tmp_path, entry("narrow", board="rpi4*", step="dom0", regex="oops \\d+")
                 + entry("wide", regex="oops"))
    issues = load_known_issues(path)
    assert match("rpi4b", "dom0", "got oops 12 here", issues=issues).id == "narrow"
    assert match("rpi4b", "dom0-shell", "got oops 12", issues=issues).id == "wide"
    assert match("zcu102", "dom0", "oops", issues=issues).id == "wide"
    assert match("zcu102", "dom0", "fine", issues=issues) is None


@pytest.mark.parametrize("text, key, why", [
    (entry(regex="(unclosed"), "regex", "not a valid regular expression"),
    (entry() + "  severity: high\n", "severity", "unknown key"),
    (entry(culprit="firmware"), "culprit", "'firmware' is not one of"),
    (entry(id="Bad Id"), "id", "must match"),
    (entry().replace('  link: "https://example.org/bug/1"\n', ""), "link", "missing"),
    (entry().replace('"a label"', '""'), "label", "must not be empty"),
])
def test_bad_entries_name_file_index_and_key(tmp_path, text, key, why):
    path = write(tmp_path, entry("first") + text.replace("id: x", "id: second"))
    with pytest.raises(XenlabError) as e:
        load_known_issues(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: key '[1].{key}': ") and why in msg


@pytest.mark.parametrize("text, why", [
    ("id: x\n", "key '(top level)': {'id': 'x'} is not a list"),
    ("- [1, 2]\n", "key '[0]': [1, 2] is not a mapping"),
    ("- {id: [\n", "not valid YAML at line"),
    (entry("same") + entry("same"), "key '[1].id': 'same' is used twice"),
])
def test_bad_files(tmp_path, text, why):
    with pytest.raises(XenlabError) as e:
        load_known_issues(write(tmp_path, text))
    assert why in str(e.value)


def test_missing_file(tmp_path, monkeypatch):
    with pytest.raises(XenlabError, match="cannot read known issues"):
        load_known_issues(tmp_path / "nope.yaml")
    # A user's own boards directory without a known-issues file has none.
    monkeypatch.setenv("XENLAB_BOARDS", str(tmp_path))
    assert load_known_issues() == []
    assert load_known_issues(write(tmp_path, "")) == []


# --------------------------------------------------------------------------- KNOWN steps

def record_with(tmp_path, *steps) -> dict:
    rec = RunRecord.start(tmp_path, "qemu-virt-arm32", profile="qemu-virt-arm32", arch="arm32",
                          tester="ci")
    for name, status, kw in steps:
        rec.step_finished(name, status, 2.0, **kw)
    rec.finish()
    return json.loads(rec.run_json.read_text()), rec


def test_known_step_keeps_its_original_status_and_label(tmp_path):
    issues = load_known_issues(BUNDLED)
    stall = "[  42.1] rcu: INFO: rcu_sched self-detected stall on CPU"
    text = failure_text("stage-timeout:domu", "no DomU shell within 180 s", [stall])
    known = match("qemu-virt-arm32", "domu", text, issues=issues)
    d, rec = record_with(tmp_path, ("dom0", "PASS", {}),
                         ("domu", "FAIL", {"classification": "stage-timeout:domu",
                                           "message": "no DomU shell within 180 s",
                                           "evidence": [stall], "known": known}))
    step = d["steps"][1]
    assert (step["status"], step["original_status"]) == ("KNOWN", "FAIL")
    assert step["known"] == {"id": "tcg-rcu-stall", "label": known.label,
                             "link": known.link, "culprit": "lab"}
    assert d["verdict"] == "KNOWN" and known.label in d["verdict_reason"]
    case = ET.parse(rec.junit_xml).getroot().find("testsuite/testcase[@name='domu']")
    skipped = case.find("skipped")
    assert case.find("failure") is None
    assert skipped.get("message").startswith(f"known issue: {known.label}")


def test_unknown_failure_before_a_known_one_decides(tmp_path):
    known = load_known_issues(BUNDLED)[0]
    d, _ = record_with(tmp_path,
                       ("dom0", "FAIL", {"classification": "dom0-panic", "message": "panic"}),
                       ("domu", "ERROR", {"message": "hotplug", "known": known}))
    assert (d["verdict"], d["classification"]) == ("FAIL", "dom0-panic")
    assert d["steps"][1]["status"] == "KNOWN"


def test_a_failure_after_a_known_one_is_still_named(tmp_path):
    known = load_known_issues(BUNDLED)[0]
    d, _ = record_with(tmp_path,
                       ("domu", "ERROR", {"message": "hotplug", "known": known}),
                       ("destroy", "FAIL", {"classification": "xen-panic", "message": "panic"}))
    assert d["verdict"] == "KNOWN"
    assert d["verdict_reason"].endswith("(then destroy)")


def test_only_failures_can_be_known(tmp_path):
    known = load_known_issues(BUNDLED)[0]
    rec = RunRecord.start(tmp_path, "b", arch="arm64", tester="ci")
    with pytest.raises(ValueError):
        rec.step_finished("x", "PASS", 1.0, known=known)
