"""Every benchmark starts: a broken import fails here, not the day someone measures.

`python bench/X.py` puts bench/ first on sys.path, so a bench named like a
standard-library module (the old bench/bisect.py) shadows it for every other
bench and for the standard library itself (random imports bisect).
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHES = sorted((REPO / "bench").glob("*.py"))
SCRIPT_DIRS = ["bench", "tests", "tests/support", "scripts", "testcases"]


def test_there_are_benches():
    assert len(BENCHES) >= 10, BENCHES


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_each_bench_starts(bench):
    proc = subprocess.run([sys.executable, str(bench), "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: "), proc.stdout[:500]


def test_the_smoke_bench_measures_one_round_on_the_qemu_board():
    """`make bench`'s main bench, one round: the bare pexpect boot and xenlab's, side by side."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "smoke.py"), "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    rows = {l.split()[0]: l.split()[1:] for l in proc.stdout.splitlines() if l.strip()}
    for stage in ("uboot", "xen", "dom0-ready", "dom0-shell"):  # both columns measured
        bare, xen = map(float, rows[stage])
        assert 0 < bare < 300 and 0 < xen < 300, (stage, rows[stage])
    ratio = float(proc.stdout.split("overhead ratio ")[1].split("x")[0])
    assert 0.5 < ratio < 5, proc.stdout


def shadows(root: Path) -> list[str]:
    return [f"{d}/{p.name}" for d in SCRIPT_DIRS for p in (root / d).glob("*.py")
            if p.stem in sys.stdlib_module_names]


def test_no_module_shadows_the_standard_library():
    assert shadows(REPO) == []


def test_a_shadowing_bench_breaks_its_neighbours_and_is_caught(tmp_path):
    """What broke `make bench`: bench/bisect.py beside a bench that imports statistics."""
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bisect.py").write_text("raise ImportError('this is bench/bisect.py')\n")
    (bench / "speed.py").write_text("import statistics\nprint(statistics.median([1, 2, 3]))\n")
    proc = subprocess.run([sys.executable, str(bench / "speed.py")], capture_output=True, text=True)
    assert proc.returncode != 0 and "this is bench/bisect.py" in proc.stderr
    assert shadows(tmp_path) == ["bench/bisect.py"]
