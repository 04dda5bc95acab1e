"""The physical floor: boot Xen through U-Boot on QEMU with a bare pexpect script.

No labgrid, no xenlab: QEMU on stdio, the U-Boot commands typed by hand, the
same markers xenlab waits for. `bench/smoke.py` runs this beside xenlab and
reports the overhead ratio. Usable alone:

    python bench/bare_boot.py IMAGE_SET_DIR [--arch arm64] [--pv]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pexpect

QEMU = {
    "arm64": ("qemu-system-aarch64", "cortex-a57", "/usr/lib/u-boot/qemu_arm64/u-boot.bin",
              "booti", "/pl061@9030000"),
    "arm32": ("qemu-system-arm", "cortex-a15", "/usr/lib/u-boot/qemu_arm/u-boot.bin",
              "bootz", "/pcie@10000000"),
}
XEN, DTB, KERNEL, RAMDISK = 0x42000000, 0x44000000, 0x46000000, 0x48000000


def send_paced(child, line: str) -> None:
    # Xen's serial input ring is small (../shared/notes/qemu-xen.md): type a
    # 32-byte chunk, then wait for its echo (at most 0.3 s) before the next one.
    data = line + "\r"
    for i in range(0, len(data), 32):
        chunk = data[i:i + 32]
        child.send(chunk)
        if i + 32 < len(data):
            try:
                child.expect_exact(chunk, timeout=0.3)
            except pexpect.TIMEOUT:
                pass


def leave_guest(child) -> None:
    # xenconsole takes Ctrl-] only when it arrives alone: resend if no prompt.
    for attempt in range(3):
        child.send("\x1d")
        try:
            child.expect("dom0# ", timeout=5)
            return
        except pexpect.TIMEOUT:
            if attempt == 2:
                raise


def run(image_dir: str, arch: str = "arm64", pv: bool = False, log=None) -> dict[str, float]:
    qemu, cpu, bios, boot, fixup = QEMU[arch]
    machine = ["-machine", "virt,virtualization=on,gic-version=2", "-cpu", cpu,
               "-smp", "2", "-m", "2048"]
    tftp = tempfile.mkdtemp(prefix="bare-tftp-")
    try:
        for name in ("xen", "dom0-kernel", "dom0-rootfs.cpio.gz"):
            os.symlink(os.path.join(os.path.abspath(image_dir), name), os.path.join(tftp, name))
        dtb = os.path.join(tftp, "virt.dtb")
        subprocess.run([qemu, *machine, "-machine", f"dumpdtb={dtb}", "-nographic"],
                       check=True, capture_output=True)
        subprocess.run(["fdtput", "-t", "s", dtb, fixup, "status", "disabled"], check=True)
        sizes = {n: os.path.getsize(os.path.join(tftp, n))
                 for n in ("xen", "virt.dtb", "dom0-kernel", "dom0-rootfs.cpio.gz")}
        t0 = time.monotonic()
        marks: dict[str, float] = {}
        child = pexpect.spawn(qemu, [*machine, "-nographic", "-monitor", "none",
                                     "-serial", "stdio", "-no-reboot", "-bios", bios,
                                     "-device", "virtio-net-pci,netdev=n0",
                                     "-netdev", f"user,id=n0,tftp={tftp}"],
                              encoding="utf-8", codec_errors="replace", timeout=120,
                              logfile=log)
        child.delaybeforesend = None  # pexpect's default 50 ms per send is not the floor

        def mark(name: str, pattern: str, timeout: int = 120) -> None:
            child.expect(pattern, timeout=timeout)
            marks[name] = round(time.monotonic() - t0, 2)

        child.expect("Hit any key to stop autoboot")
        child.send("\n")
        mark("uboot", "=> ")
        cmds = ["setenv autoload no", "dhcp", "setenv serverip 10.0.2.2",
                f"tftpb {XEN:#x} xen", f"tftpb {DTB:#x} virt.dtb",
                f"tftpb {KERNEL:#x} dom0-kernel", f"tftpb {RAMDISK:#x} dom0-rootfs.cpio.gz",
                f"fdt addr {DTB:#x}", "fdt resize 1024",
                r"fdt set /chosen \#address-cells <0x2>", r"fdt set /chosen \#size-cells <0x2>",
                'fdt set /chosen xen,xen-bootargs "console=dtuart dtuart=/pl011@9000000 '
                'dom0_mem=512M dom0_max_vcpus=1 bootscrub=0"',
                f"fdt mknode /chosen module@{KERNEL:x}",
                f'fdt set /chosen/module@{KERNEL:x} compatible "multiboot,kernel" "multiboot,module"',
                f"fdt set /chosen/module@{KERNEL:x} reg <0x0 {KERNEL:#x} 0x0 {sizes['dom0-kernel']:#x}>",
                f'fdt set /chosen/module@{KERNEL:x} bootargs "console=hvc0 earlycon=xen rdinit=/init"',
                f"fdt mknode /chosen module@{RAMDISK:x}",
                f'fdt set /chosen/module@{RAMDISK:x} compatible "multiboot,ramdisk" "multiboot,module"',
                f"fdt set /chosen/module@{RAMDISK:x} reg <0x0 {RAMDISK:#x} 0x0 {sizes['dom0-rootfs.cpio.gz']:#x}>"]
        for cmd in cmds:
            child.sendline(cmd)
            child.expect("=> ")
        child.sendline(f"{boot} {XEN:#x} - {DTB:#x}")
        mark("xen", r"Xen version 4\.17")
        mark("dom0-loading", r"LOADING DOMAIN 0")
        mark("dom0-linux", r"Booting Linux")
        mark("dom0-ready", "XENLAB-DOM0-READY")
        child.expect("dom0# ")
        marks["dom0-shell"] = round(time.monotonic() - t0, 2)

        def sh(cmd: str, wait: str = "dom0# ", timeout: int = 120) -> None:
            send_paced(child, cmd)
            child.expect(wait, timeout=timeout)

        sh("xl info")
        sh("xl list")
        marks["xl-list"] = round(time.monotonic() - t0, 2)
        sh("xl create /root/guest.cfg")
        send_paced(child, "xl console guest")
        child.expect("XENLAB-DOMU-READY")
        child.send("\r")
        mark("domU-shell", "domU# ")
        sh("hostname", "domU# ")
        leave_guest(child)
        if pv:
            send_paced(child, "xl console guest")
            child.send("\r")
            child.expect("domU# ")
            sh("mount /dev/xvda /mnt && cat /mnt/marker", "domU# ")
            sh("echo bare > /mnt/from-domU && umount /mnt && sync", "domU# ")
            leave_guest(child)
            sh("mount -o ro /dev/loop0 /mnt && cat /mnt/from-domU && umount /mnt")
            marks["pv-block"] = round(time.monotonic() - t0, 2)
            for cmd in ("brctl addbr xenbr0", "ip addr add 192.168.100.1/24 dev xenbr0",
                        "ip link set xenbr0 up", "xl network-attach guest bridge=xenbr0"):
                sh(cmd)
            send_paced(child, "xl console guest")
            child.send("\r")
            child.expect("domU# ")
            sh("i=0; until [ -e /sys/class/net/eth0 ] || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done;"
               " ip addr add 192.168.100.2/24 dev eth0 && ip link set eth0 up"
               " && ping -c 3 -W 2 192.168.100.1", "domU# ")
            leave_guest(child)
            sh("ping -c 3 -W 2 192.168.100.2")
            marks["pv-network"] = round(time.monotonic() - t0, 2)
        sh("xl shutdown -w guest")
        sh("xl create /root/guest.cfg 'name=\"doomed\"' 'disk=[]'")
        sh("xl destroy doomed")
        send_paced(child, "xl list | wc -l")
        mark("domU-destroyed", r"\n2\r")  # header + Domain-0
        child.terminate(force=True)
        return marks
    finally:
        shutil.rmtree(tftp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image_dir")
    ap.add_argument("--arch", default="arm64", choices=sorted(QEMU))
    ap.add_argument("--pv", action="store_true")
    ap.add_argument("--log", action="store_true", help="echo the console")
    args = ap.parse_args()
    marks = run(args.image_dir, args.arch, args.pv, sys.stdout if args.log else None)
    for name, t in marks.items():
        print(f"{name:16} {t:6.2f} s")


if __name__ == "__main__":
    main()
