#!/usr/bin/env python3
"""Console reading before and after issues 16 and 13, side by side in one run.

    bench/console.py [--size BYTES] [--timeout S] [--ingest MB]

For each pathological pattern, the seconds to clean and classify `--size`
bytes of it with labgrid's re_vt100 and the per-line classifier (before) and
with xenlab's one-pass readers (after); then a flooded TCP console read
through labgrid's PtxExpect (whole-buffer search, a byte per read) and through
WindowedExpect.  "> T" means the old reader was stopped after T seconds.

Last, ingestion through a real ser2net (issue 13): `--ingest` MB of a recorded
console flooded into ser2net's connector (a TCP server for raw, a pty for RFC
2217), read by labgrid's SerialDriver over NetworkSerialPort with labgrid's
stock reads (old) and with xenlab's as XenStrategy connects the console (new),
in bytes/s of what the console recorder got; old stops after --timeout s.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from labgrid.util import re_vt100  # noqa: E402

from pexpect import TIMEOUT  # noqa: E402
from support.serialflood import console_text, flooded_console  # noqa: E402
from test_console_linear import PATHOLOGICAL, FloodingBoard  # noqa: E402
from xenlab.console_text import body  # noqa: E402
from xenlab.lab import diagnose, monitors  # noqa: E402
from xenlab.lab import console as lab_console  # noqa: E402


# The monitors as they were: an unbounded "Assertion '.+' failed".
OLD_MONITORS = [re.compile(m.regex.pattern.replace(".{1,200}?", ".+")) for m in monitors.MONITORS]
OLD_TOOLSTACK = re.compile(r"domain creation fail: Permission denied|xc_\w+: .*Permission denied|"
                           r"libxl: error: .*(?:version|Permission denied)")


def old_classify(text: str) -> None:
    """The per-line reading before issue 16: labgrid's re_vt100, every monitor on every line."""
    lines = [line.rstrip() for line in re_vt100.sub("", text).replace("\r", "").split("\n")]
    for line in (line for line in lines if line.strip()):
        for regex in OLD_MONITORS:
            if regex.search(body(line)):
                return
    OLD_TOOLSTACK.search(text)


class _Stop(BaseException):
    pass


def timed(fn, limit: float) -> float | None:
    def alarm(*_):
        raise _Stop()
    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    t0 = time.perf_counter()
    try:
        fn()
        return time.perf_counter() - t0
    except _Stop:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def show(seconds: float | None, limit: float) -> str:
    return f"> {limit:.0f}" if seconds is None else f"{seconds:.3f}"


FLOOD_END = b"\r\nXENLAB-FLOOD-END\r\n"


def ingest(protocol: str, windowed: bool, payload: bytes, limit: float) -> tuple[float, bool]:
    """(bytes/s, every byte intact) reading `payload` through ser2net's `protocol` port."""
    with tempfile.TemporaryDirectory() as tmp, \
            flooded_console(protocol, Path(tmp), windowed) as (console, uart):
        record = Path(tmp) / "console.log"
        recorder = lab_console.ConsoleRecorder(console.target, record)
        uart.flood(payload)
        t0 = time.monotonic()
        try:
            # What XenStrategy waits with in its U-Boot stage: a marker and the
            # monitors (a console repeated from its start is a reset loop after boot).
            console.expect([FLOOD_END.strip().decode()] +
                           [m.live_pattern for m in monitors.MONITORS if not m.after_boot],
                           timeout=limit)
        except TIMEOUT:
            pass
        seconds = time.monotonic() - t0
        recorder.close()
        got = record.read_bytes()
    return len(got) / seconds, got == payload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--ingest", type=float, default=4.0, metavar="MB")
    args = parser.parse_args()
    failed = []  # the measurements of xenlab's own readers that did not complete
    print(f"{'pattern':18} {'before s':>9} {'after s':>9} {'ratio':>7}")
    for name, piece in PATHOLOGICAL.items():
        text = (piece * (args.size // len(piece) + 1))[:args.size]

        old = timed(lambda: old_classify(text), args.timeout)
        new = timed(lambda: (monitors.classify(text, "dom0"),
                             diagnose.toolstack_signature(text)), args.timeout)
        ratio = "-" if old is None or not new else f"{old / new:.1f}x"
        if new is None:
            failed.append(f"classifying {name}")
        print(f"{name:18} {show(old, args.timeout):>9} {show(new, args.timeout):>9} {ratio:>7}",
              flush=True)

    print("\nflooded TCP console (labgrid SerialDriver), a line of 'a' * 79 repeated:")
    from labgrid import Target
    from labgrid.driver import SerialDriver
    from labgrid.resource import NetworkSerialPort
    junk = (b"a" * 79 + b"\n") * (args.size // 80)
    patterns = [r"Xen version \S+"] + [m.live_pattern for m in monitors.MONITORS]
    for label, windowed in (("PtxExpect (labgrid)", False), ("WindowedExpect", True)):
        board = FloodingBoard(junk, b"\r\nXen version 4.17.5\r\n")
        target = Target(f"flood-{windowed}")
        NetworkSerialPort(target, name=None, host="127.0.0.1", port=board.port, protocol="raw")
        console = SerialDriver(target, name=None)
        if windowed:
            lab_console.bound_search_window(console)
        target.activate(console)
        seconds = timed(lambda: console.expect(patterns, timeout=args.timeout * 2), args.timeout)
        target.deactivate(console)
        print(f"  {label:22} {show(seconds, args.timeout):>9} s", flush=True)
        if windowed and seconds is None:
            failed.append("WindowedExpect never found the marker in the flood")

    payload = console_text(int(args.ingest * 1e6)) + FLOOD_END
    print(f"\n{len(payload) / 1e6:.1f} MB of console through ser2net into SerialDriver:")
    print(f"  {'protocol':9} {'old MB/s':>9} {'new MB/s':>9} {'ratio':>7}  new intact")
    for protocol in ("raw", "rfc2217"):
        old, _ = ingest(protocol, False, payload, args.timeout)
        new, intact = ingest(protocol, True, payload, args.timeout)
        print(f"  {protocol:9} {old / 1e6:9.3f} {new / 1e6:9.3f} {new / old:6.0f}x  {intact}",
              flush=True)
        if not intact:
            failed.append(f"{protocol}: the console log is not the bytes sent")
    for what in failed:
        print(f"bench/console.py: FAILED: {what}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
