"""Bisection speed: the median probe (incremental build + boot to the failing step) and the whole.

    python bench/bisection.py [--keep DIR] [--runs N]

The history is tests/support/xenrepo.py's: Debian's Xen 4.17.5 and 16 commits,
one injecting a panic while Xen constructs Dom0, one that does not build.
`xenlab bisect --step xen_boots` runs on the QEMU arm64 board, N times, each
time on a fresh copy of the history, salted so no commit is in the build cache
(a new clone and work directory: the first probe of every run is a full
hypervisor build, as a tester's first bisection of a tree is; the toolstack
comes from the cache, as no commit touches it).  Goal: a probe
<= 45 s median on 2 cores, a bisection over 16 commits in <= 5 probes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.xenrepo import BROKEN_AT, COMMITS, FAULT_AT, make_history  # noqa: E402


def bisect_once(work: Path, n: int, broken: bool) -> dict:
    tree = work / f"xen-{n}"
    shas = make_history(tree, broken_at=BROKEN_AT if broken else 0, salt=f"bench {time.time_ns()}")
    results = work / f"results-{n}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xenlab.cli", "bisect", "--xen-source", str(tree),
                           "--good", shas[0], "--bad", shas[-1], "--target", "qemu-arm64",
                           "--step", "xen_boots", "--id", f"bench-{n}", "--results", str(results)],
                          cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bisection {n} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    state = json.loads((results / ".bisect" / f"bench-{n}" / "bisect.json").read_text())
    assert state["first_bad"]["commit"] == shas[FAULT_AT], state["first_bad"]
    return {"wall": wall, "probes": state["probes"], "broken": broken}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="keep the histories and results here (default: a temporary directory)")
    ap.add_argument("--runs", type=int, default=4, help="bisections to run, alternately with and "
                                                        "without a commit that does not build (default 4)")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="xenlab-bench-bisect-"))
    try:
        # Alternately a history where every commit builds and one with a commit that does not.
        runs = [bisect_once(work, n, broken=bool(n % 2)) for n in range(args.runs)]
        print(f"{'run':>3} {'history':<25} {'probes':>6} {'median probe s':>14} {'first probe s':>13} {'wall s':>7}")
        probe_s = []
        for n, r in enumerate(runs):
            times = [p.get("build_s", 0) + (p.get("boot_s") or 0) for p in r["probes"]]
            probe_s += times
            what = f"commit {BROKEN_AT} does not build" if r["broken"] else "every commit builds"
            print(f"{n:>3} {what:<25} {len(times):>6} {statistics.median(times):>14.1f} {times[0]:>13.1f} "
                  f"{r['wall']:>7.1f}")
        most = {b: max((len(r["probes"]) for r in runs if r["broken"] == b), default=0) for b in (False, True)}
        print(f"\n{COMMITS} commits: median probe {statistics.median(probe_s):.1f} s over {len(probe_s)} probes "
              f"(goal <= 45 s); at most {most[False]} probes when every commit builds, {most[True]} with one "
              f"skipped (goal <= 5); a bisection {statistics.median(r['wall'] for r in runs):.0f} s median wall")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
