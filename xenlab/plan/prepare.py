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
from .profile import BoardProfile, load_profile


@attr.s(frozen=True, auto_attribs=True)
class PreparedBoard:
    """What a board needs before power-on, all of it checked."""

    profile: BoardProfile
    images: ImageSet
    dtb: Path  # the profile's DTB, fixed up, in the cache
    plan: BootPlan

    @property
    def files(self) -> dict[str, Path]:
        return boot_files(self.images)


def boot_files(images: ImageSet) -> dict[str, Path]:
    """The image set's files by boot-plan role."""
    return {"xen": images.path("xen"), "dom0-kernel": images.path("dom0-kernel"),
            "dom0-ramdisk": images.path("dom0-rootfs.cpio.gz")}


def image_set_for(profile: BoardProfile, image_set: ImageSet | Path | str | None = None,
                  log=lambda msg: None) -> ImageSet:
    """`image_set` (a set or its directory), or the bundled set for the profile's arch."""
    if image_set is None or image_set == "":
        images = build_image_set(profile.arch, log=log)
    elif isinstance(image_set, ImageSet):
        images = image_set
    else:
        images = ImageSet.open(Path(image_set))
    if images.arch != profile.arch:
        raise XenlabError(f"image set {images.dir} is {images.arch}, board "
                          f"{profile.name} is {profile.arch}")
    return images


def prepare(profile: BoardProfile | str, image_set: ImageSet | Path | str | None = None,
            log=lambda msg: None) -> PreparedBoard:
    """Load the profile, open (or build) the image set, resolve the DTB and lay out the plan."""
    if not isinstance(profile, BoardProfile):
        profile = load_profile(profile)
    images = image_set_for(profile, image_set, log)
    dtb = resolve_dtb(profile)
    return PreparedBoard(profile, images, dtb, BootPlan.build(profile, boot_files(images), dtb))
