"""`xenlab doctor`: preflight checks of a board profile, its DTB and an image set.

Each finding explains itself in the seed's terms (the Xen wiki page "Xen ARM
with Virtualization Extensions", section numbers in the hints): what Xen needs
from the firmware (§6.3), the DTB (§6.1.3, §8.3), the boot modules (§8.4) and
the console (§8.6).  Nothing here boots anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from .profile import BoardProfile, DtbQemu
from .bootplan import BootPlan
from .dtb import CorruptDtb, DtbInfo, resolve_dtb
from .layout import MiB, human, merged
from .firmware import firmware_findings
from .uart import console_uart
from .xenchecks import hmp_findings, xen_findings
from ..images.xenfeatures import XenFeatures
from ..errors import Finding, Severity, XenlabError
from ..images.imageformat import BOOT_COMMAND_FORMAT, image_info

E, W, I = Severity.ERROR, Severity.WARN, Severity.INFO


def doctor(profile: BoardProfile, image_files: Mapping[str, os.PathLike] | None = None, *,
           dtb_path: os.PathLike | None = None, plan_args: Mapping | None = None,
           extra_findings: Iterable[Finding] = (), xen: XenFeatures | None = None,
           plan: BootPlan | None = None) -> list[Finding]:
    """Check `profile` (and, if given, the images for it); findings in check order.

    `dtb_path` skips resolving the profile's DTB (a DTB already resolved or one
    to try); `extra_findings` (kernel-config checks from images.py) are appended.
    `xen` is the Xen under test (images.xenfeatures.xen_under_test): what its binary
    and xen.config say it drives.  `plan`: the plan already built for these files;
    `plan_args`: a variant's domains and cpupools for the plan (Variant.plan_args).
    """
    findings: list[Finding] = []
    findings += _firmware(profile)
    findings += _init_commands(profile)
    try:
        path = Path(dtb_path) if dtb_path is not None else resolve_dtb(profile)
        info = DtbInfo.load(path)
    except XenlabError as exc:
        code = "dtb-corrupt" if isinstance(exc, CorruptDtb) else "dtb-unavailable"
        findings.append(Finding(E, code, str(exc),
                                "Xen needs the host's DTB to find RAM, CPUs, its UART and its "
                                "boot modules (seed §6.1.3, §8.3)"))
        findings += list(extra_findings)
        return findings
    findings += dtb_findings(profile, info)
    if xen is not None:
        findings += xen_findings(profile, info, xen)
    if image_files is not None:
        findings += _images(profile, image_files, path, plan_args or {}, plan)
    findings += list(extra_findings)
    return findings


def dtb_findings(profile: BoardProfile, info: DtbInfo) -> list[Finding]:
    """What the host's DTB tells about booting Xen on `profile`: RAM, UART, CPUs, /chosen."""
    return (_memory(profile, info) + console_findings(profile, info) + _cpus(profile, info)
            + hmp_findings(profile, info) + _chosen(info))


# --------------------------------------------------------------------------- firmware

# What a board's U-Boot needs before loading: network, storage and environment
# set-up.  Anything else (reset, bootm, go, mw, erase...) in init_commands
# changes the board under the test, so the doctor names it.
UBOOT_SETUP_COMMANDS = frozenset({
    "setenv", "env", "printenv", "saveenv", "dhcp", "bootp", "rarpboot", "ping", "usb", "mmc",
    "scsi", "sata", "nvme", "virtio", "pci", "ide", "sf", "mtd", "ubi", "dm", "part", "fatls",
    "ls", "load", "fatload", "ext2load", "ext4load", "tftpb", "tftpboot", "fdt", "echo",
    "sleep", "true", "test", "run", "net", "mii", "bdinfo", "version"})


