"""A board's firmware: its own U-Boot build from Debian, and what that binary proves.

A profile says what its firmware does at boot (`firmware:`): who gives the
CPUs PSCI, who writes /memory, which mode Xen is entered in.  Where Debian
builds the board's U-Boot, the binary itself can confirm part of it: U-Boot
built with CONFIG_ARMV7_PSCI carries the code that adds /psci and each CPU's
enable-method to the DTB at boot (arch/arm/lib/psci-dt.c), and one built
with CONFIG_ARMV7_NONSEC its "nonsec:" messages.  A PSCI *client* (QEMU's
U-Boot, drivers/firmware/psci.c) carries "arm,psci" too, but neither the
"/psci" path nor "enable-method", so it is not mistaken for a provider.
"""

from __future__ import annotations

import re
from pathlib import Path

import attr

from ..errors import Finding, Severity, XenlabError
from ..images import debs
from .profile import BoardProfile, DebianFile, DtbDebian, DtbFile

# Strings of arch/arm/lib/psci-dt.c's fdt_psci(): the code that writes /psci into the DTB.
PSCI_PROVIDER = (b"/psci\0", b"enable-method\0", b"arm,psci")
NONSEC = b"nonsec: "
# The built-in default environment (include/env_default.h): NUL-separated key=value strings.
ENV_ENTRY_RE = re.compile(rb"^[A-Za-z_][A-Za-z0-9_.-]{0,63}=[\x20-\x7e\t]*$")
# CONFIG_SYS_PROMPT when a board sets its own ("U-Boot> ", "ZynqMP> "); the default "=> "
# is often merged by the linker into the tail of another string, so it is not searched.
PROMPT_RE = re.compile(rb"^[A-Za-z][A-Za-z0-9 _.-]{0,15}[>#] $")
DEFAULT_PROMPT = "=> "
AUTOBOOT = b"to stop autoboot"  # CONFIG_AUTOBOOT_PROMPT: "Hit any key to stop autoboot: %2d "
ALLWINNER_SPL = b"eGON.BT0"  # at offset 4: the header Allwinner's boot ROM looks for
E, W, I = Severity.ERROR, Severity.WARN, Severity.INFO
VERSION_RE = re.compile(rb"U-Boot (\d{4}\.\d{2}[^\s\0()]*)")


def debian_file(src: DebianFile, where: str, key: str) -> Path:
    """The file inside a pinned package, fetched and verified into the cache."""
    pkg = src.deb()
    debs.fetch([pkg], where=f"{where}: key '{key}'")
    path = debs.extract(pkg) / src.path
    if not path.is_file():
        raise XenlabError(f"key '{key}.path': {src.path} is not in {pkg.name} {pkg.version}",
                          where=where)
    return path


@attr.s(frozen=True, auto_attribs=True)
class UBootBinary:
    """What a U-Boot image says of itself, read from its bytes (never run)."""

    path: Path
    version: str | None  # "2023.01+dfsg-2+deb12u3", from its banner string
    adds_psci: bool  # CONFIG_ARMV7_PSCI: writes /psci and the CPUs' enable-method at boot
    nonsec: bool  # CONFIG_ARMV7_NONSEC: enters the OS in non-secure (HYP) mode
    env: dict = attr.ib(factory=dict)  # the built-in default environment
    prompts: tuple = ()  # strings shaped like a board's own CONFIG_SYS_PROMPT
    autoboot: str | None = None  # the autoboot line up to its countdown
    allwinner_spl: bool = False  # an SPL with the eGON header: the ROM reads it raw from the card

    @classmethod
    def read(cls, path: Path) -> "UBootBinary":
        data = Path(path).read_bytes()
        m = VERSION_RE.search(data)
        strings = data.split(b"\0")
        autoboot = next((s for s in strings if AUTOBOOT in s), None)
        return cls(Path(path), m.group(1).decode(errors="replace") if m else None,
                   all(s in data for s in PSCI_PROVIDER), NONSEC in data,
                   default_env(strings),
                   tuple(sorted({s.decode() for s in strings if PROMPT_RE.match(s)})),
                   autoboot.split(b"%", 1)[0].strip().decode(errors="replace") if autoboot else None,
                   data[4:12] == ALLWINNER_SPL)

    @property
    def prompt(self) -> str:
        """The board's own prompt when the binary has exactly one, else U-Boot's default."""
        return self.prompts[0] if len(self.prompts) == 1 else DEFAULT_PROMPT


