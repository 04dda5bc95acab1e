"""Preparing a board: profile + image set -> boot files, DTB and BootPlan, before any power.

One function for every caller that needs a plan: the strategy before it
powers a board, `xenlab plan` and `xenlab doctor`.  Nothing here talks to a
board; everything it needs is built or found in the cache.
"""

from __future__ import annotations

from pathlib import Path

import attr

from ..errors import XenlabError
from ..images.imageset import ImageSet, build_image_set
from .bootplan import BootPlan
from .dtb import resolve_dtb
from .imagebuilder import plan_from, read_config, variant_of
from .profile import BoardProfile, Fixup, load_profile
from .variant import Variant, load_variant


@attr.s(frozen=True, auto_attribs=True)
class PreparedBoard:
    """What a board needs before power-on, all of it checked."""

    profile: BoardProfile
    images: ImageSet
    dtb: Path  # the profile's DTB, fixed up, in the cache
    plan: BootPlan
    variant: Variant | None = None  # None: the dom0 smoke test

    @property
    def files(self) -> dict[str, Path]:
        return boot_files(self.images, self.variant)


def boot_files(images: ImageSet, variant: Variant | None = None) -> dict[str, Path]:
    """The image set's files by boot-plan role (no Dom0's for a variant without one)."""
    if variant is not None and not variant.dom0:
        return {"xen": images.path("xen")}
    return {"xen": images.path("xen"), "dom0-kernel": images.path("dom0-kernel"),
            "dom0-ramdisk": images.path("dom0-rootfs.cpio.gz")}


def image_set_for(profile: BoardProfile, image_set: ImageSet | Path | str | None = None,
                  log=lambda msg: None, variant: Variant | None = None) -> ImageSet:
    """`image_set` (a set or its directory), or the bundled set for the profile's arch.

    A variant that needs Kconfig fragments or patches gets Debian's Xen source built with
    them (xenbuild; built once, then from the cache) unless a set is given.
    """
    if (image_set is None or image_set == "") and variant is not None and variant.builds_xen:
        images = build_image_set(profile.arch, log=log, xen_source="debian",
                                 xen_config=variant.xen_configs, fixes=variant.xen_patches)
    elif image_set is None or image_set == "":
        images = build_image_set(profile.arch, log=log)
    elif isinstance(image_set, ImageSet):
        images = image_set
    else:
        images = ImageSet.open(Path(image_set))
        images.verify()  # a set named by path is served as it is: checked, never rebuilt
    if images.arch != profile.arch:
        raise XenlabError(f"image set {images.dir} is {images.arch}, board "
                          f"{profile.name} is {profile.arch}")
    return images


def prepare(profile: BoardProfile | str, image_set: ImageSet | Path | str | None = None,
            log=lambda msg: None, variant: Variant | str | None = None,
            dtb_fixups: tuple[Fixup, ...] = (), xen_cmdline: str = "",
            timeout_scale: float = 1.0, imagebuilder: str | None = None) -> PreparedBoard:
    """Load the profile (and variant), open (or build) the image set, resolve the DTB, plan.

    `dtb_fixups` come after the profile's own, `xen_cmdline` after Xen's options, and
    `timeout_scale` multiplies its stage timeouts: a farm target's, where the board it
    reaches differs from the profile's (an emulator's layout and speed).  With `imagebuilder`,
    the config names the files, domains and DTB (ImageBuilder's MEMORY_START/END, XEN_CMD ...)."""
    if not isinstance(profile, BoardProfile):
        profile = load_profile(profile)
    if dtb_fixups:
        profile = attr.evolve(profile, dtb_fixups=profile.dtb_fixups + tuple(dtb_fixups))
    if timeout_scale != 1.0:
        profile = attr.evolve(profile, timeout_multiplier=profile.timeout_multiplier * timeout_scale)
    if imagebuilder is not None:
        if variant is not None:
            raise XenlabError("an ImageBuilder config names its own domains: drop the variant")
        config = read_config(Path(imagebuilder))
        plan = plan_from(config, profile)
        return PreparedBoard(profile, image_set_for(profile, image_set, log), plan.placement("dtb").path,
                             plan, variant_of(config, profile.name))
    if variant is not None and not isinstance(variant, Variant):
        variant = load_variant(variant)
    if variant is not None:
        variant.require_board(profile.name)
    images = image_set_for(profile, image_set, log, variant)
    dtb = resolve_dtb(profile)
    if variant is None:
        return PreparedBoard(profile, images, dtb, BootPlan.build(profile, boot_files(images), dtb,
                                                                  xen_cmdline=xen_cmdline))
    args = variant.plan_args(images)
    args["xen_cmdline"] = f"{args.get('xen_cmdline', '')} {xen_cmdline}".strip()
    plan = BootPlan.build(profile, boot_files(images, variant), dtb, **args)
    return PreparedBoard(profile, images, dtb, plan, variant)
