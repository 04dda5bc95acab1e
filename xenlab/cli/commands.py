"""What each `xenlab` subcommand does, stage by stage of the pipeline.

images -> plan/doctor -> (lab) -> run: testday, nightly, health, bench -> reports.
A user's mistake is one line naming the file, key and value, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

from labgrid import Environment

from ..errors import Severity, Status, XenlabError
from ..images import checks, debs
from ..images.imageset import OVERRIDABLE, ImageSet, build_image_set
from ..images.manifest import manifest_path, pin_manifest
from ..lab import bench
from ..plan import imagebuilder
from ..plan.doctor import doctor
from ..plan.native import NativePlan
from ..images.xenfeatures import xen_under_test
from ..plan.prepare import boot_files, image_set_for, prepare
from ..plan.profile import list_boards, load_profile
from ..plan.variant import load_variant, variant_findings
from ..plan.stage import SCRIPT_NAME, stage
from ..plan.loadnames import script_load_name as plan_script_name
from ..reports import dashboard, nightly, testday
from ..run import bisect, compare, matrix
from ..run.bisectstate import read_bisections
from ..run.farmfile import load_farm
from ..run.health import HEALTH_UNAVAILABLE, gate
from ..run.junit import format_run
from ..run.record import RunRecord, list_runs, scan_runs
from ..run.runner import candidate_sets, finished_records, run_all, run_farm

REPO = Path(__file__).resolve().parents[2]


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
                                allow_tools_mismatch=args.allow_tools_mismatch,
                                dom0_ready={"marker": args.dom0_ready_marker,
                                            "prompt": args.dom0_prompt},
                                rebuild=not args.no_rebuild, xtf_source=args.xtf_source,
                                xtf_tests=tuple(args.xtf_test))
    xen = image_set.xen
    print(f"image set {image_set.dir}")
    print(f"hash {image_set.hash}  arch {image_set.arch}")
    print(f"Xen {xen['version']}  config {xen['config']}  changeset {xen['changeset'] or '-'}  "
          f"source {xen['source']}" + "".join(f"  patch {p}" for p in xen.get("patches") or ()))
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

def _board_line(board) -> str:
    return f"board {board.profile.name} ({board.profile.arch}), image set {board.images.hash[:16]}"


def cmd_plan(args) -> int:
    script, source = args.script, None
    if args.imagebuilder:  # the tester's own ImageBuilder config, read as data
        if args.native:
            raise XenlabError("--native and --imagebuilder: give one")
        if args.images or args.variant:
            raise XenlabError("--imagebuilder names its own files and domains: drop --images/--variant")
        config = imagebuilder.read_config(Path(args.imagebuilder))
        plan = imagebuilder.plan_from(config, load_profile(args.board))
        print(f"board {plan.profile.name} ({plan.profile.arch}), ImageBuilder config {args.imagebuilder}")
        name = imagebuilder.script_name(config)
        if name and not script:  # UBOOT_SCRIPT: written beside the config, as uboot-script-gen does
            script = str(Path(args.imagebuilder).parent / plan_script_name(name))
            if imagebuilder.source_name(config):  # UBOOT_SOURCE: the script's text, beside it
                source = Path(args.imagebuilder).parent / plan_script_name(imagebuilder.source_name(config))
    else:
        if args.native and (args.variant or args.dtb):
            raise XenlabError("--native boots the dom0 smoke test's kernel without Xen: drop "
                              "--variant and --dtb")
        board = prepare(args.board, args.images or None, variant=args.variant)
        plan = board.plan
        if args.native:
            plan = NativePlan.build(board.profile, board.files["dom0-kernel"],
                                    board.files["dom0-ramdisk"], board.dtb)
            print(f"{_board_line(board)}, natively: Dom0's kernel without Xen, command line "
                  f"{plan.bootargs!r}")
        else:
            print(_board_line(board))
    print(plan.table())
    print()
    for cmd in plan.uboot_prelude() + plan.uboot_commands():
        print(cmd)
    if script:
        plan.boot_script(Path(script), source)
        _stderr(f"\nwrote {script}" + (f" and {source}" if source else ""))
    if args.dtb:
        plan.offline_dtb(Path(args.dtb))
        _stderr(f"wrote {args.dtb}")
    return 0


def cmd_stage(args) -> int:
    board = prepare(args.board, args.images or None)
    staged = stage(board.plan, Path(args.to), force=args.force)
    print(f"{_board_line(board)}, staged in {args.to}")
    for f in staged:
        print(f"{f.name:24} {_human(f.size):>10}  {f.sha256[:16]}  {f.state}")
    print("at the U-Boot prompt:")
    print("; ".join(board.plan.uboot_prelude() + board.plan.script_commands(SCRIPT_NAME)))
    return 0


def cmd_doctor(args) -> int:
    boards = list_boards() if args.all else [args.board]
    if not boards or boards == [None]:
        raise XenlabError("name a board (xenlab doctor BOARD) or use --all")
    worst = 0
    for board in boards:
        try:
            profile = load_profile(board)
        except XenlabError as exc:
            if not args.all:
                raise
            # --all reports every profile: an invalid one must not leave the rest unchecked.
            print(f"== {board}: invalid profile\nerror profile-invalid: {exc}")
            worst = 1
            continue
        print(f"== {profile.name} ({profile.arch}): {profile.description}")
        files, extra, xen, plan_args = None, [], None, None
        variant = load_variant(args.variant) if args.variant else None
        if variant is not None:
            variant.require_board(profile.name)
        if args.images and args.no_images:
            raise XenlabError("--images and --no-images contradict each other: give one")
        if not args.no_images:  # the Xen under test decides what the board can boot
            images = image_set_for(profile, args.images or None, variant=variant)
            files = boot_files(images, variant)
            extra = checks.kernel_config_findings(images)
            xen = xen_under_test(images)
            if variant is not None:  # its Kconfig first: a bank on a Xen without static memory
                extra = variant_findings(variant, images.dir / "xen.config", images.dir.name,
                                         images.xen.get("patches")) + extra
                plan_args = variant.plan_args(images)
        worst = max(worst, _print_findings(doctor(profile, files, extra_findings=extra, xen=xen,
                                                  plan_args=plan_args)))
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
    runs, unreadable = scan_runs(root, args.target)
    if not runs:
        where = f"{root}" + (f" for target {args.target}" if args.target else "")
        if unreadable:
            raise XenlabError(f"no readable run under {where}; {len(unreadable)} could not be "
                              f"read, the first: {unreadable[0].reason}")
        raise XenlabError(f"no runs under {where}")
    print(format_run(runs[0]))
    return 0


def cmd_results_list(args) -> int:
    """Every run, newest first; exit 1 when some run.json could not be read (each on stderr)."""
    runs, unreadable = scan_runs(Path(args.results), args.target)
    for r in runs:
        print(f"{r.target:20} {r.run_id:28} {r.verdict.value:8} {r.classification or ''}")
    for bad in unreadable:
        _stderr(f"could not read: {bad.reason}")
    return 1 if unreadable else 0


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
    farm = load_farm(args.farm)
    targets = farm.select(target_list(args.targets))
    results = Path(args.results)
    image_sets = candidate_sets(targets, args.xen_source, args.xen_config, log=log,
                                build_log=_stderr)
    log(f"Test Day: {len(targets)} board(s) from {args.farm}, tester {args.tester}, "
        f"results in {results}")
    if args.variants:  # each variant on its boards, a row each (its lane)
        runs = matrix.variant_runs(farm, target_list(args.targets), _variants(args.variants),
                                   results.resolve(), image_sets)
        runs, interrupted = run_all(runs, Path(args.farm).resolve(), results.resolve(), args.tester,
                                    args.jobs or len(runs), sys.stdout, args.health)
    else:
        runs, interrupted = run_farm(args.farm, targets, results, args.tester, args.jobs,
                                     health=args.health, image_sets=image_sets)
    # After Ctrl-C the runs it stopped have no result to post; a child that
    # died on its own is a result (ABORTED) and stays in the table.
    records, unreadable = finished_records(runs, aborted=not interrupted)
    if interrupted:
        stopped = [r.label for r in runs if r.run_dir not in {x.path for x in records}]
        log(f"interrupted: {', '.join(stopped) or 'no board'} left out of the table")
    for u in unreadable:
        _stderr(f"could not read: {u.reason}")
    if not records and not unreadable:
        log("no board finished: no table written")
        return 130 if interrupted else 1
    wiki, md_path, md = testday.write_tables(records, results, unreadable=unreadable)
    log("")
    log(md.rstrip())
    log("")
    log(f"wrote {wiki} and {md_path} (paste the .wiki into \"Xen ARM Manual Smoke Test/Results\")")
    if interrupted:
        return 130
    return 0 if all(r.verdict is Status.PASS for r in records) and len(records) == len(runs) \
        and not unreadable else 1


def _variants(text: str) -> list:
    return [load_variant(n) for n in _names(text, "--variants")]


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise XenlabError(f"{option} {text!r}: an empty name")
    return list(dict.fromkeys(names))


def cmd_nightly(args, log=print) -> int:
    results = Path(args.results)
    targets = load_farm(args.farm).select(target_list(args.targets)) \
        if not (args.no_run and args.skip_images) else []
    image_sets = {}
    if args.xen_source and not args.no_run:  # tonight's Xen, built from a tree (and bisectable)
        image_sets = candidate_sets(targets, args.xen_source, args.xen_config, log=log, build_log=_stderr)
    elif not args.skip_images:
        for arch in sorted({t.arch for t in targets}):
            image_set = build_image_set(arch, log=_stderr)
            log(f"image set {arch}: {image_set.dir.name} (Xen {image_set.xen_version})")
    if args.no_run:
        history, unreadable = scan_runs(results) if results.is_dir() else ([], [])
        current = compare.newest_night(history)
        if not current:
            raise XenlabError(f"--no-run: no runs under {results} to compare")
    else:
        if args.variants:
            runs = matrix.variant_runs(load_farm(args.farm), target_list(args.targets),
                                       _variants(args.variants), results.resolve(), image_sets)
            runs, interrupted = run_all(runs, Path(args.farm).resolve(), results.resolve(),
                                        args.tester, args.jobs or len(runs), sys.stdout, args.health)
        else:
            runs, interrupted = run_farm(args.farm, targets, results, args.tester, args.jobs,
                                         health=args.health, image_sets=image_sets)
        if interrupted:
            log("nightly interrupted: no comparison")
            return 130
        current = {r.lane: r for r in finished_records(runs)[0]}
        history, unreadable = scan_runs(results)
    comparison = compare.compare(compare.previous_runs(history, current), current)
    if args.bisect:  # each new regression of a tree's build: its first bad commit
        for line in bisect.bisect_regressions(comparison, history, args.farm, results, args.tester):
            _stderr(line)
    log(nightly.format_summary(comparison, results.resolve(), unreadable,
                               read_bisections(results)[0] if results.is_dir() else ()))
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
    """The bench's atftpd and ser2net, and the LG_BENCH_* variables bench.yaml reads."""
    if args.action == "down":
        bench.bench_down(Path(args.dir), REPO / "scripts" / "bench-qemu")
        return 0
    for name, value in bench.bench_up(Path(args.dir)).items():
        print(f"export {name}={value}")
    return 0


def cmd_dashboard(args, log=print) -> int:
    results = Path(args.results)
    out = Path(args.out) if args.out else results.resolve().parent / "dashboard"
    if out.resolve() == results.resolve():
        raise XenlabError(f"--out {out}: must not be the results directory itself")
    if args.port is not None and not args.serve:
        raise XenlabError(f"--port {args.port}: only with --serve")
    stats = dashboard.build(results, out)
    log(f"dashboard: {stats.runs} runs ({stats.read} read, {stats.removed} removed), "
        f"{stats.pages} pages written in {stats.seconds:.2f} s: {out / 'index.html'}")
    if stats.unreadable:
        log(f"dashboard: {stats.unreadable} run record(s) could not be read: "
            f"listed under \"Could not read\" on {out / 'index.html'}")
    for page in stats.refused:
        _stderr(f"dashboard: not written: {page}")
    if args.serve:
        dashboard.serve(out, 8000 if args.port is None else args.port, log)
    return 0
