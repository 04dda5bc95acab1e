"""The bench board: QEMU wired like a real board (bench.yaml) — a TCP UART behind
a real ser2net, read through NetworkSerialPort, power through scripts/bench-qemu
(ExternalPowerDriver), files from a real atftpd — runs the same smoke test, and
its lab faults are the lab's ERRORs naming the component (power, TFTP), with
record and console kept.
"""

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labgrid import Environment

from support.farmlab import timed_smoke, BOARD, REPO, STEPS, Bench, explain, record, run_smoke
from xenlab.errors import XenlabError
from xenlab.lab.places import FarmError
from xenlab.run import health

BENCH_QEMU = str(REPO / "scripts" / "bench-qemu")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    try:
        b = Bench(tmp_path_factory.mktemp("bench"))
    except FarmError as exc:  # no ser2net or atftpd: the bench cannot exist, a failure
        pytest.fail(f"bench lab: {exc}", pytrace=False)
    yield b
    b.close()


@pytest.fixture(scope="module")
def smoke_run(bench, tmp_path_factory):
    return timed_smoke("bench.yaml", tmp_path_factory.mktemp("results"), bench.env())


@pytest.fixture
def busy_port():
    """A TCP port someone else listens on: QEMU cannot open its UART there (LG_BENCH_UART)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_bench_qemu_fails_clearly_when_qemu_cannot_start(tmp_path, busy_port):
    proc = subprocess.run([BENCH_QEMU, "on", "--state", str(tmp_path),
                           "--serial", f"127.0.0.1:{busy_port}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert re.match(r"bench-qemu: QEMU did not start: qemu-system-aarch64: .*"
                    rf"tcp:127\.0\.0\.1:{busy_port}", proc.stderr), proc.stderr
    assert not (tmp_path / "qemu.pid").exists()
    off = subprocess.run([BENCH_QEMU, "off", "--state", str(tmp_path)], capture_output=True,
                         text=True)
    assert off.returncode == 0  # off is idempotent


def test_bench_qemu_refuses_bad_arguments(tmp_path):
    proc = subprocess.run([BENCH_QEMU, "on", "--state", str(tmp_path), "--serial", "nonsense"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--serial HOST:PORT" in proc.stderr
    proc = subprocess.run([BENCH_QEMU, "on", "--state", str(tmp_path), "--serial",
                           "127.0.0.1:1", "--board", "no-such-board"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "no-such-board" in proc.stderr


def test_smoke_passes_on_the_bench_board(smoke_run, bench):
    proc, results, seconds = smoke_run
    assert proc.returncode == 0, explain(proc)
    rec, run_dir = record(results)
    assert rec["verdict"] == "PASS", rec
    assert [s["name"] for s in rec["steps"]] == STEPS
    assert rec["profile"] == "qemu-bench-arm64" and rec["target"] == BOARD
    assert rec["info"]["uboot_version"].startswith("2023.01")  # nothing lost before connecting
    console = (run_dir / "console.log").read_text(errors="replace")
    # U-Boot fetched from our atftpd, not from QEMU's built-in server.
    assert f"TFTP from server {bench.addr}" in console
    served = (bench.dir / "atftpd.log").read_text()
    # ... from the run's own directory of its root (issue 28: runs never share files)
    assert re.search(rf"Serving {run_dir.name}/xen to 127\.0\.0\.1", served), served[-2000:]
    # The console went through ser2net: its own trace of the UART has the console's
    # connection and the banner, and the console's port is ser2net's, not QEMU's.
    assert f"accepter: tcp,{bench.serial.replace(':', ',')}" in \
        (bench.dir / "ser2net.yaml").read_text()
    assert bench.serial != bench.uart and bench.ser2net.alive()
    trace = (bench.dir / "uart.trace").read_text(errors="replace")
    assert re.search(r"^\S+ \S+ OPEN \(ipv4,127\.0\.0\.1,\d+\)$", trace, re.M), trace[:500]
    assert "U-Boot 2023.01" in trace and "Xen version 4.17" in trace
    print(f"bench smoke: {seconds:.1f} s")


def _power_state(bench) -> str:
    return subprocess.run([BENCH_QEMU, "status", "--state", str(bench.dir)],
                          capture_output=True, text=True).stdout.strip()


def test_bench_board_is_off_after_the_run(smoke_run, bench):
    assert _power_state(bench) == "off"


def test_power_command_failing_is_a_power_error(bench, tmp_path, busy_port):
    proc = run_smoke("bench.yaml", tmp_path, bench.env(LG_BENCH_UART=f"127.0.0.1:{busy_port}"))
    assert proc.returncode != 0
    rec, run_dir = record(tmp_path)
    assert (rec["verdict"], rec["classification"]) == ("ERROR", "power-failed"), rec
    step = rec["steps"][0]
    assert step["name"] == "uboot" and step["status"] == "ERROR"
    assert re.match(r"ExternalPowerDriver: power on failed: bench-qemu: QEMU did not start",
                    step["message"]), step["message"]
    assert "\n" not in step["message"]
    assert (run_dir / "console.log").exists()


def test_tftp_server_down_is_a_tftp_error(bench, tmp_path):
    bench.stop_tftp()
    try:
        proc = run_smoke("bench.yaml", tmp_path, bench.env())
    finally:
        bench.start_tftp()
    assert proc.returncode != 0
    rec, run_dir = record(tmp_path)
    assert rec["verdict"] == "ERROR", rec
    assert rec["classification"] == "tftp-server-unreachable", rec
    step = rec["steps"][0]
    assert step["name"] == "uboot" and f"TFTP server {bench.addr} did not answer" in step["message"]
    console = (run_dir / "console.log").read_text(errors="replace")
    assert "Retry count exceeded" in console  # the console log is kept, with the proof
    assert all(s["status"] == "SKIP" for s in rec["steps"][1:])
    assert _power_state(bench) == "off"  # a failed run does not leave the board on


def test_bench_qemu_takes_a_board_after_the_separator(tmp_path, busy_port):
    proc = subprocess.run([BENCH_QEMU, "on", "--state", str(tmp_path), "--serial",
                           "127.0.0.1:1", "--", "sh", "-c", "reboot"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "'sh' is not a qemu-system-* binary" in proc.stderr
    proc = subprocess.run([BENCH_QEMU, "on", "--state", str(tmp_path), "--serial",
                           f"127.0.0.1:{busy_port}", "--", "qemu-system-arm", "-M",
                           "orangepi-pc"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert re.match(r"bench-qemu: QEMU did not start: qemu-system-arm: .*"
                    rf"tcp:127\.0\.0\.1:{busy_port}", proc.stderr), proc.stderr


@pytest.fixture
def bench_env(bench, monkeypatch):
    """bench.yaml loaded in this process with the bench's variables."""
    def load(**extra):
        for key, value in bench.env(**extra).items():
            if key.startswith("LG_"):
                monkeypatch.setenv(key, value)
        return Environment(str(REPO / "bench.yaml"))
    return load


