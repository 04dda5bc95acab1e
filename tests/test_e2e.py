"""The end-to-end run: `pytest --lg-env farm.yaml testcases/` boots both QEMU virt boards
of the farm for real (U-Boot, TFTP, Xen 4.17, Dom0, a DomU) and records it. The
farm's emulated real boards boot once, in tests/test_testday.py.

If QEMU cannot run here this fails: a skipped boot is not a pass.
"""

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = ["uboot", "xen_boots", "dom0_boots", "xl_info", "xl_list", "domu_create_console",
         "pv_block", "pv_network", "domu_shutdown_destroy"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
         str(REPO / "testcases"), "--xenlab-target", "qemu-arm64", "--xenlab-target", "qemu-arm32",
         "--xenlab-results", str(results), "--xenlab-tester", "ci",
         "-p", "no:cacheprovider", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    return proc, results


def _record(results: Path, board: str) -> tuple[dict, Path]:
    runs = sorted((results / board).iterdir())
    assert len(runs) == 1, runs
    return json.loads((runs[0] / "run.json").read_text()), runs[0]


def test_smoke_passes_on_both_qemu_virt_boards(smoke_run):
    proc, _ = smoke_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", proc.stdout)
    assert " skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


@pytest.mark.parametrize("target_name,toolchain", [("qemu-arm64", "aarch64-linux-gnu"),
                                                   ("qemu-arm32", "arm-linux-gnueabihf")])
def test_run_record_is_complete(smoke_run, target_name, toolchain):
    _, results = smoke_run
    record, run_dir = _record(results, target_name)
    assert record["verdict"] == "PASS", record
    assert [s["name"] for s in record["steps"]] == STEPS
    assert all(s["status"] == "PASS" and s["duration_s"] > 0 for s in record["steps"])
    info = record["info"]
    assert re.fullmatch(r"4\.17\.\d+", info["xen_version"])
    assert re.fullmatch(r"[0-9a-f]{64}", info["image_set_hash"])
    assert info["uboot_version"].startswith("2023.01")
    assert info["dom0_kernel"].startswith("6.1.0-") and info["domU_kernel"].startswith("6.1.0-")
    assert record["tester"] == "ci" and record["target"] == target_name

    console = (run_dir / "console.log").read_text(errors="replace")
    banner = re.search(r"\(XEN\) Xen version 4\.17\.\d+ .*", console)
    assert banner, console[:3000]
    assert toolchain in banner.group(0)  # the Xen of this board's arch
    assert re.search(r"Domain-0\s+0\s+\d+", console)
    assert "XENLAB-DOMU-READY" in console

    suite = ET.parse(run_dir / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite.get("name") == target_name
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == STEPS
    assert not suite.findall(".//failure") and not suite.findall(".//error")
