"""Console text, cleaned once for every reader: the strategy, the records and the reports.

A board's UART is untrusted noise as much as it is evidence: Xen lines end
"\\r\\r\\r\\n", typed echo interleaves with VT100 queries (`\\x1b[6n`), and a
broken board prints garbage.  Everything that reads console text goes through
these few functions, so the live strategy and a replayed log agree on what a
line says.

Every pattern here runs in time linear in its input (one compiled pass, no
nested or unbounded backtracking): a board that prints a megabyte of garbage
must not stall the harness that is trying to record it (tests/test_console_linear.py).
"""

from __future__ import annotations

import re
from pathlib import Path

# ECMA-48 escapes: a CSI (ESC [ or the 8-bit 0x9b, parameter bytes, intermediate
# bytes, one final byte), a charset designation (ESC ( B), or a two-byte escape.
# labgrid's re_vt100 lets a CSI's body run over anything but a final byte, so a
# line of 0x9b bytes is quadratic; these classes are disjoint and each is bounded.
ESCAPE = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b[()*+][ -~]|\x1b[@-_a-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Prefixes before a message: Xen's "(XEN) ", a guest's "(d1) ", a dom0less
# DomU's "DOM1: ", and "[    1.234567] " timestamps (Linux, Xen's console_timestamps).
PREFIX = r"(?:\s*(?:\(XEN\)|\(d\d+\)|DOM\d+:|\[\s*\d+\.\d+\]))+\s*"
_PREFIX = re.compile("^" + PREFIX)


def clean(text: str) -> str:
    """Console text without VT100 sequences and carriage returns."""
    return ESCAPE.sub("", text).replace("\r", "")


def clean_lines(text: str) -> list[str]:
    """Console text as lines, without escapes, control characters or blank lines."""
    # One pass over the whole text, then a split: per-line regex calls cost more than
    # the lines themselves when a board prints a million empty ones.
    lines = (line.rstrip() for line in _CONTROL.sub("", clean(text)).split("\n"))
    return [line for line in lines if line]


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
