"""Issue 26 (seed §7): a failed Dom0 says whether its kernel boots without Xen.

Dom0 failures, each a copy of the board's profile with one thing changed:

- Dom0 given 80 MiB (`qemu-arm64`): Linux panics unpacking its initramfs ("System is
  deadlocked on memory") under Xen, and the same kernel, initramfs and DTB boot on the
  bare board, which has all its RAM: `native: boots`, the failure is Xen's (its Dom0's size).
- Dom0 given 32 MiB (the emulated NanoPi NEO, arm32): Dom0 prints nothing under Xen, and
  boots on the bare board: `native: boots`.
- Dom0's command line `rdinit=/nonexistent root=/dev/vda` (`qemu-arm64`, and the emulated
  NanoPi NEO with its armmp kernel): no init, no root device, Linux panics with or
  without Xen: `native: fails`, the kernel's or the board's.

Both consoles are kept, the run's and the native boot's. If QEMU cannot run here
this fails: a skipped boot is not a pass.

Not the Pi: its Dom0 kernel (Debian's cloud kernel) has no driver for the Pi's UART, so
natively it is silent whatever the case.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from xenlab.run.record import RunRecord

REPO = Path(__file__).resolve().parent.parent
CASES = {  # name: (the change to the profile, what Dom0's kernel does without Xen)
    "small-dom0": ({"dom0": {"memory_mb": 80}}, "boots"),
    # arm32 Xen gives Dom0 1:1 banks of 32 or 64 MiB (40, 48: "Unable to allocate first
    # memory bank"); with 32 MiB Dom0 never prints a line, so its stage is kept short.
    "tiny-dom0": ({"dom0": {"memory_mb": 32}, "timeouts": {"dom0": 30}}, "boots"),
    "no-root": ({"dom0": {"cmdline": "console=hvc0 earlycon=xen rdinit=/nonexistent root=/dev/vda"}},
                "fails"),
}
TARGETS = {"qemu-arm64": "qemu-virt-arm64", "nanopi-neo": "nanopi-neo"}
RUNS = [("qemu-arm64", "small-dom0"), ("nanopi-neo", "tiny-dom0"), ("qemu-arm64", "no-root"),
        ("nanopi-neo", "no-root")]


def _farm(tmp: Path, target: str, profile: Path) -> Path:
    """farm.yaml with `target` booting `profile` (its build paths made absolute)."""
    text = (REPO / "farm.yaml").read_text().replace("$BASE/build/", str(REPO / "build") + "/")
    old = f"xenlab_board: {TARGETS[target]}\n"
    assert old in text
    farm = tmp / "farm.yaml"
    farm.write_text(text.replace(old, f"xenlab_board: {profile}\n", 1))
    return farm


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Each (target, case) run once, two at a time."""
    out = {}

    def one(target, case):
        tmp = tmp_path_factory.mktemp(f"{target}-{case}")
        data = yaml.safe_load((REPO / "boards" / f"{TARGETS[target]}.yaml").read_text())
        for key, change in CASES[case][0].items():
            data[key].update(change)
        profile = tmp / f"{TARGETS[target]}-{case}.yaml"
        profile.write_text(yaml.safe_dump(data))
        results = tmp / "results"
        subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(_farm(tmp, target, profile)),
                        str(REPO / "testcases"), "--xenlab-target", target, "-k",
                        "uboot or xen_boots or dom0_boots", "--xenlab-results", str(results),
                        "-p", "no:cacheprovider", "-q"],
                       cwd=REPO, capture_output=True, text=True, timeout=1200)
        (run,) = (results / target).iterdir()
        out[(target, case)] = RunRecord.load(run)

    # Two at a time, never two on one target (its TFTP directory and card are its own).
    for pair in (RUNS[i:i + 2] for i in range(0, len(RUNS), 2)):
        threads = [threading.Thread(target=one, args=job) for job in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return out


@pytest.mark.parametrize("target,case", RUNS)
def test_a_failed_dom0_says_whether_its_kernel_boots_without_xen(runs, target, case):
    record = runs[(target, case)]
    steps = {s.name: s for s in record.steps}
    assert steps["xen_boots"].status.value == "PASS", steps["xen_boots"]
    dom0 = steps["dom0_boots"]
    want_dom0 = "stage-timeout:dom0" if case == "tiny-dom0" else "dom0-panic"
    assert (dom0.status.value, dom0.classification) == ("FAIL", want_dom0), dom0
    native = record.info["native"]
    want = CASES[case][1]
    assert native["result"] == want, native
    assert record.verdict_label == f"FAIL (native: {want})"
    # Both consoles kept: Xen's boot, and the kernel alone on the board.
    xen = record.console_log.read_text(errors="replace")
    bare = (record.path / "native-console.log").read_text(errors="replace")
    assert "Xen version" in xen and "Xen version" not in bare
    assert "Booting Linux on physical CPU" in bare
    assert "console=hvc0" not in native["bootargs"] and "earlycon" in native["bootargs"].split()
    if want == "boots":
        assert "XENLAB-DOM0-READY" in bare
        assert "deadlocked on memory" in xen or "Booting Linux" not in xen
    else:
        assert native["classification"] == "dom0-panic" and "Kernel panic" in bare
        assert "rdinit=/nonexistent root=/dev/vda" in native["bootargs"]
    assert json.loads((record.path / "run.json").read_text())["info"]["native"] == native
