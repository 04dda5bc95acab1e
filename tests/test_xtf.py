"""Issue 31: XTF on Arm, as Xen CI's two XTF jobs run it.

The XTF source is ../shared/xtf/'s tarball of the xtf-arm branch (never in
this repository). `xenlab images build --xen-source debian --xtf-source TARBALL`
cross-builds the tests into the set; the `xtf` variant boots one as the only
DomU of a dom0less Xen with no Dom0 on qemu-arm64, and its result line on
Xen's UART is the step's verdict. The failing, erroring and skipping tests
are XTF's own tests with one call changed, in a copy of the tarball.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.cli import one_error_line, xenlab

from xenlab.images.imageset import ImageSet

REPO = Path(__file__).resolve().parent.parent
XTF = REPO.parent / "shared" / "xtf" / "xtf-arm-6a70315.tar.xz"
# (test, the call made first in its test_main): each result XTF can report, but SUCCESS.
BROKEN = {"hyp-xen-version": 'xtf_failure("Fail: xenlab broke this test on purpose\\n")',
          "example": 'xtf_error("Error: xenlab broke this test on purpose\\n")',
          "xsa-122": 'xtf_skip("Skip: xenlab broke this test on purpose\\n")'}


def built_set(proc: subprocess.CompletedProcess) -> ImageSet:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("image set "))
    return ImageSet.open(Path(line.split(" ", 2)[2]))


def boot(image_set: ImageSet, variant: str, results: Path) -> tuple[dict, subprocess.CompletedProcess]:
    env = dict(os.environ, XENLAB_IMAGE_SET=str(image_set.dir))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                           str(REPO / "testcases"), "--xenlab-target", "qemu-arm64",
                           "--xenlab-variant", variant, "--xenlab-results", str(results),
                           "-p", "no:cacheprovider", "-q"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    (run_json,) = results.glob("qemu-arm64/*/run.json")
    return json.loads(run_json.read_text()), proc


@pytest.fixture(scope="module")
def xtf_set() -> ImageSet:
    """Debian's 4.17.5 built from source (release), with XTF's hyp-xen-version and example."""
    assert XTF.is_file(), f"{XTF}: the XTF source the tests use (../shared/xtf/) is missing"
    return built_set(xenlab("images", "build", "--arch", "arm64", "--xen-source", "debian",
                            "--xtf-source", str(XTF), "--xtf-test", "hyp-xen-version",
                            "--xtf-test", "example"))


def test_the_set_carries_the_xtf_tests_it_built(xtf_set):
    assert xtf_set.xen["config"] == "release" and xtf_set.xen["source"] == "debian"
    for name in ("hyp-xen-version", "example"):
        art = xtf_set.artifacts[f"xtf-{name}"]
        assert f"XTF tests/{name} from xtf-arm-6a70315.tar.xz" in art.source
        assert "CONFIG_GICV2=y CONFIG_SBSA_UART=y" in art.source
        data = xtf_set.path(f"xtf-{name}").read_bytes()
        assert b"--- Xen Test Framework ---" in data and len(data) < 1 << 20


@pytest.mark.parametrize("variant", ["xtf", "xtf:example"])
def test_the_xtf_variant_passes_on_test_result_success(xtf_set, variant, tmp_path):
    record, proc = boot(xtf_set, variant, tmp_path)
    assert record["verdict"] == "PASS", proc.stdout[-3000:]
    steps = {s["name"]: s["status"] for s in record["steps"]}
    assert steps == {"xen_creates_every_domu": "PASS", "xtf_test_reports_success": "PASS"}
    test = variant.partition(":")[2] or "hyp-xen-version"
    assert record["info"]["xtf"] == {"test": test, "result": "SUCCESS"}
    console = next(tmp_path.glob("qemu-arm64/*/console.log")).read_text()
    assert "DOM1: --- Xen Test Framework ---" in console
    assert "DOM1: Test result: SUCCESS" in console
    assert "Linux version" not in console  # no Dom0, no Linux: Xen and the test kernel only


@pytest.fixture(scope="module")
def broken_set(tmp_path_factory) -> ImageSet:
    """A copy of the XTF tarball with three tests changed to report FAILURE, ERROR, SKIP."""
    tmp = tmp_path_factory.mktemp("xtf")
    with tarfile.open(XTF) as tar:
        tar.extractall(tmp, filter="data")
    (top,) = tmp.iterdir()
    for test, call in BROKEN.items():
        main = top / "tests" / test / "main.c"
        text = main.read_text()
        head = "void test_main(void)\n{\n"
        assert head in text, test
        main.write_text(text.replace(head, head + f"    return {call};\n", 1))
    broken = tmp / "xtf-broken.tar.xz"
    with tarfile.open(broken, "w:xz") as tar:
        tar.add(top, arcname=top.name)
    args = [a for t in BROKEN for a in ("--xtf-test", t)]
    return built_set(xenlab("images", "build", "--arch", "arm64", "--xen-source", "debian",
                            "--xtf-source", str(broken), *args))


@pytest.mark.parametrize("test, verdict, status", [
    ("hyp-xen-version", "FAIL", "FAIL"), ("example", "ERROR", "ERROR"), ("xsa-122", "PASS", "SKIP")])
def test_each_xtf_result_is_its_own_status_with_the_message(broken_set, test, verdict, status, tmp_path):
    record, proc = boot(broken_set, f"xtf:{test}", tmp_path)
    step = next(s for s in record["steps"] if s["name"] == "xtf_test_reports_success")
    assert step["status"] == status, (step, proc.stdout[-2000:])
    result = BROKEN[test].split('"')[1].split(":")[0].upper()  # FAIL, ERROR, SKIP
    assert record["info"]["xtf"]["result"] == {"FAIL": "FAILURE"}.get(result, result)
    said = f"{result.capitalize()}: xenlab broke this test on purpose"
    if status == "SKIP":  # Xen and the DomU ran: the run passes, its one skip says why
        assert record["verdict"] == verdict and said in step["reason"], step
    else:
        assert record["verdict"] == verdict and step["classification"] == f"xtf-{record['info']['xtf']['result'].lower()}"
        assert said in step["message"] and any(said in e for e in step["evidence"]), step


def test_bad_inputs_are_one_line(tmp_path):
    not_xtf = tmp_path / "not-xtf.tar.xz"
    (tmp_path / "src" / "tests").mkdir(parents=True)
    (tmp_path / "src" / "README").write_text("not XTF\n")
    with tarfile.open(not_xtf, "w:xz") as tar:
        tar.add(tmp_path / "src", arcname="src")
    build = ["images", "build", "--arch", "arm64", "--xen-source", "debian"]
    one_error_line(xenlab(*build, "--xtf-source", str(not_xtf)),
                   "not-xtf.tar.xz: not an XTF source (no build/common.mk, arch/arm)")
    one_error_line(xenlab(*build, "--xtf-source", str(XTF), "--xtf-test", "no-such-test"),
                   "--xtf-test", "XTF test 'no-such-test' is not in")
    one_error_line(xenlab(*build, "--xtf-test", "example"), "--xtf-test", "add --xtf-source")
    # cpuid is an x86 test: its arm64 build fails, and the failure is one line, the log's tail, the log
    failed = xenlab(*build, "--xtf-source", str(XTF), "--xtf-test", "cpuid")
    line = one_error_line(failed, "XTF build of tests/cpuid failed", "cpuid_count_fn_t", "log: ")
    log = Path(line.rsplit("log: ", 1)[1])
    assert log.is_file() and "TESTS=tests/cpuid" in log.read_text() and "  | " in failed.stderr
    one_error_line(xenlab("images", "build", "--arch", "arm32", "--xtf-source", str(XTF)),
                   "built for arm64")
    one_error_line(xenlab("matrix", "--variants", "dom0less", "--xtf-source", str(XTF)),
                   "--xtf-source", "xtf variant")
    one_error_line(xenlab("matrix", "--variants", "xtf"), "--xtf-source", "variant xtf boots an XTF test")
    one_error_line(xenlab("matrix", "--xen-ci"), "--xtf-source", "variant xtf boots an XTF test")
    one_error_line(xenlab("matrix", "--xen-ci", "--variants", "dom0less"), "--xen-ci", "drop --variants")


def test_the_xen_ci_job_table_is_xen_cis_twenty_qemu_arm_jobs():
    """boards/xen-ci-jobs.yaml: the 20 QEMU Arm jobs of xen.git's automation/gitlab-ci/test.yaml
    (August 2026), each mirrored by a variant (or the dom0 smoke test) that is for its board, a
    farm target of that board and arch, and the build its name says; the README lists them."""
    from xenlab.plan.variant import load_variant
    from xenlab.run import matrix
    from xenlab.run.farmfile import load_farm

    jobs = matrix.xen_ci_jobs()
    assert len(jobs) == 20 and all(n.startswith(("qemu-smoke-", "qemu-xtf-")) for n in jobs)
    farm = load_farm(REPO / "farm.yaml")
    readme = (REPO / "README.md").read_text()
    for name, job in jobs.items():
        targets = [t for t in farm.targets.values() if t.profile == job["board"]]
        assert targets and targets[0].arch == ("arm32" if "-arm32-" in name else "arm64"), name
        assert ("-debug" in name) == (job["build"] == "debug"), name
        if job["variant"] is None:
            assert name.startswith("qemu-smoke-dom0-"), name
        else:
            variant = load_variant(job["variant"])
            assert variant.applies_to(job["board"]), name
            assert name.startswith("qemu-xtf-" if variant.xtf_test else "qemu-smoke-dom0less-"), name
            suffix = name.split("-gcc", 1)[1].removeprefix("-debug").removeprefix("-")
            assert suffix in ("", job["variant"], f"{variant.xtf_test}"), name
        assert f"`{name}`" in readme, name
    assert {j["build"] for j in jobs.values()} == set(matrix.BUILDS)
    # Each job's run id is valid (a job's name is too long for one) and unique on its target.
    from xenlab.run.record import new_run_id
    ids = [(j["board"], matrix.cell_run_id(new_run_id(), j["variant"] and load_variant(j["variant"]),
                                           j["build"]).split("-", 2)[2]) for j in jobs.values()]
    assert len(set(ids)) == len(ids)
