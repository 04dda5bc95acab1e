"""The SD card of an emulated board, as a labgrid resource and driver.

A lab puts a real card in a board (or behind an SD mux); an emulated board
reads an image file (QEMU's `-drive if=sd,file=...`).  `SDCardImage` names
that file, and the farm target's QEMU arguments name the same one;
`SDCardImageDriver.write` lays out the card from the board profile's
`sdcard:` data and the run's boot plan (plan/sdcard.py) before power-on.
"""

from __future__ import annotations

import attr
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.resource.common import Resource
from labgrid.step import step

from ..plan.sdcard import CardImage, write_card


@attr.s(eq=False)
class HostFile(Resource):
    """A file on this host that a driver writes for the board before power-on."""

    path = attr.ib(validator=attr.validators.instance_of(str))

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.avail = True  # a file this host writes: always there


@target_factory.reg_resource
@attr.s(eq=False)
class SDCardImage(HostFile):
    """An SD card image file; `boot/` beside it holds the card's ROM-firmware files.

    Args:
        path (str): the image file (its directory is the card's own)
    """


@target_factory.reg_driver
@attr.s(eq=False)
class SDCardImageDriver(Driver):
    """Writes the board's card: its U-Boot where the boot ROM reads it, the boot files."""

    bindings = {"card": "SDCardImage"}

    @step()
    def write(self, profile, plan) -> CardImage:
        return write_card(profile, plan, self.card.path)
