"""The bench lab for tests: atftpd, ser2net, the bench board's wiring, a coordinator and an exporter.

Everything listens on 127.0.0.1 (atftpd on a free loopback address, port 69:
Debian's U-Boot cannot ask another port), is started by the test itself and
awaited on what it prints or binds, and is stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xenlab.lab import bench, places, services

REPO = Path(__file__).resolve().parent.parent.parent
BOARD = "bench-arm64"
PLACE = "bench-arm64"
EXPORTER = "benchhost"
STEPS = ["uboot", "xen_boots", "dom0_boots", "xl_info", "xl_list", "domu_create_console",
         "pv_block", "pv_network", "domu_shutdown_destroy"]


def ensure_farm_tools() -> None:
    """atftpd, ser2net and ip, installed if missing (a failed install fails the test, never
    skips)."""
    if all(shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}") or os.path.exists(f"/sbin/{tool}")
           for tool in ("atftpd", "ser2net", "ip")):
        return
    subprocess.run([str(REPO / "scripts" / "install-farm-tools")], check=True,
                   stdin=subprocess.DEVNULL)


class Bench:
    """atftpd, ser2net in front of QEMU's UART, and the LG_BENCH_* variables of bench.yaml."""

    def __init__(self, tmp: Path):
        ensure_farm_tools()
        self.dir = Path(tmp)
        self.tftp_dir = self.dir / "tftp"
        self.addr = services.free_tftp_address()
        self.serial = f"127.0.0.1:{services.free_port()}"  # ser2net's port: the console's
        self.uart = f"127.0.0.1:{services.free_port()}"    # QEMU's, ser2net's connector
        self.atftpd = None
        self.ser2net = bench.start_bench_serial(self.dir, int(self.serial.rsplit(":", 1)[1]),
                                                self.uart)
        self.start_tftp()

    def start_tftp(self) -> None:
        self.atftpd = services.start_atftpd(self.tftp_dir, self.addr, self.dir / "atftpd.log")

    def stop_tftp(self) -> None:
        if self.atftpd is not None:
            self.atftpd.stop()
            self.atftpd = None

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LG_", "XENLAB_", "PYTEST_"))}
        env.update(LG_BENCH_SERIAL=self.serial, LG_BENCH_UART=self.uart,
                   LG_BENCH_STATE=str(self.dir),
                   LG_BENCH_TFTP_DIR=str(self.tftp_dir), LG_BENCH_TFTP_ADDR=self.addr,
                   GRPC_ENABLE_FORK_SUPPORT="0")
        env.update(extra)
        return env

    def power_off(self) -> None:
        subprocess.run([str(REPO / "scripts" / "bench-qemu"), "off", "--state", str(self.dir)],
                       capture_output=True, check=False)

    def close(self) -> None:
        self.power_off()
        self.stop_tftp()
        self.ser2net.stop()


class Farm:
    """A coordinator and an exporter offering the bench board's UART as place bench-arm64."""

    def __init__(self, tmp: Path, bench: Bench):
        self.dir = Path(tmp)
        self.bench = bench
        self.port = services.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.coordinator = services.start_coordinator(self.dir / "coordinator", self.port)
        host, port = bench.serial.rsplit(":", 1)
        self.exports = self.dir / "exports.yaml"
        self.exports.write_text(f"bench:\n  NetworkSerialPort:\n    host: {host}\n"
                                f"    port: {port}\n    protocol: raw\n    speed: 115200\n")
        self.exporter = None
        self.start_exporter()
        services.create_place(PLACE, self.address, f"{EXPORTER}/bench/*")

    def start_exporter(self) -> None:
        self.exporter = services.start_exporter(self.exports, self.address, EXPORTER,
                                            self.dir / "exporter.log")

    def stop_exporter(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None

    def env(self, **extra: str) -> dict:
        return self.bench.env(**{"LG_COORDINATOR": self.address, "LG_PLACE": PLACE, **extra})

    def client(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="0")
        if user:
            env["LG_USERNAME"] = user
        return subprocess.run([str(Path(sys.executable).parent / "labgrid-client"),
                               "-x", self.address, "-p", PLACE, *args],
                              capture_output=True, text=True, env=env, timeout=60)

    def holder(self) -> str | None:
        return places.place_holder(PLACE, self.address)

    def close(self) -> None:
        self.stop_exporter()
        self.coordinator.stop()


def smoke_args(env_file: str, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "--lg-env", str(REPO / env_file),
            str(REPO / "testcases"), "--xenlab-results", str(results), "--xenlab-tester", "ci",
            "-p", "no:cacheprovider", "-q", *extra]


def run_smoke(env_file: str, results: Path, env: dict, *extra: str,
              timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(smoke_args(env_file, results, *extra), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def timed_smoke(env_file: str, results: Path, env: dict) -> tuple:
    """run_smoke, with its wall time: (process, results, seconds)."""
    start = time.monotonic()
    proc = run_smoke(env_file, results, env)
    return proc, results, time.monotonic() - start


def record(results: Path, board: str = BOARD) -> tuple[dict, Path]:
    """The newest run record of `board` under `results`."""
    runs = sorted((Path(results) / board).iterdir())
    assert runs, f"no run under {results}/{board}"
    return json.loads((runs[-1] / "run.json").read_text()), runs[-1]


def explain(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout[-3000:] + "\n" + proc.stderr[-2000:]).strip()
