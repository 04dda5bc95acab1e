"""Console text is cleaned and classified in time linear in its size (issue 16).

A broken board can print anything, for as long as it likes.  Each pathological
pattern here, a megabyte of it, once made a reader quadratic or worse (labgrid's
re_vt100 on 0x9b bytes, "Assertion '.+'", the toolstack signature, a per-line
loop over a million empty lines, pexpect re-searching its whole buffer); each
must now be read in under a second.  The one-pass readers must also say what
the per-line readers they replaced said, on a real QEMU console.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import labgrid.logging
import pytest
from labgrid import Target
from labgrid.driver import SerialDriver
from labgrid.resource import NetworkSerialPort
from labgrid.step import steps
from labgrid.util import re_vt100

from xenlab import console_text
from xenlab.console_text import body, clean, clean_lines
from xenlab.errors import Status
from xenlab.lab import diagnose, monitors
from xenlab.lab.console import LOG_LINE_LIMIT, SEARCH_WINDOW, bound_search_window  # and labgrid's cleaning

TRANSCRIPT = Path(__file__).resolve().parent / "data" / "qemu-arm64-console.log"
MB = 1 << 20


def megabyte(piece: str) -> str:
    return (piece * (MB // len(piece) + 1))[:MB]


PATHOLOGICAL = {
    "c1-csi": "\x9b", "csi-open": "\x1b[", "csi-params": "\x1b[0;", "escapes": "\x1b",
    "assertion": "Assertion '", "xen-prefix": "(XEN) ", "spaces": " ", "tabs": "\t",
    "xl-options": "xl -xl ", "xc-calls": "xc_a: ", "libxl": "libxl: error: ",
    "carriage-returns": "\r", "newlines": "\n", "short-lines": "a\n", "xen-lines": "(XEN) x\n",
    "banners": "U-Boot 2023.01 ", "banner-lines": "U-Boot 2023.01\n", "panic": "Panic on CPU ",
    "xen-version": "Xen version ", "timestamps": "[ 1.", "guest-prefix": "(d1",
    "dom0less-prefix": "DOM1:", "build-id": "build-id: ", "tftp": "Loading: ",
}

READERS = {
    "clean": clean,
    "clean_lines": clean_lines,
    "body": body,
    "classify": lambda t: monitors.classify(t, "dom0"),
    "facts": monitors.parse_console_facts,
    "uboot_reply": lambda t: monitors.uboot_reply_failure("tftpb 0x40000000 xen", t, 1),
    "toolstack": lambda t: diagnose.toolstack_mismatch(None, None, t + " Permission denied"),
    "early_trap": diagnose.EARLY_TRAP.search,
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_a_megabyte_of_a_pathological_pattern_is_read_in_under_a_second(name):
    text = megabyte(PATHOLOGICAL[name])
    if name == "build-id":
        text = "Xen version 4.17.5\n" + text  # facts read build ids only after the banner
    slow = {}
    for reader, read in READERS.items():
        t0 = time.perf_counter()
        read(text)
        slow[reader] = time.perf_counter() - t0
    assert max(slow.values()) < 1.0, {k: f"{v:.2f} s" for k, v in slow.items() if v >= 0.5}


def test_a_megabyte_console_log_excerpt_is_read_in_under_a_second(tmp_path):
    log = tmp_path / "console.log"
    log.write_text(megabyte("\x9b(XEN) Assertion 'x\n"))
    t0 = time.perf_counter()
    console_text.excerpt(log, "Panic on CPU 0")
    assert time.perf_counter() - t0 < 1.0


# --------------------------------------------------------------------------- same answers

def per_line_classify(text: str, stage: str):
    """The per-line classifier the one-pass one replaced: the reference."""
    guest = "domu" if "domu" in stage.lower() else "dom0"
    lines = clean_lines(text)
    booted = False
    for i, line in enumerate(lines):
        for mon in monitors.MONITORS:
            if mon.after_boot and not booted:
                continue
            if mon.regex.search(body(line)):
                return (Status(mon.status), mon.classification.format(guest=guest),
                        lines[max(0, i - monitors.CONTEXT_LINES):i + 1]
                        + monitors.panic_reason(lines, i))
        booted = booted or bool(re.search(r"^U-Boot 20\d\d|Starting kernel|^\(XEN\)", line))
    return None


def variants():
    """The real console, and the same console with one monitored line put in at a few places."""
    real = TRANSCRIPT.read_text(errors="replace")
    lines = real.split("\n")
    inserts = ["(XEN) Panic on CPU 1:", "(XEN) Xen BUG at sched.c:42",
               "(XEN) Assertion 'v->is_running' failed at domain.c:120",
               "[    3.1] Kernel panic - not syncing: VFS: Unable to mount root fs",
               "U-Boot 2023.01+dfsg-2 (Jan 01 2023 - 00:00:00 +0000)", "(XEN) U-Boot 2023.01",
               "TFTP error: 'File not found' (1)", "Bad Linux ARM64 Image magic!",
               "- Xen must be entered in NS EL2 mode -", "Assertion '' failed"]
    yield "real", real
    for n, insert in enumerate(inserts):
        for at in (0, 3, len(lines) // 2, len(lines)):
            yield f"{n}@{at}", "\n".join(lines[:at] + [insert] + lines[at:])


@pytest.mark.parametrize("stage", ["uboot", "xen", "dom0", "domu"])
def test_one_pass_classify_agrees_with_the_per_line_reading(stage):
    seen = set()
    for name, text in variants():
        got = monitors.classify(text, stage)
        assert got == per_line_classify(text, stage), name
        seen.add(got[1] if got else None)
    assert len(seen) >= 6  # the variants reach most monitors, and the real console none


def test_escapes_are_cleaned_as_labgrid_cleans_them_on_a_real_console():
    text = TRANSCRIPT.read_text(errors="replace")
    assert "\x1b[" in text  # the transcript carries real VT100 queries
    assert clean(text) == re_vt100.sub("", text).replace("\r", "")
    # What labgrid's pattern leaves behind and ours does not: a charset designation.
    assert clean("a\x1b(Bb\x1b[0;1mc") == "abc"


def test_facts_are_read_from_a_real_console():
    facts = monitors.parse_console_facts(TRANSCRIPT.read_text(errors="replace"))
    assert facts["uboot_version"].startswith("2023.01")
    assert facts["xen_version"].startswith("4.17")
    assert "dom0_kernel" in facts


# --------------------------------------------------------------------------- the live console

class FloodingBoard:
    """A TCP console that prints `junk`, then `marker`, as fast as the socket takes it.

    It starts printing when powered on, after the console is connected, as a board
    does: pyserial's socket port drops whatever is waiting when it opens (under load
    that was a random part of the flood, or all of it with the marker).
    """

    def __init__(self, junk: bytes, marker: bytes):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.payload = junk + marker
        self.powered = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            if self.powered.wait(30):
                conn.sendall(self.payload)
                time.sleep(30)


def live_console(board: FloodingBoard):
    target = Target("flood")
    NetworkSerialPort(target, name=None, host="127.0.0.1", port=board.port, protocol="raw")
    console = SerialDriver(target, name=None)
    bound_search_window(console)  # as XenStrategy does when it connects the console
    target.activate(console)
    board.powered.set()
    return target, console


@pytest.mark.parametrize("junk", ["a" * 79 + "\n", "\x9b", "Assertion '"])
def test_a_flooded_live_console_still_finds_its_marker_quickly(junk):
    junk = megabyte(junk).encode()
    board = FloodingBoard(junk, b"\r\nXen version 4.17.5 (Debian)\r\n")
    target, console = live_console(board)
    try:
        t0 = time.monotonic()
        patterns = [r"Xen version \S+"] + [m.live_pattern for m in monitors.MONITORS]
        index, before, match, _ = console.expect(patterns, timeout=30)
        seconds = time.monotonic() - t0
    finally:
        target.deactivate(console)
    assert index == 0 and match.group(0) == b"Xen version 4.17.5"
    assert len(before) == len(junk) + 2  # the window bounds the search, not what is kept
    # Minutes before the window.  What is left is labgrid's serial logger, which joins
    # and splits its buffer on every read until it sees a CR-LF (quadratic in a line).
    assert seconds < 10.0


def test_labgrids_serial_logger_keeps_no_more_than_a_bounded_line():
    # Its unfinished line was joined and split again on every read: quadratic in a
    # flood without CR-LF.  xenlab logs a longer line in pieces.
    reporter = labgrid.logging.StepLogger._serial_logger  # labgrid's pytest plugin made it
    pending = []

    def after_each_read(event):
        if event.step.title == "read" and event.data.get("state") == "stop":
            pending.append(len(reporter.bufs.get(event.step.source, b"")))

    board = FloodingBoard(megabyte("\x9b").encode(), b"Xen version 4.17.5 ")
    target, console = live_console(board)
    steps.subscribe(after_each_read)  # after the reporter: it sees what the reporter kept
    try:
        console.expect([r"Xen version \S+ "], timeout=30)
    finally:
        steps.unsubscribe(after_each_read)
        target.deactivate(console)
    assert len(pending) > 100 and 0 < max(pending) <= LOG_LINE_LIMIT


def test_a_marker_early_in_one_large_read_is_not_missed():
    # pexpect searches only the tail of a read longer than its window: reads are capped
    # at half the window, so a marker at the start of a burst is still seen.
    burst = b"Xen version 4.17.5\n" + b"x" * (4 * SEARCH_WINDOW)
    board = FloodingBoard(b"", burst)
    target, console = live_console(board)
    try:
        time.sleep(0.5)  # all of it waiting in the socket: one read could take it all
        index, before, _, _ = console.expect([r"Xen version \S+", "NEVER"], timeout=10)
    finally:
        target.deactivate(console)
    assert index == 0 and before == b""


def test_a_xen_panic_brings_its_reason():
    # A real console (Dom0's memory_mb at 1900 of 2048 MiB): the reason follows the panic line.
    text = (TRANSCRIPT.parent / "qemu-arm64-dom0-construction-panic.log").read_text(errors="replace")
    status, classification, evidence = monitors.classify(text, "xen")
    assert (status, classification) == (Status.FAIL, "xen-panic")
    assert evidence[-2] == "(XEN) Panic on CPU 0:"
    assert evidence[-1] == "(XEN) Failed to allocate requested dom0 memory. 12MB unallocated"
