"""XenQEMUDriver: labgrid's QEMUDriver that says why QEMU died, and never hangs on it.

labgrid's `QEMUDriver.on()` blocks in accept() forever when QEMU exits on a
bad argument, and QEMU's stderr goes to the pytest process, where capture
hides it (../shared/notes/labgrid.md).  This subclass keeps QEMU's stderr in a
file, waits for the serial connection with QEMU's life in view, and bounds
power-off, so a board that cannot start fails in a fraction of a second with
QEMU's own complaint.  The farm file names it in place of QEMUDriver.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time

import attr
from labgrid.driver.qemudriver import QEMUDriver
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.util.qmp import QMPError, QMPMonitor


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
    off_timeout = attr.ib(default=10.0, validator=attr.validators.instance_of(float))

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self._stderr = None

    @step()
    def on(self):
        if self.status:
            return
        self._stderr = tempfile.TemporaryFile()
        self._child = subprocess.Popen(self._cmd, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=self._stderr)
        self._accept()
        try:
            self.qmp = QMPMonitor(self._child.stdout, self._child.stdin)
        except QMPError as exc:
            raise QEMUStartError(self.exited() or f"QEMU's monitor failed: {exc}") from None
        self.status = 1
        for forward in self._forwarded_ports.values():
            self._add_port_forward(*forward)
        self.monitor_command("cont")

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
        """Quit QEMU through QMP; kill it if it does not go within off_timeout."""
        if not self.status:
            return
        try:
            self.monitor_command("quit")
            self._child.wait(timeout=self.off_timeout)
        except Exception:  # a wedged QMP pipe or a QEMU that ignores quit
            self._kill()
        self._child = None
        self.status = 0

    def _kill(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()

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
