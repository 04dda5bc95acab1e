"""Known issues as data (xenlab.known_issues) and KNOWN steps in run records."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import attr
import pytest

from xenlab.errors import XenlabError
from xenlab.lab import monitors
from xenlab.run.known_issues import (CULPRITS, RunContext, failure_text, load_known_issues,
                                     match)
from xenlab.run.record import RunRecord

BUNDLED = Path(__file__).resolve().parent.parent / "boards" / "known-issues.yaml"

ENTRY = """
- id: {id}
  target: "{target}"
  step: "{step}"
  regex: '{regex}'
  label: "a label"
  link: "https://example.org/bug/1"
  culprit: {culprit}
  arch: arm64
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "known-issues.yaml"
    path.write_text(text)
    return path


def entry(id="x", target="*", step="*", regex="boom", culprit="xen") -> str:
    return ENTRY.format(id=id, target=target, step=step, regex=regex, culprit=culprit)


ARM64 = RunContext("qemu-arm64", "qemu-virt-arm64", "arm64", None, True, "4.17.5")
ARM32 = RunContext("qemu-arm32", "qemu-virt-arm32", "arm32", None, True, "4.17.5")
RPI4 = RunContext("rpi4", "rpi4", "arm64", None, False, "4.17.5")  # the board itself


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
    assert match(RPI4, "domu-create", hotplug, issues=issues).id == "hotplug-script-timeout"
    stall = "[  42.1] rcu: INFO: rcu_sched self-detected stall on CPU"
    assert match(ARM64, "dom0", stall, issues=issues).id == "tcg-rcu-stall"
    assert match(RPI4, "dom0", stall, issues=issues) is None  # real hardware: not TCG
    timeout = failure_text("stage-timeout:domu", "no DomU shell", [])
    assert match(ARM64, "domu", timeout, issues=issues) is None


GZIP_TRAP = (BUNDLED.parent.parent / "tests" / "data" / "qemu-arm32-gzip-unaligned.log")


def gzip_trap_text() -> str:
    text = GZIP_TRAP.read_text(errors="replace")
    status, classification, evidence = monitors.classify(text, "xen")
    assert (str(status), classification) == ("FAIL", "xen-panic")
    return failure_text(classification, "Panic on CPU 0", evidence)


def test_the_recorded_arm32_gzip_trap_on_the_gzip_variant_is_the_known_xen_bug():
    # A real console (tests/data/README.md): classified as Xen's panic, then matched
    # by its evidence, on the arch, variant and Xen line the entry names.
    gzip = attr.evolve(ARM32, variant="gzip")
    known = match(gzip, "xen_creates_every_domu", gzip_trap_text())
    assert known is not None and known.id == "arm32-gzip-kernel-unaligned" and known.culprit == "xen"
    other = failure_text("xen-panic", "Panic on CPU 0", ["(XEN) Panic on CPU 0:",
                                                         "(XEN) Failed to allocate requested dom0 memory"])
    assert match(gzip, "xen_boots", other) is None


@pytest.mark.parametrize("ctx, why", [
    (attr.evolve(ARM64, variant="gzip"), "arm64: the trap is arm32's"),
    (ARM32, "the dom0 smoke test loads no gzip'd kernel"),
    (attr.evolve(ARM32, variant="gzip", xen="4.20.4"), "another Xen line"),
    (attr.evolve(ARM32, variant="gzip", xen=None), "a Xen that never said its version"),
])
def test_the_same_trap_outside_the_entrys_scope_is_not_known(ctx, why):
    """An arm64 crash in kernel_probe, or one on another variant or Xen, is news."""
    assert match(ctx, "xen_creates_every_domu", gzip_trap_text()) is None, why


def test_harmless_noise_never_makes_a_failure_known():
    noise = failure_text("xen-panic", "Panic on CPU 0", [
        "(XEN) d0v0: Unhandled SMC/HVC: 0x84000050",
        "(XEN) d0v0: vGICD: unhandled word write 0x000000ffffffff to ICACTIVER4",
        "(XEN) Panic on CPU 0:"])
    assert match(ARM64, "xen", noise) is None


def test_target_and_step_globs_and_first_match_wins(tmp_path):
    path = write(tmp_path, entry("narrow", target="rpi4*", step="dom0", regex="oops \\d+")
                 + entry("wide", regex="oops"))
    issues = load_known_issues(path)
    assert match(RPI4, "dom0", "got oops 12 here", issues=issues).id == "narrow"
    assert match(RPI4, "dom0-shell", "got oops 12", issues=issues).id == "wide"
    zcu = RunContext("zcu102", "zcu102", "arm64")
    assert match(zcu, "dom0", "oops", issues=issues).id == "wide"
    assert match(zcu, "dom0", "fine", issues=issues) is None
    assert match(ARM32, "dom0", "oops", issues=issues) is None  # both entries say arm64


