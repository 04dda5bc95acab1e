"""What a failed step was: its status, classification, message and console evidence,
sharpened by what the live board shows (lab/diagnose.py)."""

from __future__ import annotations

from pexpect import EOF, TIMEOUT

from ..errors import StageFailure, XenlabError
from ..lab.console import ConsoleAlarm
from ..lab.diagnose import Diagnosis, silent_xen, toolstack_mismatch


def diagnose(b, step: str, excinfo, classification: str, message: str):
    """Collect what explains the failure on the live board; maybe sharpen the label."""
    exc = excinfo.value if excinfo else None
    diag = Diagnosis(b.strategy, b.record.diagnostics)
    try:
        if isinstance(exc, StageFailure):
            if exc.stage == "xen" and classification == "stage-timeout:xen" and \
                    b.strategy.recorder and b.strategy.prepared:
                hint = silent_xen(b.strategy.prepared, b.strategy.recorder.text())
                if hint:  # nothing to ask a Xen that never spoke
                    return "xen-silent", hint
            if exc.stage in ("xen", "dom0", "shell") and classification.startswith("stage-timeout"):
                diag.hung_hypervisor_or_dom0()
            return classification, message
        if b.strategy.status.name != "shell":
            return classification, message
        seen = "\n".join([message, *(b.strategy.recorder.tail(40) if b.strategy.recorder else [])])
        hint = toolstack_mismatch(b.strategy.facts.get("xen_version"),
                                  b.images.tools_version if b.images else None, seen)
        if hint:
            diag.dom0_logs()
            return "toolstack-mismatch", f"{hint}; {message}"
        if isinstance(exc, TIMEOUT) and b.guest and b.shell.in_guest:
            trap = diag.silent_domu(b.guest)
            if trap:
                classification, hint = trap
                message = f"DomU {b.guest} is silent; {hint}"
            else:
                classification = "domu-silent"
                message = f"DomU {b.guest} printed nothing on its console"
        diag.dom0_logs()
    except Exception as err:  # diagnosis must never hide the failure itself
        diag.save("diagnosis-error.txt", f"{type(err).__name__}: {err}\n")
    return classification, message


def failure_of(name, excinfo, b):
    exc = excinfo.value if excinfo else None
    tail = b.strategy.recorder.tail(15) if b.strategy.recorder else []
    if isinstance(exc, (ConsoleAlarm, EOF)):
        # A panic, an oops or a reset under a shell step, or the console gone: the board is
        # down, the step ends now, and the later steps skip rather than wait on it.
        stage = "domu" if b.strategy.shell.in_guest else "step"
        exc = b.failure = (b.strategy.monitor_failure(stage, exc.waiting_for, exc.monitor)
                           if isinstance(exc, ConsoleAlarm) else
                           b.strategy.console_closed(stage, f"step {name}"))
    if isinstance(exc, StageFailure):
        return exc.status, exc.classification, exc.message, exc.evidence or tail
    if isinstance(exc, TIMEOUT):
        return "FAIL", f"stage-timeout:{name}", "no answer on the console in time", tail
    if isinstance(exc, AssertionError):
        return "FAIL", f"step-failed:{name}", str(exc).splitlines()[0] if str(exc) else "assertion", tail
    if isinstance(exc, XenlabError):
        return "ERROR", "harness-config", str(exc), []
    if isinstance(exc, (KeyboardInterrupt,)):
        return "ERROR", "interrupted", "interrupted", tail
    text = f"{type(exc).__name__}: {exc}" if exc else "unknown error"
    return "ERROR", "harness-error", text.splitlines()[0], tail
