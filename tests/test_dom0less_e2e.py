"""Dom0less end to end: each board variant of Xen CI's Arm matrix boots for real on QEMU.

`pytest --lg-env farm.yaml testcases/ --xenlab-variant V` per variant: U-Boot
writes the variant's /chosen domains, Xen 4.17 creates the DomUs at boot, and
each variant's own check passes on the DomU's console (Xen's UART) or in Dom0.
A variant that needs a Kconfig fragment or a patch boots a Xen built from Debian's
4.17.5 source with it (built once, then cached): dom0less and gicv3 take the PV
console patch, and `xl console` reaches their DomU after init-dom0less.  If QEMU cannot run here this fails.
"""

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WITH_DOM0 = ["xen_creates_every_domu", "every_domu_boots_to_its_init", "dom0_boots_beside_the_domus"]

DOM0LESS = WITH_DOM0 + ["init_dom0less_gives_the_domus_xenstore", "domu_console_is_reached",
                        "domu_pings_dom0_over_a_vif", "domus_are_destroyed"]
CASES = {
    # case (the variant, or variant@arch): (target, steps, what the console must show)
    "dom0less": ("qemu-arm64", DOM0LESS, [r"Init dom0less domain: 1", r"XENLAB-CHECK ping PASS round-trip"]),
    # arm32's Xen and Dom0 toolstack cross-built here too (Xen CI builds only its hypervisor).
    "dom0less@arm32": ("qemu-arm32", DOM0LESS, [r"Init dom0less domain: 1", r"XENLAB-CHECK ping PASS"]),
    "without-dom0": ("qemu-arm32", ["xen_creates_every_domu", "every_domu_boots_to_its_init",
                                    "domu_console_is_reached"],
                     [r"\*\*\* Serial input to DOM1", r"XENLAB-ECHO-42-domU"]),
    "gicv3": ("qemu-arm64-gicv3", WITH_DOM0 + ["init_dom0less_gives_the_domus_xenstore", "domu_console_is_reached",
                                               "domu_pings_dom0_over_a_vif", "domus_are_destroyed"],
              [r"GICv3 initialization", r"XENLAB-CHECK ping PASS"]),
    "staticmem": ("qemu-arm64", WITH_DOM0 + ["domu_console_is_reached", "domu_runs_on_its_static_bank",
                                             "domus_are_destroyed"],
                  [r"XENLAB-CHECK iomem PASS 50000000-5fffffff : System RAM"]),
    "boot-cpupools": ("qemu-arm64-smp4", WITH_DOM0 + ["domu_console_is_reached", "domu_runs_in_its_boot_cpupool",
                                                      "domus_are_destroyed"],
                      [r"\s1\s+256\s+1\s.*Pool-1", r"Pool-1\s+2,3"]),
}


# Two lanes run at once (make test has 2 cores), each case in turn: no two runs share a
# target, and the cases needing one Xen build share a lane, so it is built once.
LANES = [["dom0less", "gicv3", "staticmem"], ["dom0less@arm32", "without-dom0", "boot-cpupools"]]


@pytest.fixture(scope="module")
def case_runs(tmp_path_factory):
    """case -> (pytest's process, its results directory), every case run once."""
    def run_lane(cases):
        out = {}
        for case in cases:
            target, variant = CASES[case][0], case.split("@")[0]
            results = tmp_path_factory.mktemp(case.replace("@", "-")) / "results"
            out[case] = (subprocess.run(
                [sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                 str(REPO / "testcases"), "--xenlab-target", target, "--xenlab-variant", variant,
                 "--xenlab-results", str(results), "--xenlab-tester", "ci", "-p", "no:cacheprovider",
                 "-q"], cwd=REPO, capture_output=True, text=True, timeout=1200), results)
        return out

    runs = {}
    with ThreadPoolExecutor(len(LANES)) as pool:
        for done in pool.map(run_lane, LANES):
            runs.update(done)
    return runs


def test_the_lanes_run_every_case_once_and_share_no_target():
    assert sorted(c for lane in LANES for c in lane) == sorted(CASES)
    for lane, other in (LANES, LANES[::-1]):
        assert not {CASES[c][0] for c in lane} & {CASES[c][0] for c in other}


@pytest.mark.parametrize("case", list(CASES))
def test_variant_boots_and_its_check_passes(case, case_runs):
    target, steps, shown = CASES[case]
    variant = case.split("@")[0]
    proc, results = case_runs[case]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
    (run_dir,) = (results / target).iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["verdict"] == "PASS", record
    assert record["info"]["variant"] == variant
    assert [s["name"] for s in record["steps"]] == steps
    assert all(s["status"] == "PASS" for s in record["steps"])
    console = (run_dir / "console.log").read_text(errors="replace")
    for pattern in shown:
        assert re.search(pattern, console), f"{variant}: no {pattern!r} on the console"
    assert "LOADING DOMAIN 0" in console if variant != "without-dom0" else "LOADING DOMAIN 0" not in console
    assert re.search(r"\*\*\* LOADING DOMU cpus=1 memory=40000KB \*\*\*", console)
    reached = record["info"]["domu_console"]
    # dom0less and gicv3 boot a Xen with the PV console patch: xl console; the others the UART.
    assert set(reached) == {"domU1"}
    if variant in ("dom0less", "gicv3"):
        assert reached["domU1"] == "xl console", reached
        assert record["info"]["xen_build"]["patches"] == ["dom0less-console"]
        assert record["info"]["xen_build"]["kind"] == "debian"  # built here, tools with it
    else:
        assert reached["domU1"].startswith("Xen UART"), reached


