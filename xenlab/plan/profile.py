"""Board profiles: ``boards/<name>.yaml``, validated on load.

A profile is data, never code (labgrid keeps resources apart from drivers):
what memory the board has and what U-Boot already uses, how U-Boot loads and
boots files, where the host DTB comes from and which UART Xen must take.
The schema (plan/profileschema.py) is the whole vocabulary; an unknown key is
an error, and an error is one `XenlabError` line naming file, key and value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attr
import yaml

from .. import schema
from ..errors import XenlabError
from ..images.debs import DebPackage
from .profileschema import FIXUP_SCHEMA, SCHEMA, STAGES  # noqa: F401  (for the profile's readers)

BOARDS_DIR = Path(__file__).resolve().parent.parent.parent / "boards"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # a file name: boards/<name>.yaml

# Characters that U-Boot's hush shell would interpret inside a double-quoted
# `fdt set ... "..."` value: `"` ends it, `$` expands, backslash escapes;
# `;` and newlines are refused too, so a value can never become a second command.
CMDLINE_FORBIDDEN = set('"$\\;\n\r')

NATIVE_MIN_S = 180.0  # seconds: see Profile.native_timeout


def check_cmdline(value: str) -> str | None:
    """Why `value` cannot go into a quoted U-Boot `fdt set` string, or None."""
    for ch in value:
        if ch in CMDLINE_FORBIDDEN:
            return f"contains {ch!r}, which U-Boot's shell would interpret"
        if not ch.isprintable():
            return f"contains the non-printable character {ch!r}"
    return None


# --------------------------------------------------------------------------- profile

@attr.s(frozen=True, auto_attribs=True)
class Region:
    start: int
    end: int  # exclusive
    why: str = ""

    def overlaps(self, start: int, end: int) -> bool:
        return start < self.end and self.start < end


@attr.s(frozen=True, auto_attribs=True)
class Memory:
    start: int
    end: int  # exclusive
    reserved: tuple[Region, ...] = ()


@attr.s(frozen=True, auto_attribs=True)
class UBoot:
    prompt: str
    autoboot: str
    interrupt: str
    init_commands: tuple[str, ...] = ()
    max_command: int = 2048  # CONFIG_SYS_CBSIZE: U-Boot's console buffer, and so its longest line


@attr.s(frozen=True, auto_attribs=True)
class DtbFile:
    path: Path  # resolved against the profile's directory


@attr.s(frozen=True, auto_attribs=True)
class DtbDebian:
    package: str
    version: str
    sha256: str
    arch: str
    path: str  # inside the package

    def deb(self) -> DebPackage:
        return DebPackage(self.package, self.version, self.sha256, self.arch)


DebianFile = DtbDebian  # a file inside a pinned package: a DTB, a U-Boot build


@attr.s(frozen=True, auto_attribs=True)
class Firmware:
    """What the board's firmware does before Xen runs (`firmware:`); None: not said."""

    why: str
    psci: str | None = None  # dtb | uboot | tf-a | none
    memory: str | None = None  # dtb | firmware
    entry: str | None = None  # el2 | hyp
    uboot: DebianFile | None = None  # the board's own U-Boot build

    def adds_psci(self) -> bool:
        return self.psci in ("uboot", "tf-a")


@attr.s(frozen=True, auto_attribs=True)
class SdCard:
    """The board's SD card as a farm writes it (`sdcard:`)."""

    size_mb: int
    why: str
    bootloader_offset: int | None = None  # firmware.uboot written raw here
    boot_partition: bool = False  # a FAT partition from 1 MiB
    firmware_files: tuple[tuple[str, str], ...] = ()  # (name on the partition, "uboot" | "dtb")


@attr.s(frozen=True, auto_attribs=True)
class DtbQemu:
    binary: str
    args: tuple[str, ...]


@attr.s(frozen=True, auto_attribs=True)
class Fixup:
    disable: str | None  # a node to disable ...
    why: str
    node: str | None = None  # ... or a node whose reg becomes `reg` ...
    reg: tuple[int, ...] = ()
    remove: str | None = None  # ... or a node to delete

    @classmethod
    def from_data(cls, spec: dict) -> "Fixup":
        return cls(spec.get("disable"), spec["why"], spec.get("node"), tuple(spec.get("reg", ())),
                   spec.get("remove"))

    @property
    def path(self) -> str:
        return self.disable or self.node or self.remove


@attr.s(frozen=True, auto_attribs=True)
class Dom0:
    cmdline: str
    memory_mb: int
    vcpus: int


