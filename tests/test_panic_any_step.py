"""Issue 26: a Xen panic at any step is a panic, reported at once.

A debug Xen (Debian's 4.17.5 source) patched to fail an ASSERT in domain_kill
boots the whole smoke test on both QEMU boards; the first DomU it kills (in
`domu_shutdown_destroy`) trips the assertion, Xen panics and QEMU exits
(-no-reboot).  The step must end as Xen's failure, quoting the assertion,
instead of waiting out its 90 s and saying "stage-timeout", and the steps
after it must say the board went down.  If QEMU cannot run here this fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from xenlab.images.imageset import build_image_set
from xenlab.images.manifest import load_manifest, manifest_path
from xenlab.images.xenbuild import resolve_source

REPO = Path(__file__).resolve().parent.parent
# domain_kill() in 4.17's xen/common/domain.c: every DomU's death goes through it.
KILL = "    if ( d == current->domain )\n        return -EINVAL;\n\n    /* Protected by domctl_lock. */\n"
ASSERT = "    ASSERT(d->domain_id == 0); /* xenlab: injected into domain_kill */\n"
TARGETS = {"arm64": "qemu-arm64", "arm32": "qemu-arm32"}


@pytest.fixture(scope="module")
def panicking_xen(tmp_path_factory) -> Path:
    """Debian's Xen 4.17.5 source with the assertion in domain_kill."""
    tree = tmp_path_factory.mktemp("xen") / "xen"
    shutil.copytree(resolve_source("debian", load_manifest(manifest_path("arm64"))).tree, tree,
                    symlinks=True)
    domain_c = tree / "xen" / "common" / "domain.c"
    code = domain_c.read_text()
    assert code.count(KILL) == 1, "domain_kill() is not as 4.17 wrote it"
    domain_c.write_text(code.replace(KILL, KILL.replace("\n    /* Protected", ASSERT +
                                                        "\n    /* Protected")))
    return tree


@pytest.fixture(scope="module")
def runs(panicking_xen, tmp_path_factory) -> dict:
    """The smoke test on both boards at once, each with its arch's debug build of that Xen."""
    sets = {arch: build_image_set(arch, xen_source=str(panicking_xen), xen_config=["debug"])
            for arch in TARGETS}
    out = {}

    def one(arch):
        results = tmp_path_factory.mktemp(f"results-{arch}")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
             str(REPO / "testcases"), "--xenlab-target", TARGETS[arch],
             "--xenlab-results", str(results), "-p", "no:cacheprovider", "-q"],
            cwd=REPO, capture_output=True, text=True, timeout=900,
            env={**os.environ, "XENLAB_IMAGE_SET": str(sets[arch].dir)})
        (run,) = (results / TARGETS[arch]).iterdir()
        out[arch] = (proc, json.loads((run / "run.json").read_text()), run)

    threads = [threading.Thread(target=one, args=(arch,)) for arch in TARGETS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("arch", list(TARGETS))
def test_a_panic_in_the_destroy_step_ends_it_at_once_as_xens_failure(runs, arch):
    proc, record, run = runs[arch]
    steps = {s["name"]: s for s in record["steps"]}
    for name in ("uboot", "xen_boots", "dom0_boots", "domu_create_console"):
        assert steps[name]["status"] == "PASS", (name, steps[name])
    bad = steps["domu_shutdown_destroy"]
    assert (bad["status"], bad["classification"]) == ("FAIL", "xen-bug"), bad
    assert "Assertion 'd->domain_id == 0' failed at" in bad["message"], bad["message"]
    evidence = "\n".join(bad["evidence"])
    assert re.search(r"domain_kill", evidence), evidence  # the call trace names it
    # At once: xl shutdown -w alone may take 90 s before its timeout; the panic ends it.
    assert bad["duration_s"] < 45, bad["duration_s"]
    assert record["verdict"] == "FAIL" and record["classification"] == "xen-bug"
    console = (run / "console.log").read_text(errors="replace")
    assert "Assertion 'd->domain_id == 0' failed" in console and "Panic on CPU" in console
    assert proc.returncode != 0
