"""A replayed board for fault injection: a real QEMU console transcript served on
a TCP port (labgrid NetworkSerialPort + SerialDriver), with faults injected.

It answers like the real thing where the harness types: U-Boot's prompt and
labgrid's marker-framed commands, and the Dom0 shell's `_x` frames. Power is a
control port that ExternalPowerDriver pokes. Test-only: never a board.
"""

from __future__ import annotations

import random
import re
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

SHELL_OUTPUT = {
    "id -u": "0",
    "xl info": "host                   : dom0\nrelease                : 6.1.0-50-cloud-arm64\n"
               "xen_version            : 4.17.5\nnr_cpus                : 2\n"
               "xen_caps               : xen-3.0-aarch64 xen-3.0-armv7l",
    "xl create /root/guest.cfg": "Parsing config from /root/guest.cfg",
    "xl domid guest": "1",
    # What xenctx shows for a guest that trapped before its console came up (seed §10.1).
    "xenctx 1": "PC:       0000000c\nLR:       00000000\nSP:       00000000\nCPSR:     000001d3",
    "xl dmesg": "(XEN) Xen version 4.17.5 (Debian 4.17.5+72-g01140da4e8-1)",
    "xl list": "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
               "Domain-0                                     0   512     1     r-----       3.1",
}

PANIC_XEN = ["(XEN) ****************************************", "(XEN) Panic on CPU 0:",
             "(XEN) Injected by xenlab's fault tests", "(XEN) ****************************************",
             "(XEN) Manual reset required ('noreboot' specified)"]
PANIC_DOM0 = ["[    1.234567] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
              "[    1.234600] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-50-cloud-arm64 #1"]

NOISE = ("(XEN) d0v0: vGICD: unhandled word write 0x000000ffffffff to ICACTIVER4",
         "[   12.345678] xen:balloon: Cannot add additional memory (-22)",
         "[   12.400001] random: crng init done")

SCENARIOS = ("noisy-shell", "domu-silent", "clean", "hang-uboot", "hang-xen", "hang-dom0", "hang-shell", "xen-panic",
             "dom0-panic", "garbage", "uboot-reset", "eof", "tftp-missing",
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


def _lines(path: Path) -> list[str]:
    lines = [l.rstrip("\r") for l in path.read_text(errors="replace").split("\n")]
    return [l for l in lines if l.strip()]


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
    elif scenario == "xen-panic":
        boot, shell = boot[:idx["xen"] + 5] + PANIC_XEN, False
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
    elif scenario == "dom0-panic":
        boot, shell = boot[:idx["linux"] + 30] + PANIC_DOM0, False
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
                out, status = "TFTP error: 'File not found' (1)\r\nNot retrying...\r\n", 1
            self._send(f"{marker}\r\n{out}{status}\r\n{marker}\r\n".encode() + UBOOT_PROMPT)
            return
        plain = re.match(r"echo '(\w+)''(\w+)'$", line)
        if plain:
            self._send(f"{plain.group(1)}{plain.group(2)}\r\n".encode())
        self._send(UBOOT_PROMPT)

    def _tftp(self, name: str) -> tuple[str, int]:
        """What U-Boot 2023.01's tftpb prints for a file the server has, or does not."""
        for d in self.serve:
            path = Path(d) / name
            if path.is_file():
                size = path.stat().st_size
                return (f"Using virtio-net#32 device\r\nTFTP from server 10.0.2.2; our IP address "
                        f"is 10.0.2.15\r\nFilename '{name}'.\r\nLoading: ##########\r\n\t "
                        f"40 MiB/s\r\ndone\r\nBytes transferred = {size} ({size:x} hex)\r\n"), 0
        return "TFTP error: 'File not found' (1)\r\nNot retrying...\r\n", 1

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
                cmd = m.group(2)
                out = SHELL_OUTPUT.get(cmd)
                status = 0 if out is not None else 127
                out = out if out is not None else f"sh: {cmd.split()[0]}: not found"
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
