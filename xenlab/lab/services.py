"""The lab's services, started for real on loopback: atftpd, labgrid's coordinator and exporter.

A bench or a test starts Debian's atftpd and labgrid's own daemons the way a
lab runs them; readiness is awaited on what they print (or the socket they
bind), never slept on, and each is stopped by its own pid.
"""

from __future__ import annotations

import grp
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .places import FarmError, client, client_failure, labgrid_tool

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_tftp_address(port: int = 69) -> str:
    """A loopback address whose UDP `port` is free (U-Boot always asks port 69)."""
    addresses = [f"127.0.0.{n}" for n in random.sample(range(2, 255), 40)]
    for addr in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((addr, port))
            except PermissionError:
                raise FarmError("tftp", "harness-config",
                                f"binding UDP port {port} needs root or CAP_NET_BIND_SERVICE "
                                "(Debian's U-Boot cannot ask another port)") from None
            except OSError:
                continue
            return addr
    raise FarmError("tftp", "harness-config", f"no free loopback address for UDP port {port}")


class Service:
    """A lab daemon we started, its output in a log file, stopped by its own pid."""

    def __init__(self, name: str, cmd: list[str], log: Path, cwd: Path | None = None,
                 env: dict | None = None, netns: str | None = None):
        self.name = name
        self.netns = netns
        # `ip netns exec` enters the namespace and execs the daemon: the pid stays its own.
        self.cmd = cmd if netns is None else ["ip", "netns", "exec", netns, *cmd]
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=cwd,
                                         env=dict(os.environ, **(env or {})),
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern: str, timeout: float = 30.0, component: str | None = None) -> None:
        """Until `pattern` shows in the output; FarmError if the daemon dies or stays silent."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            if rx.search(self.output()):
                return
            if not self.alive():
                tail = [l for l in self.output().splitlines() if l.strip()][-1:] or ["no output"]
                raise FarmError(component or self.name, f"{self.name}-start-failed",
                                f"{self.name} exited with status {self.proc.returncode}: "
                                f"{tail[0].strip()} (log: {self.log})")
            if time.monotonic() > deadline:
                self.stop()
                raise FarmError(component or self.name, f"{self.name}-start-failed",
                                f"{self.name} not ready within {timeout:.0f} s (log: {self.log})")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _udp_bound(addr: str, port: int, pid: int | str = "self") -> bool:
    """Whether a UDP socket is bound to addr:port in the network namespace of `pid`."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(addr), "little"), port)
    try:
        with open(f"/proc/{pid}/net/udp") as f:
            return any(line.split()[1] == want for line in f.readlines()[1:])
    except OSError:
        return False


def start_atftpd(root: Path, address: str, log: Path, port: int = 69,
                 timeout: float = 10.0, netns: str | None = None) -> Service:
    """Debian's atftpd serving `root` on address:port, in the foreground (our child), in
    network namespace `netns` if given."""
    binary = shutil.which("atftpd") or "/usr/sbin/atftpd"
    if not os.path.exists(binary):
        raise FarmError("tftp", "harness-config",
                        "atftpd not installed (run scripts/install-farm-tools)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Serve as ourselves: labgrid stages symlinks to files only we may read.
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    svc = Service("atftpd", [binary, "--daemon", "--no-fork", "--port", str(port),
                             "--bind-address", address, "--user", user, "--group", group,
                             "--logfile", "-", "--verbose=5", "--no-multicast", str(root)],
                  log, netns=netns)
    deadline = time.monotonic() + timeout
    while not _udp_bound(address, port, svc.proc.pid):
        if not svc.alive() or time.monotonic() > deadline:
            svc.stop()
            tail = [l for l in svc.output().splitlines() if l.strip()][-1:] or ["no output"]
            raise FarmError("tftp", "tftp-server-down",
                            f"atftpd did not start on {address}:{port}: {tail[0]}")
        time.sleep(0.05)
    return svc


def start_coordinator(workdir: Path, port: int, timeout: float = 30.0,
                      host: str = "127.0.0.1") -> Service:
    """labgrid-coordinator on host:port; it keeps places.yaml in `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    svc = Service("coordinator", [labgrid_tool("labgrid-coordinator"), "--listen",
                                  f"{host}:{port}"], workdir / "coordinator.log",
                  cwd=workdir, env={"GRPC_ENABLE_FORK_SUPPORT": "0", "PYTHONUNBUFFERED": "1"})
    svc.wait_for(r"Coordinator ready", timeout, component="coordinator")
    return svc


def start_exporter(config: Path, coordinator: str, name: str, log: Path,
                   timeout: float = 30.0, netns: str | None = None) -> Service:
    svc = Service("exporter", [labgrid_tool("labgrid-exporter"), "--coordinator", coordinator,
                               "-n", name, str(config)], log, cwd=Path(config).parent,
                  env={"GRPC_ENABLE_FORK_SUPPORT": "0", "PYTHONUNBUFFERED": "1"}, netns=netns)
    svc.wait_for(r"connected to coordinator", timeout, component="exporter")
    return svc


def create_place(name: str, coordinator: str, match: str) -> None:
    """Create place `name` matching `match` (EXPORTER/GROUP/*), if it does not exist."""
    for args in (("create",), ("add-match", match)):
        proc = client(coordinator, "-p", name, *args)
        text = proc.stderr + proc.stdout
        if proc.returncode != 0 and "already exists" not in text:
            raise client_failure(name, coordinator, proc)
