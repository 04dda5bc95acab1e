"""The distributed farm: places on a labgrid coordinator, the lab's services, board health.

A remote board is a labgrid *place*: its resources (the UART, the TFTP
directory) are offered by an exporter on the lab host and matched into the
place on the coordinator. `acquire_place` holds a place for one run and gives
it back in every case (pass, fail, timeout, Ctrl-C, SIGTERM): stale locks
from cancelled jobs are labgrid's most reported pain (labgrid #1739).
It drives `labgrid-client`, whose messages we map to one-line `FarmError`s
naming the component at fault.

The same module starts the lab's services for the bench and the tests
(atftpd, coordinator, exporter: readiness is awaited on what they print,
never slept on) and runs the board health gate (`health_check`).
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .errors import StageFailure, XenlabError

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's own default


class FarmError(XenlabError):
    """The lab failed us: one line naming the component (coordinator, place,
    exporter, TFTP server, power) and a stable classification."""

    def __init__(self, component: str, classification: str, message: str):
        self.component = component
        self.classification = classification
        # The message names the component in its own words ("coordinator X unreachable").
        super().__init__(message if component in message else f"{component}: {message}")


# --------------------------------------------------------------------------- labgrid-client

def _labgrid_tool(name: str) -> str:
    # The venv's tool beside this interpreter first: PATH may hold another labgrid.
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FarmError("labgrid", "harness-config", f"{name} not found (pip install labgrid)")
    return found


def coordinator_address(coordinator: str | None = None, env=None) -> str:
    """The coordinator as labgrid itself picks it: argument, env option, LG_COORDINATOR."""
    if coordinator:
        return coordinator
    if env is not None:
        value = env.config.get_option("coordinator_address", "")
        if value:
            return value
    return os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def _client(coordinator: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    cmd = [_labgrid_tool("labgrid-client"), "-x", coordinator, *args]
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="0")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FarmError("coordinator", "coordinator-unreachable",
                        f"coordinator {coordinator} did not answer `labgrid-client {' '.join(args)}` "
                        f"within {timeout:.0f} s") from None


def _client_error(proc: subprocess.CompletedProcess) -> str:
    lines = [l.strip() for l in (proc.stderr + "\n" + proc.stdout).splitlines() if l.strip()]
    errors = [l for l in lines if "Error" in l or "error" in l]
    text = (errors or lines or [f"exit status {proc.returncode}"])[-1]
    return re.sub(r"^(labgrid-client: |Server error: )?(Error: )?", "", text)


def _classify(name: str, coordinator: str, proc: subprocess.CompletedProcess) -> FarmError:
    text = proc.stderr + proc.stdout
    msg = _client_error(proc)
    if "Could not connect to coordinator" in text or "coordinator is unavailable" in text:
        return FarmError("coordinator", "coordinator-unreachable",
                         f"coordinator {coordinator} unreachable")
    if "matches nothing" in text or re.search(r"place .* not found", text):
        return FarmError("place", "place-not-found",
                         f"place {name} not found on coordinator {coordinator}")
    if "orphaned resource" in text or "no matching remote resource" in text:
        exporter = re.search(r"exporter (\S+) disconnected", text)
        return FarmError("exporter", "exporter-lost",
                         f"exporter {exporter.group(1) + ' ' if exporter else ''}of place "
                         f"{name} is not connected to coordinator {coordinator}")
    return FarmError("place", "place-error", f"place {name}: {msg}")


def place_holder(name: str, coordinator: str) -> str | None:
    """Who holds the place ("host/user"), or None when it is free."""
    proc = _client(coordinator, "-p", name, "show")
    if proc.returncode != 0:
        raise _classify(name, coordinator, proc)
    m = re.search(r"^\s*acquired:\s*(\S+)", proc.stdout, re.M)
    return None if m is None or m.group(1) == "None" else m.group(1)


class PlaceLease:
    """A place we acquired; `release()` is idempotent and never raises."""

    def __init__(self, name: str, coordinator: str):
        self.name = name
        self.coordinator = coordinator
        self.released = False
        self.waited = 0.0
        self.lost: str | None = None  # why the place's exporter is gone, once seen
        self._lock = threading.Lock()

    @classmethod
    def acquire(cls, name: str, coordinator: str | None = None, timeout: float = 0.0,
                poll: float = 2.0) -> PlaceLease:
        """Acquire `name`, waiting up to `timeout` s while someone else holds it."""
        coordinator = coordinator_address(coordinator)
        start = time.monotonic()
        holder = None
        while True:
            proc = _client(coordinator, "-p", name, "acquire")
            if proc.returncode == 0:
                lease = cls(name, coordinator)
                lease.waited = round(time.monotonic() - start, 1)
                _HELD[id(lease)] = lease
                return lease
            text = proc.stderr + proc.stdout
            m = re.search(r"already acquired by (\S+?)\.?(\s|$)", text)
            if not m:
                raise _classify(name, coordinator, proc)
            holder = m.group(1)
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                raise FarmError("place", "place-busy",
                                f"place {name} is held by {holder}"
                                + (f" for longer than the {timeout:.0f} s wait" if timeout
                                   else " (no wait asked)"))
            time.sleep(min(poll, left))

    def check(self) -> None:
        """Raise FarmError(exporter-lost) if the place's exporter went away."""
        proc = _client(self.coordinator, "-p", self.name, "env")
        if proc.returncode != 0:
            err = _classify(self.name, self.coordinator, proc)
            if err.classification == "exporter-lost":
                self.lost = str(err)
            raise err

    def release(self) -> bool:
        """Give the place back; True when it is no longer ours."""
        with self._lock:
            if self.released:
                return True
            # A second Ctrl-C must not leave the place locked halfway through.
            with _signals_deferred():
                ok = release_place(self.name, self.coordinator)
            self.released = ok
            if ok:
                _HELD.pop(id(self), None)
            return ok


