"""The `xenlab` command: the one entry point, gluing the pipeline's stages for a user.

images -> plan/doctor -> (lab) -> run: testday, nightly, health, bench -> reports.
A user's mistake is one line naming the file, key and value, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labgrid import Environment

from .errors import Severity, Status, XenlabError
from .images import checks, debs
from .images.imageset import OVERRIDABLE, ImageSet, build_image_set
from .images.manifest import ARCHES, manifest_path, pin_manifest
from .lab import services
from .plan.doctor import doctor
from .plan.prepare import boot_files, image_set_for, prepare
from .plan.profile import list_boards, load_profile
from .reports import dashboard, nightly, testday
from .run import compare
from .run.farmfile import load_farm
from .run.health import HEALTH_DEPTHS, HEALTH_UNAVAILABLE, gate
from .run.junit import format_run
from .run.record import RunRecord, default_results_dir, list_runs
from .run.runner import candidate_sets, finished_records, run_farm

REPO = Path(__file__).resolve().parent.parent


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- images

def cmd_images_build(args) -> int:
    overrides = {name: Path(value) for name in OVERRIDABLE
                 if (value := getattr(args, name.replace("-", "_").replace(".", "_")))}
    image_set = build_image_set(args.arch, overrides, manifest_path(args.arch, args.manifest),
                                log=_stderr, xen_source=args.xen_source,
                                xen_config=args.xen_config, fixes=args.apply_fix,
                                allow_tools_mismatch=args.allow_tools_mismatch)
    xen = image_set.xen
    print(f"image set {image_set.dir}")
    print(f"hash {image_set.hash}  arch {image_set.arch}")
    print(f"Xen {xen['version']}  config {xen['config']}  changeset {xen['changeset'] or '-'}  "
          f"source {xen['source']}")
    if image_set.toolstack_mismatch:
        mismatch = image_set.toolstack_mismatch
        print(f"WARNING: hypervisor Xen {mismatch['hypervisor']}, Dom0 toolstack Xen "
              f"{mismatch['tools']} (--allow-tools-mismatch): every run record says so")
    print(f"{'artifact':22} {'size':>10}  {'sha256':16}  source")
    for a in image_set.artifacts.values():
        print(f"{a.name:22} {_human(a.size):>10}  {a.sha256[:16]}  {a.source}"
              + (f" ({a.path})" if a.path else ""))
    return 0


def _print_findings(findings) -> int:
    for f in findings:
        print(f)
    errors = sum(f.severity == Severity.ERROR for f in findings)
    warns = sum(f.severity == Severity.WARN for f in findings)
    print(f"{errors} error(s), {warns} warning(s), {len(findings) - errors - warns} info")
    return 1 if errors else 0


def cmd_images_check(args) -> int:
    image_set = ImageSet.open(Path(args.dir)) if args.dir else \
        build_image_set(args.arch, manifest=manifest_path(args.arch, args.manifest))
    print(f"image set {image_set.dir} ({image_set.arch})")
    return _print_findings(checks.check_image_set(image_set))


def cmd_images_pin(args) -> int:
    changed = pin_manifest(manifest_path(args.arch, args.manifest), debs.query_candidate)
    for line in changed:
        print(line)
    print(f"{len(changed)} package(s) changed")
    return 0


# --------------------------------------------------------------------------- plan / doctor

def cmd_plan(args) -> int:
    board = prepare(args.board, args.images or None)
    print(f"board {board.profile.name} ({board.profile.arch}), image set {board.images.hash[:16]}")
    print(board.plan.table())
    print()
    for cmd in board.plan.uboot_prelude() + board.plan.uboot_commands():
        print(cmd)
    if args.script:
        board.plan.boot_script(Path(args.script))
        _stderr(f"\nwrote {args.script}")
    if args.dtb:
        board.plan.offline_dtb(Path(args.dtb))
        _stderr(f"wrote {args.dtb}")
    return 0


def cmd_doctor(args) -> int:
    boards = list_boards() if args.all else [args.board]
    if not boards or boards == [None]:
        raise XenlabError("name a board (xenlab doctor BOARD) or use --all")
    worst = 0
    for board in boards:
        profile = load_profile(board)
        print(f"== {profile.name} ({profile.arch}): {profile.description}")
        files, extra = None, []
        if args.images or args.with_images:
            images = image_set_for(profile, args.images or None)
            files = boot_files(images)
            extra = checks.kernel_config_findings(images)
        worst = max(worst, _print_findings(doctor(profile, files, extra_findings=extra)))
    return worst


# --------------------------------------------------------------------------- results

def cmd_results_show(args) -> int:
    root = Path(args.results)
    if args.run:
        candidate = Path(args.run)
        if not candidate.exists():
            matches = [r for r in list_runs(root, args.target) if r.run_id == args.run]
            if not matches:
                raise XenlabError(f"no run '{args.run}' under {root}")
            candidate = matches[0].path
        print(format_run(RunRecord.load(candidate)))
        return 0
    runs = list_runs(root, args.target)
    if not runs:
        raise XenlabError(f"no runs under {root}" + (f" for target {args.target}" if args.target else ""))
    print(format_run(runs[0]))
    return 0


def cmd_results_list(args) -> int:
    for r in list_runs(Path(args.results), args.target):
        print(f"{r.target:20} {r.run_id:28} {r.verdict.value:8} {r.classification or ''}")
    return 0


# --------------------------------------------------------------------------- the farm

def target_list(text: str | None) -> list[str]:
    if not text:
        return []
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise XenlabError(f"--targets {text!r}: empty target name")
    return list(dict.fromkeys(names))


def cmd_testday(args, log=print) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise XenlabError(f"--jobs {args.jobs}: must be at least 1")
    if not args.tester.strip():
        raise XenlabError(f"--tester {args.tester!r}: name who ran the tests")
    targets = load_farm(args.farm).select(target_list(args.targets))
    results = Path(args.results)
    image_sets = candidate_sets(targets, args.xen_source, args.xen_config, log=log,
                                build_log=_stderr)
    log(f"Test Day: {len(targets)} board(s) from {args.farm}, tester {args.tester}, "
        f"results in {results}")
    runs, interrupted = run_farm(args.farm, targets, results, args.tester, args.jobs,
                                 health=args.health, image_sets=image_sets)
    # After Ctrl-C the runs it stopped have no result to post; a child that
    # died on its own is a result (ABORTED) and stays in the table.
    records = finished_records(runs, aborted=not interrupted)
    if interrupted:
        stopped = [r.target.name for r in runs if r.target.name not in {x.target for x in records}]
        log(f"interrupted: {', '.join(stopped) or 'no board'} left out of the table")
    if not records:
        log("no board finished: no table written")
        return 130 if interrupted else 1
    wiki, md_path, md = testday.write_tables(records, results)
    log("")
    log(md.rstrip())
    log("")
    log(f"wrote {wiki} and {md_path} (paste the .wiki into \"Xen ARM Manual Smoke Test/Results\")")
    if interrupted:
        return 130
    return 0 if all(r.verdict is Status.PASS for r in records) and len(records) == len(runs) else 1


def cmd_nightly(args, log=print) -> int:
    results = Path(args.results)
    targets = load_farm(args.farm).select(target_list(args.targets)) \
        if not (args.no_run and args.skip_images) else []
    if not args.skip_images:
        for arch in sorted({t.arch for t in targets}):
            image_set = build_image_set(arch, log=_stderr)
            log(f"image set {arch}: {image_set.dir.name} (Xen {image_set.xen_version})")
    if args.no_run:
        history = list_runs(results) if results.is_dir() else []
        current = compare.newest_night(history)
        if not current:
            raise XenlabError(f"--no-run: no runs under {results} to compare")
    else:
        runs, interrupted = run_farm(args.farm, targets, results, args.tester, args.jobs,
                                     health=args.health)
        if interrupted:
            log("nightly interrupted: no comparison")
            return 130
        current = {r.target: r for r in finished_records(runs)}
        history = list_runs(results)
    comparison = compare.compare(compare.previous_runs(history, current), current)
    log(nightly.format_summary(comparison, results.resolve()))
    return 1 if comparison.regressions else 0


def cmd_health(args) -> int:
    """Exit 0: healthy, nothing written. Exit 3: unavailable, its ERROR record written."""
    record = gate(load_farm(args.farm).target(args.target), Environment(args.farm), args.depth,
                  args.results, args.tester, run_id=args.run_id, place_wait=args.place_wait)
    if record is None:
        print(f"{args.target}: healthy ({args.depth})")
        return 0
    print(f"{args.target}: unavailable: {record.verdict_reason}")
    return HEALTH_UNAVAILABLE


def cmd_bench(args) -> int:
    """The bench's atftpd, and the LG_BENCH_* variables bench.yaml reads."""
    if args.action == "down":
        services.bench_down(Path(args.dir), REPO / "scripts" / "bench-qemu")
        return 0
    for name, value in services.bench_up(Path(args.dir)).items():
        print(f"export {name}={value}")
    return 0


