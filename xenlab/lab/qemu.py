"""XenQEMUDriver: labgrid's QEMUDriver that says why QEMU died, and never hangs on it.

labgrid's `QEMUDriver.on()` blocks in accept() forever when QEMU exits on a
bad argument, and QEMU's stderr goes to the pytest process, where capture
hides it (../shared/notes/labgrid.md).  This subclass keeps QEMU's stderr in a
file, waits for the serial connection with QEMU's life in view, and bounds
power-off, so a board that cannot start fails in a fraction of a second with
QEMU's own complaint.  The farm file names it in place of QEMUDriver.

Power-off never waits on QMP's answer: while nobody reads the console, QEMU
blocks writing the UART with its big lock held and answers nothing (a Dom0
boot fills the socket in seconds).  So off() hangs up the console first, asks
QEMU to quit, and kills it after `off_timeout`.  Every QEMU is noted in a
pidfile (`pidfile`), so one left by a SIGKILLed harness is stopped by the next
run on the same target.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time

import attr
from labgrid.driver.qemudriver import QEMUDriver
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.util.qmp import QMPError, QMPMonitor
from pexpect import EOF

from . import pidfile
from .signals import deferred


class QEMUStartError(Exception):
    """QEMU did not come up; the message carries its last stderr line."""

    classification = "qemu-start-failed"


@target_factory.reg_driver
@attr.s(eq=False)
class XenQEMUDriver(QEMUDriver):
    """QEMUDriver with QEMU's stderr kept, early death detected and a bounded power-off.

    Args (besides QEMUDriver's):
        start_timeout (float): seconds for QEMU to connect its serial port
        off_timeout (float): seconds for QEMU to quit before it is killed
    """

    start_timeout = attr.ib(default=30.0, validator=attr.validators.instance_of(float))
    # Seconds, not labgrid's unbounded wait: an interrupted run must end within 5 s.
    off_timeout = attr.ib(default=3.0, validator=attr.validators.instance_of(float))

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self._stderr = None
        self._pidfile = None
        # What QEMU loads itself when no firmware does (BootPlan.qemu_loader_args), set per boot.
        self.loader_args: list[str] = []
        self.reaped: list[dict] = []  # stale QEMUs this driver stopped, for the log

    def on_activate(self):
        self.reaped = pidfile.reap_stale(self.target.name)
        for entry in self.reaped:
            self.logger.warning("stopped QEMU pid %s left running by harness pid %s",
                                entry["pid"], entry.get("harness_pid"))
        super().on_activate()

    @step()
    def on(self):
        if self.status:
            return
        self._stderr = tempfile.TemporaryFile()
        self._child = subprocess.Popen(self._cmd + self.loader_args, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=self._stderr)
        try:
            self._note_pid()
            self._accept()
            try:
                self.qmp = QMPMonitor(self._child.stdout, self._child.stdin)
            except QMPError as exc:
                raise QEMUStartError(self.exited() or f"QEMU's monitor failed: {exc}") from None
            self.status = 1
            for forward in self._forwarded_ports.values():
                self._add_port_forward(*forward)
            self.monitor_command("cont")
        except BaseException:  # an interrupt too: no QEMU without a driver that will stop it
            self.status = 0
            self._hang_up()
            self._kill()
            raise

    def _note_pid(self) -> None:
        try:
            self._pidfile = pidfile.write(self.target.name, self._child.pid, self._cmd)
        except (OSError, ValueError) as exc:  # a safety net only: the board still boots
            self.logger.warning("QEMU pid %s not noted (a SIGKILLed run would leave it): %s",
                                self._child.pid, exc)

    def _accept(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        self._socket.settimeout(0.1)
        try:
            while True:
                try:
                    self._clientsocket, _ = self._socket.accept()
                    break
                except socket.timeout:
                    why = self.exited()
                    if why:
                        raise QEMUStartError(why) from None
                    if time.monotonic() > deadline:
                        self._kill()
                        raise QEMUStartError(f"QEMU did not connect its serial port within "
                                             f"{self.start_timeout:.0f} s") from None
        finally:
            self._socket.settimeout(None)
        self._clientsocket.setblocking(0)

    @step()
    def off(self):
        """Hang up the console, quit QEMU through QMP, kill it after off_timeout."""
        if not self.status:
            return
        with deferred():  # a second Ctrl-C must not leave QEMU half stopped
            self._hang_up()
            child = self._child
            try:
                # Written straight to the pipe: no answer is read (see the module
                # docstring), and no buffered bytes are left to fail at exit.
                command = json.dumps({"execute": "quit"}).encode() + b"\n"
                os.write(child.stdin.fileno(), command)
            except (OSError, ValueError):  # QEMU already gone (Ctrl-C reached its group)
                pass
            try:
                child.wait(timeout=self.off_timeout)
            except subprocess.TimeoutExpired:
                pass
            self._kill()
            self.status = 0

    def _hang_up(self) -> None:
        """Close the console's socket, so QEMU's blocked UART writes fail instead of wait."""
        if self._clientsocket is not None:
            self._clientsocket.close()
            self._clientsocket = None

    def _kill(self) -> None:
        """Kill QEMU if it still runs, close its pipes, forget it and its pidfile.

        Forgotten, labgrid's atexit hook leaves it alone (on closed pipes its
        communicate() raises "flush of closed file").
        """
        child = self._child
        if child is not None:
            if child.poll() is None:
                child.kill()
                child.wait()
            for pipe in (child.stdin, child.stdout):
                try:
                    pipe.close()
                except (OSError, ValueError):  # a QMP request left in the buffer of a dead pipe
                    pass
        self._child = None
        pidfile.remove(self._pidfile)
        self._pidfile = None

    def _read(self, size=1, timeout=10, max_size=None):
        """labgrid's read, but a console whose QEMU closed it is EOF, not silence.

        A closed socket reads as b"" for ever: pexpect took that for no output and
        waited out the step's whole timeout (Xen's panic in `xl destroy`, QEMU
        gone with -no-reboot, then 120 s more).
        """
        data = super()._read(size=size, timeout=timeout, max_size=max_size)
        if not data:
            raise EOF(f"QEMU closed the console{': ' + self.exited() if self.exited() else ''}")
        return data

    def qemu_version(self) -> str | None:
        """The QEMU binary's version ("10.0.2"), for the record; None if it cannot say."""
        try:
            return ".".join(map(str, self.get_qemu_version(
                self.target.env.config.get_tool(self.qemu_bin))))
        except Exception:  # a missing binary fails at power-on, with QEMU's own words
            return None

    def exited(self) -> str | None:
        """Why QEMU is gone ("QEMU exited with status 1: <its last stderr line>"), or None."""
        child = self._child
        if child is None or child.poll() is None:
            return None
        return f"QEMU exited with status {child.returncode}" + self._stderr_tail()

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return f": {text.splitlines()[-1]}" if text else ""
