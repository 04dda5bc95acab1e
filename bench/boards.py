"""Each board of the farm alone: seconds from power-on to each boot stage, and the whole smoke test.

Boots every named target by itself (`pytest --lg-env farm.yaml testcases/
--xenlab-target T`), one after the other so no board slows another, and
prints the median over rounds of the stage marks its run record keeps
(seconds since power-on) and of the run's wall time. The README's table
"Real boards, emulated" comes from this. A board that does not PASS ends the
bench with its verdict and exit 1: a time of a failed boot means nothing.

    python bench/boards.py [--targets nanopi-neo,orangepi-pc,rpi4,zcu102] [--rounds 1]
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
REAL_BOARDS = "nanopi-neo,orangepi-pc,rpi4,zcu102"
# run.json info.stage_marks, in boot order, as the table heads them
MARKS = [("uboot", "U-Boot prompt"), ("xen-banner", "Xen banner"),
         ("xen-handover", "Dom0 handed over"), ("dom0-prompt", "Dom0 shell")]


def one_run(target: str) -> tuple[float, dict, str]:
    """(wall seconds, stage marks, verdict label) of one smoke run of `target`."""
    with tempfile.TemporaryDirectory() as results:
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                        str(REPO / "testcases"), "--xenlab-target", target,
                        "--xenlab-results", results, "-q", "-p", "no:cacheprovider"],
                       cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - t0
        runs = list(Path(results).glob(f"{target}/*/run.json"))
        if len(runs) != 1:
            return wall, {}, "no record"
        record = json.loads(runs[0].read_text())
    skipped = sum(1 for s in record["steps"] if s["status"] == "SKIP")
    label = record["verdict"] + (f" ({skipped} skipped)" if skipped else "")
    return wall, record["info"].get("stage_marks", {}), label


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=REAL_BOARDS, help=f"comma-separated (default: {REAL_BOARDS})")
    ap.add_argument("--rounds", type=int, default=1, help="runs per board (default: 1)")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    rows, failed = [], []
    for target in targets:
        walls, marks, labels = [], {name: [] for name, _ in MARKS}, set()
        for _ in range(args.rounds):
            wall, got, label = one_run(target)
            if not label.startswith("PASS"):
                failed.append(f"{target}: {label}")
                break
            walls.append(wall)
            labels.add(label)
            for name, _ in MARKS:
                if name in got:
                    marks[name].append(got[name])
        if len(walls) == args.rounds:
            rows.append([target] + [f"{statistics.median(v):.1f}" if v else "-"
                                    for v in marks.values()]
                        + [f"{statistics.median(walls):.0f}", " / ".join(sorted(labels))])
    head = ["board"] + [title for _, title in MARKS] + ["smoke test (s)", "verdict"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print(f"seconds from power-on, median of {args.rounds} round(s), each board alone")
    for row in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for line in failed:
        print(f"FAILED {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
