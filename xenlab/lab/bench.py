"""The bench board's lab on this host: atftpd for its files, ser2net for its UART.

bench.yaml wires QEMU like a real board: QEMU serves its UART on one loopback
port (LG_BENCH_UART) and ser2net, as in a lab, offers it to the console on
another (LG_BENCH_SERIAL). QEMU waits (wait=on) until ser2net connects, and
ser2net connects only when a console does, so nothing the board prints before
the console is there is lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from .pidfile import cmdline
from .places import FarmError
from .ser2net import Connection, start_ser2net
from .services import Service, free_port, free_tftp_address, start_atftpd


def start_bench_serial(state: Path, serial_port: int, uart: str) -> Service:
    """ser2net on 127.0.0.1:serial_port (raw TCP) in front of QEMU's UART server `uart`.

    Raw, not RFC 2217: ser2net applies RFC 2217's serial parameters only to a
    serial-capable connector, and pyserial (labgrid's rfc2217://) refuses a
    port whose server does not acknowledge them; a TCP connector cannot
    ("Remote does not accept parameter change", ser2net issue #92). Its
    trace (uart.trace) is ser2net's own record of each console connection.
    """
    host, port = uart.rsplit(":", 1)
    state = Path(state)
    return start_ser2net([Connection("bench", "raw", serial_port, f"tcp,{host},{port}",
                                     trace=state / "uart.trace")], state)


def bench_up(state: Path) -> dict[str, str]:
    """The bench board's atftpd and ser2net, started for bench.yaml; the LG_BENCH_* it reads."""
    state = Path(state).resolve()
    for name in ("atftpd", "ser2net"):  # a second `up` would orphan the first's services
        pid = _running(state / f"{name}.pid", name)
        if pid is not None:
            raise FarmError(f"bench {state}", "bench-busy", f"bench {state} is already up "
                            f"({name} pid {pid}): `xenlab bench down {state}` first")
    addr = free_tftp_address()
    tftp = start_atftpd(state / "tftp", addr, state / "atftpd.log")
    (state / "atftpd.pid").write_text(str(tftp.proc.pid))
    serial, uart = free_port(), f"127.0.0.1:{free_port()}"
    try:
        start_bench_serial(state, serial, uart)  # ser2net writes ser2net.pid itself (-P)
    except FarmError:
        tftp.stop()
        (state / "atftpd.pid").unlink(missing_ok=True)
        raise
    return {"LG_BENCH_SERIAL": f"127.0.0.1:{serial}", "LG_BENCH_UART": uart,
            "LG_BENCH_STATE": str(state), "LG_BENCH_TFTP_DIR": str(state / "tftp"),
            "LG_BENCH_TFTP_ADDR": addr}


def _running(pidfile: Path, name: str) -> int | None:
    """The pid in `pidfile` if that process is still our `name`."""
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return None
    return pid if any(name in arg for arg in cmdline(pid) or []) else None


def _stop(pidfile: Path, name: str) -> None:
    """SIGTERM the pid in `pidfile` if that process is still our `name`."""
    pid = _running(pidfile, name)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    pidfile.unlink(missing_ok=True)


def bench_down(state: Path, bench_qemu: Path) -> None:
    """Power the bench's QEMU off and stop its atftpd and ser2net (by their pidfiles)."""
    state = Path(state).resolve()
    subprocess.run([str(bench_qemu), "off", "--state", str(state)], check=False)
    _stop(state / "atftpd.pid", "atftpd")
    _stop(state / "ser2net.pid", "ser2net")