def test_health_check_to_uboot_passes_and_powers_off(bench, bench_env, tmp_path):
    target = bench_env().get_target(BOARD)
    assert health.health_check(target, "uboot", results=tmp_path) is None
    assert not (tmp_path / BOARD).exists()  # a healthy board leaves no record
    assert _power_state(bench) == "off"


def test_failing_health_check_marks_the_board_unavailable(bench_env, tmp_path, busy_port):
    target = bench_env(LG_BENCH_UART=f"127.0.0.1:{busy_port}").get_target(BOARD)
    rec = health.health_check(target, "uboot", results=tmp_path)
    assert rec is not None
    data, run_dir = record(tmp_path)
    assert data["run_id"] == rec.run_id
    assert (data["verdict"], data["classification"]) == ("ERROR", "health-check-failed")
    assert data["info"]["culprit"] == "lab" and data["info"]["available"] is False
    assert data["steps"][0]["name"] == "health_check"
    assert "power-failed" in data["steps"][0]["message"]
    assert (run_dir / "console.log").exists()


def test_health_check_refuses_an_unknown_depth(bench_env):
    target = bench_env().get_target(BOARD)
    with pytest.raises(XenlabError, match="depth"):
        health.health_check(target, "xen")


def test_bench_up_twice_is_refused_and_down_stops_both_services(tmp_path):
    """A second `xenlab bench up DIR` would start a second atftpd and ser2net and orphan
    the first pair (their pidfiles overwritten): it is refused in one line instead."""
    def xenlab(*args):
        return subprocess.run([sys.executable, "-m", "xenlab.cli", "bench", *args, str(tmp_path)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
    up = xenlab("up")
    assert up.returncode == 0, up.stderr
    pids = {n: int((tmp_path / f"{n}.pid").read_text()) for n in ("atftpd", "ser2net")}
    try:
        again = xenlab("up")
        assert again.returncode != 0
        assert again.stderr.strip().splitlines() == [
            f"xenlab: error: bench {tmp_path} is already up (atftpd pid {pids['atftpd']}): "
            f"`xenlab bench down {tmp_path}` first"], again.stderr
        assert {n: int((tmp_path / f"{n}.pid").read_text()) for n in pids} == pids
    finally:
        assert xenlab("down").returncode == 0
    for pid in pids.values():
        for _ in range(50):
            if not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes():
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"pid {pid} still runs after bench down")
