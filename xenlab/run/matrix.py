"""`xenlab matrix`: each board variant on each farm board it names, for each Xen build.

The cells are Xen CI's Arm matrix (xen.git automation/gitlab-ci/test.yaml):
every variant of boards/variants/, and each again on a debug build, as Xen CI
runs its jobs.  A build is made once per variant's fragments and arch, from
the Debian Xen source the arch's manifest names (the cache keeps it); "debian" is the prebuilt
Xen when the variant needs no fragment.  Cells run through the farm runner,
as many boards at once as --jobs allows, one cell per board at a time, each
with its own run record tagged with its variant.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence, TextIO

from ..errors import Status, XenlabError
from ..images.imageset import build_image_set
from ..plan.variant import Variant
from .record import new_run_id, safe_name
from .runner import TargetRun, run_all

BUILDS = ("release", "debug")  # release: the variant's fragments only; debug: plus `debug`


def build_fragments(variant: Variant, build: str) -> tuple[str, ...]:
    if build == "release":
        return variant.xen_configs
    if build == "debug":
        return variant.xen_configs + (() if "debug" in variant.xen_configs else ("debug",))
    raise XenlabError(f"--builds: unknown build {build!r} (known: {', '.join(BUILDS)})")


def matrix_runs(farm, variants: Sequence[Variant], builds: Sequence[str], results: Path,
                run_id: str | None = None, log=print, build_log=lambda m: None) -> list[TargetRun]:
    """One run per (variant, board it names, build), its Xen built (or found) first."""
    base = safe_name(run_id or new_run_id(), "run")
    runs, sets = [], {}
    for variant in variants:
        for target in farm.select((), variant):
            for build in builds:
                fragments = build_fragments(variant, build)
                key = (target.arch, fragments, variant.xen_patches)
                if key not in sets:
                    built = None if not (fragments or variant.xen_patches) else build_image_set(
                        target.arch, xen_source="debian", xen_config=fragments,
                        fixes=variant.xen_patches, log=build_log)
                    sets[key] = built.dir if built is not None else None
                    if built is not None:
                        what = "+".join(fragments + tuple(f"{p}.patch" for p in variant.xen_patches))
                        # What was built, as the set records it: the manifest's source tarball.
                        log(f"Xen for {variant.name} {build} ({target.arch}): Xen "
                            f"{built.xen_version} from {built.xen.get('changeset')} with {what}, "
                            f"image set {built.dir.name}")
                runs.append(TargetRun(target, f"{base}-{variant.name}-{build}", results,
                                      image_set=sets[key], variant=variant.name, build=build))
    if not runs:
        raise XenlabError("the matrix is empty: no farm target is a board the variants name")
    return runs


def variant_runs(farm, names: Sequence[str], variants: Sequence[Variant], results: Path,
                 image_sets: dict | None = None, run_id: str | None = None) -> list[TargetRun]:
    """Test Day's and the nightly's `--variants`: each variant on the named targets it is for
    (all of them when none are named), booting the night's or the candidate's image set."""
    base = safe_name(run_id or new_run_id(), "run")
    runs = []
    for v in variants:
        targets = [t for t in map(farm.target, names) if v.applies_to(t.profile)] if names \
            else farm.select((), v)
        runs += [TargetRun(t, f"{base}-{v.name}", results, image_set=(image_sets or {}).get(t.arch),
                           variant=v.name) for t in targets]
    if not runs:
        raise XenlabError("--variants: none of the variants is for the targets named")
    return runs


def run_matrix(farm_path: Path, runs: list[TargetRun], results: Path, tester: str, jobs: int,
               out: TextIO) -> tuple[list[TargetRun], bool, float]:
    t0 = time.monotonic()
    runs, interrupted = run_all(runs, Path(farm_path).resolve(), results, tester, jobs, out)
    return runs, interrupted, time.monotonic() - t0


def cell(run: TargetRun) -> str:
    r = run.record
    if r is None:
        return "not run" if run.started is None else f"pytest exited {run.returncode}"
    seconds = f" {run.elapsed():.0f}s" if run.started else ""
    why = f" [{r.classification}]" if r.verdict is not Status.PASS and r.classification else ""
    return f"{r.verdict.value}{seconds}{why}"


def table(runs: Sequence[TargetRun], builds: Sequence[str]) -> str:
    """Variants (with the board) x builds, one cell per run: verdict, seconds, why."""
    rows = {}
    for run in runs:
        rows.setdefault(f"{run.variant} ({run.target.name})", {})[run.build] = cell(run)
    header = ["variant (board)", *builds]
    body = [[name, *(cells.get(b, "-") for b in builds)] for name, cells in rows.items()]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in [header] + body)
