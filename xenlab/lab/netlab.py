"""A lab of several hosts on this machine: each lab host a network namespace.

A lab that runs Xen's nightly spreads its boards over hosts, each with its own
serial server, TFTP server and labgrid exporter, and one coordinator for the lab.
`xenlab lab up --hosts N` builds that here, for real: a bridge on a private /24
with the coordinator on its first address, and per host a network namespace on a
veth pair, running Debian's ser2net and atftpd and a labgrid exporter bound to the
host's own address. Each host serves one QEMU board wired as the bench board is
(bench.yaml), its QEMU started inside the host's namespace by the power script.
A farm file (`<dir>/farm.yaml`) reaches every board as a RemotePlace; each place
carries the tag `board=<profile>`.

Everything xenlab creates is written to `<dir>/lab.json` as it is created, so
`xenlab lab down` removes it all (processes, namespaces, the bridge, the places
with the coordinator's state), even after an `up` that failed half-way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..images.cache import atomic_write
from .pidfile import cmdline
from .places import FarmError, client, client_failure
from .ser2net import Connection, start_ser2net
from .services import Service, free_port, start_atftpd, start_coordinator, start_exporter

BENCH_QEMU = Path(__file__).resolve().parents[2] / "scripts" / "bench-qemu"  # the boards' power
BOARD = "qemu-bench-arm64"  # each host's QEMU board (the bench board's profile)
MAX_HOSTS = 16
STATE = "lab.json"
_NAME = re.compile(r"[a-z0-9-]+")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise FarmError("lab network", "lab-network-failed",
                        f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def lab_id(lab_dir: Path) -> str:
    """Four hex digits from the lab's directory: its interfaces' and namespaces' names."""
    return hashlib.sha256(str(lab_dir).encode()).hexdigest()[:4]


def _free_subnet(ident: str) -> str:
    """`10.231.N` for a /24 no interface of this host has an address in."""
    used = _ip("-o", "-4", "addr", "show").stdout
    start = int(ident, 16) % 250
    for k in range(250):
        net = f"10.231.{(start + k) % 250 + 1}"
        if f" {net}." not in used:
            return net
    raise FarmError("lab network", "lab-network-failed", "no free /24 in 10.231.0.0/16")


def _save(lab_dir: Path, state: dict) -> None:
    atomic_write(lab_dir / STATE, json.dumps(state, indent=1) + "\n")


def lab_up(lab_dir: Path, hosts: int, log=print) -> dict:
    """Bring the lab up; returns its state (lab.json). Refused if one is up in `lab_dir`."""
    if not 1 <= hosts <= MAX_HOSTS:
        raise FarmError("lab", "harness-config", f"--hosts {hosts}: from 1 to {MAX_HOSTS}")
    if shutil.which("ip") is None:
        raise FarmError("lab network", "harness-config", "ip not found (Debian package iproute2)")
    lab_dir = Path(lab_dir).resolve()
    if (lab_dir / STATE).exists():
        raise FarmError("lab", "lab-busy", f"a lab is already up in {lab_dir} "
                        f"(`xenlab lab down --dir {lab_dir}` first)")
    lab_dir.mkdir(parents=True, exist_ok=True)
    ident = lab_id(lab_dir)
    net = _free_subnet(ident)
    state = {"dir": str(lab_dir), "id": ident, "subnet": f"{net}.0/24", "bridge": f"xl{ident}br",
             "hosts": [], "services": [], "places": []}
    _save(lab_dir, state)
    try:
        _bring_up(lab_dir, state, net, hosts, log)
    except BaseException:
        lab_down(lab_dir, log=lambda _: None)
        raise
    return state


def _bring_up(lab_dir: Path, state: dict, net: str, hosts: int, log) -> None:
    bridge = state["bridge"]
    _ip("link", "add", bridge, "type", "bridge")
    _ip("addr", "add", f"{net}.1/24", "dev", bridge)
    _ip("link", "set", bridge, "up")
    port = free_port(f"{net}.1")
    coordinator = f"{net}.1:{port}"
    svc = start_coordinator(lab_dir / "coordinator", port, host=f"{net}.1")
    state["coordinator"] = coordinator
    _remember(lab_dir, state, svc, None)
    # Frees the places of runs that died holding them (lab/janitor.py).
    janitor_svc = Service("janitor", [sys.executable, "-m", "xenlab.cli", "lab", "janitor",
                                      "--coordinator", coordinator], lab_dir / "janitor.log",
                          env={"GRPC_ENABLE_FORK_SUPPORT": "0", "PYTHONUNBUFFERED": "1"})
    _remember(lab_dir, state, janitor_svc, None)
    janitor_svc.wait_for(r"janitor: watching", 30, component="janitor")
    for i in range(1, hosts + 1):
        host = {"name": f"host{i}", "netns": f"xenlab-{state['id']}-h{i}",
                "veth": f"xl{state['id']}h{i}", "addr": f"{net}.{10 + i}"}
        state["hosts"].append(host)
        _save(lab_dir, state)
        _host_up(lab_dir, state, host, coordinator)
        log(f"lab: {host['name']} up in namespace {host['netns']} at {host['addr']}")
    atomic_write(lab_dir / "farm.yaml", render_farm(state))
    log(f"lab: coordinator {coordinator}, {len(state['places'])} places, farm file "
        f"{lab_dir / 'farm.yaml'}")


