"""Fuzzing every parser of untrusted input, with fixed seeds (issue 16).

A board's console, a board's DTB, a run record, a farm file and an ImageBuilder
config all come from outside xenlab.  Each is mutated a few thousand times from real seeds (a QEMU
console transcript, the shipped boards' DTBs, records RunRecord wrote, the
repository's farm files) and read the way xenlab reads it.  Every input must be
read or refused with one XenlabError line: no other exception, no hang.
`bench/fuzz.py --inputs N` runs the same targets longer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import test_imagebuilder
from support import fabricate, fuzzing
from support.imageset import MiB, arm64_image
from xenlab.plan.dtb import resolve_dtb
from xenlab.plan.profile import load_profile

REPO = Path(__file__).resolve().parent.parent
BOARDS = ["qemu-virt-arm64", "qemu-virt-arm32", "rpi4", "zcu102", "juno-r2", "cubieboard2"]
FARMS = ["farm.yaml", "farm-examples.yaml", "remote.yaml", "bench.yaml", "bench-zcu102.yaml"]


def targets(tmp: Path) -> dict:
    """name -> (make the target, inputs in make test)."""
    return {
        "console": (fuzzing.console_target, 3000),
        "dtb": (lambda: fuzzing.dtb_target(
            [(resolve_dtb(p), p) for p in map(load_profile, BOARDS)]), 2000),
        "run-record": (lambda: fuzzing.record_target(
            fabricate.fabricate(tmp / "results", boards=12, nights=3)), 3000),
        "farm-file": (lambda: fuzzing.farm_target([REPO / f for f in FARMS]), 2000),
        "imagebuilder": (lambda: fuzzing.imagebuilder_target(test_imagebuilder.CONFIG,
                                                             _imagebuilder_files(tmp)), 2000),
    }


def _imagebuilder_files(tmp: Path) -> Path:
    """The files the ImageBuilder config names, small (every input lays them out again)."""
    d = tmp / "ib"
    d.mkdir()
    arm64_image(d / "xen", MiB + 40)
    arm64_image(d / "Image", 3 * MiB)
    (d / "initrd").write_bytes(b"\x1f\x8b" + bytes(4000))
    (d / "virt-gicv2.dtb").write_bytes(resolve_dtb(load_profile("qemu-virt-arm64")).read_bytes())
    return d


@pytest.mark.parametrize("name", ["console", "dtb", "run-record", "farm-file", "imagebuilder"])
def test_every_input_is_read_or_refused_in_one_line(tmp_path, name):
    make, inputs = targets(tmp_path)[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # labgrid warns about what load_farm then refuses
        result = fuzzing.fuzz(make(), inputs, seed=16)
    print(result.line())
    assert result.inputs == inputs
    assert not result.crashes, "\n".join(f"{site}: {c.sample[:200]!r}"
                                         for site, c in result.crashes.items())
    assert result.hangs == 0
    if name != "console":  # mutants must reach both outcomes, or the mutator is broken
        assert 0 < result.refused < inputs, result.line()


def test_the_fuzzer_finds_a_crash_it_is_shown():
    # The harness itself: a parser that raises anything but a one-line XenlabError is
    # reported with its site, and one that does not return is a hang.
    def parser(data: bytes) -> None:
        if b"\x00" in data:
            raise KeyError("boom")
        if data.startswith(b"z"):
            while True:
                pass
    target = fuzzing.Target("toy", [b"abc", b"zzz"], lambda rng, d: fuzzing.mutate_bytes(rng, d, [b"\x00"]),
                            parser)
    result = fuzzing.fuzz(target, 60, hang_s=0.05)
    assert result.crash_count > 0 and result.hangs > 0
    (site,) = result.crashes
    assert site.startswith("KeyError at ") and "test_fuzz.py" in site
