"""When Dom0 is ready: xenlab's marker, or the prompt of a Dom0 rootfs the tester brings.

xenlab's own Dom0 rootfs prints DOM0_READY_MARKER once its init is done.  A
rootfs the tester brings (`--dom0-rootfs.cpio.gz`) knows nothing of it; it is
ready when its shell prompts, so the set records a prompt pattern instead
(a root shell's `... # ` by default, or the tester's own).
"""

from __future__ import annotations

import re

from ..errors import XenlabError

DOM0_READY_MARKER = "XENLAB-DOM0-READY"
DOMU_READY_MARKER = "XENLAB-DOMU-READY"
# A root shell's prompt as the last thing on the console: busybox's "~ # ",
# bash's "root@host:~# " (maybe after a terminal escape); nothing follows it.
DOM0_ROOT_PROMPT = r"(?m)^[^\r\n#]{0,80}# $"
ROOTFS = "dom0-rootfs.cpio.gz"


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
    # The prompt is kept with a marker too: the shell after it is still the tester's.
    return {"dom0_ready_marker": marker or None, "dom0_ready_prompt": prompt or DOM0_ROOT_PROMPT}


def ready_pattern(info: dict) -> str:
    """The regex the Dom0 stage waits for."""
    marker = info.get("dom0_ready_marker")
    return re.escape(marker) if marker else (info.get("dom0_ready_prompt") or DOM0_ROOT_PROMPT)
