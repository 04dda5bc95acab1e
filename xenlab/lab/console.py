"""The board's UART: what it printed (ConsoleRecorder), and a shell on it that
survives a noisy console (XenShellDriver). What must never appear on it is in
`monitors`; how its text is cleaned, in `xenlab.console_text`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shlex
import string
import threading
from pathlib import Path

import attr
import labgrid.driver.shelldriver
import labgrid.driver.ubootdriver
import labgrid.logging
from labgrid.driver.commandmixin import CommandMixin
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.protocol import CommandProtocol, ConsoleProtocol
from labgrid.step import step, steps
from labgrid.util.expect import PtxExpect
from pexpect import TIMEOUT

from ..console_text import ESCAPE, clean
from .monitors import MONITORS, Monitor
from .rfc2217 import chunked_reads

# labgrid cleans console text with its re_vt100, whose CSI body runs over anything
# but a final byte: a line of 0x9b bytes is quadratic in its serial logger (every
# console line xenlab reads) and in UBootDriver.run.  Its modules get the linear
# pattern xenlab cleans with (tests/test_console_linear.py).
for _module in (labgrid.logging, labgrid.driver.ubootdriver, labgrid.driver.shelldriver):
    _module.re_vt100 = ESCAPE

# labgrid's serial logger appends every read to the target's unfinished line and
# splits it on CR-LF again: a board printing a megabyte without CR-LF (garbage, or
# LF-only lines) costs it a gigabyte of copying, minutes on a loaded CI machine.
# A line longer than this is logged in pieces, so each read costs at most this much.
LOG_LINE_LIMIT = 4096
_labgrid_serial_notify = labgrid.logging.SerialLoggingReporter.notify


def _bounded_serial_notify(self, event) -> None:
    _labgrid_serial_notify(self, event)
    source = event.step.source
    pending = self.bufs.get(source, b"") if event.step.tag == "console" else b""
    if len(pending) > LOG_LINE_LIMIT:
        self.bufs[source] = b""
        self.loggers[source].log(logging.CONSOLE,  # labgrid's level
                                 self._create_message(event, self.vt100_replace_cr_nl(pending)),
                                 extra={"step": event.step})


labgrid.logging.SerialLoggingReporter.notify = _bounded_serial_notify
# A reporter made before this import subscribed labgrid's notify: it gets ours.
_reporter = labgrid.logging.StepLogger._serial_logger
if _reporter is not None and _labgrid_serial_notify.__get__(_reporter) in steps._subscribers:
    steps.unsubscribe(_labgrid_serial_notify.__get__(_reporter))
    steps.subscribe(_reporter.notify)


# The bytes pexpect searches on each read.  Without a window it re-searches
# everything since the last match, for a regex, on every read, and labgrid reads
# whatever is waiting (often a few bytes): a stage that prints a megabyte costs
# minutes of CPU.  Every pattern xenlab waits for fits in a console line.
SEARCH_WINDOW = 4096


class WindowedExpect(PtxExpect):
    """labgrid's pexpect spawn for a console, searching only the last `window` bytes.

    Reads are capped at half the window: pexpect searches only the tail of a
    read longer than its window, so an uncapped read could hide a match.
    `before` still holds all the text since the last match.
    """

    def __init__(self, driver, window: int = SEARCH_WINDOW):
        super().__init__(driver)
        self.searchwindowsize = window

    def read_nonblocking(self, size=1, timeout=-1):
        if timeout == -1:
            timeout = self.timeout
        cap = self.searchwindowsize // 2
        data = self.driver.read(size=size, timeout=timeout, max_size=cap)
        # A TCP console (pyserial's socket://) reports at most one byte waiting, so
        # labgrid reads it a byte, a step and a search at a time: take what has
        # already arrived with it, without waiting for more.
        if len(data) < cap:
            with contextlib.suppress(TIMEOUT, OSError):  # a closed socket: the next read says so
                data += self.driver.read(size=cap - len(data), timeout=0.0,
                                         max_size=cap - len(data))
        return data


def bound_search_window(console, window: int = SEARCH_WINDOW) -> None:
    """Give a labgrid console driver xenlab's reads, before it is activated.

    A WindowedExpect: labgrid keeps its spawn in ConsoleExpectMixin's `_expect`
    (labgrid 26); a console without one (a test's fake) is left as it is. On
    RFC 2217, pyserial's port reading in chunks (`rfc2217`), from its next open.
    """
    if isinstance(getattr(console, "_expect", None), PtxExpect) and \
            not isinstance(console._expect, WindowedExpect):
        console._expect = WindowedExpect(console, window)
    chunked_reads(getattr(console, "serial", None))


class ConsoleRecorder:
    """Writes every byte a target's console receives to a file, as it arrives.

    It listens to labgrid's step events (the same feed as `--lg-log`), so it sees
    the console from power-on whichever driver reads it. The file is opened
    unbuffered: a crash, a timeout or Ctrl-C loses nothing already received.
    """

    def __init__(self, target, path: Path):
        self.target = target
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)
        self._chunks: list[bytes] = []
        self.received = self.written = 0
        self.write_error: OSError | None = None
        self._lock = threading.Lock()
        steps.subscribe(self._notify)

    def _notify(self, event) -> None:
        st = event.step
        if st.tag != "console" or st.title != "read" or event.data.get("state") != "stop":
            return
        if getattr(st.source, "target", None) is not self.target or not st.result:
            return
        with self._lock:
            self._chunks.append(st.result)
            self.received += len(st.result)
            if self._file is not None:
                try:
                    self.written += self._file.write(st.result) or 0
                except OSError as exc:  # a full results disk: kept in memory, said by the run
                    self.write_error = exc
                    self._file.close()
                    self._file = None

    @property
    def unwritten(self) -> int:
        """Bytes received that the log file could not take (a full results disk)."""
        return self.received - self.written

    def text(self) -> str:
        with self._lock:
            data = b"".join(self._chunks)
        return data.decode("utf-8", errors="replace")

    def tail(self, lines: int = 20) -> list[str]:
        out = [l for l in clean(self.text()).split("\n") if l.strip()]
        return out[-lines:]

    def close(self) -> None:
        steps.unsubscribe(self._notify)
        with self._lock:
            if self._file is not None:
                try:
                    self._file.flush()
                    os.fsync(self._file.fileno())
                except OSError as exc:
                    self.write_error = self.write_error or exc
                finally:
                    self._file.close()
                    self._file = None


# Lines a shell's output may be interleaved with: Xen's and the kernel's console.
_NOISE = re.compile(r"^\s*(\(XEN\)|\(d\d+\)|\[\s*\d+\.\d+\])")


class ConsoleAlarm(Exception):
    """What must never appear did, while a shell step waited (a Xen panic during `xl
    destroy`, a DomU's oops, the board's U-Boot again): the step ends at once, and the
    strategy classifies it from the console (XenStrategy.monitor_failure)."""

    def __init__(self, monitor: Monitor, waiting_for: str):
        super().__init__(f"console matched {monitor.regex.pattern!r} while waiting for "
                         f"{waiting_for}")
        self.monitor = monitor
        self.waiting_for = waiting_for


# Every monitor counts in a shell: the boot is long over (a U-Boot banner is a reset).
_ALARMS = [m.live_pattern for m in MONITORS]


@target_factory.reg_driver
@attr.s(eq=False)
class XenShellDriver(CommandMixin, Driver, CommandProtocol):
    """A root shell on the Xen console (Dom0's hvc0), and on a DomU's through it.

    Each command is framed by markers that only the shell's output can form,
    with the exit status inside the closing one, so output and status come back
    unambiguous while Xen and the kernels print on the same UART. Typing is paced
    because Xen's serial input ring is small (../shared/notes/qemu-xen.md).

    Args:
        prompt (str): regex of the Dom0 prompt
        guest_prompt (str): regex of a DomU's prompt
        txchunk (int): bytes typed before waiting for their echo
        txdelay (float): the longest wait for an echo, seconds
        timeout (int): default command timeout, seconds
    """

    bindings = {"console": ConsoleProtocol}
    prompt = attr.ib(default=r"dom0# ", validator=attr.validators.instance_of(str))
    guest_prompt = attr.ib(default=r"domU# ", validator=attr.validators.instance_of(str))
    txchunk = attr.ib(default=32, validator=attr.validators.instance_of(int))
    txdelay = attr.ib(default=0.3, validator=attr.validators.instance_of(float))
    timeout = attr.ib(default=60, validator=attr.validators.instance_of(int))

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self._tag = "".join(random.choice(string.ascii_uppercase) for _ in range(4))
        self._seq = 0
        self._where = "dom0"
        self._prompts = {"dom0": self.prompt}
        self._status = 0  # 1 while the shell answers its prompt

    def on_activate(self):
        self._where = "dom0"
        self._status = 0
        self._define_helper()
        self._status = 1

    def on_deactivate(self):
        self._where = "dom0"
        self._status = 0

    # -- waiting, monitors watching

    def _expect(self, pattern: str, timeout: float, what: str):
        """console.expect(pattern), or ConsoleAlarm the moment a monitor's line comes
        first; a console that closes raises pexpect's EOF (XenQEMUDriver: QEMU exited)."""
        index, before, match, after = self.console.expect([pattern] + _ALARMS, timeout=timeout)
        if index:
            self._status = 0
            raise ConsoleAlarm(MONITORS[index - 1], what)
        return before, match

    # -- typing and framing

    def type_line(self, line: str) -> None:
        """Type a line a chunk at a time, each chunk only once its echo came back.

        Waiting for the echo paces the typing to what Dom0 (or the guest)
        actually consumed, instead of a fixed delay; `txdelay` caps the wait
        when an echo is lost in a redraw or in interleaved messages.
        """
        data = line + "\r"
        for i in range(0, len(data), self.txchunk):
            chunk = data[i:i + self.txchunk]
            self.console.write(chunk.encode())
            visible = chunk.rstrip("\r")
            if visible and i + self.txchunk < len(data):
                try:
                    self.console.expect(re.escape(visible), timeout=self.txdelay)
                except TIMEOUT:
                    pass

    def _define_helper(self) -> None:
        # `_x N CMD`: markers around CMD; the status sits inside the closing one.
        self.type_line("_x(){ echo \"=$1=B=\"; eval \"$2\"; echo \"=$1=E=$?=\"; }")
        self._expect(self._prompts[self._where], self.timeout, "the shell's prompt")

    def _run(self, cmd: str, *, timeout: int | None = None, raw: bool = False,
             codec: str = "utf-8", decodeerrors: str = "strict"):
        self._seq += 1
        marker = f"{self._tag}{self._seq}"
        self.type_line(f"_x {marker} {shlex.quote(cmd)}")
        timeout = timeout or self.timeout
        try:
            before, match = self._expect(rf"={marker}=E=(\d+)=", timeout, f"the end of {cmd!r}")
        except TIMEOUT:
            self._status = 0  # until a prompt proves otherwise
            raise
        status = int(match.group(1))
        text = clean(before.decode("utf-8", errors="replace"))
        begin = text.rfind(f"={marker}=B=")
        body = text[begin + len(marker) + 4:] if begin >= 0 else text
        lines = body.split("\n")
        if not raw:
            lines = [l for l in lines if not _NOISE.match(l)]
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        self._expect(self._prompts[self._where], 10, "the shell's prompt")
        self._status = 1
        return lines, [], status

    @Driver.check_active
    @step(args=["cmd"], result=True)
    def run(self, cmd: str, timeout: int | None = None, raw: bool = False):
        """Run `cmd`; return (stdout lines, [], exit status)."""
        return self._run(cmd, timeout=timeout, raw=raw)

    # -- DomU consoles through `xl console`

    @Driver.check_active
    @step(args=["domain", "marker"])
    def enter_guest(self, domain: str, marker: str | None = None, timeout: int = 60) -> str:
        """`xl console DOMAIN` until the guest's prompt (or its ready marker first)."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", domain):
            raise ValueError(f"not a domain name: {domain!r}")
        self.type_line(f"xl console {domain}")
        self._where = "guest"  # attached from here on, even if the guest stays silent
        got = ""
        if marker:
            before, _ = self._expect(marker, timeout, f"DomU {domain}'s ready marker")
            got = clean(before.decode("utf-8", errors="replace"))
        self.console.write(b"\r")
        self._expect(self.guest_prompt, timeout, f"DomU {domain}'s prompt")
        self._prompts["guest"] = self.guest_prompt
        self._define_helper()
        return got

    @Driver.check_active
    @step()
    def leave_guest(self) -> None:
        """Ctrl-] back to Dom0.

        xenconsole only takes Ctrl-] when a read() returns that byte alone
        (tools/console/client/main.c); otherwise it goes to the guest. So it is
        sent alone, and sent again if Dom0's prompt does not come back.
        """
        for attempt in range(3):
            self.console.write(b"\x1d")
            try:
                # xl console returns to the shell, which prints its prompt by itself.
                self._expect(self.prompt, 5 if attempt < 2 else self.timeout, "Dom0's prompt")
                break
            except TIMEOUT:
                if attempt == 2:
                    raise
        self._where = "dom0"

    @Driver.check_active
    @step()
    def abandon_guest(self, timeout: float = 10) -> None:
        """Ctrl-] once and take the console as Dom0's again, prompt or not.

        For diagnosis: a guest that hangs may swallow the prompt, and what
        follows (`xl domid`, `xenctx`) proves whether Dom0 is there.
        """
        self.console.write(b"\x1d")
        try:
            self.console.expect(self.prompt, timeout=timeout)
        except TIMEOUT:
            pass
        self._where = "dom0"

    def get_status(self) -> int:
        """CommandProtocol: 1 while the shell answers, 0 before activation, after
        deactivation, or once a command went unanswered."""
        return self._status

    @property
    def in_guest(self) -> bool:
        return self._where == "guest"


def console_where(console) -> str:
    """The console as a lab error names it: "NetworkSerialPort HOST:PORT", or its driver."""
    port = getattr(console, "port", None)
    if hasattr(port, "host") and hasattr(port, "port"):
        return f"{type(port).__name__} {port.host}:{port.port}"
    return type(console).__name__
