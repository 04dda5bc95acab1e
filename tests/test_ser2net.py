"""The console through a real ser2net on loopback (issue 13): every byte a fast
UART sends reaches xenlab's console reader intact and in order, on raw TCP and
on RFC 2217; and ser2net that cannot start is one clear line. Speed is
measured by bench/console.py, not here.
"""

import queue
import random
import socket

import pytest
import serial.rfc2217

from support.farmlab import ensure_farm_tools
from support.serialflood import console_text, flooded_console
from xenlab.lab import ser2net
from xenlab.lab.console import ConsoleRecorder
from xenlab.lab.places import FarmError
from xenlab.lab.rfc2217 import ChunkedRFC2217

END = b"\r\nXENLAB-FLOOD-END\r\n"


@pytest.fixture(scope="module", autouse=True)
def tools():
    ensure_farm_tools()


@pytest.mark.parametrize("protocol", ["raw", "rfc2217"])
def test_two_megabytes_arrive_intact_and_in_order(protocol, tmp_path):
    # A recorded console, with every byte value in it (0xff is telnet's IAC).
    payload = console_text(2_000_000) + bytes(range(256)) * 16 + END
    with flooded_console(protocol, tmp_path) as (console, uart):
        recorder = ConsoleRecorder(console.target, tmp_path / "console.log")
        uart.flood(payload)
        try:
            console.expect("XENLAB-FLOOD-END", timeout=25)
        finally:
            recorder.close()
    got = (tmp_path / "console.log").read_bytes()
    assert len(got) == len(payload)
    assert got == payload


def _parse(cls, stream: bytes, cuts: list[int]) -> tuple[bytes, list[bytes]]:
    """Data and subnegotiations pyserial's reader thread (of `cls`) gets from `stream`."""
    port = cls()
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]

    class Socket:
        def recv(self, _):
            return pieces.pop(0) if pieces else b""

    subs = []
    port._socket, port.is_open, port._read_buffer = Socket(), True, queue.Queue()
    port._telnet_process_subnegotiation = subs.append
    port._telnet_negotiate_option = lambda command, option: subs.append(command + option)
    port._telnet_read_loop()
    items = []
    while (item := port._read_buffer.get_nowait()) is not None:
        items.append(item)
    return b"".join(items), subs


def test_chunked_reader_parses_telnet_as_pyserial_does():
    iac = b"\xff"
    rng = random.Random(13)
    parts = [b"U-Boot 2023.01\r\n", iac + iac, b"\x00\x0d\x0a", iac + b"\xfa\x2c\x65" + iac + iac +
             b"\x01" + iac + b"\xf0", iac + b"\xfb\x01", iac + b"\xf1", b"Xen " * 50]
    stream = b"".join(rng.choice(parts) for _ in range(400))
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), 30))
        assert _parse(ChunkedRFC2217, stream, cuts) == _parse(serial.rfc2217.Serial, stream, cuts)


def test_missing_ser2net_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr(ser2net.shutil, "which", lambda _: None)
    monkeypatch.setattr(ser2net.os, "access", lambda *_: False)
    conn = ser2net.Connection("uart", "raw", 1234, "tcp,127.0.0.1,1235")
    with pytest.raises(FarmError, match=r"^console: ser2net not installed \(run "
                                        r"scripts/install-farm-tools\)$"):
        ser2net.start_ser2net([conn], tmp_path)


def test_a_taken_port_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        conn = ser2net.Connection("uart", "raw", port, "tcp,127.0.0.1,1")
        with pytest.raises(FarmError, match=rf"ser2net did not listen on 127\.0\.0\.1:{port}: "
                                            rf"127\.0\.0\.1:{port} taken by another process") as e:
            ser2net.start_ser2net([conn], tmp_path, timeout=2)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field,value,message", [
    ("protocol", "telnet", "is not raw or rfc2217"),
    ("connector", "tcp,127.0.0.1,1\n  accepter: x", "not a plain gensio string"),
    ("name", "a b", "bad connection name"),
])
def test_bad_connections_are_refused(field, value, message):
    args = dict(name="uart", protocol="raw", port=1234, connector="tcp,127.0.0.1,1")
    with pytest.raises(FarmError, match=message):
        ser2net.Connection(**{**args, field: value})

