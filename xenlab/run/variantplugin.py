"""Which smoke test a pytest run is: the dom0 one, or a board variant's (`--xenlab-variant`),
and how far it goes (`--xenlab-until STEP`: a bisection probe stops at the step it bisects).

A test module says which it belongs to (`pytestmark = pytest.mark.xenlab_mode("dom0")`
or "dom0less"), and a step what it needs (`@pytest.mark.xenlab_needs("dom0", "ping")`).
Steps that do not apply to the run's variant are deselected, not skipped: a
skip would read as a step that could not run.  The variant reaches the
XenStrategy through XENLAB_VARIANT, as the image set does through XENLAB_IMAGE_SET.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from ..errors import XenlabError
from ..plan import imagebuilder
from ..plan.variant import Variant, load_variant

_VARIANT_KEY = pytest.StashKey["Variant | None"]()


def pytest_addoption(parser):
    group = parser.getgroup("xenlab")
    group.addoption(
        "--xenlab-variant", default=os.environ.get("XENLAB_VARIANT") or None,
        help="board variant (boards/variants/NAME.yaml: dom0less, without-dom0, staticmem ...); "
             "default: the dom0 smoke test")
    group.addoption(
        "--xenlab-imagebuilder", default=os.environ.get("XENLAB_IMAGEBUILDER") or None, metavar="CONFIG",
        help="boot what an ImageBuilder config describes (its files, domains and DTB) and run the "
             "dom0less steps that apply to it")
    group.addoption(
        "--xenlab-until", default=os.environ.get("XENLAB_UNTIL") or None, metavar="STEP",
        help="run the steps up to and including STEP (e.g. xen_boots), as a bisection probe does")


def pytest_configure(config):
    config.addinivalue_line("markers", "xenlab_mode(mode): the smoke test a module belongs to "
                            "(dom0: no variant; dom0less: a variant)")
    config.addinivalue_line("markers", "xenlab_needs(*what): a step for variants with a Dom0 "
                            "('dom0'), without one ('no-dom0'), xenstore ('enhanced'), Dom0's "
                            "teardown ('destroy'), Linux DomUs ('linux-domus') or a check")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    name = config.getoption("--xenlab-variant", None)
    ib = config.getoption("--xenlab-imagebuilder", None)
    if ib:
        try:
            if name:
                raise XenlabError("an ImageBuilder config names its own domains: drop --xenlab-variant")
            if len(config.getoption("--xenlab-target", None) or []) != 1:
                raise XenlabError("an ImageBuilder config boots one board: give one --xenlab-target")
            config.stash[_VARIANT_KEY] = imagebuilder.variant_of(imagebuilder.read_config(Path(ib)), "")
        except XenlabError as exc:
            print(f"xenlab: error: --xenlab-imagebuilder: {exc}", file=sys.stderr)
            return 2
        os.environ["XENLAB_IMAGEBUILDER"] = str(Path(ib).resolve())  # the XenStrategy's
        return None
    if not name:
        config.stash[_VARIANT_KEY] = None
        return None
    try:
        config.stash[_VARIANT_KEY] = load_variant(name)
    except XenlabError as exc:
        print(f"xenlab: error: --xenlab-variant: {exc}", file=sys.stderr)
        return 2
    os.environ["XENLAB_VARIANT"] = name  # the XenStrategy's
    return None


def variant_of(config) -> Variant | None:
    return config.stash.get(_VARIANT_KEY, None)


def traits(variant: Variant | None) -> set[str]:
    """What a step can need, as this variant has it."""
    if variant is None:
        return {"dom0"}
    have = {"dom0" if variant.dom0 else "no-dom0", *variant.all_checks}
    if "xtf" not in have:  # an XTF test kernel has no init to reach, no shell to type to
        have.add("linux-domus")
    if variant.dom0 and any(d.enhanced for d in variant.domains):
        have.add("enhanced")
    if variant.dom0 and variant.destroy:
        have.add("destroy")
    return have


def pytest_collection_modifyitems(config, items):
    variant = variant_of(config)
    mode = "dom0less" if variant is not None else "dom0"
    have = traits(variant)
    keep, drop = [], []
    for item in items:
        marks = list(item.iter_markers("xenlab_mode"))
        wrong_mode = marks and marks[0].args[0] != mode
        needs = {n for m in item.iter_markers("xenlab_needs") for n in m.args}
        (drop if wrong_mode or not needs <= have else keep).append(item)
    until = config.getoption("--xenlab-until", None)
    if until:
        steps = [step_of(item) for item in keep]
        if until not in steps:
            raise pytest.UsageError(f"xenlab: --xenlab-until {until}: no such step in the {mode} smoke "
                                    f"test (steps: {', '.join(dict.fromkeys(steps))})")
        last = max(i for i, s in enumerate(steps) if s == until)
        drop += keep[last + 1:]
        keep = keep[:last + 1]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def imagebuilder_facts() -> dict:
    """For the record: the ImageBuilder config that booted, by path and sha256."""
    path = os.environ.get("XENLAB_IMAGEBUILDER")
    if not path:
        return {}
    return {"imagebuilder": {"config": path, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}}


def step_of(item) -> str:
    """A test's step name, as run records name it: the test function without 'test_'."""
    name = getattr(item, "originalname", None) or item.name
    return name[5:] if name.startswith("test_") else name


def target_names(config, farm, given: list[str]) -> list[str]:
    """The targets this run boots: those named, else those the variant is for (an ImageBuilder
    config's: the targets named, whatever their board)."""
    variant = variant_of(config)
    if variant is not None and config.getoption("--xenlab-imagebuilder", None):
        variant = None
    try:
        return [t.name for t in farm.select(given, variant)]
    except XenlabError as exc:
        raise pytest.UsageError(f"xenlab: {exc}") from None