def cmd_dashboard(args, log=print) -> int:
    results = Path(args.results)
    out = Path(args.out) if args.out else results.resolve().parent / "dashboard"
    if out.resolve() == results.resolve():
        raise XenlabError(f"--out {out}: must not be the results directory itself")
    if args.port is not None and not args.serve:
        raise XenlabError(f"--port {args.port}: only with --serve")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise XenlabError(f"--port {args.port}: not a TCP port")
    stats = dashboard.build(results, out)
    log(f"dashboard: {stats.runs} runs ({stats.read} read, {stats.removed} removed), "
        f"{stats.pages} pages written in {stats.seconds:.2f} s: {out / 'index.html'}")
    if args.serve:
        dashboard.serve(out, 8000 if args.port is None else args.port, log)
    return 0


# --------------------------------------------------------------------------- main

def _farm_options(p, *, results_help: str) -> None:
    p.add_argument("--farm", default="farm.yaml", help="labgrid env file (default: farm.yaml)")
    p.add_argument("--targets", "--boards", dest="targets",
                   help="comma-separated targets (default: every XenStrategy target)")
    p.add_argument("--results", default=str(default_results_dir()), help=results_help)
    p.add_argument("--jobs", type=int, help="targets at once (default: all)")
    p.add_argument("--health", default="uboot", choices=["none", *HEALTH_DEPTHS],
                   help="health gate before the smoke test: boot each board this far first; "
                        "one that fails is marked unavailable (ERROR, lab), not run "
                        "(default: uboot)")


