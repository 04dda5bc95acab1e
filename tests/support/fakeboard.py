"""A replayed board for fault injection: a real QEMU console transcript served on
a TCP port (labgrid NetworkSerialPort + SerialDriver), with faults injected.

It answers like the real thing where the harness types: U-Boot's prompt and
labgrid's marker-framed commands, and the Dom0 shell's `_x` frames. Power is a
control port that ExternalPowerDriver pokes. Test-only: never a board.
"""

from __future__ import annotations

import random
import re
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

TRANSCRIPT = Path(__file__).resolve().parent.parent / "data" / "qemu-arm64-console.log"
DOM0_CONSTRUCTION_PANIC = TRANSCRIPT.with_name("qemu-arm64-dom0-construction-panic.log")
XEN_SILENT = TRANSCRIPT.with_name("qemu-arm64-dtuart-alias-missing.log")
WRONG_ROOT = TRANSCRIPT.with_name("qemu-arm64-wrong-root.log")
DOMAIN_KILL_ASSERT = TRANSCRIPT.with_name("qemu-arm64-domain-kill-assert.log")
TESTER_PROMPT = b"~ # "  # busybox ash's root prompt: a Dom0 rootfs xenlab did not build

UBOOT_PROMPT = b"=> "
DOM0_PROMPT = b"dom0# "

EARLY_TRAP = TRANSCRIPT.with_name("qemu-arm64-early-trap.log")


def _lines(path: Path) -> list[str]:
    lines = [l.rstrip("\r") for l in path.read_text(errors="replace").split("\n")]
    return [l for l in lines if l.strip()]


def recorded_replies(*paths: Path) -> dict[str, tuple[str, int]]:
    """Each command the harness typed in a recorded console (`_x MARK 'CMD'`), and what
    the shell answered between its frames (`=MARK=B=` ... `=MARK=E=STATUS=`): the first
    recording that has a command gives its reply."""
    replies: dict[str, tuple[str, int]] = {}
    for path in paths:
        lines = _lines(path)
        for i, line in enumerate(lines):
            typed = re.search(r"_x (\w+) ('.*')$", line)
            if not typed:
                continue
            cmd = shlex.split(typed.group(2))[0]
            mark = typed.group(1)
            begin = next((j for j in range(i, len(lines)) if lines[j] == f"={mark}=B="), None)
            end = next((j for j in range(begin or i, len(lines))
                        if lines[j].startswith(f"={mark}=E=")), None)
            if begin is None or end is None:  # it never returned: Xen panicked under it
                continue
            status = int(lines[end].split("=")[3])
            replies.setdefault(cmd, ("\n".join(lines[begin + 1:end]), status))
    return replies


def recorded_line(path: Path, pattern: str) -> str:
    """The first line of a recorded console that matches `pattern`."""
    return next(l for l in _lines(path) if re.search(pattern, l))


def uboot_reply(path: Path, command: str) -> list[str]:
    """What U-Boot printed for `command` in a recorded console, up to its next prompt."""
    lines = _lines(path)
    start = next(i for i, l in enumerate(lines) if command in l and l.startswith("=> "))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("=> "))
    # The recorded run framed the command with its echo markers: the reply is inside.
    reply = [l for l in lines[start + 1:end] if command not in l]
    return [l for l in reply if not re.fullmatch(r"[A-Z]{8,}|\d+", l)]


# Xen's and the kernel's lines that land between a shell's, recorded on the QEMU board
# (tests/data/README.md): Dom0's vGICD writes (`xl dmesg`), a DomU's PSCI probe under
# `xl create`, the kernel's RNG.
NOISE = (recorded_line(EARLY_TRAP, r"^\(XEN\) d0v0: vGICD: unhandled word write .* ICACTIVER4$"),
         recorded_line(DOMAIN_KILL_ASSERT, r"^\(XEN\) d1v0 Unhandled SMC/HVC"),
         recorded_line(TRANSCRIPT, r"random: crng init done"))

SHELL_REPLIES = recorded_replies(DOMAIN_KILL_ASSERT, EARLY_TRAP)
NOT_FOUND = "-sh: {}: not found"  # BusyBox ash's words for a command it does not have
TFTP_LOADED = uboot_reply(TRANSCRIPT, "tftpb 0x42000000 xen")
TFTP_MISSING = uboot_reply(EARLY_TRAP, "tftpb 0x70000000 missing/dom0-kernel")

