#!/usr/bin/env python3
"""Record the real QEMU board's console with one thing broken (tests/data/README.md).

    .venv/bin/python scripts/record-console.py tests/data/qemu-arm64-early-trap.log

Boots `qemu-arm64` of farm.yaml (Debian's U-Boot 2023.01 and Xen 4.17.5, the bundled
set) through xenlab's own strategy and writes every byte its console prints, as a run
does (ConsoleRecorder), while it:

- asks U-Boot for a file its TFTP server does not have (U-Boot's TFTP error);
- boots Xen and Dom0 to the shell and asks what the smoke test and the diagnosis ask
  (`id -u`, `xl info`, `xl list`);
- writes into Dom0 a 48-byte arm32 zImage whose first store goes to 0x1c090000, a
  physical UART no DomU can see (the seed's CONFIG_DEBUG_LL DomU, §10.1), creates the
  guest with it instead of its kernel, and runs what xenlab's diagnosis of a silent DomU
  runs: `xl domid guest`, `xenctx 1`, `xl dmesg`.

The fake board of the fault tests (tests/support/fakeboard.py) replays these replies.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from labgrid import Environment  # noqa: E402

# The DomU that traps before its console: the store to a UART it cannot see aborts, and
# with no vectors set up the guest's PC ends at the prefetch abort vector, 0x0000000c.
TRAP_ZIMAGE_S = """
    .arm
start:
    ldr r0, uart            @ DEBUG_LL's early UART, a physical address of the host
    mov r1, #0x58
    str r1, [r0]
    b .
uart:
    .word 0x1c090000
    .org 0x24
    .word 0x016f2818        @ zImage magic (Xen's and libxl's zImage32 probe)
    .word 0                 @ start
    .word end - start       @ end
    .word 0
end:
"""
MISSING = "missing/dom0-kernel"


def trap_zimage(tmp: Path) -> bytes:
    src, obj, out = tmp / "trap.S", tmp / "trap.o", tmp / "trap.zImage"
    src.write_text(TRAP_ZIMAGE_S)
    subprocess.run(["arm-linux-gnueabihf-as", "-o", str(obj), str(src)], check=True)
    subprocess.run(["arm-linux-gnueabihf-objcopy", "-O", "binary", str(obj), str(out)], check=True)
    return out.read_bytes()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        image = trap_zimage(Path(tmp))
    env = Environment(str(REPO / "farm.yaml"))
    target = env.get_target("qemu-arm64")
    strategy = target.get_driver("XenStrategy")
    strategy.record_to(out)
    try:
        strategy.transition("uboot")
        _, _, code = strategy.uboot.run(f"tftpb 0x70000000 {MISSING}", timeout=60)
        assert code != 0, "the TFTP server had the file"
        strategy.transition("shell")
        shell = strategy.shell
        for cmd in ("id -u", "xl info", "xl list"):
            shell.run_check(cmd, timeout=60)
        octal = "".join(f"\\{b:03o}" for b in image)
        shell.run_check(f"printf '{octal}' > /root/trap.zImage", timeout=30)
        shell.run_check("xl create /root/guest.cfg 'kernel=\"/root/trap.zImage\"' 'disk=[]' "
                        "'vif=[]'", timeout=120)
        shell.run("sleep 2", timeout=30)
        for cmd in ("xl list", "xl domid guest", "xenctx 1", "xl dmesg"):
            shell.run(cmd, timeout=60)
        shell.run("xl destroy guest", timeout=60)
    finally:
        strategy.cut_power()
        strategy.recorder.close()
    print(f"recorded {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
