"""XenStrategy: power a board and walk it off -> uboot -> xen -> dom0 -> shell.

Each stage waits for its markers with its own timeout (the board profile's,
times its multiplier) and watches the console for what must never appear
(`monitors.MONITORS`); a failure is a `StageFailure` naming the stage, with the
console lines that prove it.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import attr
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy.common import Strategy, StrategyError, never_retry
from pexpect import EOF, TIMEOUT

from .boards import BoardProfile, load_profile
from .bootplan import BootPlan
from .console import ConsoleRecorder
from .monitors import MONITORS
from .dtb import resolve_dtb
from .errors import StageFailure, XenlabError
from .images import ImageSet, build_image_set


class Status(enum.Enum):
    unknown = 0
    off = 1
    uboot = 2
    xen = 3
    dom0 = 4
    shell = 5


# What each stage waits for, in order. The ready marker comes from the image set.
STAGE_MARKERS = {
    "xen": [("xen-banner", r"Xen version (\d+\.\d+\.\d+)"),
            ("dom0-loading", r"\*\*\* LOADING DOMAIN 0 \*\*\*")],
    "dom0": [("dom0-linux", r"Booting Linux on physical CPU"),
             ("dom0-ready", "{ready}")],
}


@target_factory.reg_driver
@attr.s(eq=False)
class XenStrategy(Strategy):
    """Boots Xen, Dom0 and a shell on a board described by a xenlab board profile.

    Args:
        board (str): board profile name (boards/<board>.yaml); defaults to the
            target option `xenlab_board`
        image_set (str): a built image set directory; default: the bundled set
            for the profile's arch (built or found in the cache)
        tftp_server (str): the lab's TFTP server as the board reaches it (IPv4);
            set as U-Boot's serverip after the profile's init commands
            (default: whatever they or DHCP left)
        console_after_power (bool): the console's server only exists while the
            board is powered (the bench's QEMU `-serial tcp:...,server`):
            connect after power-on, drop the connection at power-off
    """

    bindings = {
        "power": "PowerProtocol",
        "console": "ConsoleProtocol",
        "uboot": "UBootDriver",
        "shell": "XenShellDriver",
        "tftp": {"TFTPProviderDriver", None},
    }
    board = attr.ib(default="", validator=attr.validators.instance_of(str))
    image_set = attr.ib(default="", validator=attr.validators.instance_of(str))
    tftp_server = attr.ib(default="", validator=attr.validators.instance_of(str))
    console_after_power = attr.ib(default=False, validator=attr.validators.instance_of(bool))

    status = attr.ib(default=Status.unknown)

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.profile: BoardProfile | None = None
        self.images: ImageSet | None = None
        self.plan: BootPlan | None = None
        self.recorder: ConsoleRecorder | None = None
        self.marks: dict[str, float] = {}  # marker name -> seconds since power-on
        self.facts: dict[str, str] = {}
        self.stage_started: dict[str, float] = {}
        self._t0 = None
        self._qemu_stderr = None

    # -- configuration

    def option(self, name: str, default: str = "") -> str:
        env = self.target.env
        if env is None:
            return default
        value = env.config.get_target_option(self.target.name, name, default)
        return str(value) if value is not None else default

    def prepare(self) -> BootPlan:
        """Resolve profile, image set, DTB and plan (no power applied)."""
        if self.plan is not None:
            return self.plan
        board = self.board or self.option("xenlab_board")
        if not board:
            raise XenlabError(f"target {self.target.name}: no board profile "
                              "(set options: xenlab_board: NAME or XenStrategy board:)")
        self.profile = load_profile(board)
        self._check_uboot_driver()
        if self.tftp_server:
            try:  # it goes into a U-Boot command: an address, nothing else
                ipaddress.IPv4Address(self.tftp_server)
            except ValueError:
                raise XenlabError(f"target {self.target.name}: XenStrategy tftp_server "
                                  f"{self.tftp_server!r} is not an IPv4 address") from None
        chosen = os.environ.get("XENLAB_IMAGE_SET") or self.image_set or \
            self.option("xenlab_image_set")
        if chosen:
            self.images = ImageSet.open(Path(chosen))
        else:
            self.images = build_image_set(self.profile.arch)
        if self.images.arch != self.profile.arch:
            raise XenlabError(f"image set {self.images.dir} is {self.images.arch}, board "
                              f"{self.profile.name} is {self.profile.arch}")
        dtb = resolve_dtb(self.profile)
        self.plan = BootPlan.build(self.profile, {
            "xen": self.images.path("xen"),
            "dom0-kernel": self.images.path("dom0-kernel"),
            "dom0-ramdisk": self.images.path("dom0-rootfs.cpio.gz"),
        }, dtb)
        return self.plan

    def _check_uboot_driver(self) -> None:
        if self.uboot.prompt != self.profile.uboot.prompt:
            raise XenlabError(f"target {self.target.name}: UBootDriver prompt "
                              f"{self.uboot.prompt!r} differs from the profile's uboot.prompt "
                              f"{self.profile.uboot.prompt!r}", where=self.profile.where)
        # The profile owns the stage timeout (labgrid's 30 s default is too short under TCG).
        self.uboot.login_timeout = int(self.profile.timeout("uboot"))

    def timeout(self, stage: str) -> float:
        return self.profile.timeout(stage)

    def record_to(self, console_log: Path) -> ConsoleRecorder:
        """Write the console to `console_log` from now on (before power-on)."""
        if self.recorder is not None:
            self.recorder.close()
        self.recorder = ConsoleRecorder(self.target, console_log)
        return self.recorder

    # -- transitions

    @never_retry
    @step(args=["status"])
    def transition(self, status):
        if not isinstance(status, Status):
            status = Status[status]
        if status == Status.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status == self.status:
            return
        if status == Status.off:
            self._power_off()
        elif status == Status.uboot:
            self.transition(Status.off)
            self._to_uboot()
        elif status == Status.xen:
            if self.status != Status.uboot:
                self.transition(Status.uboot)
            self._to_xen()
        elif status == Status.dom0:
            if self.status != Status.xen:
                self.transition(Status.xen)
            self._to_dom0()
        elif status == Status.shell:
            if self.status != Status.dom0:
                self.transition(Status.dom0)
            self._to_shell()
        else:
            raise StrategyError(f"no transition found from {self.status} to {status}")
        self.status = status

    @never_retry
    def force(self, status):
        if not isinstance(status, Status):
            status = Status[status]
        self.prepare()
        self.target.activate(self.console)
        if status == Status.uboot:
            self.target.activate(self.uboot)
        elif status == Status.shell:
            self.target.activate(self.shell)
        self.status = status

    def cut_power(self) -> None:
        """Power off even when a failed transition broke the strategy.

        never_retry makes a broken strategy refuse transition("off"); with an
        external power switch that would leave the board (the bench's QEMU)
        running after the run.
        """
        try:
            self._power_off()
        except StageFailure:
            raise
        except Exception:  # the drivers around it are in a bad way; the switch still works
            self.power.off()
        self.status = Status.off

    # -- stages

    def _power_off(self) -> None:
        for drv in (self.shell, self.uboot):
            self.target.deactivate(drv)
        if self.console_after_power:
            self.target.deactivate(self.console)  # its server goes away with the board
        self.target.activate(self.power)
        try:
            self.power.off()
        except Exception as exc:
            if getattr(self.power, "_socket", None) is not None:  # QEMUDriver: as before
                raise
            raise self._failure("power", "ERROR", "power-failed",
                                f"{type(self.power).__name__}: power off failed: "
                                f"{_command_why(exc)}") from None

    @step()
    def _to_uboot(self) -> None:
        plan = self.prepare()
        self.stage_started["uboot"] = time.monotonic()
        if self.tftp is not None:
            self._stage_tftp(plan)
        # Console first, so nothing the board prints at power-on is lost.
        if not self.console_after_power:
            self._activate_console()
        self._power_on()
        if self.console_after_power:
            self._activate_console(retry_for=5.0)
        self._t0 = time.monotonic()
        self.marks.clear()
        try:
            self.target.activate(self.uboot)
        except Exception as exc:
            raise self._failure("uboot", "ERROR", "uboot-unreachable",
                                f"no U-Boot prompt {self.profile.uboot.prompt!r} within "
                                f"{self.timeout('uboot'):.0f} s ({type(exc).__name__})") from None
        self._mark("uboot")
        prelude = plan.uboot_prelude()
        if self.tftp_server:
            prelude.append(f"setenv serverip {self.tftp_server}")
        for cmd in prelude + plan.uboot_commands()[:-1]:
            self._uboot_check(cmd)

    def _stage_tftp(self, plan: BootPlan) -> None:
        try:
            self.target.activate(self.tftp)
            for name, path in plan.served_files().items():
                staged = self.tftp.stage(str(path))
                if os.path.basename(staged) != name:
                    raise XenlabError(f"TFTP staged {path} as {staged}, the plan loads {name}")
        except XenlabError:
            raise
        except Exception as exc:  # a full or unwritable directory, the exporter's SSH
            raise self._failure("uboot", "ERROR", "tftp-stage-failed",
                                f"TFTP provider {self.tftp.provider.internal}: cannot stage "
                                f"the boot files: {_one_line(exc)}") from None

    def _activate_console(self, retry_for: float = 0.0) -> None:
        """Connect the console, or fail as the lab's ERROR naming the port."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                self.target.activate(self.console)
                return
            except Exception as exc:  # pyserial's SerialException, a refused socket
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                port = getattr(self.console, "port", None)
                where = (f"{type(port).__name__} {port.host}:{port.port}"
                         if hasattr(port, "host") and hasattr(port, "port") else
                         type(self.console).__name__)
                raise self._failure("power" if self.console_after_power else "uboot",
                                    "ERROR", "console-unreachable",
                                    f"console {where} unreachable: {_one_line(exc)}") from None

    def _uboot_check(self, cmd: str) -> None:
        try:
            out, _, code = self.uboot.run(cmd, timeout=int(self.timeout("uboot")))
        except TIMEOUT:
            raise self._failure("uboot", "ERROR", "uboot-command-timeout",
                                f"U-Boot command {cmd!r} did not return") from None
        if code != 0:
            text = "\n".join(out)
            classification = "uboot-command-failed"
            status = "ERROR"
            for mon in MONITORS:
                if mon.regex.search(text):
                    status, classification = mon.status, mon.classification.format(guest="dom0")
            if cmd.split()[0] in ("tftpb", "tftpboot") and classification == "uboot-command-failed":
                classification = "tftp-load-failed"
                # Not one block came (the progress is '#'s after "Loading:").
                if "Retry count exceeded" in text and not re.search(r"(?m)^(Loading:|[ \t]).*#",
                                                                    text):
                    raise self._failure("uboot", "ERROR", "tftp-server-unreachable",
                                        f"TFTP server {self.tftp_server or 'serverip'} did not "
                                        f"answer {cmd!r}", out[-10:])
            raise self._failure("uboot", status, classification,
                                f"U-Boot command {cmd!r} failed (status {code})", out[-10:])

    @step()
    def _to_xen(self) -> None:
        self.stage_started["xen"] = time.monotonic()
        self.console.sendline(self.plan.uboot_commands()[-1])
        self.target.deactivate(self.uboot)
        m = self._wait("xen", *STAGE_MARKERS["xen"][0])
        self.facts["xen_version"] = m.group(1).decode() if isinstance(m.group(1), bytes) \
            else m.group(1)
        self._wait("xen", *STAGE_MARKERS["xen"][1])

    @step()
    def _to_dom0(self) -> None:
        self.stage_started["dom0"] = time.monotonic()
        for name, pattern in STAGE_MARKERS["dom0"]:
            self._wait("dom0", name, pattern.format(ready=re.escape(self.images.dom0_ready_marker)))

    @step()
    def _to_shell(self) -> None:
        self.stage_started["shell"] = time.monotonic()
        # The prompt within the shell stage's own timeout, monitors watching;
        # then the driver takes over the console.
        self._wait("shell", "dom0-prompt", self.shell.prompt)
        try:
            self.target.activate(self.shell)
        except (TIMEOUT, EOF):
            raise self._failure("shell", "FAIL", "stage-timeout:shell",
                                "the Dom0 shell on hvc0 does not answer") from None

    # -- waiting with monitors

    def _wait(self, stage: str, name: str, pattern: str):
        """Wait for `pattern`; fail at once on a monitor, on silence past the stage timeout."""
        monitors = [m for m in MONITORS if not (m.after_boot and stage == "uboot")]
        patterns = [pattern] + [m.live_pattern for m in monitors]
        deadline = self.stage_started[stage] + self.timeout(stage)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._stage_timeout(stage, name)
            try:
                index, _, match, _ = self.console.expect(patterns, timeout=min(left, 5.0))
            except TIMEOUT:
                self._check_alive(stage)
                continue
            except EOF:
                raise self._failure(stage, "ERROR", "console-lost",
                                    f"console closed while waiting for {name}") from None
            except OSError as exc:  # pyserial's SerialException, a reset socket
                self._check_alive(stage)
                raise self._failure(stage, "ERROR", "console-lost",
                                    f"console lost while waiting for {name}: {exc}") from None
            if index == 0:
                self._mark(name)
                return match
            mon = monitors[index - 1]
            self._settle()  # the lines after a panic say why
            raise self._failure(stage, mon.status, mon.classification.format(guest="dom0"),
                                f"waiting for {name}: console shows {mon.regex.pattern!r}")

    def _stage_timeout(self, stage: str, name: str) -> StageFailure:
        self._check_alive(stage)
        return self._failure(stage, "FAIL", f"stage-timeout:{stage}",
                             f"no {name} within the {stage} stage's "
                             f"{self.timeout(stage):.0f} s")

    def _check_alive(self, stage: str) -> None:
        child = getattr(self.power, "_child", None)
        if child is not None and child.poll() is not None:
            raise self._failure(stage, "ERROR", "board-died",
                                f"QEMU exited with status {child.returncode}"
                                + self._stderr_tail())

    def _settle(self) -> None:
        with contextlib.suppress(Exception):
            self.console.settle(1.0, timeout=3.0)

    def _mark(self, name: str) -> None:
        if self._t0 is not None:
            self.marks[name] = round(time.monotonic() - self._t0, 2)

    def _failure(self, stage, status, classification, message, evidence=None) -> StageFailure:
        if evidence is None:
            evidence = self.recorder.tail(15) if self.recorder else []
        return StageFailure(stage, status, classification, message, evidence)

    # -- power

    def _power_on(self) -> None:
        """Power on; for QEMUDriver, guard labgrid's accept() and keep QEMU's stderr.

        labgrid's QEMUDriver.on() blocks in accept() forever when QEMU dies on a
        bad argument, and its stderr is the pytest process's (../shared/notes/labgrid.md).
        """
        sock = getattr(self.power, "_socket", None)
        if not isinstance(sock, socket.socket):
            try:
                self.power.on()
            except Exception as exc:
                raise self._failure("power", "ERROR", "power-failed",
                                    f"{type(self.power).__name__}: power on failed: "
                                    f"{_command_why(exc)}") from None
            return
        self._qemu_stderr = tempfile.TemporaryFile()
        saved = os.dup(2)
        sock.settimeout(self.timeout("uboot"))
        started = threading.Event()
        previous = getattr(self.power, "_child", None)

        def watch():
            # QEMU that exits before connecting: unblock accept() at once by
            # connecting in its place (labgrid then sees the dead child's error).
            while not started.wait(0.1):
                child = getattr(self.power, "_child", None)
                if child is not None and child is not previous and child.poll() is not None:
                    with contextlib.suppress(OSError), \
                            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stand_in:
                        stand_in.connect(sock.getsockname())
                    return

        watchdog = threading.Thread(target=watch, daemon=True)
        watchdog.start()
        try:
            os.dup2(self._qemu_stderr.fileno(), 2)  # QEMU inherits this as its stderr
            self.power.on()
        except Exception as exc:
            os.dup2(saved, 2)
            raise self._failure("power", "ERROR", "qemu-start-failed",
                                f"QEMU did not start ({type(exc).__name__})" +
                                self._stderr_tail()) from None
        finally:
            started.set()
            os.dup2(saved, 2)
            os.close(saved)
            with contextlib.suppress(OSError):
                sock.settimeout(None)

    def _stderr_tail(self) -> str:
        if self._qemu_stderr is None:
            return ""
        child = getattr(self.power, "_child", None)
        if child is not None:
            with contextlib.suppress(Exception):
                child.wait(timeout=2)
        self._qemu_stderr.seek(0)
        text = self._qemu_stderr.read().decode(errors="replace").strip()
        return f": {text.splitlines()[-1]}" if text else ""


def stage_failure(exc: BaseException, stage: str, evidence=()) -> StageFailure:
    """The StageFailure behind what `transition` raised.

    labgrid's never_retry wraps each nested transition in a StrategyError, so
    the real cause sits at the end of the chain; a configuration mistake is the
    harness's, anything else unexpected a harness error at `stage`.
    """
    cause = exc
    while isinstance(cause, StrategyError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, StageFailure):
        return cause
    if isinstance(cause, XenlabError):
        return StageFailure("prepare", "ERROR", "harness-config", str(cause))
    return StageFailure(stage, "ERROR", "harness-error", f"{type(cause).__name__}: {cause}",
                        list(evidence))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _command_why(exc: BaseException) -> str:
    """An external command's own last line says why (bench-qemu, a PDU script)."""
    out = getattr(exc, "output", None)
    text = out.decode(errors="replace") if isinstance(out, bytes) else str(out or "")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else _one_line(exc)
