"""Image-set build times, side by side in one run: cold (empty cache: download,
verify, extract, build), rebuilt (packages cached, set rebuilt) and warm (the
same manifest again: a cache lookup; the target is at most 2 s).

    python bench/images.py [--arch arm64|arm32|both]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xenlab.images import debs  # noqa: E402
from xenlab.images.imageset import build_image_set  # noqa: E402


def timed(arch: str) -> tuple[float, Path]:
    t0 = time.perf_counter()
    image_set = build_image_set(arch)
    return time.perf_counter() - t0, image_set.dir


def bench(arch: str) -> dict[str, float]:
    out = {}
    saved = os.environ.get("XENLAB_CACHE")
    with tempfile.TemporaryDirectory(prefix="xenlab-bench-") as cache:
        os.environ["XENLAB_CACHE"] = cache
        try:
            before = debs.Downloads.count
            out["cold"], set_dir = timed(arch)
            out["downloaded"] = debs.Downloads.count - before
            shutil.rmtree(set_dir)
            out["rebuilt"], _ = timed(arch)
            out["warm"], _ = timed(arch)
            out["warm downloads"] = debs.Downloads.count - before - out["downloaded"]
        finally:
            if saved is None:
                os.environ.pop("XENLAB_CACHE", None)
            else:
                os.environ["XENLAB_CACHE"] = saved
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="both", choices=["arm64", "arm32", "both"])
    args = ap.parse_args()
    arches = ["arm64", "arm32"] if args.arch == "both" else [args.arch]
    rows = {arch: bench(arch) for arch in arches}
    print(f"{'arch':6} {'cold s':>8} {'rebuilt s':>10} {'warm s':>8} {'cold/warm':>10} "
          f"{'packages':>9} {'warm dl':>8}")
    for arch, r in rows.items():
        print(f"{arch:6} {r['cold']:8.2f} {r['rebuilt']:10.2f} {r['warm']:8.3f} "
              f"{r['cold'] / r['warm']:10.0f} {int(r['downloaded']):9d} {int(r['warm downloads']):8d}")


if __name__ == "__main__":
    main()