SCENARIOS = ("noisy-shell", "domu-silent", "clean", "hang-uboot", "hang-xen", "hang-dom0", "hang-shell",
             "garbage", "uboot-reset", "eof", "tftp-missing",
             "xen-dom0-construction-panic", "xen-silent", "dom0-wrong-root", "tester-rootfs",
             "xen-panic-in-shell")


KEEP = re.compile(r"^\(XEN\)|Booting Linux|Linux version|Xen \d+\.\d+ support|XENLAB|Run /init")


def _segments() -> tuple[list[str], list[str]]:
    """(U-Boot up to the autoboot countdown, Xen and Dom0 up to the ready marker).

    Dom0's boot is thinned to one kernel line in four: labgrid's SerialDriver
    reads a TCP console a byte at a time (pyserial's socket `in_waiting` is 0
    or 1), which makes a full 40 kB replay take seconds.
    """
    lines = [l.rstrip("\r") for l in TRANSCRIPT.read_text(errors="replace").split("\n")]
    lines = [l for l in lines if l.strip()]
    a_end = next(i for i, l in enumerate(lines) if "Hit any key to stop autoboot" in l)
    b_start = next(i for i, l in enumerate(lines) if l.startswith("(XEN)") or "Starting kernel" in l)
    b_end = next(i for i, l in enumerate(lines) if l.startswith("XENLAB-DOM0-READY"))
    boot = [l for i, l in enumerate(lines[b_start:b_end + 1]) if KEEP.search(l) or i % 4 == 0]
    return lines[:a_end + 1], boot


def boot_stream(scenario: str) -> tuple[list[bytes], bool]:
    """The chunks the board prints after `booti`, and whether a shell follows."""
    _, boot = _segments()
    idx = {name: next(i for i, l in enumerate(boot) if pat in l) for name, pat in
           (("xen", "Xen version"), ("dom0", "LOADING DOMAIN 0"),
            ("linux", "Booting Linux"), ("ready", "XENLAB-DOM0-READY"))}
    shell = True
    if scenario == "hang-xen":  # Xen speaks, then stops
        boot, shell = boot[:idx["xen"] + 3], False
    elif scenario == "xen-silent":
        # Recorded on the QEMU board with dtuart: serial0 (virt's DTB has no /aliases):
        # U-Boot's "Starting kernel ..." and then nothing from Xen (tests/data/README.md).
        recorded = _lines(XEN_SILENT)
        start = next(i for i, l in enumerate(recorded) if "Starting kernel" in l)
        boot, shell = recorded[start:], False
    elif scenario == "hang-dom0":
        boot, shell = boot[:idx["linux"] + 20], False
    elif scenario == "hang-shell":
        shell = False
    elif scenario == "xen-dom0-construction-panic":
        # Recorded on the QEMU board with Dom0's memory_mb at 1900 of 2048 MiB: Xen panics
        # while it builds Dom0, after "LOADING DOMAIN 0" (tests/data/README).
        recorded = _lines(DOM0_CONSTRUCTION_PANIC)
        after = next(i for i, l in enumerate(recorded) if "LOADING DOMAIN 0" in l)
        boot, shell = boot[:idx["dom0"]] + recorded[after:], False
    elif scenario == "dom0-wrong-root":
        # Recorded with rdinit=/nonexistent root=/dev/vda: Linux finds neither (tests/data/README).
        recorded = _lines(WRONG_ROOT)
        start = next(i for i, l in enumerate(recorded) if "Starting kernel" in l)
        boot, shell = recorded[start:], False
    elif scenario == "tester-rootfs":
        # A Dom0 rootfs of the tester's: the same boot without xenlab's ready marker.
        boot = boot[:idx["ready"]]
    elif scenario == "uboot-reset":
        first, _ = _segments()
        boot, shell = boot[:idx["xen"] + 10] + first, False
    elif scenario == "eof":
        boot, shell = boot[:idx["linux"] + 5], False
    chunks = [(l + "\r\n").encode() for l in boot]
    if scenario == "garbage":
        rnd = random.Random(7)
        for at in (idx["xen"] + 3, idx["linux"] + 7, idx["ready"] - 2):
            chunks.insert(at, bytes(rnd.randrange(256) for _ in range(300)) + b"\r\n")
    return chunks, shell


PROFILE = Path(__file__).resolve().parent.parent / "data" / "fake-arm64.yaml"


