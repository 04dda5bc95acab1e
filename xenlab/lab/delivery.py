"""Before power-on: how the boot plan reaches a board, and what its farm target adds.

The plan reaches the board over TFTP (in the run's own directory of the TFTP root),
on its SD card (SDCardImageDriver writes it), or, for a board whose firmware
QEMU cannot run, through QEMU's own loader (XenQEMUDriver.loader_args).  A
farm target may add DTB fix-ups and Xen options where the board it reaches
differs from the profile's (an emulator's device layout); `wiring` says all
of it in the run's record.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from pathlib import Path

from labgrid.resource import TFTPProvider
from labgrid.util.managedfile import ManagedFile

from .. import schema
from ..errors import XenlabError
from ..plan.bootplan import BootPlan
from ..plan.firmware import describe as describe_firmware
from ..plan.profile import FIXUP_SCHEMA, Fixup, check_cmdline
from ..plan.loadnames import FILENAME_RE, staged_in
from .failures import one_line

STAGING_MARK = ".xenlab-staging"  # in a run's TFTP directory: the target it was staged for


def check_tftp_server(target: str, address: str) -> None:
    """A target's `XenStrategy: {tftp_server: ...}` goes into a U-Boot command: an IPv4
    address, nothing else."""
    if address:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise XenlabError(f"target {target}: XenStrategy tftp_server {address!r} is not an "
                              "IPv4 address") from None


def target_fixups(target: str, specs: list) -> tuple[Fixup, ...]:
    """A target's `XenStrategy: {dtb_fixups: [...]}`, checked as a profile's are."""
    shape = {"type": "object", "properties": {"XenStrategy": {"type": "object", "properties": {
        "dtb_fixups": {"type": "array", "items": FIXUP_SCHEMA}}}}}
    schema.validate({"XenStrategy": {"dtb_fixups": specs}}, shape, f"target {target}")
    return tuple(Fixup.from_data(spec) for spec in specs)


def target_xen_cmdline(target: str, value: str) -> str:
    """A target's `XenStrategy: {xen_cmdline: ...}`: it goes into a U-Boot `fdt set`."""
    why = check_cmdline(value)
    if why:
        raise XenlabError(f"target {target}: key 'XenStrategy.xen_cmdline': "
                          f"{schema.show(value)} {why}")
    return value.strip()


class DeliveryFailed(Exception):
    """The lab could not put the plan where the board reads it: the lab's ERROR."""

    def __init__(self, classification: str, message: str):
        super().__init__(message)
        self.classification = classification


def deliver(strategy, plan: BootPlan) -> BootPlan:
    """Put the plan where the target's board reads it, before power-on: TFTP, its card,
    or QEMU's loader (the strategy's bindings say which). Returns the plan as delivered
    (over TFTP, loading from the run's own directory)."""
    if strategy.tftp is not None:
        try:
            strategy.target.activate(strategy.tftp)
            plan = staged_in(plan, staging_name(strategy))
            stage_tftp(strategy.tftp, plan, strategy.target.name)
        except XenlabError:
            raise
        except Exception as exc:  # a full or unwritable directory, the exporter's SSH
            raise DeliveryFailed("tftp-stage-failed", f"TFTP provider "
                                 f"{strategy.tftp.provider.internal}: cannot stage the boot "
                                 f"files: {one_line(exc)}") from None
    if strategy.sdcard is not None:
        strategy.target.activate(strategy.sdcard)
        try:
            strategy.card = strategy.sdcard.write(strategy.profile, plan)
        except XenlabError as exc:  # a missing tool, a full disk: the lab's, not the board's
            raise DeliveryFailed("sdcard-write-failed", str(exc)) from None
    if strategy.uboot is None:
        strategy.loader_dir = load_direct(strategy, plan)
    return plan