def build_parser() -> argparse.ArgumentParser:
    results_help = "results directory (default: $XENLAB_RESULTS or ./results)"
    ap = argparse.ArgumentParser(prog="xenlab", description="Smoke tests for Xen on ARM boards")
    sub = ap.add_subparsers(dest="command", required=True)

    images = sub.add_parser("images", help="the bundled image set").add_subparsers(
        dest="images_command", required=True)
    b = images.add_parser("build", help="build (or find in the cache) the image set")
    b.add_argument("--arch", default="arm64", help=f"one of {', '.join(ARCHES)}")
    b.add_argument("--manifest", metavar="NAME|FILE",
                   help="hypervisor/NAME.yaml (e.g. arm64-trixie) instead of hypervisor/ARCH.yaml")
    b.add_argument("--xen-source", metavar="SOURCE",
                   help="build hypervisor and toolstack from a Xen tree, a release tarball, "
                        "or 'debian' (the manifest's Debian source package)")
    b.add_argument("--xen-config", action="append", default=[], metavar="NAME|FILE",
                   help="a Kconfig fragment (hypervisor/configs/NAME.config, or a file); "
                        "repeatable")
    b.add_argument("--apply-fix", action="append", default=[], metavar="NAME",
                   help="a known build fix from hypervisor/patches (psr-mode)")
    b.add_argument("--allow-tools-mismatch", action="store_true",
                   help="build a set whose --xen hypervisor differs from its toolstack")
    for name in OVERRIDABLE:
        b.add_argument(f"--{name}", dest=name.replace("-", "_").replace(".", "_"), metavar="PATH",
                       help=f"bring your own {name}")
    b.set_defaults(func=cmd_images_build)
    c = images.add_parser("check", help="image headers and the seed's kernel-config pitfalls")
    c.add_argument("--arch", default="arm64")
    c.add_argument("--manifest", metavar="NAME|FILE")
    c.add_argument("dir", nargs="?", help="an image set directory (default: the bundled set)")
    c.set_defaults(func=cmd_images_check)
    p = images.add_parser("pin", help="refresh the manifest's versions and sha256s from apt")
    p.add_argument("--arch", default="arm64")
    p.add_argument("--manifest", metavar="NAME|FILE")
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
    show.add_argument("--target", "--board", dest="target")
    show.add_argument("--results", default=str(default_results_dir()), help=results_help)
    show.set_defaults(func=cmd_results_show)
    ls = res.add_parser("list", help="every run, newest first")
    ls.add_argument("--target", "--board", dest="target")
    ls.add_argument("--results", default=str(default_results_dir()), help=results_help)
    ls.set_defaults(func=cmd_results_list)

    td = sub.add_parser("testday", help="run the smoke test on every farm board in "
                                        "parallel and write the Test Day results table")
    _farm_options(td, results_help=results_help)
    td.add_argument("--tester", required=True, help="your name, as it goes into the table")
    td.add_argument("--xen-source", metavar="SOURCE",
                    help="the release candidate: a Xen tree, a release tarball or 'debian', "
                         "built once per arch; every board boots it")
    td.add_argument("--xen-config", action="append", default=[], metavar="NAME|FILE",
                    help="Kconfig fragments for the candidate (repeatable)")
    td.set_defaults(func=cmd_testday)

    ni = sub.add_parser("nightly", help="refresh images, run the farm, compare with the "
                                        "previous runs (regressions exit non-zero)")
    _farm_options(ni, results_help=results_help)
    ni.add_argument("--skip-images", action="store_true", help="do not rebuild the image sets")
    ni.add_argument("--no-run", action="store_true",
                    help="do not run the farm: compare the newest night already recorded")
    ni.add_argument("--tester", default="nightly", help="recorded as the tester (default: nightly)")
    ni.set_defaults(func=cmd_nightly)

    da = sub.add_parser("dashboard", help="build the static results dashboard "
                                          "(board × night matrix, board and run pages)")
    da.add_argument("--results", default=str(default_results_dir()), help=results_help)
    da.add_argument("--out", help="site directory (default: dashboard/ beside the results)")
    da.add_argument("--serve", action="store_true", help="then serve it on 127.0.0.1")
    da.add_argument("--port", type=int, help="port for --serve (default: 8000)")
    da.set_defaults(func=cmd_dashboard)

    he = sub.add_parser("health", help="the health gate: boot one target to U-Boot (or Dom0); "
                                       "exit 3 and an ERROR record when it cannot")
    he.add_argument("--farm", required=True)
    he.add_argument("--target", required=True)
    he.add_argument("--depth", default="uboot", choices=HEALTH_DEPTHS)
    he.add_argument("--results", default=str(default_results_dir()), help=results_help)
    he.add_argument("--run-id")
    he.add_argument("--tester", default="health-check")
    he.add_argument("--place-wait", type=float, default=60.0)
    he.set_defaults(func=cmd_health)

    be = sub.add_parser("bench", help="the bench board's atftpd: `up DIR` prints the "
                                      "LG_BENCH_* variables bench.yaml reads")
    be.add_argument("action", choices=["up", "down"])
    be.add_argument("dir")
    be.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except XenlabError as exc:
        print(f"xenlab: error: {exc}", file=sys.stderr)
        for line in getattr(exc, "tail", ()):  # a failed build: the end of its log
            print(f"  | {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xenlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
