"""How a board's run ends: its record closed, the board powered off, its console log shut.

One step at a time, each in a `finally`, so the record is written whatever
the board does; ABORTED, naming the signal, when SIGINT or SIGTERM stopped
the run.  The power-off is bounded (XenQEMUDriver.off), so an interrupted
run ends in seconds whichever stage it was at.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Sequence

from ..lab import signals
from ..lab.monitors import parse_console_facts
from ..lab.nativeboot import NATIVE_CONSOLE, boot_native


def interrupt_reason() -> str | None:
    """"interrupted by SIGTERM" once a signal stopped the run, else None."""
    signum = signals.received()
    return None if signum is None else f"interrupted by {signal.Signals(signum).name}"


def close_board(b, abort_reason: str | None = None) -> None:
    """Console facts into the record, the record ended, the board off, the log closed."""
    strategy = b.strategy
    try:
        if strategy.recorder is not None:
            b.record.set_info(**parse_console_facts(strategy.recorder.text()),
                              stage_marks=dict(strategy.marks))
    finally:
        try:
            if abort_reason:
                b.record.abort(abort_reason)
            else:
                b.record.finish()
        finally:
            _power_off(strategy, interrupted=bool(abort_reason))
            if strategy.recorder is not None:
                strategy.recorder.close()


def blame_natively(b) -> None:
    """Seed §7: boot the same Dom0 kernel, initramfs and DTB without Xen (a failed Dom0, or
    --xenlab-native); the record says how it went, its console beside the run's."""
    if b.strategy.prepared is None:
        return
    b.record.set_info(native=boot_native(b.strategy, b.record.path / NATIVE_CONSOLE))


def _power_off(strategy, interrupted: bool) -> None:
    if strategy.status.name == "unknown":  # never powered by this run
        return
    try:
        if interrupted:
            # Stopped mid-transition, the strategy still says the state below
            # (often "off", with QEMU running): power off whatever it says.
            strategy.cut_power()
        else:
            strategy.transition("off")
    except Exception:  # the board may already be gone; the record is kept
        try:  # a broken strategy refuses transitions: cut the power anyway
            strategy.cut_power()
        except Exception:
            pass


def interrupted_line(run_dirs: Sequence[Path]) -> str:
    """The one line an interrupted session ends with."""
    if not run_dirs:
        return "interrupted: before any run record was written"
    plural = "s" if len(run_dirs) > 1 else ""
    return f"interrupted: record{plural} written to {', '.join(str(p) for p in run_dirs)}"