def default_env(strings: list[bytes]) -> dict[str, str]:
    """The longest run of key=value strings that holds bootcmd or baudrate: the default
    environment (other key=value text, in help messages, comes alone or in short runs)."""
    best: dict[str, str] = {}
    run: dict[str, str] = {}
    for s in strings + [b""]:
        if ENV_ENTRY_RE.match(s):
            key, value = s.decode().split("=", 1)
            run.setdefault(key, value)
            continue
        if len(run) > len(best) and ("bootcmd" in run or "baudrate" in run):
            best = run
        run = {}
    return best


def uboot_binary(profile: BoardProfile) -> UBootBinary | None:
    """The profile's own U-Boot build (firmware.uboot), read; None when it names none."""
    fw = profile.firmware
    if fw is None or fw.uboot is None:
        return None
    return UBootBinary.read(debian_file(fw.uboot, profile.where, "firmware.uboot.debian"))


def source_dtb(profile: BoardProfile) -> Path:
    """The profile's DTB as its source ships it, before xenlab's fix-ups (the one the
    board's ROM firmware hands U-Boot)."""
    src = profile.dtb
    if isinstance(src, DtbFile):
        return src.path
    if isinstance(src, DtbDebian):
        return debian_file(src, profile.where, "dtb.debian")
    raise XenlabError("key 'sdcard.boot_partition.firmware_files': a QEMU-dumped DTB is not a "
                      "file the board's firmware could read", where=profile.where)


def describe(profile: BoardProfile) -> str:
    """One phrase for tables and records: "U-Boot 2023.01+dfsg-2+deb12u3 (u-boot-sunxi)"."""
    fw = profile.firmware
    if fw is None or fw.uboot is None:
        return "U-Boot"
    return f"U-Boot {fw.uboot.version} ({fw.uboot.package} {Path(fw.uboot.path).parent.name})"


def firmware_findings(profile: BoardProfile) -> list[Finding]:
    """What the board's own U-Boot build proves of the profile's firmware: claims."""
    fw = profile.firmware
    src = f"{fw.uboot.package} {fw.uboot.version}:{fw.uboot.path}"
    try:
        binary = uboot_binary(profile)
    except XenlabError as exc:
        return [Finding(E, "firmware-unavailable", str(exc),
                        "the board's U-Boot build is what the farm writes to its card, and what "
                        "tells whether it adds PSCI at boot (seed §6.3)")]
    out = [Finding(I, "firmware", f"U-Boot {binary.version or '(no version string)'} from {src}"
                   + ("; it adds /psci at boot (CONFIG_ARMV7_PSCI)" if binary.adds_psci else ""),
                   f"{fw.why} (what Xen needs of the firmware: seed §6.3)")]
    if fw.psci == "uboot" and not binary.adds_psci:
        out.append(Finding(E, "firmware-psci-unproven",
                           f"{profile.where}: key 'firmware.psci' says U-Boot adds /psci, but {src} "
                           "carries no code that writes it (arch/arm/lib/psci-dt.c)",
                           "without PSCI Xen brings up one CPU only; build U-Boot with "
                           "CONFIG_ARMV7_PSCI or say firmware.psci: none (seed §6.3)"))
    if profile.arch == "arm32" and fw.entry == "hyp" and not binary.nonsec:
        out.append(Finding(W, "firmware-nonsec-unproven",
                           f"{profile.where}: key 'firmware.entry' says HYP mode, but {src} has no "
                           "CONFIG_ARMV7_NONSEC code",
                           "Xen must be entered in non-secure HYP mode; a debug Xen says "
                           "'- Xen must be entered in NS EL2 mode -' (seed §6.3)"))
    return out