def env_file(tmp_path: Path, board: "FakeBoard", profile: Path = PROFILE,
             power_on: str | None = None) -> Path:
    """A labgrid env for the replayed board: its console over TCP, power by poking it.

    Its TFTP root is staged by labgrid's TFTPProviderDriver, as on the QEMU farm,
    and the board's "TFTP server" answers from there.
    """
    poke = f"{sys.executable} {Path(__file__).resolve()} poke {board.control_port} %s"
    env = Path(tmp_path) / "fake.yaml"
    tftp = Path(tmp_path) / "tftp"
    board.serve = [tftp]
    env.write_text(f"""
imports: [xenlab.lab.strategy]
targets:
  fake-arm64:
    options:
      xenlab_board: {profile}
    resources:
      NetworkSerialPort: {{host: 127.0.0.1, port: {board.console_port}, protocol: raw}}
      TFTPProvider: {{internal: "{tftp}/", external: ""}}
    drivers:
      TFTPProviderDriver: {{}}
      SerialDriver: {{}}
      ExternalPowerDriver:
        cmd_on: '{power_on or poke % "on"}'
        cmd_off: '{poke % "off"}'
      UBootDriver:
        prompt: "=> "
        autoboot: "Hit any key to stop autoboot:"
      XenShellDriver:
        txdelay: 0.0
      XenStrategy: {{}}
""")
    return env


