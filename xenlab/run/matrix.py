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
from .. import schema
from ..plan.profile import BOARDS_DIR, NAME_RE
from ..plan.variant import Variant, load_variant
from .record import new_run_id, safe_name
from .runner import TargetRun, run_all

BUILDS = ("release", "debug")  # release: the variant's fragments only; debug: plus `debug`
XEN_CI_JOBS = BOARDS_DIR / "xen-ci-jobs.yaml"
_JOB = {"type": "object", "additionalProperties": False, "required": ["variant", "board", "build"],
        "properties": {"variant": {"type": ["string", "null"], "pattern": NAME_RE.pattern},
                       "board": {"type": "string", "pattern": NAME_RE.pattern},
                       "build": {"enum": list(BUILDS)}}}
JOBS_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["source", "jobs"],
               "properties": {"source": {"type": "string"},
                              "jobs": {"type": "object", "minProperties": 1,
                                       "propertyNames": {"pattern": r"^qemu-[a-z0-9-]+$"},
                                       "additionalProperties": _JOB}}}


def build_fragments(variant: Variant | None, build: str) -> tuple[str, ...]:
    """The Kconfig fragments of a variant's build (None: the dom0 smoke test's)."""
    configs = variant.xen_configs if variant is not None else ()
    if build == "release":
        return configs
    if build == "debug":
        return configs + (() if "debug" in configs else ("debug",))
    raise XenlabError(f"--builds: unknown build {build!r} (known: {', '.join(BUILDS)})")


def matrix_runs(farm, variants: Sequence[Variant], builds: Sequence[str], results: Path,
                run_id: str | None = None, log=print, build_log=lambda m: None,
                xtf_source: str | None = None) -> list[TargetRun]:
    """One run per (variant, board it names, build), its Xen built (or found) first."""
    cells = [(v, t, b, None) for v in variants for t in farm.select((), v) for b in builds]
    return _runs(cells, results, run_id, log, build_log, xtf_source, from_source=False)


def xen_ci_runs(farm, builds: Sequence[str], results: Path, run_id: str | None = None, log=print,
                build_log=lambda m: None, xtf_source: str | None = None) -> list[TargetRun]:
    """Xen CI's QEMU Arm jobs (boards/xen-ci-jobs.yaml) of the builds asked for, each on the
    farm target of its board, each Xen built from Debian's source as Xen CI builds its own."""
    cells = []
    for name, job in xen_ci_jobs().items():
        if job["build"] not in builds:
            continue
        target = next((t for t in farm.targets.values() if t.profile == job["board"]), None)
        if target is None:
            raise XenlabError(f"Xen CI job {name} boots board {job['board']}: no target of "
                              f"{farm.path} is that board", where=str(XEN_CI_JOBS))
        cells.append((load_variant(job["variant"]) if job["variant"] else None, target,
                      job["build"], name))
    return _runs(cells, results, run_id, log, build_log, xtf_source, from_source=True)


def cell_run_id(base: str, variant: Variant | None, build: str) -> str:
    """A cell's run id: unique per target (a Xen CI job's name, up to 55 characters, is in its
    record's info instead: run ids are at most 64)."""
    return safe_name(f"{base}-{variant.name if variant else 'dom0'}-{build}", "run")


def xen_ci_jobs() -> dict[str, dict]:
    data = schema.read_yaml(XEN_CI_JOBS, "Xen CI job table", str(XEN_CI_JOBS))
    schema.validate(data, JOBS_SCHEMA, str(XEN_CI_JOBS))
    return data["jobs"]


def _runs(cells, results: Path, run_id, log, build_log, xtf_source, from_source: bool) -> list[TargetRun]:
    base = safe_name(run_id or new_run_id(), "run")
    xtf_variant = next((v for v, _, _, _ in cells if v is not None and v.xtf_test), None)
    if xtf_variant is not None and xtf_source is None:  # before any build starts
        raise XenlabError(f"variant {xtf_variant.name} boots an XTF test: give --xtf-source "
                          "DIR|TARBALL (the XTF Arm branch)", where="--xtf-source")
    runs, sets = [], {}
    for variant, target, build, job in cells:
        fragments = build_fragments(variant, build)
        patches = variant.xen_patches if variant else ()
        xtf = (variant.xtf_test,) if variant is not None and variant.xtf_test else ()
        key = (target.arch, fragments, patches, xtf)
        if key not in sets:
            built = None if not (from_source or fragments or patches or xtf) else build_image_set(
                target.arch, xen_source="debian", xen_config=fragments, fixes=patches,
                xtf_source=xtf_source if xtf else None, xtf_tests=xtf, log=build_log)
            sets[key] = built.dir if built is not None else None
            if built is not None:
                what = "+".join(fragments + tuple(f"{p}.patch" for p in patches) + xtf) or "release"
                # What was built, as the set records it: the manifest's source tarball.
                log(f"Xen for {variant.name if variant else 'dom0'} {build} ({target.arch}): Xen "
                    f"{built.xen_version} from {built.xen.get('changeset')} with {what}, "
                    f"image set {built.dir.name}")
        runs.append(TargetRun(target, cell_run_id(base, variant, build), results, image_set=sets[key],
                              variant=variant.name if variant else None, build=build,
                              tags={"xen_ci_job": job} if job else None))
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
        job = (run.tags or {}).get("xen_ci_job")
        name = f"{run.variant or 'dom0'} ({run.target.name})"
        rows.setdefault(f"{job}: {name}" if job else name, {})[run.build] = cell(run)
    header = ["variant (board)", *builds]
    body = [[name, *(cells.get(b, "-") for b in builds)] for name, cells in rows.items()]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in [header] + body)
