"""ser2net, the serial server a lab puts its UARTs behind, run for real on loopback.

xenlab writes ser2net 4's YAML for the connections it needs and runs Debian's
ser2net in the foreground as its own child (pidfile in the state directory).
It is ready once ser2net itself listens on every accepter port, read from
/proc: a probe connection would open the connector, and with QEMU's UART
behind it that starts the board before its console is there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .places import FarmError
from .services import Service

# Clients reach a connection on raw TCP or on telnet with RFC 2217 (serial
# parameters from the client, applied only by serial-capable connectors).
ACCEPTERS = {"raw": "tcp,{host},{port}", "rfc2217": "telnet(rfc2217),tcp,{host},{port}"}
# gensio strings we generate: tcp,HOST,PORT or serialdev,/dev/...,115200n81,local.
_CONNECTOR = re.compile(r"[A-Za-z0-9_.,:/=+-]+")


@dataclass(frozen=True)
class Connection:
    """Clients on host:port (raw or rfc2217) reach the UART at `connector`.

    `trace`: ser2net's own copy of what the UART sent, with an OPEN line per
    client, so a run can prove its console went through ser2net.
    """

    name: str
    protocol: str
    port: int
    connector: str
    host: str = "127.0.0.1"
    trace: Path | None = None

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", self.name):
            raise FarmError("console", "harness-config", f"ser2net: bad connection name {self.name!r}")
        if self.protocol not in ACCEPTERS:
            raise FarmError("console", "harness-config",
                            f"ser2net {self.name}: protocol {self.protocol!r} is not raw or rfc2217")
        if not 0 < self.port < 65536:
            raise FarmError("console", "harness-config", f"ser2net {self.name}: port {self.port}")
        if not _CONNECTOR.fullmatch(self.connector):
            raise FarmError("console", "harness-config",
                            f"ser2net {self.name}: connector {self.connector!r} is not a plain "
                            "gensio string")
        # ser2net expands % and \ in file names ("special string handling").
        if self.trace is not None and re.search(r"[%\\\x00-\x1f]", str(self.trace)):
            raise FarmError("console", "harness-config",
                            f"ser2net {self.name}: trace file {str(self.trace)!r} has % or \\ in it")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def render(connections: list[Connection]) -> str:
    """ser2net 4's YAML for `connections` (repeated `connection:` keys are its format)."""
    out = ["# Written by xenlab (xenlab/lab/ser2net.py) for this run; not edited by hand."]
    for c in connections:
        out += [f"connection: &{c.name}",
                f"  accepter: {ACCEPTERS[c.protocol].format(host=c.host, port=c.port)}",
                f"  connector: {c.connector}",
                "  options:",
                # A console a killed run left connected must not lock out the next one.
                "    kickolduser: true"]
        if c.trace is not None:
            out += [f"    trace-read: {json.dumps(str(c.trace))}", "    trace-timestamp: true"]
    return "\n".join(out) + "\n"


def _inode(host: str, port: int, pid: int | str = "self") -> str | None:
    """The inode of the socket listening on host:port (TCP, IPv4), if any, in the
    network namespace of process `pid`."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), port)
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":  # LISTEN
                    return fields[9]
    except OSError:
        pass
    return None


def _listens(pid: int, host: str, port: int) -> bool:
    inode = _inode(host, port, pid)
    if inode is None:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
        except OSError:
            continue
    return False


def ser2net_binary() -> str:
    binary = shutil.which("ser2net") or "/usr/sbin/ser2net"
    if not os.access(binary, os.X_OK):
        raise FarmError("console", "harness-config",
                        "ser2net not installed (run scripts/install-farm-tools)")
    return binary


def start_ser2net(connections: list[Connection], state: Path, timeout: float = 10.0,
                  netns: str | None = None) -> Service:
    """ser2net serving `connections`, its config, log and pidfile in `state` (in network
    namespace `netns`: a lab host's)."""
    binary = ser2net_binary()
    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    config = state / "ser2net.yaml"
    config.write_text(render(connections))
    # -n: foreground, our child; -u: no UUCP lock files (they are for ttys
    # shared with other programs, and /var/lock may not be ours).
    svc = Service("ser2net", [binary, "-n", "-u", "-c", str(config),
                              "-P", str(state / "ser2net.pid")], state / "ser2net.log",
                  netns=netns)
    deadline = time.monotonic() + timeout
    while True:
        missing = [c for c in connections if not _listens(svc.proc.pid, c.host, c.port)]
        if not missing:
            return svc
        if not svc.alive() or time.monotonic() > deadline:
            # ser2net 4.3 neither exits nor says why (it logs to syslog) when an
            # accepter cannot bind, and then ignores SIGTERM: say which port, kill it.
            # Who holds the port is read in ser2net's namespace, while ser2net is there.
            where = svc.proc.pid if svc.alive() else "self"
            taken = [c.address for c in missing if _inode(c.host, c.port, where)]
            svc.stop(timeout=1.0)
            why = (f"{', '.join(taken)} taken by another process" if taken else
                   ([l.strip() for l in svc.output().splitlines()
                     if l.strip() and "mdns" not in l][-1:] or ["no output"])[0])
            raise FarmError("console", "console-server-down",
                            f"ser2net did not listen on {', '.join(c.address for c in missing)}: "
                            f"{why} (log: {svc.log})")
        time.sleep(0.05)