@attr.s(frozen=True, auto_attribs=True)
class BoardProfile:
    name: str
    path: Path
    description: str
    arch: str  # arm64 | arm32
    emulated: bool
    memory: Memory
    uboot: UBoot
    load_command: str
    boot_command: str  # booti | bootz
    boot_command_why: str
    dtb: DtbFile | DtbDebian | DtbQemu
    dtb_fixups: tuple[Fixup, ...]
    dtuart: str | None  # None: /chosen/stdout-path names it (plan/uart.py)
    xen_cmdline: str
    dom0: Dom0
    timeouts: tuple[tuple[str, float], ...]
    timeout_multiplier: float
    notes: str = ""
    baudrate: int | None = None  # None: stdout-path's options, else 115200 (plan/uart.py)
    firmware: Firmware | None = None
    sdcard: SdCard | None = None

    @property
    def loads_from_card(self) -> bool:
        """U-Boot reads the plan's files from the SD card (`load mmc`, `fatload mmc`)."""
        return self.load_command.split()[:2][-1:] == ["mmc"]

    @property
    def where(self) -> str:
        """The profile file as errors name it."""
        return display_path(self.path)

    @property
    def mkimage_arch(self) -> str:
        return "arm64" if self.arch == "arm64" else "arm"

    def timeout(self, stage: str) -> float:
        """Seconds to allow for `stage`, scaled for emulated boards."""
        for name, seconds in self.timeouts:
            if name == stage:
                return seconds * self.timeout_multiplier
        raise XenlabError(f"no timeout for stage '{stage}' (stages: {', '.join(STAGES)})",
                          where=self.where)

    def native_timeout(self) -> float:
        """Seconds for the Dom0 kernel booted without Xen to reach its ready marker: the
        profile's `timeouts.native`, else Dom0's with a floor of NATIVE_MIN_S (alone, the
        kernel brings up every CPU, which under TCG takes longer than Dom0's one vCPU)."""
        if any(name == "native" for name, _ in self.timeouts):
            return self.timeout("native")
        return max(self.timeout("dom0"), NATIVE_MIN_S)


def display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def boards_dir() -> Path:
    return Path(os.environ.get("XENLAB_BOARDS") or BOARDS_DIR)


def list_boards() -> list[str]:
    """Names of the board profiles in boards_dir() (other YAML there, e.g. known-issues, is not one)."""
    return sorted(p.stem for p in boards_dir().glob("*.yaml")
                  if NAME_RE.match(p.stem) and _is_profile(p))


