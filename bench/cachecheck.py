"""What checking a cached image set costs, side by side in one run: the first check
(every artifact hashed against manifest.json) and a warm one (nothing changed since:
size, mtime and inode match the last check, nothing hashed), and `images build` finding
the set cached, which runs the warm check.

    python bench/cachecheck.py [--arch arm64|arm32] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xenlab.images.imageset import build_image_set  # noqa: E402
from xenlab.images.integrity import VERIFIED  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("arm64", "arm32"), default="arm64")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    image_set = build_image_set(args.arch)
    size = sum(a.size for a in image_set.artifacts.values())
    times: dict[str, list[float]] = {"first check (hash all)": [], "warm check": [],
                                     "images build, cached": []}
    for _ in range(args.rounds):
        (image_set.dir / VERIFIED).unlink(missing_ok=True)
        t0 = time.perf_counter()
        image_set.verify()
        times["first check (hash all)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        image_set.verify()
        times["warm check"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        build_image_set(args.arch)
        times["images build, cached"].append(time.perf_counter() - t0)
    print(f"image set {image_set.dir.name}: {len(image_set.artifacts)} files, "
          f"{size / 2**20:.0f} MiB; median of {args.rounds} rounds")
    first = statistics.median(times["first check (hash all)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:24} {median * 1000:8.1f} ms  ({first / median:6.1f}x faster than "
              "the first check)" if name != "first check (hash all)" else
              f"  {name:24} {median * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