def _host_up(lab_dir: Path, state: dict, host: dict, coordinator: str) -> None:
    ns, veth, addr = host["netns"], host["veth"], host["addr"]
    _ip("netns", "add", ns)
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
    _ip("link", "set", f"{veth}p", "netns", ns)
    _ip("link", "set", veth, "master", state["bridge"])
    _ip("link", "set", veth, "up")
    _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", f"{veth}p")
    _ip("-n", ns, "link", "set", f"{veth}p", "up")
    hdir = lab_dir / host["name"]
    place = f"{host['name']}-arm64"
    board_dir = hdir / place
    board_dir.mkdir(parents=True, exist_ok=True)
    # Ports inside the namespace are all free: its own network stack.
    serial, uart = 2000, 3000
    host.update(place=place, state=str(board_dir), tftp=str(hdir / "tftp"),
                serial=f"{addr}:{serial}", uart=f"{addr}:{uart}")
    _save(lab_dir, state)
    _remember(lab_dir, state, start_atftpd(hdir / "tftp", addr, hdir / "atftpd.log",
                                           netns=ns), ns)
    _remember(lab_dir, state, start_ser2net(
        [Connection(place.replace("-", "_"), "raw", serial, f"tcp,{addr},{uart}", host=addr,
                    trace=board_dir / "uart.trace")], hdir, netns=ns), ns)
    exports = hdir / "exports.yaml"
    exports.write_text(f"{place}:\n  NetworkSerialPort:\n    host: {addr}\n    port: {serial}\n"
                       "    protocol: raw\n    speed: 115200\n")
    _remember(lab_dir, state, start_exporter(exports, coordinator, host["name"],
                                             hdir / "exporter.log", netns=ns), ns)
    for args in (("create",), ("add-match", f"{host['name']}/{place}/*"),
                 ("set-tags", f"board={BOARD}", f"host={host['name']}")):
        proc = client(coordinator, "-p", place, *args)
        if proc.returncode != 0:
            raise client_failure(place, coordinator, proc)
    state["places"].append(place)
    _save(lab_dir, state)


def _remember(lab_dir: Path, state: dict, svc, netns: str | None) -> None:
    state["services"].append({"name": svc.name, "pid": svc.proc.pid, "netns": netns})
    _save(lab_dir, state)


def render_farm(state: dict) -> str:
    """The labgrid environment reaching every board of the lab as a RemotePlace."""
    out = ["# Written by `xenlab lab up` for this lab; `xenlab lab down` removes it.",
           f"# Coordinator {state['coordinator']}: LG_COORDINATOR, or --lg-coordinator.",
           "imports:", "  - xenlab.lab.strategy", "", "targets:"]
    for h in state["hosts"]:
        power = f"ip netns exec {h['netns']} {BENCH_QEMU}"
        out += [f"  {h['place']}:",
                "    options:", f"      xenlab_board: {BOARD}",
                "    features: [pv-block, network]",
                "    resources:",
                f"      RemotePlace: {{name: {h['place']}}}",
                f"      TFTPProvider: {{internal: {h['tftp']}/, external: ''}}",
                "    drivers:",
                "      SerialDriver: {}",
                "      ExternalPowerDriver:",
                f"        cmd_on: \"{power} on --state {h['state']} --serial {h['uart']} "
                f"--board {BOARD}\"",
                f"        cmd_off: \"{power} off --state {h['state']}\"",
                "        delay: 1.0",
                "      UBootDriver: {prompt: \"=> \", autoboot: \"Hit any key to stop autoboot:\"}",
                "      XenShellDriver: {}",
                "      TFTPProviderDriver: {}",
                f"      XenStrategy: {{tftp_server: {h['addr']}, console_after_power: true}}",
                ""]
    return "\n".join(out)


def lab_down(lab_dir: Path, log=print) -> None:
    """Stop everything `lab_up` started in `lab_dir` and remove what it created."""
    lab_dir = Path(lab_dir).resolve()
    try:
        state = json.loads((lab_dir / STATE).read_text())
    except FileNotFoundError:
        log(f"lab: nothing up in {lab_dir}")
        return
    except (OSError, ValueError) as exc:
        raise FarmError("lab", "harness-config", f"{lab_dir / STATE}: unreadable: {exc}") from None
    for h in state.get("hosts", []):
        if h.get("state") and _NAME.fullmatch(h["netns"]):
            subprocess.run(["ip", "netns", "exec", h["netns"], str(BENCH_QEMU),
                            "off", "--state", h["state"]], capture_output=True, check=False)
    for svc in reversed(state.get("services", [])):
        _kill(svc["pid"], svc["name"])
    for h in state.get("hosts", []):
        ns = h["netns"]
        if not _NAME.fullmatch(ns):
            continue
        # Anything still in the namespace (a QEMU whose script died) goes with it.
        for pid in _ip("netns", "pids", ns, check=False).stdout.split():
            _kill(int(pid), None)
        _ip("netns", "del", ns, check=False)
        _ip("link", "del", h["veth"], check=False)
    if state.get("bridge"):
        _ip("link", "del", state["bridge"], check=False)
    shutil.rmtree(lab_dir / "coordinator", ignore_errors=True)  # its places.yaml
    (lab_dir / "farm.yaml").unlink(missing_ok=True)
    (lab_dir / STATE).unlink()
    log(f"lab: down in {lab_dir}")


def _kill(pid: int, name: str | None, wait: float = 5.0) -> None:
    """SIGTERM `pid` if it still is our `name` (any process when None), SIGKILL if it stays."""
    argv = cmdline(pid)
    if not argv or (name is not None and not any(name in a for a in argv)):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while cmdline(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if cmdline(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