def test_xenlab_matrix_runs_the_variants_on_their_boards_two_at_once(tmp_path):
    """`xenlab matrix`: one record per (variant, board), each tagged, and the variants x builds table."""
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "xenlab.cli", "matrix", "--variants", "without-dom0",
                           "--results", str(results), "--jobs", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = [l for l in proc.stdout.splitlines() if l.startswith("without-dom0 (")]
    assert sorted(r.split()[1] for r in rows) == ["(qemu-arm32)", "(qemu-arm64)"], proc.stdout
    assert all(re.search(r"\sPASS \d+s$", r) for r in rows), rows
    assert re.search(r"wall time \d+ s for 2 run\(s\)", proc.stdout)
    records = [json.loads(p.read_text()) for p in results.glob("*/*/run.json")]
    assert sorted(r["target"] for r in records) == ["qemu-arm32", "qemu-arm64"]
    assert all(r["info"]["variant"] == "without-dom0" and r["verdict"] == "PASS" for r in records)


# The pairs CASES does not boot: `xenlab matrix` boots them, two at a time, each Xen built
# once from Debian's 4.17.5 source with the variant's fragments and patches.
MATRIX_VARIANTS = ["earlyprintk", "gzip", "static-shared-mem", "staticheap", "staticmem"]
TARGET_OF = {"qemu-virt-arm64": "qemu-arm64", "qemu-virt-arm32": "qemu-arm32",
             "qemu-virt-arm64-gicv3": "qemu-arm64-gicv3", "qemu-virt-arm64-smp4": "qemu-arm64-smp4"}


def _pairs(variants) -> set[tuple[str, str]]:
    from xenlab.plan.variant import load_variant
    return {(v, TARGET_OF[b]) for v in variants for b in load_variant(v).boards}


def test_every_variant_boots_on_every_board_it_names_somewhere_in_make_test():
    """Issue 27: boards/variants/ on every target each lists, none left out: CASES here,
    the matrix below, without-dom0 on arm64 in the matrix test above, xtf in test_xtf.py."""
    every = _pairs(p.stem for p in (REPO / "boards" / "variants").glob("*.yaml"))
    booted = {(c.split("@")[0], target) for c, (target, _, _) in CASES.items()}
    booted |= _pairs(MATRIX_VARIANTS) | {("without-dom0", "qemu-arm64"), ("xtf", "qemu-arm64")}
    assert every == booted, (every - booted, booted - every)


def test_the_rest_of_the_variants_boot_on_their_boards(tmp_path):
    """earlyprintk, gzip, static-shared-mem, staticheap and staticmem on each board they
    name, through `xenlab matrix`: every cell PASS, every step of each run PASS."""
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "xenlab.cli", "matrix", "--variants",
                           ",".join(MATRIX_VARIANTS), "--results", str(results), "--jobs", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in results.glob("*/*/run.json")]
    assert {(r["info"]["variant"], r["target"]) for r in records} == _pairs(MATRIX_VARIANTS)
    for r in records:
        assert r["verdict"] == "PASS" and all(s["status"] == "PASS" for s in r["steps"]), r
    print(proc.stdout[-2000:])


def test_the_matrix_says_which_source_it_builds(tmp_path):
    """Issue 27: the matrix names the Xen it built, read from the image set, not a string
    (boot-cpupools needs CONFIG_BOOT_TIME_CPUPOOLS: a build from the manifest's source)."""
    from xenlab.images.manifest import load_manifest, manifest_path
    from xenlab.plan.variant import load_variant
    from xenlab.run.farmfile import load_farm
    from xenlab.run.matrix import matrix_runs

    lines: list[str] = []
    runs = matrix_runs(load_farm(REPO / "farm.yaml"), [load_variant("boot-cpupools")],
                       ["release"], tmp_path, log=lines.append)
    assert [r.variant for r in runs] == ["boot-cpupools"] and runs[0].image_set is not None
    upstream = load_manifest(manifest_path("arm64")).source["debian"]["version"].rsplit("-", 1)[0]
    assert len(lines) == 1 and re.match(
        rf"Xen for boot-cpupools release \(arm64\): Xen 4\.17\.5 from xen_{re.escape(upstream)}"
        r"\.orig\.tar\.\w+ sha256:[0-9a-f]{12} with cpupools, image set arm64-[0-9a-f]+$",
        lines[0]), lines
