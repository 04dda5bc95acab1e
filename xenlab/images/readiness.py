"""When Dom0 is ready: xenlab's marker, or the prompt of a Dom0 rootfs the tester brings.

xenlab's own Dom0 rootfs prints DOM0_READY_MARKER once its init is done.  A
rootfs the tester brings (`--dom0-rootfs.cpio.gz`) knows nothing of it; it is
ready when its shell prompts, so the set records a prompt pattern instead
(a root shell's `... # ` by default, or the tester's own).
"""

from __future__ import annotations

import re
import subprocess
import sys

from ..errors import XenlabError

DOM0_READY_MARKER = "XENLAB-DOM0-READY"
DOMU_READY_MARKER = "XENLAB-DOMU-READY"
# A root shell's prompt as the last thing on the console: busybox's "~ # ",
# bash's "root@host:~# " (maybe after a terminal escape); nothing follows it.
DOM0_ROOT_PROMPT = r"(?m)^[^\r\n#]{0,80}# $"
ROOTFS = "dom0-rootfs.cpio.gz"
# A tester's regex runs against every console read: one that backtracks catastrophically
# ("(a+)+$": seconds on 25 characters) would stall the run. It is tried first, in a child
# that is killed after TRIAL_S, on runs of each character it names and of common ones.
TRIAL_S = 2.0
TRIAL = """
import re, sys
pattern = re.compile(sys.argv[1])
chars = {c for c in sys.argv[1] if c.isprintable()} | set("a0 #:/-_~$")
for c in sorted(chars):
    for n in (8, 16, 24, 32):
        pattern.search(c * n + "\\x01")
        pattern.search("\\r\\n" + c * n + "\\r\\n")
"""


def check_regex_cost(pattern: str, where: str) -> None:
    """One line when `pattern` takes over TRIAL_S on a short hostile console line."""
    try:
        subprocess.run([sys.executable, "-c", TRIAL, pattern], timeout=TRIAL_S, check=True,
                       capture_output=True)
    except subprocess.TimeoutExpired:
        raise XenlabError(f"{pattern!r} backtracks catastrophically: a 33-character console line "
                          f"took over {TRIAL_S:.0f} s to search; write it without nested "
                          "repetition (such as '(a+)+')", where=where) from None


def dom0_readiness(overrides, marker: str | None = None, prompt: str | None = None) -> dict:
    """{"dom0_ready_marker": ..., "dom0_ready_prompt": ...} for the set's manifest."""
    if ROOTFS not in overrides:
        if marker or prompt:
            raise XenlabError(f"--dom0-ready-marker and --dom0-prompt describe a Dom0 rootfs you "
                              f"bring: add --{ROOTFS}",
                              where="--dom0-ready-marker" if marker else "--dom0-prompt")
        return {"dom0_ready_marker": DOM0_READY_MARKER, "dom0_ready_prompt": None}
    if marker is not None and (not marker.strip() or not marker.isprintable()):
        raise XenlabError(f"{marker!r}: a marker is one printable line the rootfs prints",
                          where="--dom0-ready-marker")
    if prompt is not None:
        try:
            compiled = re.compile(prompt)
        except re.error as exc:
            raise XenlabError(f"{prompt!r} is not a regular expression: {exc}",
                              where="--dom0-prompt") from None
        if compiled.search(""):
            raise XenlabError(f"{prompt!r} matches an empty console: it would match at once",
                              where="--dom0-prompt")
        check_regex_cost(prompt, "--dom0-prompt")
    # The prompt is kept with a marker too: the shell after it is still the tester's.
    return {"dom0_ready_marker": marker or None, "dom0_ready_prompt": prompt or DOM0_ROOT_PROMPT}


def ready_pattern(info: dict) -> str:
    """The regex the Dom0 stage waits for."""
    marker = info.get("dom0_ready_marker")
    return re.escape(marker) if marker else (info.get("dom0_ready_prompt") or DOM0_ROOT_PROMPT)
