"""Xen's UART as a dom0less DomU's console: reading its lines, typing to it.

A dom0less DomU's vpl011 has its back end in Xen itself, so what the DomU
prints comes out on Xen's UART as "(XEN) DOMn: ..." lines, with or without
a Dom0.  Xen gives the UART's input to one domain at a time: CTRL-a three
times moves it on (DOM0, DOM1 ... then Xen) and Xen says where, with
"*** Serial input to DOMn".  Xen CI reads a dom0less DomU this way; so does
the smoke test when `xl console` cannot attach (Xen 4.17 writes no console
nodes for a dom0less DomU).
"""

from __future__ import annotations

import re
import time

from pexpect import TIMEOUT

from .console import ConsoleAlarm
from .monitors import first_alarm

SWITCH = b"\x01\x01\x01"  # CTRL-a three times
_INPUT = re.compile(rb"\*\*\* Serial input to (?:DOM(\d+)|Xen)")
# Xen's vpl011 input buffer is small: typed faster than the DomU reads, characters drop.
CHAR_DELAY_S = 0.02


def domu_line(domid: int, pattern: str) -> str:
    """A regex for one of DOMn's console lines, as Xen prints them: "(XEN) DOM1: text",
    or "(XEN) text" while the UART's input is DOM1's.  Dom0's own output can split
    a line of Xen's after its "(XEN) ", so the "DOM1: " alone counts too."""
    return rf"(?:\(XEN\) (?!DOM\d+: )|DOM{domid}: )[^\n]*?{pattern}"


def wait_line(strategy, pattern: str, timeout: float, since: int = 0):
    """The first console line matching `pattern` since power-on (or since the recorder's
    `since`th character), waiting up to `timeout` s.

    The recorder holds the whole console, also what a stage or the shell driver
    already read; reading the console here (to EOF of what has come) feeds it.
    """
    regex = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while True:
        text = strategy.recorder.text()
        m = regex.search(text, since)
        if m or time.monotonic() >= deadline:
            return m
        alarm = first_alarm(text)  # a panic, an oops, a reset: no line will come
        if alarm is not None:
            raise ConsoleAlarm(alarm, f"a line matching {pattern!r}")
        try:
            strategy.console.expect(pattern, timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
        except TIMEOUT:
            pass


class XenUart:
    """Moves Xen's console input between domains and types a command to a DomU."""

    def __init__(self, console, max_domid: int, timeout: float = 10.0):
        self.console = console
        self.max_domid = max_domid
        self.timeout = timeout

    def switch_to(self, domid: int) -> None:
        """CTRL-a three times until Xen says input goes to DOM`domid`."""
        for _ in range(self.max_domid + 3):  # the whole ring: DOM0 .. DOMmax, Xen
            self.console.write(SWITCH)
            try:
                _, _, m, _ = self.console.expect(_INPUT.pattern, timeout=self.timeout)
            except TIMEOUT:
                raise AssertionError("Xen did not answer CTRL-a x3 with '*** Serial input to ...'") from None
            if m.group(1) is not None and int(m.group(1)) == domid:
                return
        raise AssertionError(f"Xen's console switch never reached DOM{domid}")

    def type_line(self, text: str) -> None:
        for ch in text:
            self.console.write(ch.encode())
            time.sleep(CHAR_DELAY_S)
        self.console.write(b"\r")
