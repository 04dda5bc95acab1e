"""Issue 28: a results disk that fills mid-run costs one line, never a traceback.

The results directory is a small tmpfs, filled up to a little more than the space each
run keeps for its last record (run/resultsdisk.py): the run starts, its console and
records fill the rest while the real QEMU board boots, and the next write fails with
ENOSPC. The run then ends ABORTED, classification results-disk-full, with its last
run.json written into the kept space, the board powered off and the steps left skipped.
Mounting a tmpfs needs root: CI runs the suite as root; elsewhere this fails, never skips.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import REPO, xenlab
from support.smalldisk import small_tmpfs
from xenlab.run.resultsdisk import KEEP_BYTES, SPACE_KEPT


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "results", "1M") as disk:
        yield disk


def _fill(disk: Path, leave: int) -> None:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(bytes(free - leave))


def _smoke(results: Path) -> subprocess.CompletedProcess:
    assert xenlab("images", "build", "--arch", "arm64").returncode == 0
    return subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                           str(REPO / "testcases"), "--xenlab-target", "qemu-arm64",
                           "--xenlab-results", str(results), "-p", "no:cacheprovider", "-q"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)


def _qemus_of(results: Path) -> list[str]:
    """QEMU processes still running for the board (its TFTP root is in the command line)."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if "build/tftp/qemu-arm64" in l]


def _one_line(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[-5000:]
    lines = [l for l in out.splitlines() if "xenlab: results disk full" in l]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


def test_a_disk_filling_mid_boot_ends_the_run_in_one_line(small_disk):
    _fill(small_disk, KEEP_BYTES + 40 * 1024)  # the kept space, and about a U-Boot's worth
    proc = _smoke(small_disk)
    line = _one_line(proc)
    (run,) = (small_disk / "qemu-arm64").iterdir()
    assert f"run {run.name} of qemu-arm64 ended as ERROR results-disk-full (run.json says " \
           "ABORTED)" in line, line
    record = json.loads((run / "run.json").read_text())
    assert (record["verdict"], record["classification"]) == ("ABORTED", "results-disk-full")
    # The boot got somewhere before the disk filled; the step it filled in is the lab's ERROR.
    assert record["steps"][0] == {**record["steps"][0], "name": "uboot", "status": "PASS"}
    failed = [s for s in record["steps"] if s["status"] == "ERROR"]
    assert len(failed) == 1 and failed[0]["classification"] == "results-disk-full", record["steps"]
    assert "No space left on device" in failed[0]["message"]
    assert [s for s in record["steps"] if s["status"] == "RUNNING"] == []
    assert (run / "junit.xml").is_file() and (run / "console.log").stat().st_size > 0
    assert not (run / SPACE_KEPT).exists()  # given back to the record
    assert _qemus_of(small_disk) == []  # the board is off
    assert "skipped" in proc.stdout.splitlines()[-1]  # the steps after it never powered it again


def test_a_disk_full_before_the_run_is_one_line_and_no_running_record(small_disk):
    _fill(small_disk, 0)
    proc = _smoke(small_disk)
    _one_line(proc)
    for run_json in small_disk.rglob("run.json"):  # none could be written, or it says ABORTED
        assert json.loads(run_json.read_text())["verdict"] == "ABORTED"
    assert _qemus_of(small_disk) == []
