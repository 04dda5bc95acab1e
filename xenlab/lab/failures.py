"""How a failure on the lab side is told: the StageFailure behind labgrid's wrapping,
and an external command's own last words.
"""

from __future__ import annotations

from labgrid.strategy.common import StrategyError

from ..errors import StageFailure, XenlabError


def stage_failure(exc: BaseException, stage: str, evidence=()) -> StageFailure:
    """The StageFailure behind what `transition` raised.

    labgrid's never_retry wraps each nested transition in a StrategyError, so
    the real cause sits at the end of the chain; a configuration mistake is the
    harness's, anything else unexpected a harness error at `stage`.
    """
    cause = exc
    while isinstance(cause, StrategyError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, StageFailure):
        return cause
    if isinstance(cause, XenlabError):
        return StageFailure("prepare", "ERROR", "harness-config", str(cause))
    return StageFailure(stage, "ERROR", "harness-error", f"{type(cause).__name__}: {cause}",
                        list(evidence))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def command_why(exc: BaseException) -> str:
    """An external command's own last line says why (bench-qemu, a PDU script)."""
    out = getattr(exc, "output", None)
    text = out.decode(errors="replace") if isinstance(out, bytes) else str(out or "")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else one_line(exc)
