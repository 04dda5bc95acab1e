"""The distributed farm on 127.0.0.1: labgrid's coordinator and exporter, the bench
board's UART exported as place bench-arm64, the smoke test run through
RemotePlace (remote.yaml). The place is released after every run — passed,
failed, refused, killed — and each lab fault is a one-line ERROR naming the
component (coordinator, place, exporter, power).
"""

import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from support.farmlab import timed_smoke, BOARD, PLACE, REPO, STEPS, Bench, Farm, explain, record, run_smoke, smoke_args
from xenlab.lab import places, services


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    bench = Bench(tmp_path_factory.mktemp("bench"))
    f = None
    try:
        f = Farm(tmp_path_factory.mktemp("farm"), bench)
        yield f
    finally:
        if f is not None:
            f.close()
        bench.close()


@pytest.fixture
def exporter_up(lab):
    if lab.exporter is None or not lab.exporter.alive():
        lab.start_exporter()
    return lab


def _released(lab) -> None:
    assert lab.holder() is None, lab.client("show").stdout
    show = lab.client("show")
    assert re.search(r"^\s*acquired: None$", show.stdout, re.M), show.stdout


@pytest.fixture(scope="module")
def remote_run(lab, tmp_path_factory):
    return timed_smoke("remote.yaml", tmp_path_factory.mktemp("results"), lab.env())


def test_smoke_passes_through_the_remote_place(remote_run, lab):
    proc, results, seconds = remote_run
    assert proc.returncode == 0, explain(proc)
    rec, run_dir = record(results)
    assert rec["verdict"] == "PASS", rec
    assert [s["name"] for s in rec["steps"]] == STEPS
    assert rec["info"]["place"] == PLACE
    assert "Xen version 4.17" in (run_dir / "console.log").read_text(errors="replace")
    print(f"remote smoke: {seconds:.1f} s")


def test_place_is_released_after_a_passing_run(remote_run, lab):
    _released(lab)


def test_failed_run_releases_the_place(exporter_up, tmp_path):
    lab = exporter_up
    run_smoke("remote.yaml", tmp_path, lab.env(XENLAB_IMAGE_SET="/nonexistent/image-set"))
    rec, _ = record(tmp_path)  # every step skipped: the record says why
    assert rec["verdict"] == "ERROR" and rec["classification"] == "harness-config", rec
    _released(lab)


def test_power_failure_releases_the_place(exporter_up, tmp_path):
    lab = exporter_up
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = lab.env(LG_BENCH_UART=f"127.0.0.1:{busy.getsockname()[1]}")
        proc = run_smoke("remote.yaml", tmp_path, env)
    assert proc.returncode != 0
    rec, run_dir = record(tmp_path)
    assert (rec["verdict"], rec["classification"]) == ("ERROR", "power-failed"), rec
    assert "QEMU did not start" in rec["steps"][0]["message"]
    assert (run_dir / "console.log").exists()
    _released(lab)


def _refused(tmp_path, env, classification, *extra):
    """A run that never got its place: every step ERROR, one record saying why."""
    proc = run_smoke("remote.yaml", tmp_path, env, *extra)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout
    rec, _ = record(tmp_path)
    assert (rec["verdict"], rec["classification"]) == ("ERROR", classification), rec
    assert [s["name"] for s in rec["steps"]] == ["place"]
    message = rec["steps"][0]["message"]
    assert "\n" not in message
    return message


def test_coordinator_unreachable(lab, tmp_path):
    dead = f"127.0.0.1:{services.free_port()}"
    message = _refused(tmp_path, lab.env(LG_COORDINATOR=dead), "coordinator-unreachable")
    assert message == f"coordinator {dead} unreachable"


def test_place_not_found(lab, tmp_path):
    message = _refused(tmp_path, lab.env(LG_PLACE="no-such-place"), "place-not-found")
    assert message == f"place no-such-place not found on coordinator {lab.address}"


def test_place_held_by_someone_else_past_the_wait(exporter_up, tmp_path):
    lab = exporter_up
    assert lab.client("acquire", user="colleague").returncode == 0
    try:
        start = time.monotonic()
        message = _refused(tmp_path, lab.env(), "place-busy", "--xenlab-place-wait", "3")
        assert time.monotonic() - start >= 3
        assert re.fullmatch(rf"place {PLACE} is held by \S+/colleague for longer than the "
                            r"3 s wait", message), message
        assert lab.holder().endswith("/colleague")  # never kicked
    finally:
        lab.client("release", user="colleague")
    _released(lab)


def test_acquire_waits_for_a_place_released_meanwhile(exporter_up):
    lab = exporter_up
    assert lab.client("acquire", user="colleague").returncode == 0
    timer = threading.Timer(2.0, lambda: lab.client("release", user="colleague"))
    timer.start()
    try:
        with places.acquire_place(PLACE, lab.address, timeout=60) as lease:
            assert lease.waited >= 1.5
            assert not lab.holder().endswith("/colleague")
    finally:
        timer.join()
    _released(lab)