def _init_commands(profile: BoardProfile) -> list[Finding]:
    out = []
    for i, command in enumerate(profile.uboot.init_commands):
        words = re.split(r"\s*;\s*", command.strip())
        extra = sorted({w.split()[0] for w in words if w.split()} - UBOOT_SETUP_COMMANDS)
        if extra:
            out.append(Finding(W, "uboot-init-command",
                               f"{profile.where}: key 'uboot.init_commands[{i}]': {command!r} runs "
                               f"{', '.join(extra)}, not a set-up command",
                               "init_commands prepare the network or storage before the boot plan "
                               f"(allowed: {', '.join(sorted(UBOOT_SETUP_COMMANDS))}); check that "
                               "it does not reset or change the board under the test"))
    return out


def _firmware(profile: BoardProfile) -> list[Finding]:
    fw = profile.firmware
    if fw is not None and fw.uboot is not None:
        return firmware_findings(profile)
    if not profile.emulated:
        return [Finding(I, "nonsecure-hyp",
                        f"{profile.name}: Xen must be entered in non-secure hypervisor mode (EL2)",
                        "firmware that starts the OS in secure supervisor mode needs an update; "
                        "U-Boot has done it since 2014.01 on Armv7, TF-A hands Armv8 U-Boot EL2 "
                        "(seed §6.3); a debug Xen says '- Xen must be entered in NS EL2 mode -'")]
    if isinstance(profile.dtb, DtbQemu):
        machine = [a for i, a in enumerate(profile.dtb.args)
                   if i and profile.dtb.args[i - 1] in ("-machine", "-M")]
        if not any(re.search(r"(^|,)virtualization=(on|true|yes)(,|$)", m) for m in machine):
            return [Finding(E, "qemu-no-el2",
                            f"{profile.where}: key 'dtb.qemu.args' has no -machine virtualization=on",
                            "without EL2 there is no hypervisor mode for Xen to start in (seed §6.3)")]
    return []


# --------------------------------------------------------------------------- memory

def _memory(profile: BoardProfile, info: DtbInfo) -> list[Finding]:
    return _dom0_memory(profile) + _memory_nodes(profile, info)


def _dom0_memory(profile: BoardProfile) -> list[Finding]:
    mem = profile.memory
    usable = mem.end - mem.start - sum(r.end - r.start for r in merged(list(mem.reserved)))
    if profile.dom0.memory_mb * MiB >= usable:
        return [Finding(E, "dom0-memory-over-ram",
                        f"{profile.where}: key 'dom0.memory_mb': {profile.dom0.memory_mb} MiB is not "
                        f"below the board's usable RAM ({human(usable)} of {mem.start:#x}-{mem.end:#x} "
                        "outside reserved regions)",
                        "Xen cannot build Dom0 with more memory than is free and panics while "
                        "constructing it; lower dom0_mem (seed §8.4)")]
    return []


def _memory_nodes(profile: BoardProfile, info: DtbInfo) -> list[Finding]:
    mem = profile.memory
    nodes = info.memory_nodes()
    filled = profile.firmware is not None and profile.firmware.memory == "firmware"
    if filled and not info.memory_banks():
        return [Finding(I, "memory-from-firmware",
                        f"the DTB's /memory is {'empty' if nodes else 'missing'}; the firmware writes "
                        f"it at boot (firmware.memory), so the boot plan is checked against the "
                        f"profile's memory {mem.start:#x}-{mem.end:#x}",
                        "Xen takes RAM only from the DTB it is handed (seed §6.1.3); "
                        f"{profile.firmware.why}")]
    if not nodes:
        return [Finding(W, "memory-node-missing",
                        f"the DTB has no /memory node: the boot plan is checked against the "
                        f"profile's memory {mem.start:#x}-{mem.end:#x} instead",
                        "Xen takes RAM only from the DTB: U-Boot or the firmware must fill in /memory "
                        "at boot (U-Boot's booti/bootz fix-up does), or Xen finds no RAM (seed §6.1.3)")]
    banks = info.memory_banks()
    if not banks:
        return [Finding(W, "memory-node-empty", f"{', '.join(nodes)} in the DTB has zero size",
                        "the firmware or U-Boot must fill it in at boot (the Raspberry Pi firmware "
                        "and U-Boot's booti/bootz fix-up do); Xen takes RAM only from the DTB "
                        "(seed §6.1.3)")]
    if not any(a <= mem.start and mem.end <= b for a, b in banks):
        shown = ", ".join(f"{a:#x}-{b:#x}" for a, b in banks)
        return [Finding(E, "memory-outside-dtb",
                        f"{profile.where}: key 'memory': {mem.start:#x}-{mem.end:#x} is not inside "
                        f"one RAM bank of the DTB ({shown})",
                        "files loaded outside RAM are lost, and Xen would not know the memory "
                        "holding its boot modules (seed §8.4)")]
    return []