def staging_name(strategy) -> str:
    """The run's own directory on the TFTP server: its run id, the name of the directory
    its console is recorded in (a health check's scratch directory's)."""
    recorder = strategy.recorder
    name = recorder.path.parent.name if recorder is not None else ""
    return name if FILENAME_RE.match(name) and not name.startswith(".") else f"run-{os.getpid()}"


def stage_tftp(tftp, plan: BootPlan, target: str) -> None:
    """The plan's files into `<TFTP root>/<the run's directory>/`, under the names U-Boot
    asks for, each a link to its file in the cache (labgrid's ManagedFile: copied first
    to the exporter's host for a RemoteTFTPProvider). labgrid's own stage() puts every
    file in the root, where a second run's would replace the first's.

    A local root keeps no other run's directory of this target: the board is this run's
    (lab/boardlock.py), so they are finished or killed runs'."""
    provider = tftp.provider
    for name, path in plan.files().items():
        ManagedFile(str(path), provider).sync_to_resource(
            symlink=os.path.join(provider.internal, plan.load_dir, name))
    if isinstance(provider, TFTPProvider):
        root = Path(provider.internal)
        for other in root.iterdir():
            mark = other / STAGING_MARK
            if (other.name != plan.load_dir and not other.is_symlink() and mark.is_file()
                    and mark.read_text() == target):
                shutil.rmtree(other)
        (root / plan.load_dir / STAGING_MARK).write_text(target)


def load_direct(strategy, plan: BootPlan):
    """No U-Boot: QEMU's loader places the plan, handed its arguments by XenQEMUDriver or,
    for a board the lab's power script starts, in the target's QEMULoaderFile.

    Returns the temporary directory holding the edited DTB; it must live as long
    as the board is powered (QEMU reads it at start, and again at a reset).
    """
    target, power, loader = strategy.target.name, strategy.power, strategy.loader
    if loader is None and not hasattr(power, "loader_args"):
        raise XenlabError(f"target {target}: no UBootDriver, and its power driver "
                          f"{type(power).__name__} cannot load files itself (only "
                          "XenQEMUDriver can; or give the target a QEMULoaderFileDriver)")
    workdir = tempfile.TemporaryDirectory(prefix="xenlab-loader-")
    dtb = plan.offline_dtb(Path(workdir.name) / f"{strategy.profile.name}.dtb")
    args = plan.qemu_loader_args(dtb)
    if loader is not None:
        strategy.target.activate(loader)
        try:
            loader.write(args)
        except OSError as exc:
            workdir.cleanup()
            raise DeliveryFailed("loader-write-failed", f"QEMU loader file "
                                 f"{loader.file.path}: {one_line(exc)}") from None
    else:
        power.loader_args = args
    return workdir


def wiring(strategy) -> dict:
    """What the record and the Test Day table say of how a prepared board boots: its
    firmware, its boot medium, what its target changed and, emulated, the emulator."""
    profile, power, uboot = strategy.profile, strategy.power, strategy.uboot
    dtb_fixups, xen_cmdline = strategy.dtb_fixups, strategy.xen_cmdline
    if uboot is None:
        medium, firmware = "QEMU loader", "none (QEMU's loader)"
    else:
        medium = ("TFTP" if profile.load_command.startswith("tftp")
                  else "SD card" if profile.loads_from_card else profile.load_command)
        firmware = describe_firmware(profile)
    out = {"firmware": firmware, "boot_medium": medium}
    if dtb_fixups:  # the DTB Xen got is not quite the board's: say how
        out["target_dtb_fixups"] = [spec.get("why", "") for spec in dtb_fixups]
    if xen_cmdline.strip():
        out["target_xen_cmdline"] = xen_cmdline.strip()
    machine = getattr(power, "machine", None)
    if machine:  # a QEMUDriver: the board is QEMU's model of it
        version = getattr(power, "qemu_version", lambda: None)()
        out["emulation"] = f"QEMU {version or '?'} -M {machine}"
    return out
