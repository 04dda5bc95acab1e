"""Signals as the harness wants them: SIGINT and SIGTERM end a run in seconds, at
any stage, and a lock or a power-off is never given up halfway.

A cancelled CI job or a stopped Test Day sends SIGTERM; Python's default would
end the process on the spot, leaving run records RUNNING and places locked.
Raising KeyboardInterrupt instead runs every `finally` and teardown on the
way out, so records say ABORTED, boards are powered off and places released.

The pytest session goes further (`install_interrupt_handler`):
- the interrupt is never raised inside labgrid's step bookkeeping: an
  exception between its push and pop leaves the global step stack corrupt,
  and every later step (the power-off too) then fails an assertion;
- once the run is unwinding, more signals are ignored for `GRACE_S`, so a
  second Ctrl-C cannot cut a (bounded) teardown short and leave QEMU running.
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import threading
import time

from labgrid.step import step as labgrid_step

GRACE_S = 15.0  # teardown is bounded well below this; after it, Ctrl-C works again
RETRY_S = 0.01  # an interrupt that came at an unsafe point is retried this soon


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM told the run to stop (pytest treats it as Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    signum: int | None = None  # the signal that stopped the run
    unwinding_since: float | None = None
    pending = False  # received where it could not be raised yet
    shield = 0  # depth of `deferred()` blocks


_STATE = _State()


def _step_call_line() -> int | None:
    """The line of labgrid's step wrapper that calls the wrapped function."""
    try:
        lines, first = inspect.getsourcelines(labgrid_step)
    except (OSError, TypeError):
        return None
    for i, line in enumerate(lines):
        if "func(*_args, **_kwargs)" in line:
            return first + i
    return None


_STEP_FILE = labgrid_step.__code__.co_filename
_STEP_CALL_LINE = _step_call_line()


def _safe_to_raise(frame) -> bool:
    """True unless `frame` is inside labgrid's step bookkeeping (push, pop, notify)."""
    while frame is not None:
        code = frame.f_code
        if code.co_filename == _STEP_FILE and not (
                code.co_name == "wrapper" and frame.f_lineno == _STEP_CALL_LINE):
            return False
        frame = frame.f_back
    return True


def _retry(signum: int) -> None:
    main = threading.main_thread().ident
    timer = threading.Timer(RETRY_S, signal.pthread_kill, (main, signum))
    timer.daemon = True
    timer.start()


def _unwinding() -> bool:
    since = _STATE.unwinding_since
    return since is not None and time.monotonic() - since < GRACE_S


def _on_signal(signum, frame):
    if _unwinding():
        return  # the run is already ending, within a bounded time
    _STATE.signum = signum
    if _STATE.shield:
        _STATE.pending = True  # raised when the shielded block ends
        return
    if not _safe_to_raise(frame):
        _STATE.pending = True
        _retry(signum)
        return
    _STATE.pending = False
    _STATE.unwinding_since = time.monotonic()
    raise Interrupted(signum)


def install_interrupt_handler() -> bool:
    """SIGINT and SIGTERM stop the run as `Interrupted` (main thread, default handlers only).

    Each session starts afresh: nothing received, nothing pending.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    _STATE.__dict__.clear()
    defaults = {signal.SIGINT: (signal.default_int_handler, signal.SIG_DFL, None, _on_signal),
                signal.SIGTERM: (signal.SIG_DFL, None, _on_signal)}
    installed = False
    for sig, default in defaults.items():
        if signal.getsignal(sig) in default:
            signal.signal(sig, _on_signal)
            installed = True
    return installed


def received() -> int | None:
    """The signal that stopped the run, if one did."""
    return _STATE.signum


def ending() -> None:
    """The session is tearing down (out of pytest's reach, where an exception is a
    traceback): signals are ignored from now on, for `GRACE_S`."""
    if _STATE.unwinding_since is None:
        _STATE.unwinding_since = time.monotonic()


@contextlib.contextmanager
def deferred():
    """Hold the session's interrupt for the block (a power-off, a record write).

    An interrupt that came during the block is raised when it ends, unless
    the session is already unwinding.
    """
    _STATE.shield += 1
    try:
        yield
    finally:
        _STATE.shield -= 1
        if not _STATE.shield and _STATE.pending and not _unwinding():
            _STATE.pending = False
            _STATE.unwinding_since = time.monotonic()
            raise Interrupted(_STATE.signum)


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
        # A session that is already ending takes no second interrupt (no traceback).
        if pending and not _unwinding():
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