# --------------------------------------------------------------------------- console

def console_findings(profile: BoardProfile, info: DtbInfo) -> list[Finding]:
    """Whether Xen finds its console UART from `dtuart` (also the silent-Xen diagnosis)."""
    out = []
    uart = console_uart(profile, info)
    dtuart = uart.dtuart
    out.append(_console_source(profile, uart))
    if profile.baudrate and uart.stdout_baudrate and uart.stdout_baudrate != profile.baudrate:
        out.append(Finding(W, "console-baudrate-mismatch",
                           f"{profile.where}: key 'console.baudrate': {profile.baudrate}, but "
                           f"/chosen/stdout-path says {uart.stdout_baudrate}",
                           "the firmware sets the UART to stdout-path's speed and Xen keeps it; "
                           "a serial port at another speed reads garbage"))
    if not dtuart:
        out.append(Finding(E, "dtuart-missing",
                           f"{profile.where}: no key 'dtuart' and the DTB's /chosen has no stdout-path",
                           "name Xen's console UART in the profile: an /aliases name or the "
                           "node's full path (seed §8.6)"))
        return out
    target = info.resolve(dtuart)
    if target is None:
        where_from = "key 'dtuart'" if uart.dtuart_from == "profile" else "/chosen/stdout-path"
        if dtuart.startswith("/"):
            out.append(Finding(E, "dtuart-path-missing",
                               f"{profile.where}: {where_from}: no node {dtuart} in the DTB",
                               "Xen finds no console UART and prints nothing (seed §8.6)"))
        else:
            aliases = info.aliases()
            where = "the DTB has no /aliases node" if aliases is None else \
                f"/aliases has no '{dtuart}'" + (" or it names a missing node" if dtuart in aliases else "")
            out.append(Finding(E, "dtuart-alias-missing",
                               f"{profile.where}: {where_from}: '{dtuart}' does not resolve: {where}; "
                               "Xen's console would be silently lost", _alias_hint(info, dtuart)))
        return out
    if info.status(target) not in ("okay", "ok"):
        out.append(Finding(W, "dtuart-disabled",
                           f"dtuart {dtuart} -> {target} has status '{info.status(target)}'",
                           "a disabled UART is not set up by firmware or Linux; pick the console "
                           "UART (seed §8.6)"))

    stdout = info.stdout_path()
    if stdout is None:
        out.append(Finding(I, "stdout-path-missing", "the DTB's /chosen has no stdout-path",
                           f"nothing to cross-check dtuart {dtuart} against; make sure the lab's "
                           "serial cable is on that UART (seed §8.6)"))
        return out
    console = info.resolve(stdout)
    if console is None:
        out.append(Finding(W, "stdout-path-unresolved",
                           f"/chosen/stdout-path '{stdout}' names no node in the DTB",
                           "firmware and Linux will not agree on a console either (seed §8.6)"))
    elif console != target:
        out.append(Finding(W, "dtuart-stdout-mismatch",
                           f"dtuart {dtuart} -> {target}, but /chosen/stdout-path '{stdout}' -> {console}",
                           "Xen's console would appear on another port than the firmware's, the one "
                           "the lab's serial cable is on; Dom0 loses the UART Xen takes (seed §8.6)"))
    return out


