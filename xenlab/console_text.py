"""Console text, cleaned once for every reader: the strategy, the records and the reports.

A board's UART is untrusted noise as much as it is evidence: Xen lines end
"\\r\\r\\r\\n", typed echo interleaves with VT100 queries (`\\x1b[6n`), and a
broken board prints garbage.  Everything that reads console text goes through
these few functions, with labgrid's own `re_vt100`, so the live strategy and
a replayed log agree on what a line says.
"""

from __future__ import annotations

import re
from pathlib import Path

from labgrid.util import re_vt100

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Prefixes before a message: Xen's "(XEN) ", a guest's "(d1) ", a dom0less
# DomU's "DOM1: ", and "[    1.234567] " timestamps (Linux, Xen's console_timestamps).
_PREFIX = re.compile(r"^(?:\s*(?:\(XEN\)|\(d\d+\)|DOM\d+:|\[\s*\d+\.\d+\]))+\s*")


def clean(text: str) -> str:
    """Console text without VT100 sequences and carriage returns."""
    return re_vt100.sub("", text).replace("\r", "")


def clean_lines(text: str) -> list[str]:
    """Console text as lines, without escapes, control characters or blank lines."""
    lines = (_CONTROL.sub("", line).rstrip() for line in clean(text).split("\n"))
    return [line for line in lines if line.strip()]


def body(line: str) -> str:
    """A console line without its Xen, guest or timestamp prefixes."""
    return _PREFIX.sub("", line)


def excerpt(path: Path | str, around: str, lines: int = 20) -> str:
    """About `lines` clean console lines around the last one containing `around`.

    Three quarters come before it (what led there), the rest after (a Xen
    panic prints its reason on the line after "Panic on CPU").  Without a
    match, the last `lines` lines.  "" when there is no console log.
    """
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    all_lines = clean_lines(text)
    needle = " ".join(clean_lines(around)).strip()
    hit = next((i for i in range(len(all_lines) - 1, -1, -1)
                if needle and needle in all_lines[i]), None)
    if hit is None:
        return "\n".join(all_lines[-lines:])
    before = lines * 3 // 4
    return "\n".join(all_lines[max(0, hit - before):hit + lines - before])