@pytest.mark.parametrize("scope, hit, miss", [
    ("profile: 'qemu-virt-*'", ARM64, RPI4),
    ("target: qemu-arm64", ARM64, RunContext("qemu-arm64-gicv3", "qemu-virt-arm64-gicv3", "arm64")),
    ("variant: dom0", ARM64, attr.evolve(ARM64, variant="dom0less")),
    ("variant: 'static*'", attr.evolve(ARM64, variant="staticmem"), ARM64),
    ("emulated: false", RPI4, ARM64),
    ("xen: '>=4.17, <4.20'", ARM64, attr.evolve(ARM64, xen="4.20.4")),
    ("xen: '==4.17.*'", ARM64, attr.evolve(ARM64, xen="4.23-unstable")),
])
def test_each_scope_key_narrows_an_entry(tmp_path, scope, hit, miss):
    issues = load_known_issues(write(tmp_path, entry(culprit="dom0").replace("  arch: arm64\n", "")
                                     + f"  {scope}\n"))
    assert match(hit, "dom0", "boom", issues=issues) is not None
    assert match(miss, "dom0", "boom", issues=issues) is None


@pytest.mark.parametrize("text, key, why", [
    (entry(regex="(unclosed"), "regex", "not a valid regular expression"),
    (entry() + "  severity: high\n", "severity", "unknown key"),
    (entry(culprit="firmware"), "culprit", "'firmware' is not one of"),
    (entry(id="Bad Id"), "id", "must match"),
    (entry().replace('  link: "https://example.org/bug/1"\n', ""), "link", "missing"),
    (entry().replace('"a label"', '""'), "label", "must not be empty"),
    (entry().replace("  arch: arm64\n", ""), "culprit",
     "'xen' needs the Xen versions (key xen: '>=4.17, <4.20') or the arch"),
    (entry(culprit="lab"), "culprit", "'lab' entries describe the emulator: add emulated: true"),
    (entry() + "  xen: '4.17'\n", "xen", "'4.17' is not an operator"),
    (entry() + "  arch: x86\n", "arch", "'x86' is not one of"),
    (entry().replace('  target: "*"', '  board: "*"'), "board", "names the farm's 'target' or"),
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
    hotplug = "libxl: error: killing execution of /etc/xen/scripts/block add because of timeout"
    known = match(RPI4, "domu", failure_text("stage-timeout:domu", "no DomU shell within 180 s",
                                             [hotplug]), issues=issues)
    d, rec = record_with(tmp_path, ("dom0", "PASS", {}),
                         ("domu", "FAIL", {"classification": "stage-timeout:domu",
                                           "message": "no DomU shell within 180 s",
                                           "evidence": [hotplug], "known": known}))
    step = d["steps"][1]
    assert (step["status"], step["original_status"]) == ("KNOWN", "FAIL")
    assert step["known"] == {"id": "hotplug-script-timeout", "label": known.label,
                             "link": known.link, "culprit": "harness"}
    assert d["verdict"] == "KNOWN" and known.label in d["verdict_reason"]
    case = ET.parse(rec.junit_xml).getroot().find("testsuite/testcase[@name='domu']")
    skipped = case.find("skipped")
    assert case.find("failure") is None
    assert skipped.get("message").startswith(f"known issue: {known.label}")


def test_a_lab_entry_makes_the_run_the_labs_error_never_a_pass(tmp_path):
    """The TCG RCU stall on an emulated board: ERROR (the lab's), with the issue named."""
    stall = "[  42.1] rcu: INFO: rcu_sched self-detected stall on CPU"
    known = match(ARM32, "domu", failure_text("stage-timeout:domu", "no DomU shell", [stall]))
    assert known.id == "tcg-rcu-stall" and known.culprit == "lab"
    d, _ = record_with(tmp_path, ("dom0", "PASS", {}),
                       ("domu", "FAIL", {"classification": "stage-timeout:domu",
                                         "message": "no DomU shell", "evidence": [stall],
                                         "known": known}))
    step = d["steps"][1]
    assert (step["status"], step["original_status"]) == ("ERROR", "FAIL")
    assert step["known"]["id"] == "tcg-rcu-stall"
    assert d["verdict"] == "ERROR" and known.label in d["verdict_reason"]


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