_HELD: dict[int, PlaceLease] = {}


def release_place(name: str, coordinator: str | None = None) -> bool:
    """Release `name` if we hold it. Never raises: a failure is printed on stderr."""
    coordinator = coordinator_address(coordinator)
    for attempt in range(3):
        try:
            proc = _client(coordinator, "-p", name, "release", timeout=20)
        except FarmError as exc:
            err = str(exc)
        else:
            if proc.returncode == 0 or "is not acquired" in proc.stderr + proc.stdout:
                return True
            if "different user" in proc.stderr:  # not ours (any more): never kick
                return True
            err = str(_classify(name, coordinator, proc))
        time.sleep(0.5 * (attempt + 1))
    print(f"xenlab: could not release place {name}: {err}", file=sys.stderr)
    return False


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM while the lock is given back (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, lambda s, f: pending.append(s))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]}")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a place is held, SIGTERM (a cancelled CI job) unwinds like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        yield
        return

    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def acquire_place(name: str, coordinator: str | None = None, timeout: float = 0.0):
    """Hold place `name` for the `with` block; released in every case.

    Waits up to `timeout` seconds while someone else holds it. Raises FarmError
    (coordinator-unreachable, place-not-found, place-busy, exporter-lost).
    """
    lease = PlaceLease.acquire(name, coordinator, timeout)
    try:
        with _sigterm_as_interrupt():
            yield lease
    finally:
        lease.release()


def release_all() -> None:
    """Release every place this process still holds (a last resort at exit)."""
    for lease in list(_HELD.values()):
        lease.release()


atexit.register(release_all)


# --------------------------------------------------------------------------- the lab's services

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
                 env: dict | None = None):
        self.name = name
        self.cmd = cmd
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
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


def _udp_bound(addr: str, port: int) -> bool:
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(addr), "little"), port)
    try:
        with open("/proc/net/udp") as f:
            return any(line.split()[1] == want for line in f.readlines()[1:])
    except OSError:
        return False


def start_atftpd(root: Path, address: str, log: Path, port: int = 69,
                 timeout: float = 10.0) -> Service:
    """Debian's atftpd serving `root` on address:port, in the foreground (our child)."""
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
                  log)
    deadline = time.monotonic() + timeout
    while not _udp_bound(address, port):
        if not svc.alive() or time.monotonic() > deadline:
            svc.stop()
            tail = [l for l in svc.output().splitlines() if l.strip()][-1:] or ["no output"]
            raise FarmError("tftp", "tftp-server-down",
                            f"atftpd did not start on {address}:{port}: {tail[0]}")
        time.sleep(0.05)
    return svc


