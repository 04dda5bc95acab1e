"""Diagnosis on the live board when a step fails; everything lands in diagnostics/.

- Xen or Dom0 hung: switch the console to Xen (Ctrl-a three times) and capture
  debug keys, as OSSTest does.
- A silent DomU: `xenctx` on its domid; PC 0x0000000c is an early trap, the
  seed's CONFIG_DEBUG_LL pitfall (§10.1).
- With a working Dom0 shell: `xl dmesg`, `xl list`, and /var/log/xen/*.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

from pexpect import TIMEOUT

from ..console_text import clean, clean_lines
from ..errors import Severity
from ..images.cache import atomic_write
from ..images.imageformat import xen_line
from ..plan.doctor import console_findings
from ..plan.uart import console_uart
from ..plan.dtb import DtbInfo

DEBUG_KEYS = "hqr0"  # help, domain info, run queues, dump registers of all CPUs
EARLY_TRAP = re.compile(r"\bPC:\s*(?:0x)?0*c\b", re.IGNORECASE)
SEED_EARLY_TRAP = ("seed §10.1: PC 0x0000000c is an early trap: a DomU kernel built with "
                   "CONFIG_DEBUG_LL pokes the host's UART, which a guest cannot see, and its "
                   "console stays silent. Rebuild the DomU kernel without CONFIG_DEBUG_LL.")


def _drain(console, quiet: float = 0.7, limit: float = 8.0) -> str:
    data, end = b"", time.monotonic() + limit
    while time.monotonic() < end:
        try:
            data += console.read(size=4096, timeout=quiet)
        except TIMEOUT:
            break
    return data.decode("utf-8", errors="replace")


def xen_debug_keys(console, keys: str = DEBUG_KEYS) -> str:
    """Ctrl-a x3 hands the serial input to Xen; each key prints its dump; x3 hands it back."""
    console.write(b"\x01\x01\x01")
    out = [_drain(console, 0.5)]
    for key in keys:
        console.write(key.encode())
        out.append(_drain(console))
    console.write(b"\x01\x01\x01")
    out.append(_drain(console, 0.5))
    return clean("".join(out))


# How a toolstack of another Xen line shows on a live board (../shared/notes/xen-build.md):
# "domain creation fail: Permission denied", "xc_<call>: ... Permission denied", or
# "libxl: error: ..." naming a version or a refusal.  Read with substring finds and
# one bounded pattern, so a console flooded with "xc_x: " stays linear.
_XC_CALL = re.compile(r"xc_\w{1,64}: ")
_DENIED = "Permission denied"


def toolstack_signature(text: str) -> bool:
    """Whether `xl`'s output shows its hypercalls refused by another Xen's hypervisor."""
    for line in text.split("\n"):
        denied = line.rfind(_DENIED)
        if denied >= 0 and ("domain creation fail: " + _DENIED in line
                            or _XC_CALL.search(line, 0, denied)):
            return True
        libxl = line.find("libxl: error: ")
        if libxl >= 0 and ("version" in line[libxl:] or _DENIED in line[libxl:]):
            return True
    return False


def toolstack_mismatch(hypervisor: str | None, tools: str | None, text: str) -> str | None:
    """Why `xl` fails when the hypervisor and the Dom0 toolstack are of different Xens, or None.

    The versions decide when both are known (the console's banner, the image set's
    tools); otherwise the signature in what `xl` printed does.
    """
    differ = bool(hypervisor and tools and xen_line(hypervisor) != xen_line(tools))
    if not differ and not toolstack_signature(text):
        return None
    versions = f"hypervisor Xen {hypervisor}, Dom0 toolstack Xen {tools}" if differ else \
        "xl's hypercalls are refused"
    return (f"toolstack mismatch ({versions}): Xen's domctl interface is not stable across "
            "releases, so xl fails (`xl info`, `domain creation fail: Permission denied`); "
            "build hypervisor and tools from one source with --xen-source")


EARLY_PRINTK = ("a debug Xen with early printk shows how far it gets: --xen-source with "
                "--xen-config debug and an earlyprintk fragment for this UART "
                "(hypervisor/configs/earlyprintk-qemu-virt.config is QEMU virt's PL011)")


def silent_xen(prepared, console_text: str) -> str | None:
    """Why Xen printed nothing after U-Boot started it, from the board's own DTB; None if it spoke.

    The seed's §8.6: a `dtuart` alias missing from the DTB loses Xen's console
    without a word.  The doctor's console checks on the same profile and DTB say
    which fix applies (the alias that exists, or the full path).
    """
    lines = clean_lines(console_text)
    start = next((i for i in range(len(lines) - 1, -1, -1) if "Starting kernel" in lines[i]), None)
    if start is None or any("(XEN)" in l or "Xen version" in l for l in lines[start + 1:]):
        return None
    why = f"Xen printed nothing after {lines[start].strip()!r}"
    dtuart = prepared.profile.dtuart
    try:
        info = DtbInfo.load(prepared.dtb)
        dtuart = console_uart(prepared.profile, info).dtuart
        found = [f for f in console_findings(prepared.profile, info)
                 if f.severity in (Severity.ERROR, Severity.WARN)]
    except Exception:  # a diagnosis never hides the failure: the generic hint stays
        found = []
    if found:
        return f"{why}: {found[0].message}; {found[0].hint}"
    return (f"{why} (seed §8.6): dtuart={dtuart} resolves in the DTB, so check "
            f"that Xen has a driver for that UART and that it is the one the lab's cable is on; "
            f"{EARLY_PRINTK}")


class Diagnosis:
    """Collects what explains a failure of `board` into `dest`."""

    def __init__(self, strategy, dest: Path):
        self.strategy = strategy
        self.dest = Path(dest)
        self.notes: list[str] = []

    def save(self, name: str, text: str) -> None:
        atomic_write(self.dest / name, text)
        self.notes.append(name)

    def hung_hypervisor_or_dom0(self) -> None:
        console = self.strategy.console
        with contextlib.suppress(Exception):
            self.save("xen-debug-keys.txt", xen_debug_keys(console))

    def silent_domu(self, domain: str) -> tuple[str, str] | None:
        """Leave the guest's console, run xenctx; (classification, hint) for an early trap."""
        shell = self.strategy.shell
        shell.abandon_guest()  # out of `xl console`, back to Dom0
        try:
            out, _, status = shell.run(f"xl domid {domain}", timeout=20)
        except Exception:
            return None
        if status != 0 or not out or not out[-1].strip().isdigit():
            self.save("xl-domid.txt", "\n".join(out))
            return None
        domid = out[-1].strip()
        out, _, _ = shell.run(f"xenctx {domid}", timeout=30)
        text = "\n".join(out)
        self.save(f"xenctx-d{domid}.txt", text)
        if EARLY_TRAP.search(text):
            return "domu-early-trap", SEED_EARLY_TRAP
        return None

    def dom0_logs(self) -> None:
        shell = self.strategy.shell
        for name, cmd in (("xl-dmesg.txt", "xl dmesg"), ("xl-list.txt", "xl list"),
                          ("var-log-xen.txt",
                           "for f in /var/log/xen/*; do [ -f \"$f\" ] && echo \"== $f\" && cat \"$f\"; done")):
            with contextlib.suppress(Exception):
                out, _, _ = shell.run(cmd, timeout=30, raw=True)
                self.save(name, "\n".join(out) + "\n")
