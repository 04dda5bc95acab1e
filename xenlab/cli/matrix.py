"""`xenlab matrix`: board variants x builds on the farm, or exactly Xen CI's QEMU Arm jobs."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import Status, XenlabError
from ..plan.variant import list_variants, load_variant
from ..run import matrix
from ..run.farmfile import load_farm
from .commands import _names, _stderr


def cmd_matrix(args, log=print) -> int:
    farm = load_farm(args.farm)
    results = Path(args.results)
    if args.xen_ci:
        if args.variants:
            raise XenlabError("--xen-ci runs Xen CI's own jobs: drop --variants")
        builds = _names(args.builds, "--builds") if args.builds else list(matrix.BUILDS)
        runs = matrix.xen_ci_runs(farm, builds, results, log=log, build_log=_stderr,
                                  xtf_source=args.xtf_source)
        what = f"Xen CI's QEMU Arm jobs ({', '.join(builds)})"
    else:
        variants = [load_variant(n) for n in (_names(args.variants, "--variants") if args.variants
                                               else list_variants())]
        if args.xtf_source and not any(v.xtf_test for v in variants):
            raise XenlabError("--xtf-source is for the xtf variant: add it to --variants")
        if not args.variants and not args.xtf_source:  # XTF is the tester's input: none, no cell
            log("variant xtf left out: it boots an XTF test, give --xtf-source DIR|TARBALL")
            variants = [v for v in variants if not v.xtf_test]
        builds = _names(args.builds, "--builds") if args.builds else ["release"]
        runs = matrix.matrix_runs(farm, variants, builds, results, log=log, build_log=_stderr,
                                  xtf_source=args.xtf_source)
        what = f"{len(variants)} variant(s) x {len(builds)} build(s)"
    jobs = args.jobs or 2
    log(f"matrix: {len(runs)} run(s), {what}, {jobs} board(s) at once, results in {results}")
    runs, interrupted, wall = matrix.run_matrix(args.farm, runs, results, args.tester, jobs, sys.stdout)
    log("")
    log(matrix.table(runs, builds))
    log(f"\nwall time {wall:.0f} s for {len(runs)} run(s)")
    if interrupted:
        return 130
    return 0 if all(r.record is not None and r.record.verdict is Status.PASS for r in runs) else 1
