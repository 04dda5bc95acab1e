"""XenStrategy: power a board and walk it off -> uboot -> xen -> dom0 -> shell.

A labgrid strategy, as small as labgrid's own: a state enum, a table of what
lies below each state, and one step per state.  Each stage waits for its
markers with its own timeout (the board profile's, times its multiplier)
while the console monitors watch for what must never appear; a failure is a
`StageFailure` naming the stage, classified by `monitors.classify` from the
console lines that prove it.  What the board needs is prepared beforehand by
`xenlab.plan.prepare`; the strategy builds nothing itself.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import time
from pathlib import Path

import attr
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy.common import Strategy, StrategyError, never_retry
from pexpect import EOF, TIMEOUT

from ..errors import StageFailure, XenlabError
from ..plan.prepare import PreparedBoard, prepare
from . import delivery
from .console import ConsoleRecorder, bound_search_window, console_where
from .failures import command_why, one_line
from . import loaderfile, sdcard  # noqa: F401  (register their resources and drivers for farm files)
from .monitors import (MONITORS, STAGE_MARKERS, alarm_failure, closed_failure, uboot_reply_failure,
                       xen_markers)


class BoardState(enum.Enum):
    unknown = 0
    off = 1
    uboot = 2
    xen = 3
    dom0 = 4
    shell = 5


# The state graph: each state is entered from the one below it.
BELOW = {
    BoardState.uboot: BoardState.off,  # power cycled on every entry
    BoardState.xen: BoardState.uboot,
    BoardState.dom0: BoardState.xen,
    BoardState.shell: BoardState.dom0,
}


@target_factory.reg_driver
@attr.s(eq=False)
class XenStrategy(Strategy):
    """Boots Xen, Dom0 and a shell on a board described by a xenlab board profile.

    Args:
        board (str): board profile name (boards/<board>.yaml); defaults to the
            target option `xenlab_board`
        image_set (str): a built image set directory; default: XENLAB_IMAGE_SET,
            the target option `xenlab_image_set`, or the bundled set for the
            profile's arch (built or found in the cache)
        variant (str): a board variant (boards/variants/NAME.yaml); default XENLAB_VARIANT
            or the target option `xenlab_variant`; none: the dom0 smoke test
        tftp_server (str): the lab's TFTP server as the board reaches it (IPv4);
            set as U-Boot's serverip after the profile's init commands
        console_after_power (bool): the console's server only exists while the
            board is powered (the bench's QEMU `-serial tcp:...,server`):
            connect after power-on, drop the connection at power-off
        dtb_fixups (list), xen_cmdline (str), timeout_scale (float): DTB fix-ups (the
            profile's form), Xen options and a factor on the stage timeouts, where the
            board this target reaches is not the profile's own (an emulator's)
    """

    bindings = {
        "power": "PowerProtocol",
        "console": "ConsoleProtocol",
        # None: no firmware QEMU can run; QEMU's loader places the plan's files (delivery).
        "uboot": {"UBootDriver", None},
        "shell": "XenShellDriver",
        "tftp": {"TFTPProviderDriver", None},
        "sdcard": {"SDCardImageDriver", None},  # an emulated board's card, written per run
        "loader": {"QEMULoaderFileDriver", None},  # QEMU's loader list, for a power script
    }
    board = attr.ib(default="", validator=attr.validators.instance_of(str))
    image_set = attr.ib(default="", validator=attr.validators.instance_of(str))
    variant = attr.ib(default="", validator=attr.validators.instance_of(str))
    tftp_server = attr.ib(default="", validator=attr.validators.instance_of(str))
    console_after_power = attr.ib(default=False, validator=attr.validators.instance_of(bool))
    dtb_fixups = attr.ib(factory=list, validator=attr.validators.instance_of(list))
    xen_cmdline = attr.ib(default="", validator=attr.validators.instance_of(str))
    timeout_scale = attr.ib(default=1.0, converter=float,
                            validator=attr.validators.and_(attr.validators.gt(0),
                                                           attr.validators.le(100)))

    status = attr.ib(default=BoardState.unknown)

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.prepared: PreparedBoard | None = None
        self.profile = self.images = self.plan = None  # the prepared board's, once prepared
        self.recorder: ConsoleRecorder | None = None
        self.marks: dict[str, float] = {}  # marker name -> seconds since power-on
        self.facts: dict[str, str] = {}
        self.uboot_replies: list[tuple[str, list[str]]] = []  # (command, its output)
        self.stage_started: dict[str, float] = {}
        self.card = self.loader_dir = None  # an SD card written, QEMU's loader's DTB (delivery)
        self._t0 = None

    # -- configuration

    def option(self, name: str, default: str = "") -> str:
        env = self.target.env
        value = env.config.get_target_option(self.target.name, name, default) if env else None
        return str(value) if value is not None else default

    def prepare(self):
        """Profile, image set, DTB and plan, checked before any power (plan.prepare)."""
        if self.prepared is None:
            board = self.board or self.option("xenlab_board")
            if not board:
                raise XenlabError(f"target {self.target.name}: no board profile "
                                  "(set options: xenlab_board: NAME or XenStrategy board:)")
            delivery.check_tftp_server(self.target.name, self.tftp_server)
            prepared = prepare(
                board, os.environ.get("XENLAB_IMAGE_SET") or self.image_set or self.option("xenlab_image_set") or None,
                variant=os.environ.get("XENLAB_VARIANT") or self.variant or self.option("xenlab_variant") or None,
                dtb_fixups=delivery.target_fixups(self.target.name, self.dtb_fixups),
                xen_cmdline=delivery.target_xen_cmdline(self.target.name, self.xen_cmdline),
                timeout_scale=self.timeout_scale, imagebuilder=os.environ.get("XENLAB_IMAGEBUILDER") or None)
            if self.uboot is not None and self.uboot.prompt != prepared.profile.uboot.prompt:
                raise XenlabError(f"target {self.target.name}: UBootDriver prompt "
                                  f"{self.uboot.prompt!r} differs from the profile's uboot.prompt "
                                  f"{prepared.profile.uboot.prompt!r}", where=prepared.profile.where)
            self.prepared = prepared
            self.profile, self.images, self.plan = prepared.profile, prepared.images, prepared.plan
        return self.prepared.plan

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
        status = status if isinstance(status, BoardState) else BoardState[status]
        if status is BoardState.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status == self.status:
            return
        below = BELOW.get(status)
        if below is not None and self.status != below:
            self.transition(below)
        self.ENTER[status](self)
        self.status = status

    @never_retry
    def force(self, status):
        status = status if isinstance(status, BoardState) else BoardState[status]
        self.prepare()
        self.target.activate(self.console)
        if status is BoardState.uboot and self.uboot is not None:
            self.target.activate(self.uboot)
        elif status is BoardState.shell:
            self.target.activate(self.shell)
        self.status = status

    def cut_power(self) -> None:
        """Power off even when a failed transition broke the strategy.

        never_retry makes a broken strategy refuse transition("off"); with an
        external power switch that would leave the board running after the run.
        """
        try:
            self._power_off()
        except StageFailure:
            raise
        except Exception:  # the drivers around it are in a bad way; the switch still works
            self.power.off()
        self.status = BoardState.off

    # -- stages

    def _power_off(self) -> None:
        for drv in (self.shell, self.uboot):
            if drv is not None:
                self.target.deactivate(drv)
        if self.console_after_power:
            self.target.deactivate(self.console)  # its server goes away with the board
        self.target.activate(self.power)
        try:
            self.power.off()
        except Exception as exc:
            raise self._failure("power", "ERROR", "power-failed",
                                f"{type(self.power).__name__}: power off failed: "
                                f"{command_why(exc)}") from None

    @step()
    def _to_uboot(self, plan=None) -> None:
        """Power on and reach U-Boot with `plan`'s files loaded (the prepared plan, or the
        native one: lab/nativeboot.py), all but its boot command typed."""
        plan = plan or self.prepare()
        self.stage_started["uboot"] = time.monotonic()
        try:
            plan = delivery.deliver(self, plan)
        except delivery.DeliveryFailed as exc:
            raise self._failure("uboot", "ERROR", exc.classification, str(exc)) from None
        # Console first, so nothing the board prints at power-on is lost.
        if not self.console_after_power:
            self._activate_console()
        self._power_on()
        if self.console_after_power:
            self._activate_console(retry_for=5.0)
        self._t0 = time.monotonic()
        self.marks.clear()
        self.uboot_replies.clear()
        if self.uboot is None:  # QEMU placed every file: the board starts in Xen
            return
        self._reach_uboot_prompt()
        try:
            self.target.activate(self.uboot)
        except Exception as exc:  # a password prompt, a prompt that went away again
            raise self._failure("uboot", "ERROR", "uboot-unreachable",
                                f"UBootDriver did not take the prompt "
                                f"{self.profile.uboot.prompt!r}: {one_line(exc)}") from None
        self._mark("uboot")
        prelude = plan.uboot_prelude()
        if self.tftp_server:
            prelude.append(f"setenv serverip {self.tftp_server}")
        for cmd in prelude + plan.uboot_commands()[:-1]:
            self._uboot_check(cmd)

    def _reach_uboot_prompt(self) -> None:
        """Stop autoboot in the U-Boot timeout, monitors watching; the prompt is matched with
        a lookahead, so it stays in the buffer for UBootDriver (no newline, no wait of its own)."""
        u = self.profile.uboot
        prompt = f"(?={u.prompt})"
        unreachable = ("ERROR", "uboot-unreachable",
                       f"no U-Boot prompt {u.prompt!r} within {self.timeout('uboot'):.0f} s")
        m = self._wait("uboot", "uboot-autoboot", f"{re.escape(u.autoboot)}|{prompt}",
                       on_timeout=unreachable)
        if m.group(0):  # the countdown, not the prompt: any key stops it
            self.console.write(u.interrupt.encode())
            self._wait("uboot", "uboot-prompt", prompt, on_timeout=unreachable)

    def _activate_console(self, retry_for: float = 0.0) -> None:
        """Connect the console, or fail as the lab's ERROR naming the port."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                bound_search_window(self.console)  # before it opens: the RFC 2217 reader
                self.target.activate(self.console)
                return
            except Exception as exc:  # pyserial's SerialException, a refused socket
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise self._failure("power" if self.console_after_power else "uboot",
                                    "ERROR", "console-unreachable",
                                    f"console {console_where(self.console)} unreachable: "
                                    f"{one_line(exc)}") from None

    def _uboot_check(self, cmd: str) -> None:
        try:
            out, _, code = self.uboot.run(cmd, timeout=int(self.timeout("uboot")))
        except TIMEOUT:
            raise self._failure("uboot", "ERROR", "uboot-command-timeout",
                                f"U-Boot command {cmd!r} did not return") from None
        self.uboot_replies.append((cmd, list(out)))
        if code != 0:
            status, classification, message = uboot_reply_failure(cmd, "\n".join(out), code,
                                                                  self.tftp_server)
            raise self._failure("uboot", status, classification, message, out[-10:])

    @step()
    def _to_xen(self) -> None:
        self.stage_started["xen"] = time.monotonic()
        if self.uboot is not None:
            self.console.sendline(self.plan.uboot_commands()[-1])
            self.target.deactivate(self.uboot)
        m = self._wait("xen", *STAGE_MARKERS["xen"][0])
        version = m.group(1)
        self.facts["xen_version"] = version.decode() if isinstance(version, bytes) else version
        for name, pattern in xen_markers(self.plan)[1:]:
            self._wait("xen", name, pattern)

    @step()
    def _to_dom0(self) -> None:
        self.stage_started["dom0"] = time.monotonic()
        for name, pattern in STAGE_MARKERS["dom0"]:
            self._wait("dom0", name, pattern.format(ready=self.images.dom0_ready_pattern))
        if self.images.dom0_prompt:  # the tester's Dom0 rootfs: its prompt made the driver's
            if self.images.info.get("dom0_ready_marker"):
                self._wait("dom0", "dom0-prompt", self.images.dom0_prompt)
            if re.fullmatch(self.shell.prompt, "dom0# "):
                self.console.sendline("PS1='dom0''# '")  # its echo does not match the prompt

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

    ENTER = {BoardState.off: _power_off, BoardState.uboot: _to_uboot, BoardState.xen: _to_xen,
             BoardState.dom0: _to_dom0, BoardState.shell: _to_shell}

    # -- waiting with monitors

    def _wait(self, stage: str, name: str, pattern: str, on_timeout=None):
        """Wait for `pattern`; fail at once on a monitor, on silence past the stage timeout."""
        monitors = [m for m in MONITORS if not (m.after_boot and stage == "uboot")]
        patterns = [pattern] + [m.live_pattern for m in monitors]
        deadline = self.stage_started[stage] + self.timeout(stage)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._check_alive(stage)
                if on_timeout:
                    raise self._failure(stage, *on_timeout)
                raise self._failure(stage, "FAIL", f"stage-timeout:{stage}",
                                    f"no {name} within the {stage} stage's "
                                    f"{self.timeout(stage):.0f} s")
            try:
                index, _, match, _ = self.console.expect(patterns, timeout=min(left, 5.0))
            except TIMEOUT:
                self._check_alive(stage)
                continue
            except EOF:
                raise self.console_closed(stage, name) from None
            except OSError as exc:  # pyserial's SerialException, a reset socket
                self._check_alive(stage)
                raise self._failure(stage, "ERROR", "console-lost",
                                    f"console lost while waiting for {name}: {exc}") from None
            if index == 0:
                self._mark(name)
                return match
            raise self.monitor_failure(stage, name, monitors[index - 1])

    def monitor_failure(self, stage: str, name: str, mon) -> StageFailure:
        """A monitor's line ended the wait for `name`: the failure the console shows."""
        self._settle()  # the lines after a panic say why
        text = self.recorder.text() if self.recorder else ""
        return StageFailure(stage, *alarm_failure(text, self._tail(), stage, name, mon))

    def console_closed(self, stage: str, name: str) -> StageFailure:
        """The console closed while waiting for `name`: a panic it showed, or the lab's ERROR."""
        exited = getattr(self.power, "exited", lambda: None)()
        text = self.recorder.text() if self.recorder else ""
        return StageFailure(stage, *closed_failure(text, self._tail(), stage, name, exited))

    def _tail(self) -> list[str]:
        return self.recorder.tail(15) if self.recorder else []

    def _check_alive(self, stage: str) -> None:
        """A power driver that knows its board died (XenQEMUDriver.exited) says why."""
        exited = getattr(self.power, "exited", None)
        why = exited() if callable(exited) else None
        if why:
            raise self._failure(stage, "ERROR", "board-died", why)

    def _settle(self) -> None:
        with contextlib.suppress(Exception):
            self.console.settle(1.0, timeout=3.0)

    def _mark(self, name: str) -> None:
        if self._t0 is not None:
            self.marks[name] = round(time.monotonic() - self._t0, 2)

    def _failure(self, stage, status, classification, message, evidence=None) -> StageFailure:
        return StageFailure(stage, status, classification, message,
                            self._tail() if evidence is None else evidence)

    # -- power

    def _power_on(self) -> None:
        try:
            self.power.on()
        except Exception as exc:
            # XenQEMUDriver's start error says qemu-start-failed; any other switch, power-failed.
            classification = getattr(exc, "classification", "power-failed")
            raise self._failure("power", "ERROR", classification,
                                f"{type(self.power).__name__}: power on failed: "
                                f"{command_why(exc)}") from None