def start_coordinator(workdir: Path, port: int, timeout: float = 30.0) -> Service:
    """labgrid-coordinator on 127.0.0.1:port; it keeps places.yaml in `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    svc = Service("coordinator", [_labgrid_tool("labgrid-coordinator"), "--listen",
                                  f"127.0.0.1:{port}"], workdir / "coordinator.log",
                  cwd=workdir, env={"GRPC_ENABLE_FORK_SUPPORT": "0", "PYTHONUNBUFFERED": "1"})
    svc.wait_for(r"Coordinator ready", timeout, component="coordinator")
    return svc


def start_exporter(config: Path, coordinator: str, name: str, log: Path,
                   timeout: float = 30.0) -> Service:
    svc = Service("exporter", [_labgrid_tool("labgrid-exporter"), "--coordinator", coordinator,
                               "-n", name, str(config)], log, cwd=Path(config).parent,
                  env={"GRPC_ENABLE_FORK_SUPPORT": "0", "PYTHONUNBUFFERED": "1"})
    svc.wait_for(r"connected to coordinator", timeout, component="exporter")
    return svc


def create_place(name: str, coordinator: str, match: str) -> None:
    """Create place `name` matching `match` (EXPORTER/GROUP/*), if it does not exist."""
    for args in (("create",), ("add-match", match)):
        proc = _client(coordinator, "-p", name, *args)
        text = proc.stderr + proc.stdout
        if proc.returncode != 0 and "already exists" not in text:
            raise _classify(name, coordinator, proc)


# --------------------------------------------------------------------------- board health

HEALTH_DEPTHS = ("uboot", "dom0")


def health_check(target, depth: str = "uboot", results: Path | str | None = None,
                 tester: str | None = "health-check", run_id: str | None = None):
    """Boot `target` to U-Boot (or Dom0) and power it off.

    Returns None when the board is healthy. Otherwise the board is marked
    unavailable: a run record with verdict ERROR, classification
    `health-check-failed`, culprit lab (see `mark_unavailable`) is written
    under `results` and returned, the console log kept in it.
    """
    if depth not in HEALTH_DEPTHS:
        raise XenlabError(f"health check depth {depth!r}: one of {', '.join(HEALTH_DEPTHS)}")
    from .results import RESULTS_DIR  # results sit after the strategy

    root = Path(results) if results is not None else RESULTS_DIR
    strategy = target.get_driver("XenStrategy")
    scratch = Path(tempfile.mkdtemp(prefix="xenlab-health-"))
    console = scratch / "console.log"
    failure: StageFailure | None = None
    started = time.monotonic()
    try:
        strategy.record_to(console)
        try:
            strategy.transition(depth)
        except Exception as exc:  # StrategyError around the real cause
            from .strategy import stage_failure

            failure = stage_failure(exc, depth)
    finally:
        with contextlib.suppress(Exception):
            if strategy.broken is None:
                strategy.transition("off")
            else:  # a broken strategy refuses transitions
                strategy.cut_power()
        if strategy.recorder is not None:
            strategy.recorder.close()
            strategy.recorder = None
    try:
        if failure is None:
            return None
        record = mark_unavailable(root, target.name, failure, depth=depth,
                                  duration=time.monotonic() - started,
                                  arch=strategy.profile.arch if strategy.profile else "?",
                                  tester=tester, console_log=console, run_id=run_id)
        return record
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def mark_unavailable(root: Path | str, board: str, failure: StageFailure, *, depth: str = "uboot",
                     duration: float = 0.0, arch: str = "?", tester: str | None = None,
                     console_log: Path | None = None, run_id: str | None = None):
    """Write the run record that takes `board` out of service: ERROR, health-check-failed, lab."""
    from .results import RunRecord

    record = RunRecord.start(Path(root), board, target=board, arch=arch, tester=tester,
                             run_id=run_id,
                             info={"kind": "health-check", "depth": depth, "culprit": "lab",
                                   "available": False})
    if console_log is not None and Path(console_log).exists():
        shutil.copyfile(console_log, record.console_log)
    record.step_finished("health_check", "ERROR", duration, classification="health-check-failed",
                         message=f"{failure.stage} stage {failure.status} "
                                 f"[{failure.classification}]: {failure.message}",
                         evidence=failure.evidence)
    record.finish("ERROR", f"health check to {depth} failed: {failure.classification}: "
                           f"{failure.message}", classification="health-check-failed")
    return record


# --------------------------------------------------------------------------- bench CLI

def _bench(argv: list[str]) -> int:
    """`python -m xenlab.farm bench up|down DIR`: the bench's atftpd, and its LG_* variables."""
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python -m xenlab.farm bench up|down DIR", file=sys.stderr)
        return 2
    state = Path(argv[1]).resolve()
    pidfile = state / "atftpd.pid"
    if argv[0] == "down":
        subprocess.run([str(Path(__file__).resolve().parent.parent / "scripts" / "bench-qemu"),
                        "off", "--state", str(state)], check=False)
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            pidfile.unlink()
        return 0
    addr = free_tftp_address()
    svc = start_atftpd(state / "tftp", addr, state / "atftpd.log")
    pidfile.write_text(str(svc.proc.pid))
    print(f"export LG_BENCH_SERIAL=127.0.0.1:{free_port()}")
    print(f"export LG_BENCH_STATE={state}")
    print(f"export LG_BENCH_TFTP_DIR={state / 'tftp'}")
    print(f"export LG_BENCH_TFTP_ADDR={addr}")
    return 0


HEALTH_UNAVAILABLE = 3  # exit status of `health` for a board taken out of service


def place_of(env, target_name: str) -> str | None:
    """The place name of a target built from a RemotePlace, else None."""
    resources = (env.config.get_targets() or {}).get(target_name, {}).get("resources") or {}
    entries = resources.items() if isinstance(resources, dict) else \
        (next(iter(r.items())) for r in resources if isinstance(r, dict) and r)
    for cls, args in entries:
        if (args or {}).get("cls", cls) == "RemotePlace":
            return str((args or {}).get("name") or target_name)
    return None


def _health(argv: list[str]) -> int:
    """`python -m xenlab.farm health`: the gate a Test Day or nightly passes each board through.

    Exit 0: healthy, nothing written. Exit 3: unavailable, its ERROR record
    (health-check-failed, culprit lab) written under --results.
    """
    import argparse

    from labgrid import Environment

    ap = argparse.ArgumentParser(prog="python -m xenlab.farm health")
    ap.add_argument("--farm", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--depth", default="uboot", choices=HEALTH_DEPTHS)
    ap.add_argument("--results", required=True)
    ap.add_argument("--run-id")
    ap.add_argument("--tester", default="health-check")
    ap.add_argument("--place-wait", type=float, default=60.0)
    args = ap.parse_args(argv)
    env = Environment(args.farm)
    place = place_of(env, args.target)
    try:
        lease = acquire_place(place, coordinator_address(env=env), args.place_wait) \
            if place else contextlib.nullcontext()
        with lease:
            record = health_check(env.get_target(args.target), args.depth, args.results,
                                  args.tester, run_id=args.run_id)
    except FarmError as exc:  # the place itself is the lab's failure
        record = mark_unavailable(args.results, args.target,
                                  StageFailure("place", "ERROR", exc.classification, str(exc)),
                                  depth=args.depth, tester=args.tester, run_id=args.run_id)
    if record is None:
        print(f"{args.target}: healthy ({args.depth})")
        return 0
    print(f"{args.target}: unavailable: {record.verdict_reason}")
    return HEALTH_UNAVAILABLE


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["bench"]:
            return _bench(argv[1:])
        if argv[:1] == ["health"]:
            return _health(argv[1:])
    except XenlabError as exc:
        print(f"xenlab: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m xenlab.farm bench up|down DIR | health --farm F --target T ...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
