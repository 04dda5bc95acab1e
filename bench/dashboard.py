"""Dashboard build time on a farm's worth of fabricated history.

    python bench/dashboard.py [--boards 50] [--nights 365] [--keep DIR]

Prints the cold build (empty index) and the warm build (nothing new) of
50 boards × 365 nights, and the time to add one more night at 30, 180 and
365 nights of history: it must not grow with history.

The history comes from tests/support/fabricate.py (real run records,
written by RunRecord).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.fabricate import FIRST_NIGHT, board_name, fabricate  # noqa: E402
from xenlab.reports.dashboard import build  # noqa: E402

# --------------------------------------------------------------------------- the bench

def _timed(fn, *args, **kw):
    t0 = time.perf_counter()
    value = fn(*args, **kw)
    return time.perf_counter() - t0, value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", type=int, default=50)
    ap.add_argument("--nights", type=int, default=365)
    ap.add_argument("--keep", help="build here and keep it (default: a temporary directory)")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="xenlab-bench-dash-"))
    results, out = work / "results", work / "dashboard"
    checkpoints = sorted({n for n in (30, 180, args.nights) if n <= args.nights})
    add_one: dict[int, tuple[float, int]] = {}
    try:
        have = 0
        for n in checkpoints:
            t, _ = _timed(fabricate, results, args.boards, n - have, first=have)
            print(f"fabricated nights {have}..{n - 1}: {args.boards * (n - have)} runs "
                  f"in {t:.1f} s", flush=True)
            have = n
            build(results, out)  # catch up (not timed): the history is now n nights
            fabricate(results, args.boards, 1, first=have)
            t, stats = _timed(build, results, out)
            add_one[n] = (t, stats.pages, stats.index_seconds)
            # Take the night out again, so the next checkpoint measures the same history.
            for b in range(args.boards):
                for d in (results / board_name(b)).glob(
                        f"{(FIRST_NIGHT + dt.timedelta(days=have)):%Y%m%d}T*"):
                    shutil.rmtree(d)
            build(results, out)
        runs = sum(1 for _ in results.glob("*/*/run.json"))
        shutil.rmtree(out)
        cold, stats = _timed(build, results, out)
        warm, wstats = _timed(build, results, out)
        print()
        print(f"{args.boards} boards × {args.nights} nights = {runs} runs")
        print(f"cold build (empty index): {cold:6.2f} s  ({stats.pages} pages)")
        print(f"warm build (nothing new): {warm:6.2f} s  ({wstats.pages} pages)"
              f"  target <= 3 s: {'ok' if warm <= 3 else 'MISSED'}")
        print()
        print("add one night (" + f"{args.boards} runs) after:  "
              + "  ".join(f"{n:>4} nights" for n in checkpoints))
        print(" " * 31 + "  ".join(f"{add_one[n][0]:>8.2f} s" for n in checkpoints))
        print(" " * 13 + "of which index update  " + "  ".join(f"{add_one[n][2]:>8.2f} s"
                                                           for n in checkpoints))
        print(" " * 25 + "pages " + "  ".join(f"{add_one[n][1]:>10}" for n in checkpoints))
        print("(a board page shows its newest 90 nights: its window is full from 90 nights on)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
