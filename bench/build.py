"""Xen source build times: cold, warm and one-file incremental, hypervisor and tools side by side.

    python bench/build.py [--keep DIR]

A xen.git-like tree (Debian's 4.17.5 source, committed to a fresh repository)
is built three times through `xenlab images build --xen-source TREE`:

- cold: a work directory of its own (the packages and the source tarball may be cached);
- warm: the same key again: nothing is built;
- one-file: xen/common/version.c changed, then the same command: only what depends
  on it is rebuilt in the same work directory, and the image set is made again.

The times per stage come from the build's own build.json; wall is the command's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xenlab.images.cache import cache_root  # noqa: E402
from xenlab.images.imageset import build_image_set  # noqa: E402
from xenlab.images.xenbuild import XenBuild  # noqa: E402


def timed_build(tree: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    image_set = build_image_set("arm64", xen_source=str(tree))
    wall = time.perf_counter() - t0
    build = XenBuild.open(cache_root() / "xen-builds" / f"arm64-{image_set.xen['build']}")
    return wall, build.info


def make_tree(where: Path) -> Path:
    build_image_set("arm64", xen_source="debian")  # the source tarball, in the cache
    orig = next((cache_root() / "xen-src").glob("debian/xen_4.17.5*/*.orig.tar.xz"))
    tree = where / "xen"
    tree.mkdir(parents=True)
    subprocess.run(["tar", "xf", str(orig), "-C", str(tree), "--strip-components=1"], check=True)
    git = ["git", "-C", str(tree), "-c", "user.name=bench", "-c", "user.email=bench@xenlab"]
    for args in (["init", "-q"], ["add", "-A", "-f"], ["commit", "-q", "-m", "Xen 4.17.5"]):
        subprocess.run([*git, *args], check=True)
    return tree


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="keep the tree here (default: a temporary directory)")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="xenlab-bench-build-"))
    try:
        tree = make_tree(work)
        rows = []
        wall, info = timed_build(tree)
        rows.append(("cold", wall, info["seconds"]))
        wall, _ = timed_build(tree)
        rows.append(("warm (cached)", wall, {"hypervisor_s": 0.0, "tools_s": 0.0}))
        version_c = tree / "xen" / "common" / "version.c"
        version_c.write_text(version_c.read_text() + "\n/* bench: one changed file */\n")
        wall, info = timed_build(tree)
        rows.append(("one file changed", wall, info["seconds"]))
        print(f"{'build':<18} {'hypervisor s':>12} {'tools s':>8} {'wall s':>8}")
        for name, wall, secs in rows:
            print(f"{name:<18} {secs['hypervisor_s']:>12.1f} {secs['tools_s']:>8.1f} {wall:>8.1f}")
        cold, _, incremental = (r[1] for r in rows)
        print(f"\none-file rebuild and re-image: {incremental:.1f} s "
              f"({incremental / cold:.2f} x the cold build; goal <= 30 s)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
