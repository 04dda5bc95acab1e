"""A UART flooding a real ser2net on loopback, read by labgrid's SerialDriver.

The UART behind ser2net is what the protocol needs: for raw TCP a TCP server
(as QEMU's UART is on the bench), for RFC 2217 a pty that ser2net opens as a
serial device (ser2net applies RFC 2217's parameters only to a tty, and
labgrid's pyserial refuses a server that does not acknowledge them).
The flood starts once the console is connected, as a board held by QEMU's
wait=on does, and sends `payload` once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

from labgrid import Target
from labgrid.driver import SerialDriver
from labgrid.resource import NetworkSerialPort

from xenlab.lab import console as lab_console
from xenlab.lab.ser2net import Connection, start_ser2net
from xenlab.lab.services import free_port

REPO = Path(__file__).resolve().parent.parent.parent


def console_text(size: int) -> bytes:
    """`size` bytes of a real recorded console (tests/data), repeated."""
    log = (REPO / "tests" / "data" / "qemu-arm64-console.log").read_bytes()
    return (log * (size // len(log) + 1))[:size]


class TcpUart:
    """A UART served on TCP: ser2net's connector is tcp,127.0.0.1,PORT."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.connector = f"tcp,127.0.0.1,{self.server.getsockname()[1]}"
        self._conn = None

    def flood(self, payload: bytes) -> threading.Thread:
        def send():
            self._conn, _ = self.server.accept()  # ser2net, once the console connected
            with contextlib.suppress(OSError):  # a reader that stopped early hung up
                self._conn.sendall(payload)
        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        for s in (self._conn, self.server):
            if s is not None:
                s.close()


class PtyUart:
    """A UART on a pty: ser2net's connector is serialdev,/dev/pts/N (it sets raw mode)."""

    def __init__(self):
        self.master, slave = os.openpty()
        self.connector = f"serialdev,{os.ttyname(slave)},115200n81,local"
        os.close(slave)  # ser2net opens it by name

    def flood(self, payload: bytes) -> threading.Thread:
        def send():
            view = memoryview(payload)
            with contextlib.suppress(OSError):  # closed under a reader that stopped early
                while view:
                    view = view[os.write(self.master, view[:65536]):]
        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.master)


@contextlib.contextmanager
def flooded_console(protocol: str, state: Path, windowed: bool = True):
    """(console, uart): a SerialDriver on ser2net's `protocol` port, the UART behind it.

    windowed: xenlab's reader as XenStrategy connects it (WindowedExpect);
    otherwise labgrid's stock PtxExpect.
    """
    uart = TcpUart() if protocol == "raw" else PtyUart()
    port = free_port()
    server = start_ser2net([Connection("flood", protocol, port, uart.connector)], state)
    target = Target(f"flood-{protocol}-{windowed}")
    NetworkSerialPort(target, name=None, host="127.0.0.1", port=port, protocol=protocol,
                      speed=115200)
    console = SerialDriver(target, name=None)
    if windowed:
        lab_console.bound_search_window(console)  # before it opens, as XenStrategy does
    try:
        target.activate(console)
        yield console, uart
    finally:
        target.deactivate(console)
        server.stop()
        uart.close()
