"""Seed §7 on the board: the Dom0 kernel, initramfs and DTB booted without Xen, for blame.

When Dom0 fails under Xen, the first question a tester and a Xen developer ask
is whether the same kernel boots on the bare board.  `boot_native` powers the
board off, boots plan/native.py's plan through the same U-Boot (and the same
TFTP directory or card), and waits for Dom0's stage markers with the monitors
watching, on a console log of its own.  Its answer goes into the run record:
`boots` (the failure is Xen's), `fails` (the kernel's or the board's), or
`not-run` and `error` when it could not say.
"""

from __future__ import annotations

import time
from pathlib import Path

import attr

from ..errors import StageFailure, XenlabError
from ..plan.native import NativePlan
from .monitors import STAGE_MARKERS

NATIVE_CONSOLE = "native-console.log"  # beside the run's console.log


def boot_native(strategy, console_log: Path) -> dict:
    """Boot the prepared board's Dom0 kernel natively; the record's `native` entry."""
    prepared = strategy.prepared
    files = prepared.files if prepared is not None else {}
    out = {"console": console_log.name}
    if strategy.uboot is None:
        return {**out, "result": "not-run",
                "reason": "no U-Boot on this target to boot a kernel with"}
    if "dom0-kernel" not in files:
        return {**out, "result": "not-run", "reason": "the variant boots no Dom0"}
    try:
        plan = NativePlan.build(prepared.profile, files["dom0-kernel"], files["dom0-ramdisk"],
                                prepared.dtb)
    except XenlabError as exc:
        return {**out, "result": "not-run", "reason": str(exc)}
    t0 = time.monotonic()
    strategy.cut_power()
    main = strategy.recorder  # closed by record_to, its text kept: the run's own console
    strategy.record_to(console_log)
    profile = strategy.profile
    # The Dom0 stage's markers, waited for with the profile's native timeout.
    scale = profile.native_timeout() / profile.timeout("dom0")
    strategy.profile = attr.evolve(profile, timeout_multiplier=profile.timeout_multiplier * scale)
    try:
        strategy._to_uboot(plan)
        strategy.stage_started["dom0"] = time.monotonic()
        strategy.console.sendline(plan.uboot_commands()[-1])
        strategy.target.deactivate(strategy.uboot)
        for name, pattern in STAGE_MARKERS["dom0"]:
            strategy._wait("dom0", name, pattern.format(ready=strategy.images.dom0_ready_pattern))
        out.update(result="boots", bootargs=plan.bootargs)
    except StageFailure as f:
        # The kernel's own failure (a panic, no init, silence) says "fails"; the lab's says
        # nothing about the kernel.
        out.update(result="fails" if f.status == "FAIL" else "error",
                   classification=f.classification, message=f.message, bootargs=plan.bootargs)
    finally:
        strategy.profile = profile
        strategy.cut_power()
        strategy.recorder.close()
        strategy.recorder = main
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out