def _is_profile(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True  # let load_profile report what is wrong with it
    return isinstance(data, dict) and "arch" in data


def load_profile(name_or_path: str | os.PathLike) -> BoardProfile:
    """Load a profile by board name (``boards/<name>.yaml``) or by file path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise XenlabError(f"board profile {text} not found")
        if not NAME_RE.match(path.stem):
            raise XenlabError(f"board name '{path.stem}' must match {NAME_RE.pattern}",
                              where=display_path(path))
    else:
        if not NAME_RE.match(text):
            raise XenlabError(f"board name {text!r} must match {NAME_RE.pattern}")
        path = boards_dir() / f"{text}.yaml"
        if not path.is_file():
            known = ", ".join(list_boards()) or "none"
            raise XenlabError(f"unknown board '{text}' (known: {known})")
    return _parse(path)


def _init_commands(uboot: dict, fail) -> tuple[str, ...]:
    """The commands typed before the boot plan's; `;` (two commands in one) needs `raw: true`."""
    out = []
    for i, entry in enumerate(uboot.get("init_commands", [])):
        command, raw = (entry["command"], entry["raw"]) if isinstance(entry, dict) else (entry, False)
        if ";" in command and not raw:
            fail(f"uboot.init_commands[{i}]", f"{schema.show(command)} chains commands with ';': "
                 "give each its own entry, or write {command: ..., raw: true}")
        out.append(command)
    return tuple(out)


def _check_dtuart(value, fail) -> None:
    # "serial2:1500000n8" is stdout-path's spelling; Xen's dtuart takes no options.
    if isinstance(value, str) and ":" in value:
        options = value.partition(":")[2]
        baud = re.match(r"\d+", options)
        fail("dtuart", f"{schema.show(value)}: drop {schema.show(':' + options)} (dtuart names the UART only"
             + (f"; give the speed as console: {{baudrate: {baud.group(0)}}})" if baud else ")"))


def _parse(path: Path) -> BoardProfile:
    where = display_path(path)
    data = schema.read_yaml(path, "board profile", where)
    if not isinstance(data, dict):
        raise XenlabError("a board profile is a mapping of keys", where=where)

    def fail(key: str, message: str):
        raise XenlabError(f"key '{key}': {message}", where=where)

    _check_dtuart(data.get("dtuart"), fail)  # before the schema: its pattern gives no hint
    schema.validate(data, SCHEMA, where)

    mem = data["memory"]
    if mem["end"] <= mem["start"]:
        fail("memory.end", f"{mem['end']:#x} is not above memory.start {mem['start']:#x}")
    reserved = []
    for i, r in enumerate(mem.get("reserved", [])):
        if r["end"] <= r["start"]:
            fail(f"memory.reserved[{i}].end", f"{r['end']:#x} is not above its start {r['start']:#x}")
        if r["start"] < mem["start"] or r["end"] > mem["end"]:
            fail(f"memory.reserved[{i}]", f"{r['start']:#x}-{r['end']:#x} lies outside memory "
                 f"{mem['start']:#x}-{mem['end']:#x}")
        reserved.append(Region(r["start"], r["end"], r["why"]))

    # booti is arm64-only in U-Boot; an arm32 Xen is a zImage (bootz).
    want = "booti" if data["arch"] == "arm64" else "bootz"
    if data["boot_command"] != want:
        fail("boot_command", f"'{data['boot_command']}' cannot start an {data['arch']} Xen (use {want})")

    for key, value in (("xen.cmdline", data["xen"]["cmdline"]),
                       ("dom0.cmdline", data["dom0"]["cmdline"])):
        why = check_cmdline(value)
        if why:
            fail(key, f"{schema.show(value)} {why}")

    (kind, spec), = data["dtb"].items()
    if kind == "file":
        dtb = DtbFile((path.parent / spec).resolve())
    elif kind == "debian":
        dtb = DtbDebian(**spec)
    else:
        if any("dumpdtb" in a for a in spec["args"]):
            fail("dtb.qemu.args", "must not contain dumpdtb (xenlab adds it)")
        dtb = DtbQemu(spec["binary"], tuple(spec["args"]))

    firmware = _firmware(data.get("firmware"))
    sdcard = _sdcard(data.get("sdcard"), firmware, fail)

    return BoardProfile(
        name=path.stem, path=path.resolve(), description=data["description"],
        arch=data["arch"], emulated=data["emulated"],
        memory=Memory(mem["start"], mem["end"], tuple(reserved)),
        uboot=UBoot(data["uboot"]["prompt"], data["uboot"]["autoboot"],
                    data["uboot"]["interrupt"], _init_commands(data["uboot"], fail),
                    data["uboot"].get("max_command", 2048)),
        load_command=data["load_command"], boot_command=data["boot_command"],
        boot_command_why=data["boot_command_why"], dtb=dtb,
        dtb_fixups=tuple(Fixup.from_data(f) for f in data.get("dtb_fixups", [])),
        dtuart=data.get("dtuart"), xen_cmdline=data["xen"]["cmdline"].strip(),
        dom0=Dom0(data["dom0"]["cmdline"].strip(), data["dom0"]["memory_mb"], data["dom0"]["vcpus"]),
        timeouts=tuple((s, float(data["timeouts"][s])) for s in (*STAGES, "native")
                       if s in data["timeouts"]),
        timeout_multiplier=float(data["timeout_multiplier"]), notes=data.get("notes", ""),
        baudrate=data.get("console", {}).get("baudrate"), firmware=firmware, sdcard=sdcard)


def _firmware(spec: dict | None) -> Firmware | None:
    if spec is None:
        return None
    uboot = spec.get("uboot", {}).get("debian")
    return Firmware(spec["why"], spec.get("psci"), spec.get("memory"), spec.get("entry"),
                    DebianFile(**uboot) if uboot else None)


def _sdcard(spec: dict | None, firmware: Firmware | None, fail) -> SdCard | None:
    if spec is None:
        return None
    part = spec.get("boot_partition")
    files = tuple(sorted((part or {}).get("firmware_files", {}).items()))
    needs_uboot = spec.get("bootloader_offset") is not None or any(src == "uboot" for _, src in files)
    if needs_uboot and (firmware is None or firmware.uboot is None):
        fail("sdcard", "writes the board's U-Boot, but firmware.uboot does not say which build")
    if spec.get("bootloader_offset") is not None and part is not None \
            and spec["bootloader_offset"] >= 1 << 20:
        fail("sdcard.bootloader_offset", f"{spec['bootloader_offset']:#x} is inside the boot "
             "partition, which starts at 1 MiB")
    return SdCard(spec["size_mb"], spec["why"], spec.get("bootloader_offset"), part is not None, files)
