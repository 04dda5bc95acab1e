"""xenlab's overhead over a bare pexpect script, measured side by side in one run.

Each round boots the same QEMU arm64 board twice, alternating: a bare pexpect
script (bench/bare_boot.py: no labgrid, no xenlab) doing the same smoke steps,
then `pytest --lg-env farm.yaml testcases/`. It prints each stage's time (median
over rounds) and the ratio of whole-run wall times. These machines are noisy:
trust the ratio of one run, not the seconds across runs.

    python bench/smoke.py [--rounds 2] [--arch arm64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import bare_boot  # noqa: E402

from xenlab.images.imageset import build_image_set  # noqa: E402

TARGETS = {"arm64": "qemu-arm64", "arm32": "qemu-arm32"}
# bare_boot mark -> xenlab stage mark (run.json info.stage_marks)
BOOT_MARKS = [("uboot", "uboot"), ("xen", "xen-banner"), ("dom0-loading", "dom0-loading"),
              ("dom0-linux", "dom0-linux"), ("dom0-ready", "dom0-ready"),
              ("dom0-shell", "dom0-prompt")]


def bare_round(image_dir: Path, arch: str) -> tuple[float, dict]:
    t0 = time.monotonic()
    marks = bare_boot.run(str(image_dir), arch, pv=True)
    return time.monotonic() - t0, marks


def xenlab_round(arch: str) -> tuple[float, dict, dict]:
    with tempfile.TemporaryDirectory() as results:
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                               str(REPO / "testcases"), "--xenlab-target", TARGETS[arch],
                               "--xenlab-results", results, "-q", "-p", "no:cacheprovider"],
                              cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            sys.exit(f"xenlab run failed:\n{proc.stdout[-3000:]}")
        (run_json,) = Path(results).glob("*/*/run.json")
        record = json.loads(run_json.read_text())
    steps = {s["name"]: s["duration_s"] for s in record["steps"]}
    return wall, record["info"].get("stage_marks", {}), steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--arch", default="arm64", choices=sorted(TARGETS))
    args = ap.parse_args()
    image_set = build_image_set(args.arch)
    bare_walls, xen_walls, bare_marks, xen_marks, xen_steps = [], [], [], [], []
    for i in range(args.rounds):
        wall, marks = bare_round(image_set.dir, args.arch)
        bare_walls.append(wall)
        bare_marks.append(marks)
        wall, marks, steps = xenlab_round(args.arch)
        xen_walls.append(wall)
        xen_marks.append(marks)
        xen_steps.append(steps)
        print(f"round {i + 1}: bare {bare_walls[-1]:.1f} s, xenlab {xen_walls[-1]:.1f} s",
              file=sys.stderr)

    def med(rows, key):
        vals = [r[key] for r in rows if key in r]
        return statistics.median(vals) if vals else float("nan")

    print(f"QEMU {args.arch}, {args.rounds} round(s), medians; seconds from power-on")
    print(f"{'stage':16} {'bare':>7} {'xenlab':>7}")
    for bare_key, xen_key in BOOT_MARKS:
        print(f"{bare_key:16} {med(bare_marks, bare_key):7.2f} {med(xen_marks, xen_key):7.2f}")
    print(f"{'DomU destroyed':16} {med(bare_marks, 'domU-destroyed'):7.2f} {'':>7}")
    print()
    print("xenlab step durations (s): " + ", ".join(
        f"{k} {statistics.median(s[k] for s in xen_steps):.1f}" for k in xen_steps[0]))
    bare, xen = statistics.median(bare_walls), statistics.median(xen_walls)
    print(f"whole smoke test, wall: bare {bare:.1f} s, xenlab {xen:.1f} s, "
          f"overhead ratio {xen / bare:.3f}x")


if __name__ == "__main__":
    main()
