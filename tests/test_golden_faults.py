"""The golden path's own faults, on the real QEMU board: a QEMU that cannot start
and a missing image are a failed step naming the stage and why — no hang, no
traceback as the only message, and the record kept."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(tmp_path, farm_text: str, env_extra: dict | None = None):
    farm = tmp_path / "farm.yaml"
    farm.write_text(farm_text)
    results = tmp_path / "results"
    env = dict(os.environ, **(env_extra or {}))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(farm),
                           str(REPO / "testcases"), "--xenlab-target", "qemu-arm64",
                           "--xenlab-results", str(results), "-q", "-p", "no:cacheprovider"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    (run_json,) = results.glob("qemu-arm64/*/run.json")
    return proc, json.loads(run_json.read_text()), run_json.parent, time.monotonic() - t0


def _farm() -> str:
    # The real farm, with $BASE pointing at the repository's build/ directory.
    return (REPO / "farm.yaml").read_text().replace("$BASE/build/", str(REPO / "build") + "/")


def test_qemu_that_cannot_start_is_a_lab_error_with_its_stderr(tmp_path):
    text = _farm().replace('extra_args: "-machine virtualization=on,gic-version=2 -smp 2',
                           'extra_args: "-machine virtualization=on,gic-version=2 -smp 2 '
                           '-no-such-option', 1)
    proc, record, run, seconds = _run(tmp_path, text)
    assert proc.returncode != 0
    first = record["steps"][0]
    assert (first["name"], first["status"], first["classification"]) == \
        ("uboot", "ERROR", "qemu-start-failed"), first
    assert "no-such-option" in first["message"]  # QEMU's own complaint, not a hang
    assert record["verdict"] == "ERROR"
    assert seconds < 20, "a QEMU that died at once must not wait out the 40 s stage timeout"
    assert all(s["status"] == "SKIP" for s in record["steps"][1:])


def test_missing_image_set_is_a_harness_error(tmp_path):
    empty = tmp_path / "no-such-set"
    empty.mkdir()
    proc, record, run, _ = _run(tmp_path, _farm(), {"XENLAB_IMAGE_SET": str(empty)})
    assert proc.returncode != 0
    first = record["steps"][0]
    assert (first["name"], first["status"], first["classification"]) == \
        ("uboot", "ERROR", "harness-config")
    assert str(empty) in first["message"] and "manifest.json" in first["message"]
    assert record["verdict"] == "ERROR"
    assert "Traceback" not in proc.stdout
    assert all(s["status"] == "SKIP" for s in record["steps"][1:])
