"""The `xenlab` command: images, plan, doctor, results (and the reports built on them).

A user's mistake is one line naming the file, key and value, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import Severity, XenlabError


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# --------------------------------------------------------------------------- images

def cmd_images_build(args) -> int:
    from .images import OVERRIDABLE, build_image_set

    overrides = {}
    for name in OVERRIDABLE:
        value = getattr(args, name.replace("-", "_").replace(".", "_"))
        if value:
            overrides[name] = Path(value)
    image_set = build_image_set(args.arch, overrides, log=lambda m: print(m, file=sys.stderr))
    print(f"image set {image_set.dir}")
    print(f"hash {image_set.hash}  Xen {image_set.xen_version}  arch {image_set.arch}")
    print(f"{'artifact':22} {'size':>10}  {'sha256':16}  source")
    for a in image_set.artifacts.values():
        print(f"{a.name:22} {_human(a.size):>10}  {a.sha256[:16]}  {a.source}"
              + (f" ({a.path})" if a.path else ""))
    return 0


def _open_set(args):
    from .images import ImageSet, build_image_set

    if args.dir:
        return ImageSet.open(Path(args.dir))
    return build_image_set(args.arch)


def _print_findings(findings) -> int:
    for f in findings:
        print(f)
    errors = sum(f.severity == Severity.ERROR for f in findings)
    warns = sum(f.severity == Severity.WARN for f in findings)
    print(f"{errors} error(s), {warns} warning(s), {len(findings) - errors - warns} info")
    return 1 if errors else 0


def cmd_images_check(args) -> int:
    from .images import check_image_set

    image_set = _open_set(args)
    print(f"image set {image_set.dir} ({image_set.arch})")
    return _print_findings(check_image_set(image_set))


def cmd_images_pin(args) -> int:
    from .images import pin_manifest

    changed = pin_manifest(args.arch)
    for line in changed:
        print(line)
    print(f"{len(changed)} package(s) changed")
    return 0


# --------------------------------------------------------------------------- plan / doctor

def _plan_for(board: str, image_dir: str | None):
    from .boards import load_profile
    from .bootplan import BootPlan
    from .dtb import resolve_dtb
    from .images import ImageSet, build_image_set

    profile = load_profile(board)
    image_set = ImageSet.open(Path(image_dir)) if image_dir else build_image_set(profile.arch)
    files = {"xen": image_set.path("xen"), "dom0-kernel": image_set.path("dom0-kernel"),
             "dom0-ramdisk": image_set.path("dom0-rootfs.cpio.gz")}
    return profile, image_set, files, BootPlan.build(profile, files, resolve_dtb(profile))


def cmd_plan(args) -> int:
    profile, image_set, _, plan = _plan_for(args.board, args.images)
    print(f"board {profile.name} ({profile.arch}), image set {image_set.hash[:16]}")
    print(plan.table())
    print()
    for cmd in plan.uboot_prelude() + plan.uboot_commands():
        print(cmd)
    if args.script:
        plan.boot_script(Path(args.script))
        print(f"\nwrote {args.script}", file=sys.stderr)
    if args.dtb:
        plan.offline_dtb(Path(args.dtb))
        print(f"wrote {args.dtb}", file=sys.stderr)
    return 0


def cmd_doctor(args) -> int:
    from .boards import list_boards, load_profile
    from .doctor import doctor
    from .images import ImageSet, build_image_set, check_kernel_config, kernel_config

    boards = list_boards() if args.all else [args.board]
    if not boards or boards == [None]:
        raise XenlabError("name a board (xenlab doctor BOARD) or use --all")
    worst = 0
    for board in boards:
        profile = load_profile(board)
        print(f"== {profile.name} ({profile.arch}): {profile.description}")
        files, extra = None, []
        if args.images or args.with_images:
            image_set = ImageSet.open(Path(args.images)) if args.images \
                else build_image_set(profile.arch)
            files = {"xen": image_set.path("xen"), "dom0-kernel": image_set.path("dom0-kernel"),
                     "dom0-ramdisk": image_set.path("dom0-rootfs.cpio.gz")}
            for role in ("dom0", "domU"):
                cfg = image_set.dir / f"{role}-kernel.config"
                if cfg.exists():
                    extra += check_kernel_config(kernel_config(cfg), role, cfg.name)
        worst = max(worst, _print_findings(doctor(profile, files, extra_findings=extra)))
    return worst


# --------------------------------------------------------------------------- results

def cmd_results_show(args) -> int:
    from .results import RunRecord, format_run, list_runs

    root = Path(args.results)
    if args.run:
        candidate = Path(args.run)
        if not candidate.exists():
            matches = [r for r in list_runs(root, args.board) if r.run_id == args.run]
            if not matches:
                raise XenlabError(f"no run '{args.run}' under {root}")
            candidate = matches[0].path
        print(format_run(RunRecord.load(candidate)))
        return 0
    runs = list_runs(root, args.board)
    if not runs:
        raise XenlabError(f"no runs under {root}" + (f" for board {args.board}" if args.board else ""))
    print(format_run(runs[0]))
    return 0


def cmd_results_list(args) -> int:
    from .results import list_runs

    for r in list_runs(Path(args.results), args.board):
        print(f"{r.board:20} {r.run_id:28} {r.verdict.value:8} {r.classification or ''}")
    return 0


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    from .images import ARCHES, OVERRIDABLE

    ap = argparse.ArgumentParser(prog="xenlab", description="Smoke tests for Xen on ARM boards")
    sub = ap.add_subparsers(dest="command", required=True)

    images = sub.add_parser("images", help="the bundled image set").add_subparsers(
        dest="images_command", required=True)
    b = images.add_parser("build", help="build (or find in the cache) the image set")
    b.add_argument("--arch", default="arm64", help=f"one of {', '.join(ARCHES)}")
    for name in OVERRIDABLE:
        b.add_argument(f"--{name}", dest=name.replace("-", "_").replace(".", "_"), metavar="PATH",
                       help=f"bring your own {name}")
    b.set_defaults(func=cmd_images_build)
    c = images.add_parser("check", help="image headers and the seed's kernel-config pitfalls")
    c.add_argument("--arch", default="arm64")
    c.add_argument("dir", nargs="?", help="an image set directory (default: the bundled set)")
    c.set_defaults(func=cmd_images_check)
    p = images.add_parser("pin", help="refresh the manifest's versions and sha256s from apt")
    p.add_argument("--arch", default="arm64")
    p.set_defaults(func=cmd_images_pin)

    plan = sub.add_parser("plan", help="print a board's boot plan (addresses, U-Boot commands)")
    plan.add_argument("board")
    plan.add_argument("--images", help="image set directory (default: the bundled set)")
    plan.add_argument("--script", help="also write boot.scr (with mkimage) here")
    plan.add_argument("--dtb", help="also write the DTB with /chosen filled in here")
    plan.set_defaults(func=cmd_plan)

    doc = sub.add_parser("doctor", help="preflight checks against the seed's requirements")
    doc.add_argument("board", nargs="?")
    doc.add_argument("--all", action="store_true", help="every profile under boards/")
    doc.add_argument("--images", help="check this image set against the board too")
    doc.add_argument("--with-images", action="store_true", help="check the bundled image set too")
    doc.set_defaults(func=cmd_doctor)

    res = sub.add_parser("results", help="run records").add_subparsers(
        dest="results_command", required=True)
    show = res.add_parser("show", help="a run's steps, times and verdict (default: the newest)")
    show.add_argument("run", nargs="?", help="run id or run directory")
    show.add_argument("--board")
    show.add_argument("--results", default="results")
    show.set_defaults(func=cmd_results_show)
    ls = res.add_parser("list", help="every run, newest first")
    ls.add_argument("--board")
    ls.add_argument("--results", default="results")
    ls.set_defaults(func=cmd_results_list)

    from . import dashboard, nightly, testday  # the reports, built on the run records
    testday.register(sub)
    nightly.register(sub)
    dashboard.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except XenlabError as exc:
        print(f"xenlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xenlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