def _console_source(profile: BoardProfile, uart) -> Finding:
    said = f"dtuart {uart.dtuart or '-'} (from {uart.dtuart_from})"
    if uart.stdout_options:
        said += f"; stdout-path's options ':{uart.stdout_options}' are not part of dtuart"
    said += f"; console {uart.baudrate} baud (from {uart.baudrate_from})"
    return Finding(I, "console", said, "the lab's serial port must run at that speed (its "
                   "`speed:` in the farm file, or ser2net's setting); Xen keeps the firmware's "
                   "UART setup (seed §8.6)")


def _alias_hint(info: DtbInfo, dtuart: str) -> str:
    """The working alternative: the alias that exists for stdout-path's UART, or its path."""
    hint = "dtuart= is an alias from /aliases or a full path (seed §8.6); "
    stdout = info.stdout_path() or ""
    node = info.resolve(stdout) if stdout else None
    if node:
        existing = sorted(a for a, p in (info.aliases() or {}).items()
                          if a.startswith("serial") and info.resolve(a) == node)
        if existing and existing[0] != dtuart:
            return hint + f"use dtuart={existing[0]} (the alias stdout-path's UART has) or dtuart={node}"
        return hint + f"use dtuart={node}, the path stdout-path names"
    serial = sorted((a, p) for a, p in (info.aliases() or {}).items()
                    if a.startswith("serial") and info.resolve(a))
    if serial:
        return hint + "the DTB's serial aliases: " + ", ".join(f"{a}={p}" for a, p in serial)
    return hint + "use the UART's full path"


# --------------------------------------------------------------------------- CPUs

def _cpus(profile: BoardProfile, info: DtbInfo) -> list[Finding]:
    cpus = info.cpus()
    if len(cpus) < 2:
        return []
    out = []
    secondary = cpus[1:]
    psci = info.psci()
    fw = profile.firmware
    if psci is None and fw is not None and fw.adds_psci():
        return [Finding(I, "psci-from-firmware",
                        f"{len(cpus)} CPUs and no /psci in the DTB; the firmware adds it at boot "
                        f"(firmware.psci: {fw.psci})",
                        "Xen brings up the secondary CPUs through the PSCI the firmware provides "
                        "(seed §6.3); 'Brought up 1 CPUs' on the console means it did not")]
    # The DTB of an emulated board is final; a real board's firmware may still add /psci,
    # unless its profile says it does not.
    sev = E if profile.emulated or (fw is not None and fw.psci == "none") else W
    if profile.arch == "arm64":
        by_method: dict[str | None, list[str]] = {}
        for cpu in secondary:
            by_method.setdefault(cpu.enable_method, []).append(cpu.path)
        if "psci" in by_method and psci is None:
            out.append(Finding(sev, "psci-missing",
                               f"{_names(by_method['psci'])} use enable-method 'psci' but the DTB has no PSCI node",
                               "Xen says 'CPUn asks for PSCI, but DTB has no PSCI node' and leaves them "
                               "offline; firmware must provide PSCI for SMP (seed §6.3)"))
        spin = [c for c in secondary if c.enable_method == "spin-table"]
        if spin:
            no_addr = [c.path for c in spin if c.release_addr is None]
            if no_addr:
                out.append(Finding(sev, "cpu-release-addr-missing",
                                   f"{_names(no_addr)} use spin-table without cpu-release-addr",
                                   "Xen cannot release them and they stay offline; PSCI is what "
                                   "the seed asks of the firmware (seed §6.3)"))
            else:
                addrs = ", ".join(sorted({f"{c.release_addr:#x}" for c in spin}))
                out.append(Finding(W, "cpu-spin-table",
                                   f"{_names([c.path for c in spin])} use spin-table (release at {addrs}), not PSCI",
                                   "Xen's arm64 smpboot.c releases spin-table CPUs, but it cannot take "
                                   "them offline again, and if the firmware's spin loop misses the "
                                   "write they stay offline ('Brought up 1 CPUs'); SMP wants PSCI (seed §6.3)"))
        other = [p for m, paths in by_method.items() if m not in ("psci", "spin-table") for p in paths]
        if other:
            methods = sorted({str(c.enable_method) for c in secondary if c.path in other})
            out.append(Finding(W, "cpu-enable-method",
                               f"{_names(other)} have enable-method {', '.join(methods)}",
                               "Xen on arm64 starts secondary CPUs only by 'psci' or 'spin-table'; "
                               "these stay offline (seed §6.3)"))
    elif psci is None:
        out.append(Finding(sev, "psci-missing",
                           f"{len(cpus)} CPUs but the DTB has no PSCI node",
                           "Xen on arm32 starts secondary CPUs through PSCI (or code for a few "
                           "SoCs); unless the firmware adds /psci at boot (U-Boot does with "
                           "CONFIG_ARMV7_PSCI) they stay offline (seed §6.3)"))
    return out