class FakeBoard:
    """Console on `console_port`, power on `control_port` ("on"/"off")."""

    def __init__(self, scenario: str, serve: list[Path] | None = None):
        assert scenario in SCENARIOS, scenario
        self.scenario = scenario
        # Where its "TFTP server" finds the files U-Boot asks for (to say their size);
        # env_file points it at the TFTP root the strategy stages into.
        self.serve = serve or []
        self._console = socket.create_server(("127.0.0.1", 0))
        self._control = socket.create_server(("127.0.0.1", 0))
        self.console_port = self._console.getsockname()[1]
        self.control_port = self._control.getsockname()[1]
        self._conn: socket.socket | None = None
        self._conn_ready = threading.Event()
        self._power = threading.Event()
        self._stop = threading.Event()
        self.received = bytearray()
        self.power_ons = 0  # "on" commands received: a run the doctor stopped has none
        self.panic_sent_at: float | None = None  # xen-panic-in-shell: when the panic went out
        for target in (self._accept_console, self._accept_control):
            threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        for s in (self._console, self._control, self._conn):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    # -- sockets

    def _accept_control(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._control.accept()
            except OSError:
                return
            with conn:
                cmd = conn.recv(16).strip()
            if cmd == b"on":
                self.power_ons += 1
                self._power_off()  # a power cycle: the last boot's thread goes first
                self._power.set()
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()
            elif cmd == b"off":
                self._power_off()

    def _accept_console(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._console.accept()
            except OSError:
                return
            self._conn = conn
            self._conn_ready.set()

    def _power_off(self) -> None:
        self._power.clear()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(5)  # it reads in short slices and sees the power go

    def _recv1(self, timeout: float | None) -> bytes | None:
        """One byte, in 0.1 s slices so a power-off ends the wait; None on timeout or off."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._conn.settimeout(0.1)
        while self._power.is_set():
            try:
                return self._conn.recv(1)
            except socket.timeout:
                if deadline is not None and time.monotonic() > deadline:
                    return None
        return None

    def _send(self, data: bytes) -> None:
        if self._power.is_set() and self._conn is not None:
            self._conn.sendall(data)

    def _readline(self, timeout: float = 30.0) -> str | None:
        buf = bytearray()
        while self._power.is_set():
            b = self._recv1(timeout)
            if not b:
                return None
            self.received += b
            if b in (b"\r", b"\n"):
                if buf:
                    return buf.decode(errors="replace")
                continue
            buf += b
        return None

    # -- the board

    def _run(self) -> None:
        self._conn_ready.wait(10)
        try:
            self._boot()
        except OSError:
            pass

    def _boot(self) -> None:
        banner, _ = _segments()
        for line in banner:
            self._send((line + "\r\n").encode())
        if self.scenario == "hang-uboot":
            return  # the countdown never ends in a prompt
        if not self._recv1(5):  # any key stops autoboot
            return
        self._send(b"\r\n" + UBOOT_PROMPT)
        while self._power.is_set():
            line = self._readline()
            if line is None:
                return
            if re.match(r"(booti|bootz) ", line):
                self._send((line + "\r\n").encode())
                self._xen_and_dom0()
                return
            self._uboot_command(line)

    def _uboot_command(self, line: str) -> None:
        self._send((line + "\r\n").encode())  # U-Boot echoes what it reads
        framed = re.match(r"echo '(\w+)''(\w+)'; (.*); echo \"\$\?\"; echo '\w+''\w+';$", line)
        if framed:
            marker = framed.group(1) + framed.group(2)
            cmd = framed.group(3)
            out, status = "", 0
            if cmd.startswith("tftpb"):
                out, status = self._tftp(cmd.split()[-1])
            if self.scenario == "tftp-missing" and cmd.startswith("tftpb") and "dom0-kernel" in cmd:
                out, status = "".join(l + "\r\n" for l in TFTP_MISSING), 1
            self._send(f"{marker}\r\n{out}{status}\r\n{marker}\r\n".encode() + UBOOT_PROMPT)
            return
        plain = re.match(r"echo '(\w+)''(\w+)'$", line)
        if plain:
            self._send(f"{plain.group(1)}{plain.group(2)}\r\n".encode())
        self._send(UBOOT_PROMPT)

    def _tftp(self, name: str) -> tuple[str, int]:
        """What U-Boot 2023.01's tftpb printed on the QEMU board for a file the server has
        (the golden console's load of `xen`, with this file's name and size), or does not
        (the early-trap recording's `missing/dom0-kernel`)."""
        for d in self.serve:
            path = Path(d) / name
            if path.is_file():
                size = path.stat().st_size
                reply = [f"Filename '{name}'." if l.startswith("Filename ") else
                         f"Bytes transferred = {size} ({size:x} hex)" if l.startswith("Bytes ")
                         else l for l in TFTP_LOADED]
                return "".join(l + "\r\n" for l in reply), 0
        return "".join(l + "\r\n" for l in TFTP_MISSING), 1

    def _xen_and_dom0(self) -> None:
        chunks, shell = boot_stream(self.scenario)
        for chunk in chunks:
            self._send(chunk)
            time.sleep(0.001)
        if self.scenario == "eof":
            self._conn.shutdown(socket.SHUT_RDWR)
            self._conn.close()
            return
        if not shell:
            return
        prompt = TESTER_PROMPT if self.scenario == "tester-rootfs" else DOM0_PROMPT
        self._send(b"\r\n\r\nBusyBox v1.35.0 built-in shell (ash)\r\n\r\n" + prompt)
        while self._power.is_set():
            line = self._readline()
            if line is None:
                return
            self._send((line + "\r\n").encode())
            if line == "PS1='dom0''# '":  # the strategy makes a foreign shell's prompt its own
                prompt = DOM0_PROMPT
            if line.startswith("xl console "):
                self._silent_guest()
                continue
            m = re.match(r"_x (\w+) '(.*)'$", line)
            if m and self.scenario == "xen-panic-in-shell" and m.group(2).startswith("xl create"):
                self._panic_in_command(m.group(1))
                return
            if m:
                cmd = shlex.split(f"'{m.group(2)}'")[0]
                # What the real shell answered to that command (recorded_replies); one it
                # was never asked answers like a shell without that command.
                out, status = SHELL_REPLIES.get(cmd, (NOT_FOUND.format(cmd.split()[0]), 127))
                body = out.replace("\n", "\r\n")
                if self.scenario == "noisy-shell":
                    # Xen and the kernel print on the same UART, between any two lines.
                    body = f"{NOISE[0]}\r\n{body}\r\n{NOISE[1]}"
                self._send(f"={m.group(1)}=B=\r\n{body}\r\n={m.group(1)}=E={status}=\r\n".encode())
            self._send(prompt)
            if self.scenario == "noisy-shell":
                self._send(f"{NOISE[2]}\r\n".encode())


    def _panic_in_command(self, marker: str) -> None:
        """What the recorded console printed when its debug Xen's domain_kill ASSERT failed
        under `xl create` (tests/data/README.md), then QEMU's -no-reboot exit: the console
        closes."""
        recorded = _lines(DOMAIN_KILL_ASSERT)
        start = next(i for i, l in enumerate(recorded) if l.startswith("Parsing config from"))
        self.panic_sent_at = time.time()  # wall clock, as the record's step times
        self._send(f"={marker}=B=\r\n".encode())
        for line in recorded[start:]:
            self._send((line + "\r\n").encode())
        time.sleep(0.2)
        self._conn.shutdown(socket.SHUT_RDWR)
        self._conn.close()

    def _silent_guest(self) -> None:
        """`xl console` on a guest that prints nothing: wait for Ctrl-] (0x1d)."""
        while self._power.is_set():
            b = self._recv1(None)
            if not b or b == b"\x1d":
                return


if __name__ == "__main__":  # power: `fakeboard.py poke PORT on|off` (ExternalPowerDriver)

    _, verb, port, what = sys.argv
    assert verb == "poke" and what in ("on", "off")
    socket.create_connection(("127.0.0.1", int(port))).sendall(what.encode())
