"""Soak: the smoke test N times back to back on one QEMU board, as a farm runs it unattended.

Each run is `pytest --lg-env farm.yaml testcases/ --xenlab-target T`, one
process per run like a nightly's, into one results directory.  After every
run it looks for what a long-lived farm cannot afford to accumulate:

- processes left behind: QEMU, atftpd, labgrid's coordinator or exporter, ser2net;
- files left in the temporary directory and growth of the cache;
- memory the host no longer has (MemAvailable), and disk used outside the records.

It reports passes, failures that were not the board's fault (a FAIL or ERROR
whose classification is not the board's) with their classification, and the
spread of each stage's time.  Goal: 100 runs, 0 such failures, 0 leaks.

    python bench/soak.py --runs 30 [--target qemu-arm64] [--results DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xenlab.images.cache import cache_root  # noqa: E402

WATCHED = ("qemu-system", "atftpd", "labgrid-coordinator", "labgrid-exporter", "ser2net")


def processes() -> dict[int, str]:
    """pid -> command line of every watched process on the host."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(w in cmd.split(" ", 1)[0] for w in WATCHED):
            out[int(entry.name)] = cmd.strip()
    return out


def tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def one_run(target: str, results: Path, tmp: Path) -> tuple[float, dict | None, str]:
    env = dict(os.environ, TMPDIR=str(tmp))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                           str(REPO / "testcases"), "--xenlab-target", target,
                           "--xenlab-results", str(results), "-q", "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    newest = sorted(results.glob(f"{target}/*/run.json"), key=lambda p: p.stat().st_mtime)
    record = json.loads(newest[-1].read_text()) if newest else None
    return wall, record, proc.stdout[-1500:] + proc.stderr[-1500:]


# Classifications that blame the board or the software under test, not the lab or xenlab.
BOARD_FAULTS = ("xen-", "dom0-", "domu-", "uboot-reset-loop", "boot-image-format")


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"median {statistics.median(values):6.2f}  min {min(values):6.2f}  "
            f"max {max(values):6.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--target", default="qemu-arm64")
    ap.add_argument("--results", type=Path, help="keep the records here (default: a temporary dir)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="xenlab-soak-"))
    results = args.results or work / "results"
    tmp = work / "tmp"
    tmp.mkdir()
    cache = cache_root()
    before_procs = processes()
    cache0, mem0 = tree_size(cache), mem_available()
    walls, stages, verdicts, lab_faults, leaks = [], {}, {}, [], []
    print(f"soak: {args.runs} runs on {args.target}, records in {results}")
    for i in range(1, args.runs + 1):
        wall, record, tail = one_run(args.target, results, tmp)
        walls.append(wall)
        verdict = record["verdict"] if record else "NO-RECORD"
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        for step in (record or {}).get("steps", []):
            if step.get("duration_s") is not None:
                stages.setdefault(step["name"], []).append(step["duration_s"])
        if verdict != "PASS":
            why = (record or {}).get("classification") or "no record"
            if not why.startswith(BOARD_FAULTS):
                lab_faults.append((i, verdict, why, (record or {}).get("verdict_reason", tail)))
        time.sleep(0.5)  # a process that is going away has a moment to go
        left = {p: c for p, c in processes().items() if p not in before_procs}
        stray = sorted(os.listdir(tmp))
        if left or stray:
            leaks.append((i, left, stray))
            for pid in left:  # keep the next runs clean, but count it
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            shutil.rmtree(tmp)
            tmp.mkdir()
        print(f"  run {i:3}: {verdict:8} {wall:6.1f} s"
              + (f"  {record.get('classification')}" if record and verdict != "PASS" else "")
              + (f"  LEAK {len(left)} process(es), {len(stray)} temp file(s)" if left or stray else ""),
              flush=True)

    records = tree_size(results)
    cache1, mem1 = tree_size(cache), mem_available()
    print(f"\nruns {args.runs}: " + ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items())))
    print(f"failures not the board's fault: {len(lab_faults)}")
    for i, verdict, why, reason in lab_faults:
        print(f"  run {i}: {verdict} {why}: {reason[:160]}")
    print(f"runs with leaked processes or temp files: {len(leaks)}")
    for i, left, stray in leaks:
        print(f"  run {i}: {list(left.values())[:3]} {stray[:5]}")
    print(f"wall per run (s): {spread(walls)}")
    for name, values in stages.items():
        print(f"  {name:22} {spread(values)}")
    print(f"records: {records / 1e6:.1f} MB ({records / max(args.runs, 1) / 1e3:.0f} kB a run)")
    print(f"cache growth: {(cache1 - cache0) / 1e6:+.1f} MB; MemAvailable change: "
          f"{(mem1 - mem0) / 1e6:+.0f} MB")
    if not args.results:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if lab_faults or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
