"""xenlab's command line: every subcommand, its options, and the one error line.

Options that name files are checked by type (cli/arguments.py) before any
work starts; everything else a user gets wrong is a XenlabError, printed as
one line with exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import XenlabError

from ..images.imageset import OVERRIDABLE
from ..images.manifest import ARCHES
from ..run.health import HEALTH_DEPTHS
from ..run.record import default_results_dir
from .bisect import cmd_bisect
from .matrix import cmd_matrix
from . import board
from .labcmd import cmd_lab
from .arguments import (ArgumentParser, existing_dir, existing_file, output_dir, output_file,
                        port, positive_int, run_name, seconds, text, writable_dir)
from .commands import (cmd_bench, cmd_dashboard, cmd_doctor, cmd_health, cmd_images_build,
                       cmd_images_check, cmd_images_pin, cmd_nightly, cmd_plan, cmd_results_list,
                       cmd_results_show, cmd_stage, cmd_testday)


def _farm_options(p, *, results_help: str) -> None:
    # A Path default skips the check: only a farm file that is used must exist.
    p.add_argument("--farm", default=Path("farm.yaml"), type=existing_file, help="labgrid env file (default: farm.yaml)")
    p.add_argument("--targets", "--boards", dest="targets",
                   help="comma-separated targets (default: every XenStrategy target)")
    p.add_argument("--results", default=str(default_results_dir()), type=output_dir,
                   help=results_help)
    p.add_argument("--jobs", type=positive_int, help="targets at once (default: all)")
    p.add_argument("--health", default="uboot", choices=["none", *HEALTH_DEPTHS],
                   help="health gate before the smoke test: boot each board this far first; "
                        "one that fails is marked unavailable (ERROR, lab), not run "
                        "(default: uboot)")


def build_parser() -> ArgumentParser:
    results_help = "results directory (default: $XENLAB_RESULTS or ./results)"
    ap = ArgumentParser(prog="xenlab", description="Smoke tests for Xen on ARM boards")
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
                   help="a patch from hypervisor/patches: psr-mode (the seed's §14.1 build "
                        "fix), dom0less-console (a PV console for dom0less DomUs); repeatable")
    b.add_argument("--xtf-source", metavar="DIR|TARBALL",
                   help="the Xen Test Framework's Arm branch: its tests join the set as xtf-<test> "
                        "(arm64; the xtf variant boots one)")
    b.add_argument("--xtf-test", action="append", default=[], metavar="NAME",
                   help="an XTF test to build (tests/NAME; default hyp-xen-version, Xen CI's); "
                        "repeatable")
    b.add_argument("--allow-tools-mismatch", action="store_true",
                   help="build a set whose --xen hypervisor differs from its toolstack")
    b.add_argument("--no-rebuild", action="store_true",
                   help="refuse a cached set whose files no longer match its manifest "
                        "(default: rebuild it)")
    b.add_argument("--dom0-ready-marker", metavar="TEXT",
                   help="with --dom0-rootfs.cpio.gz: a line your rootfs prints when Dom0 is up "
                        "(default: its shell prompt)")
    b.add_argument("--dom0-prompt", metavar="REGEX",
                   help="with --dom0-rootfs.cpio.gz: your rootfs's shell prompt (default: a root "
                        "prompt ending in '# ')")
    for name in OVERRIDABLE:
        b.add_argument(f"--{name}", dest=name.replace("-", "_").replace(".", "_"), metavar="PATH",
                       type=existing_file,
                       help=f"bring your own {name}")
    b.set_defaults(func=cmd_images_build)
    c = images.add_parser("check", help="image headers and the seed's kernel-config pitfalls")
    c.add_argument("--arch", default="arm64")
    c.add_argument("--manifest", metavar="NAME|FILE")
    c.add_argument("dir", nargs="?", type=existing_dir, help="an image set directory (default: the bundled set)")
    c.set_defaults(func=cmd_images_check)
    p = images.add_parser("pin", help="refresh the manifest's versions and sha256s from apt")
    p.add_argument("--arch", default="arm64")
    p.add_argument("--manifest", metavar="NAME|FILE")
    p.set_defaults(func=cmd_images_pin)

    plan = sub.add_parser("plan", help="print a board's boot plan (addresses, U-Boot commands)")
    plan.add_argument("board")
    plan.add_argument("--images", type=existing_dir, help="image set directory (default: the bundled set)")
    plan.add_argument("--script", type=output_file, help="also write boot.scr (with mkimage) here")
    plan.add_argument("--dtb", type=output_file, help="also write the DTB with /chosen filled in here")
    plan.add_argument("--variant", metavar="NAME|FILE", help="a board variant (boards/variants/): "
                      "dom0less domains, cpupools ...")
    plan.add_argument("--imagebuilder", metavar="CONFIG", type=existing_file,
                      help="an ImageBuilder config (uboot-script-gen -c): its files, Dom0, DomUs and "
                           "cpupools, on this board; parsed as data, never sourced")
    plan.add_argument("--native", action="store_true",
                      help="the plan that boots Dom0's kernel, initramfs and DTB without Xen "
                           "(seed §7; what a run does when Dom0 fails under Xen)")
    plan.set_defaults(func=cmd_plan)

    st = sub.add_parser("stage", help="copy the files a board's plan loads, under their load names, "
                                      "and boot.scr into DIR (an SD card's boot partition, a TFTP root)")
    st.add_argument("board")
    st.add_argument("--to", required=True, type=writable_dir, metavar="DIR",
                    help="the directory U-Boot loads from, e.g. the mounted FAT boot partition")
    st.add_argument("--images", type=existing_dir, help="image set directory (default: the bundled set)")
    st.add_argument("--force", action="store_true",
                    help="replace a file of the same name with other content (refused otherwise)")
    st.set_defaults(func=cmd_stage)

    board.add_parser(sub, text)

    doc = sub.add_parser("doctor", help="preflight checks against the seed's requirements")
    doc.add_argument("board", nargs="?")
    doc.add_argument("--all", action="store_true", help="every profile under boards/")
    doc.add_argument("--images", type=existing_dir, help="check this image set against the board "
                     "(default: the bundled set for the board's arch, built or found in the cache)")
    doc.add_argument("--no-images", action="store_true", help="check the profile and its DTB only, "
                     "not what the Xen under test drives")
    doc.add_argument("--with-images", action="store_true", help=argparse.SUPPRESS)  # now the default
    doc.add_argument("--variant", metavar="NAME|FILE", help="check a board variant (boards/variants/) "
                     "too: its domains' plan and the Kconfig its Xen needs")
    doc.set_defaults(func=cmd_doctor)

    res = sub.add_parser("results", help="run records").add_subparsers(
        dest="results_command", required=True)
    show = res.add_parser("show", help="a run's steps, times and verdict (default: the newest)")
    show.add_argument("run", nargs="?", help="run id or run directory")
    show.add_argument("--target", "--board", dest="target")
    show.add_argument("--results", default=str(default_results_dir()), type=existing_dir,
                      help=results_help)
    show.set_defaults(func=cmd_results_show)
    ls = res.add_parser("list", help="every run, newest first")
    ls.add_argument("--target", "--board", dest="target")
    ls.add_argument("--results", default=str(default_results_dir()), type=existing_dir,
                    help=results_help)
    ls.set_defaults(func=cmd_results_list)

    td = sub.add_parser("testday", help="run the smoke test on every farm board in "
                                        "parallel and write the Test Day results table")
    _farm_options(td, results_help=results_help)
    td.add_argument("--tester", required=True, type=text, help="your name, as it goes into the table")
    td.add_argument("--xen-source", metavar="SOURCE",
                    help="the release candidate: a Xen tree, a release tarball or 'debian', "
                         "built once per arch; every board boots it")
    td.add_argument("--xen-config", action="append", default=[], metavar="NAME|FILE",
                    help="Kconfig fragments for the candidate (repeatable)")
    td.add_argument("--variants", help="comma-separated board variants (boards/variants/), each on "
                                       "the boards it is for (default: the dom0 smoke test)")
    td.set_defaults(func=cmd_testday)

    mx = sub.add_parser("matrix", help="every board variant (boards/variants/) on every farm board "
                                       "it names, per Xen build: Xen CI's Arm matrix")
    mx.add_argument("--farm", default=Path("farm.yaml"), type=existing_file, help="labgrid env file (default: farm.yaml)")
    mx.add_argument("--variants", help="comma-separated variants (default: all of boards/variants/)")
    mx.add_argument("--builds", help="comma-separated builds: release (the variant's fragments), "
                                     "debug (plus CONFIG_DEBUG); default: release")
    mx.add_argument("--xen-ci", action="store_true", help="exactly Xen CI's QEMU Arm jobs "
                    "(boards/xen-ci-jobs.yaml), every Xen built from Debian's source; default "
                    "builds: release,debug")
    mx.add_argument("--xtf-source", metavar="DIR|TARBALL",
                    help="the XTF Arm branch the xtf variant's test is built from")
    mx.add_argument("--results", default=str(default_results_dir()), type=output_dir, help=results_help)
    mx.add_argument("--jobs", type=positive_int, help="boards at once (default: 2, the cores QEMU needs)")
    mx.add_argument("--tester", default="matrix", type=text, help="who ran it (recorded)")
    mx.set_defaults(func=cmd_matrix)

    ni = sub.add_parser("nightly", help="refresh images, run the farm, compare with the "
                                        "previous runs (regressions exit non-zero)")
    _farm_options(ni, results_help=results_help)
    ni.add_argument("--skip-images", action="store_true", help="do not rebuild the image sets")
    ni.add_argument("--no-run", action="store_true",
                    help="do not run the farm: compare the newest night already recorded")
    ni.add_argument("--tester", default="nightly", type=text, help="recorded as the tester (default: nightly)")
    ni.add_argument("--variants", help="comma-separated board variants, each on the boards it is "
                                       "for and compared within its own lane (default: the dom0 smoke test)")
    ni.add_argument("--xen-source", metavar="SOURCE",
                    help="tonight's Xen: a tree (e.g. xen.git, pulled before), a tarball or 'debian', "
                         "built once per arch")
    ni.add_argument("--xen-config", action="append", default=[], metavar="NAME|FILE",
                    help="Kconfig fragments for --xen-source (repeatable)")
    ni.add_argument("--bisect", action="store_true",
                    help="bisect each new regression whose Xen (tonight's and last night's) was "
                         "built from one git tree, and name its first bad commit in the summary")
    ni.set_defaults(func=cmd_nightly)

    bi = sub.add_parser("bisect", help="the first bad Xen commit of a tree for a board's failure: "
                                       "each probe builds, boots and runs up to the failing step")
    bi.add_argument("--xen-source", metavar="TREE", help="the Xen git tree (never changed: a private "
                                                          "clone is bisected)")
    bi.add_argument("--good", metavar="REV", help="a commit that passes")
    bi.add_argument("--bad", metavar="REV", help="a commit that fails, after --good")
    bi.add_argument("--target", help="the farm target to probe on")
    bi.add_argument("--variant", help="a board variant (boards/variants/) to run instead of the dom0 smoke test")
    bi.add_argument("--step", help="the step to bisect (default: the first failing step of --bad, "
                                   "probed first)")
    bi.add_argument("--config", dest="xen_config", action="append", default=[], metavar="NAME|FILE",
                    help="Kconfig fragments to build every probe with (repeatable)")
    bi.add_argument("--from", dest="from_run", type=run_name, metavar="RUN-ID",
                    help="bisect a regression: the good and bad builds, target, variant and step "
                         "from its run record and the run before it")
    bi.add_argument("--resume", type=run_name, metavar="ID", help="go on with an interrupted bisection")
    bi.add_argument("--id", type=run_name, help="the bisection's id (default: bisect-<time>)")
    bi.add_argument("--farm", default=Path("farm.yaml"), type=existing_file,
                    help="labgrid env file (default: farm.yaml)")
    bi.add_argument("--results", default=str(default_results_dir()), type=output_dir, help=results_help)
    bi.add_argument("--tester", default="bisect", type=text, help="recorded as the tester")
    bi.set_defaults(func=cmd_bisect)

    da = sub.add_parser("dashboard", help="build the static results dashboard "
                                          "(board × night matrix, board and run pages)")
    da.add_argument("--results", default=str(default_results_dir()), type=existing_dir,
                    help=results_help)
    da.add_argument("--out", type=output_dir, help="site directory (default: dashboard/ beside the results)")
    da.add_argument("--serve", action="store_true", help="then serve it on 127.0.0.1")
    da.add_argument("--port", type=port, help="port for --serve (default: 8000)")
    da.set_defaults(func=cmd_dashboard)

    he = sub.add_parser("health", help="the health gate: boot one target to U-Boot (or Dom0); "
                                       "exit 3 and an ERROR record when it cannot")
    he.add_argument("--farm", required=True, type=existing_file)
    he.add_argument("--target", required=True)
    he.add_argument("--depth", default="uboot", choices=HEALTH_DEPTHS)
    he.add_argument("--results", default=str(default_results_dir()), type=output_dir,
                    help=results_help)
    he.add_argument("--run-id", type=run_name)
    he.add_argument("--tester", default="health-check", type=text)
    he.add_argument("--place-wait", type=seconds, default=60.0)
    he.set_defaults(func=cmd_health)

    be = sub.add_parser("bench", help="the bench board's atftpd and ser2net: `up DIR` prints the "
                                      "LG_BENCH_* variables bench.yaml reads")
    be.add_argument("action", choices=["up", "down"])
    be.add_argument("dir", type=output_dir)
    be.set_defaults(func=cmd_bench)

    la = sub.add_parser("lab", help="a lab of several hosts on this machine: a coordinator, and "
                                    "per host a network namespace with its exporter, ser2net, "
                                    "atftpd and a QEMU board (needs root)")
    la.add_argument("action", choices=["up", "down", "janitor"],
                    help="janitor: release, for ever, the places whose xenlab lease lapsed "
                         "(a killed run's); `up` starts one")
    la.add_argument("--hosts", type=positive_int, default=3, help="lab hosts (up; default 3)")
    la.add_argument("--coordinator", type=text, default=None,
                    help="janitor: HOST:PORT (default: LG_COORDINATOR)")
    la.add_argument("--dir", type=output_dir, default=Path("build/lab"),
                    help="the lab's state, logs and farm file (default: build/lab)")
    la.set_defaults(func=cmd_lab)
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or the one error line ArgumentParser.error printed
        return exc.code if isinstance(exc.code, int) else 2
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