def _names(paths: list[str]) -> str:
    return ", ".join(p.rsplit("/", 1)[-1] for p in paths)


# --------------------------------------------------------------------------- /chosen

def _chosen(info: DtbInfo) -> list[Finding]:
    out = []
    if info.node("/chosen") is None:
        out.append(Finding(I, "chosen-missing", "the DTB has no /chosen node",
                           "the boot plan creates it before adding the boot modules (seed §8.4)"))
        return out
    words = info.prop("/chosen", "#address-cells")
    if words is not None and list(getattr(words, "words", [])) != [2]:
        out.append(Finding(I, "chosen-cells",
                           f"/chosen has #address-cells {list(getattr(words, 'words', []))}",
                           "the boot plan sets #address-cells and #size-cells of /chosen to 2 for the "
                           "module nodes, as ImageBuilder does (seed §8.4 shows <1>)"))
    return out


# --------------------------------------------------------------------------- images

def _images(profile: BoardProfile, files: Mapping[str, os.PathLike], dtb: Path, plan_args: Mapping,
            plan: BootPlan | None) -> list[Finding]:
    out = []
    try:
        plan = plan or BootPlan.build(profile, files, dtb, **plan_args)
    except XenlabError as exc:
        out.append(Finding(E, "plan", str(exc),
                           "the bootloader must load Xen, Dom0's kernel and ramdisk and the DTB "
                           "into RAM without overlaps (seed §8.4)"))
        plan = None

    xen = files.get("xen")
    if xen and Path(xen).is_file():
        info = image_info(Path(xen))
        want = BOOT_COMMAND_FORMAT[profile.boot_command]
        if info.format != want:
            out.append(Finding(E, "boot-format-mismatch",
                               f"Xen {xen} is {info.format}, but {profile.boot_command} "
                               f"(key 'boot_command' of {profile.where}) needs {want}",
                               "booti takes an arm64 Image (ARM\\x64 at 0x38), bootz an arm32 zImage "
                               "(0x016f2818 at 0x24) (seed §8.2)"))
        elif info.anywhere is False:
            out.append(Finding(W, "xen-image-moves",
                               f"Xen {xen}: its Image header lacks flag bit 3",
                               "booti then moves it to the start of RAM, over whatever the plan put "
                               "there; build Xen with a current head.S (seed §8.2)"))
    kernel = files.get("dom0-kernel")
    if kernel and Path(kernel).is_file():
        fmt = image_info(Path(kernel)).format
        want = "arm64-image" if profile.arch == "arm64" else "zimage"
        if fmt != want:
            out.append(Finding(W, "dom0-kernel-format",
                               f"Dom0 kernel {kernel} is {fmt}, Xen on {profile.arch} expects {want}",
                               "Xen loads Dom0 from the kernel module itself and must understand its "
                               "header (seed §8.4, §9)"))
    if plan is not None:
        out.append(Finding(I, "plan", f"images fit: {len(plan.placements)} files between "
                           f"{min(p.addr for p in plan.placements):#x} and "
                           f"{max(p.end for p in plan.placements):#x}"))
    return out