def test_released_when_the_block_raises(exporter_up):
    lab = exporter_up
    with pytest.raises(RuntimeError):
        with places.acquire_place(PLACE, lab.address):
            assert lab.holder() is not None
            raise RuntimeError("the run failed")
    _released(lab)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_released_on_ctrl_c_and_sigterm(exporter_up, sig):
    lab = exporter_up
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from xenlab.lab import places, services
            with places.acquire_place({PLACE!r}, {lab.address!r}):
                print("held", flush=True)
                time.sleep(120)
            """)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lab.holder() is not None
        holder.send_signal(sig)
        _, err = holder.communicate(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode != 0
    assert "KeyboardInterrupt" in err
    _released(lab)


def test_exporter_lost_mid_run(exporter_up, tmp_path):
    """The exporter dies while the board boots: ERROR lab-host-lost, the place released."""
    lab = exporter_up
    run_id = "lost-exporter"
    console = tmp_path / BOARD / run_id / "console.log"
    proc = subprocess.Popen(smoke_args("remote.yaml", tmp_path, "--xenlab-run-id", run_id),
                            cwd=REPO, env=lab.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (console.exists() and "Xen version" in console.read_text(errors="replace")):
            assert proc.poll() is None and time.monotonic() < deadline, "Xen never started"
            time.sleep(0.2)
        lab.stop_exporter()
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        lab.start_exporter()
    assert proc.returncode != 0, out[-3000:]
    rec, run_dir = record(tmp_path)
    assert (rec["verdict"], rec["classification"]) == ("ERROR", "lab-host-lost"), rec
    bad = next(s for s in rec["steps"] if s["status"] == "ERROR")
    assert bad["message"].startswith(f"lab host benchhost of place {PLACE} lost: its exporter is not connected")
    assert console.exists() and run_dir.name == run_id
    _released(lab)
    state = subprocess.run([str(REPO / "scripts" / "bench-qemu"), "status", "--state",
                            str(lab.bench.dir)], capture_output=True, text=True)
    assert state.stdout.strip() == "off"  # powered off although the strategy broke


def test_testday_runs_a_remote_place(exporter_up, tmp_path):
    """`xenlab testday --farm remote.yaml`: the Test Day runner takes remote places too."""
    lab = exporter_up
    proc = subprocess.run([sys.executable, "-m", "xenlab.cli", "testday", "--farm",
                           str(REPO / "remote.yaml"), "--tester", "Remote Tester",
                           "--results", str(tmp_path)],
                          cwd=REPO, env=lab.env(), capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    rec, _ = record(tmp_path)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:], rec)
    assert rec["verdict"] == "PASS" and rec["info"]["place"] == PLACE
    assert rec["tester"] == "Remote Tester"
    row = next(l for l in proc.stdout.splitlines() if l.startswith(f"| {BOARD} "))
    assert "| PASS |" in row and "Remote Tester" in row
    _released(lab)


def test_a_client_killed_holding_the_place_is_freed_by_the_next_run(exporter_up, tmp_path):
    """Issue 28: a run SIGKILLed mid-boot leaves its place acquired (labgrid keeps it for
    this host and user) and the bench board on. The next run frees the place (the killed
    run's lock is dropped by the kernel, its holder dead), powers the board off, boots and
    PASSes, with no manual step; its record says which run's place it freed."""
    lab = exporter_up
    killed = "killed-client"
    console = tmp_path / "killed" / BOARD / killed / "console.log"
    proc = subprocess.Popen(smoke_args("remote.yaml", tmp_path / "killed", "--xenlab-run-id",
                                       killed), cwd=REPO, env=lab.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (console.exists() and "Xen version" in console.read_text(errors="replace")):
            assert proc.poll() is None and time.monotonic() < deadline, "Xen never started"
            time.sleep(0.2)
    finally:
        proc.kill()  # SIGKILL: no teardown, no atexit
        proc.wait()
    assert lab.holder() == places.client_identity()  # left acquired, as labgrid keeps it
    state = [str(REPO / "scripts" / "bench-qemu"), "status", "--state", str(lab.bench.dir)]
    assert subprocess.run(state, capture_output=True, text=True).stdout.startswith("on (pid ")

    again = run_smoke("remote.yaml", tmp_path / "next", lab.env(), "--xenlab-place-wait", "0")
    rec, _ = record(tmp_path / "next")
    assert again.returncode == 0, (explain(again), rec)
    assert rec["verdict"] == "PASS", rec
    freed = rec["info"]["place_freed"]
    assert freed["run_id"] == killed and freed["pid"] == proc.pid, freed
    assert freed["powered_off_before_boot"] is True
    _released(lab)
    assert subprocess.run(state, capture_output=True, text=True).stdout.strip() == "off"


def test_a_place_acquired_by_hand_on_this_host_is_waited_for_not_freed(exporter_up, tmp_path):
    """The same host and user holding the place with no killed run behind it (a tester's
    `labgrid-client acquire`) is a busy place: never released under them."""
    lab = exporter_up
    assert lab.client("acquire").returncode == 0
    try:
        message = _refused(tmp_path, lab.env(), "place-busy", "--xenlab-place-wait", "0")
        assert message == (f"place {PLACE} is held by {places.client_identity()} (this host "
                           "and user, by hand or another tool) (no wait asked)"), message
        assert lab.holder() == places.client_identity()
    finally:
        lab.client("release")
