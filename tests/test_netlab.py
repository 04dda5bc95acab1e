"""Issue 30, first part: a lab of several hosts on one machine (`xenlab lab up --hosts N`).

A real labgrid coordinator on a bridge, and per lab host a network namespace
with its own exporter, ser2net and atftpd; a QEMU board per host, started in its
host's namespace by the power script; a farm file reaching each as a RemotePlace.
`xenlab lab down` leaves no namespace, interface, process or place behind.
Needs root (network namespaces): without it this fails, it does not skip.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.farmlab import REPO, STEPS, ensure_farm_tools, explain, record
from xenlab.lab import janitor, places

HOSTS = 3


def xenlab(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "xenlab.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _lab_env(state) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LG_", "XENLAB_", "PYTEST_"))}
    env.update(LG_COORDINATOR=state["coordinator"], GRPC_ENABLE_FORK_SUPPORT="0")
    return env


def _smoke(lab_dir, host, results) -> list[str]:
    """The smoke test on `host`'s board, through the lab's farm file."""
    return [sys.executable, "-m", "pytest", "--lg-env", str(lab_dir / "farm.yaml"),
            str(REPO / "testcases"), "--xenlab-target", host["place"], "--xenlab-results",
            str(results), "--xenlab-tester", "ci", "-p", "no:cacheprovider", "-q"]


def _netns_inode(pid) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    ensure_farm_tools()  # atftpd, ser2net, ip
    lab_dir = tmp_path_factory.mktemp("lab")
    up = xenlab("lab", "up", "--hosts", str(HOSTS), "--dir", str(lab_dir))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield lab_dir, json.loads((lab_dir / "lab.json").read_text()), up.stdout
    finally:
        down = xenlab("lab", "down", "--dir", str(lab_dir))
        assert down.returncode == 0, down.stderr


def test_each_host_is_a_namespace_with_its_own_services(lab):
    lab_dir, state, out = lab
    assert os.geteuid() == 0, "network namespaces need root"
    assert len(state["hosts"]) == HOSTS and len(state["places"]) == HOSTS
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    by_ns = {}
    for svc in state["services"]:
        assert Path(f"/proc/{svc['pid']}/cmdline").read_bytes(), svc  # running
        by_ns.setdefault(svc["netns"], []).append(svc["name"])
        if svc["netns"] is None:
            assert _netns_inode(svc["pid"]) == _netns_inode("self")
        else:
            assert svc["netns"] in names
            assert _netns_inode(svc["pid"]) == os.stat(f"/run/netns/{svc['netns']}").st_ino
    assert sorted(by_ns.pop(None)) == ["coordinator", "janitor"]
    assert sorted(by_ns) == sorted(h["netns"] for h in state["hosts"])
    assert all(sorted(v) == ["atftpd", "exporter", "ser2net"] for v in by_ns.values()), by_ns
    addrs = [h["addr"] for h in state["hosts"]]
    assert len(set(addrs)) == HOSTS and all(a.startswith(state["subnet"].rsplit(".", 1)[0])
                                            for a in addrs)
    assert f"export LG_COORDINATOR={state['coordinator']}" in out


def test_every_board_is_a_tagged_place_on_the_coordinator(lab):
    lab_dir, state, _ = lab
    for h in state["hosts"]:
        show = places.client(state["coordinator"], "-p", h["place"], "show")
        assert show.returncode == 0, show.stderr
        assert f"tags: board=qemu-bench-arm64, host={h['name']}" in show.stdout
        # The exporter of that host, in its namespace, offers the board's UART there.
        assert f"'host': '{h['addr']}'" in show.stdout and "'avail': True" in show.stdout


def test_a_second_up_on_the_same_directory_is_refused(lab):
    lab_dir, _, _ = lab
    again = xenlab("lab", "up", "--hosts", "1", "--dir", str(lab_dir))
    assert again.returncode != 0
    assert again.stderr.strip().splitlines() == [
        f"xenlab: error: a lab is already up in {lab_dir} "
        f"(`xenlab lab down --dir {lab_dir}` first)"], again.stderr


def test_the_smoke_test_passes_on_a_board_of_another_host(lab, tmp_path):
    """host2's board: its QEMU in host2's namespace, its console through host2's ser2net
    across the bridge, its files from host2's atftpd."""
    lab_dir, state, _ = lab
    host = state["hosts"][1]
    env = _lab_env(state)
    proc = subprocess.run(_smoke(lab_dir, host, tmp_path), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, explain(proc)
    rec, run_dir = record(tmp_path, host["place"])
    assert rec["verdict"] == "PASS" and [s["name"] for s in rec["steps"]] == STEPS, rec
    console = (run_dir / "console.log").read_text(errors="replace")
    assert f"TFTP from server {host['addr']}" in console
    bridge_addr = state["coordinator"].rsplit(":", 1)[0]
    trace = (Path(host["state"]) / "uart.trace").read_text(errors="replace")
    assert re.search(rf"OPEN \(ipv4,{re.escape(bridge_addr)},\d+\)", trace), trace[:300]
    assert "Xen version 4.17" in trace
    served = (lab_dir / host["name"] / "atftpd.log").read_text()
    assert re.search(rf"Serving {run_dir.name}/xen to {re.escape(host['addr'])}", served), \
        served[-1500:]
    for other in (state["hosts"][0], state["hosts"][2]):  # the other hosts served nothing
        assert "Serving" not in (lab_dir / other["name"] / "atftpd.log").read_text()


def test_down_leaves_no_namespace_interface_process_or_place(tmp_path):
    ensure_farm_tools()
    up = xenlab("lab", "up", "--hosts", "2", "--dir", str(tmp_path))
    assert up.returncode == 0, up.stderr
    state = json.loads((tmp_path / "lab.json").read_text())
    down = xenlab("lab", "down", "--dir", str(tmp_path))
    assert down.returncode == 0 and down.stdout.strip() == f"lab: down in {tmp_path}", down
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert f"xenlab-{state['id']}-" not in names
    assert f"xl{state['id']}" not in links
    for svc in state["services"]:  # gone, or a zombie waiting for its reaper
        path = Path(f"/proc/{svc['pid']}/cmdline")
        assert not path.exists() or not path.read_bytes(), svc
    assert not (tmp_path / "lab.json").exists() and not (tmp_path / "farm.yaml").exists()
    assert not (tmp_path / "coordinator").exists()  # its places.yaml with it
    again = xenlab("lab", "down", "--dir", str(tmp_path))
    assert again.returncode == 0 and "nothing up" in again.stdout


def test_hosts_out_of_range_are_refused_in_one_line(tmp_path):
    proc = xenlab("lab", "up", "--hosts", "17", "--dir", str(tmp_path))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["xenlab: error: lab: --hosts 17: from 1 to 16"]
    assert not (tmp_path / "lab.json").exists()


def _wait_for_xen(results, place, proc, what) -> None:
    """Until a console of `place` under `results` shows Xen's banner, `proc` still running."""
    deadline = time.monotonic() + 300
    while not any("Xen version" in c.read_text(errors="replace")
                  for c in (results / place).glob("*/console.log")):
        assert proc.poll() is None and time.monotonic() < deadline, f"{what}'s Xen never started"
        time.sleep(0.2)


def test_a_place_held_by_a_killed_run_is_freed_by_the_janitor_within_its_bound(lab, tmp_path):
    """A run SIGKILLed while it holds host3's place leaves it acquired; the lab's janitor
    releases it once the run's lease lapses: within LAPSE_S + two janitor sweeps, with no
    manual release. A place acquired by hand (no lease) is never released by it."""
    lab_dir, state, _ = lab
    host = state["hosts"][2]
    env = _lab_env(state)
    run = subprocess.Popen(_smoke(lab_dir, host, tmp_path), cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        _wait_for_xen(tmp_path, host["place"], run, host["name"])
        assert places.place_holder(host["place"], state["coordinator"]) is not None
        os.killpg(run.pid, signal.SIGKILL)
        killed = time.monotonic()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    bound = janitor.LAPSE_S + 2 * janitor.JANITOR_INTERVAL_S + 15  # + labgrid-client's own time
    while places.place_holder(host["place"], state["coordinator"]) is not None:
        assert time.monotonic() - killed < bound, f"{host['place']} still held after {bound} s"
        time.sleep(1)
    freed_after = time.monotonic() - killed
    said = rf"janitor: released place {host['place']} held by \S+: its xenlab lease lapsed \d+ s ago"
    for _ in range(50):  # it says so right after the release we saw
        log = (lab_dir / "janitor.log").read_text()
        if re.search(said, log):
            break
        time.sleep(0.1)
    assert re.search(said, log), log
    print(f"place freed {freed_after:.0f} s after the kill (bound {bound:.0f} s)")
    # By hand: no lease, so even a sweep an hour from now leaves it acquired.
    assert places.client(state["coordinator"], "-p", host["place"], "acquire").returncode == 0
    try:
        assert janitor.sweep(state["coordinator"], now=time.time() + 3600) == []
        assert places.place_holder(host["place"], state["coordinator"]) is not None
    finally:
        assert places.client(state["coordinator"], "-p", host["place"], "release").returncode == 0


def test_a_host_lost_mid_boot_is_the_labs_error_and_the_others_finish(lab, tmp_path):
    """A night over the lab's three boards, two at a time; host1 dies (everything in its
    namespace killed) while its Xen boots: host1's board is ERROR lab-host-lost with its
    record and console kept, the other hosts' boards PASS. Last: host1 stays dead."""
    lab_dir, state, _ = lab
    lost = state["hosts"][0]
    env = _lab_env(state)
    night = subprocess.Popen([sys.executable, "-m", "xenlab.cli", "nightly", "--farm",
                              str(lab_dir / "farm.yaml"), "--results", str(tmp_path), "--jobs", "2",
                              "--health", "none", "--tester", "nightly"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             stdin=subprocess.DEVNULL)
    try:
        _wait_for_xen(tmp_path, lost["place"], night, lost["name"])
        pids = subprocess.run(["ip", "netns", "pids", lost["netns"]], capture_output=True,
                              text=True).stdout.split()
        assert len(pids) >= 4  # its exporter, ser2net, atftpd and the board's QEMU
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        out, _ = night.communicate(timeout=900)
    finally:
        if night.poll() is None:
            night.kill()
    verdicts = {}
    for h in state["hosts"]:
        rec, run_dir = record(tmp_path, h["place"])
        verdicts[h["place"]] = (rec["verdict"], rec["classification"])
        if h is lost:
            bad = next(s for s in rec["steps"] if s["status"] == "ERROR")
            assert bad["message"].startswith(f"lab host {lost['name']} of place "
                                             f"{lost['place']} lost"), bad
            assert "Xen version" in (run_dir / "console.log").read_text(errors="replace")
    assert verdicts == {lost["place"]: ("ERROR", "lab-host-lost"),
                        **{h["place"]: ("PASS", None) for h in state["hosts"][1:]}}, out[-3000:]
