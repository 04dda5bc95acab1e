"""Signals as the harness wants them: SIGTERM unwinds like Ctrl-C, and a lock is
never given back halfway.

A cancelled CI job or a stopped Test Day sends SIGTERM; Python's default would
end the process on the spot, leaving run records RUNNING and places locked.
Raising KeyboardInterrupt instead runs every `finally` and teardown on the
way out, so records say ABORTED and places are released.
"""

from __future__ import annotations

import contextlib
import signal
import threading


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_sigterm_as_interrupt() -> bool:
    """From now on SIGTERM raises KeyboardInterrupt (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return False
    signal.signal(signal.SIGTERM, _interrupt)
    return True


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM while the lock is given back (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, lambda s, f: pending.append(s))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]}")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """For the `with` block, SIGTERM (a cancelled CI job) unwinds like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
