"""Xen's console UART and its speed: from the profile, else from the DTB's stdout-path.

Xen itself falls back to /chosen/stdout-path when `dtuart=` is not given, so a
profile need not repeat what the DTB says.  The options after `:`
(`serial2:1500000n8`) are not part of a `dtuart` value: they are the speed the
firmware set the UART to, which is what the lab's serial port must use too.
"""

from __future__ import annotations

import re

import attr

from ..errors import XenlabError
from .dtb import DtbInfo
from .profile import BoardProfile

DEFAULT_BAUDRATE = 115200  # what U-Boot and Linux use when nothing says otherwise
_OPTIONS = re.compile(r"^(\d+)")
# What may follow `dtuart=` on Xen's command line: an alias or a node path, one word.
DTUART_RE = re.compile(r"^([a-z][a-z0-9_-]*|/[^\s\"'$;\\#:]*)$")  # "115200n8": baud, then parity, bits, flow


@attr.s(frozen=True, auto_attribs=True)
class ConsoleUart:
    dtuart: str | None  # the alias or path for `dtuart=`; None when nothing names one
    dtuart_from: str  # "profile" or "stdout-path"
    stdout_options: str  # stdout-path's options after ':' ("" without)
    stdout_baudrate: int | None  # the speed those options give, if any
    baudrate: int
    baudrate_from: str  # "profile", "stdout-path" or "default"


def console_uart(profile: BoardProfile, info: DtbInfo) -> ConsoleUart:
    options = info.stdout_options()
    if profile.dtuart:
        dtuart, dtuart_from = profile.dtuart, "profile"
    else:
        dtuart, dtuart_from = info.stdout_path(), "stdout-path"
    m = _OPTIONS.match(options)
    said = int(m.group(1)) if m else None
    if profile.baudrate:
        baud, baud_from = profile.baudrate, "profile"
    elif said:
        baud, baud_from = said, "stdout-path"
    else:
        baud, baud_from = DEFAULT_BAUDRATE, "default"
    return ConsoleUart(dtuart, dtuart_from, options, said, baud, baud_from)


def require_dtuart(uart: ConsoleUart, profile: BoardProfile) -> str:
    """The dtuart the boot plan writes, or one line saying what to add to the profile."""
    if not uart.dtuart:
        raise XenlabError("key 'dtuart' is not set and the DTB's /chosen has no stdout-path: "
                          "name Xen's console UART (an /aliases name or a full node path, seed §8.6)",
                          where=profile.where)
    if not DTUART_RE.match(uart.dtuart):
        raise XenlabError(f"the DTB's /chosen/stdout-path {uart.dtuart!r} is not an alias or a "
                          "node path that can go on Xen's command line: set key 'dtuart'",
                          where=profile.where)
    return uart.dtuart
