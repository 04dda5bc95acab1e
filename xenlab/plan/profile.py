"""Board profiles: ``boards/<name>.yaml``, validated on load.

A profile is data, never code (labgrid keeps resources apart from drivers):
what memory the board has and what U-Boot already uses, how U-Boot loads and
boots files, where the host DTB comes from and which UART Xen must take.
The schema below is the whole vocabulary; an unknown key is an error, and an
error is one `XenlabError` line naming file, key and value.
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

BOARDS_DIR = Path(__file__).resolve().parent.parent.parent / "boards"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # a file name: boards/<name>.yaml
STAGES = ("uboot", "xen", "dom0", "shell", "domu")

# Characters that U-Boot's hush shell would interpret inside a double-quoted
# `fdt set ... "..."` value: `"` ends it, `$` expands, backslash escapes;
# `;` and newlines are refused too, so a value can never become a second command.
CMDLINE_FORBIDDEN = set('"$\\;\n\r')


def check_cmdline(value: str) -> str | None:
    """Why `value` cannot go into a quoted U-Boot `fdt set` string, or None."""
    for ch in value:
        if ch in CMDLINE_FORBIDDEN:
            return f"contains {ch!r}, which U-Boot's shell would interpret"
        if not ch.isprintable():
            return f"contains the non-printable character {ch!r}"
    return None


# --------------------------------------------------------------------------- schema

_INT = {"type": "integer", "minimum": 0}
_TEXT = {"type": "string", "minLength": 1}
_CMDLINE = {"type": "string"}
_SECONDS = {"type": "number", "exclusiveMinimum": 0}
_INIT_COMMAND = {"type": "string", "minLength": 1, "pattern": r"^[^\n\r]+$"}


def _obj(properties: dict, required: list[str] | None = None, **extra) -> dict:
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "required": list(properties) if required is None else required, **extra}


SCHEMA = _obj({
    "description": _TEXT,
    "notes": {"type": "string"},
    "arch": {"enum": ["arm64", "arm32"]},
    "emulated": {"type": "boolean"},
    "memory": _obj({
        "start": _INT,
        "end": _INT,
        "reserved": {"type": "array", "items": _obj({"start": _INT, "end": _INT, "why": _TEXT})},
    }, required=["start", "end"]),
    "uboot": _obj({
        "prompt": _TEXT,
        "autoboot": _TEXT,
        "interrupt": _TEXT,
        "init_commands": {"type": "array", "items": {"oneOf": [_INIT_COMMAND, {
            "type": "object", "additionalProperties": False, "required": ["command", "raw"],
            "properties": {"command": _INIT_COMMAND, "raw": {"type": "boolean"}}}]}},
    }, required=["prompt", "autoboot", "interrupt"]),
    # tftpb / tftpboot, or a filesystem load: `load mmc 0:1`, `fatload usb 0:1`, `ext4load scsi 0:2`
    "load_command": {"type": "string", "pattern":
                     r"^(tftpb|tftpboot|(load|fatload|ext2load|ext4load) [a-z]+ [0-9]+(:[0-9a-f]+)?)$"},
    "boot_command": {"enum": ["booti", "bootz"]},
    "boot_command_why": _TEXT,
    "dtb": {"type": "object", "minProperties": 1, "maxProperties": 1,
            "additionalProperties": False, "properties": {
                "file": _TEXT,
                "debian": _obj({
                    "package": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9.+-]*$"},
                    "version": {"type": "string", "pattern": r"^[0-9A-Za-z.+~:-]+$"},
                    "sha256": {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
                    "arch": {"enum": ["arm64", "armhf", "armel"]},
                    "path": {"type": "string", "pattern": r"^[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*\.dtb$"},
                }),
                "qemu": _obj({
                    "binary": {"type": "string", "pattern": r"^qemu-system-[a-z0-9_]+$"},
                    "args": {"type": "array", "items": {"type": "string"}},
                }),
            }},
    "dtb_fixups": {"type": "array", "items": _obj({
        "disable": {"type": "string", "pattern": r"^/[^\s\"'$;\\#]+$"}, "why": _TEXT})},
    # An alias from /aliases or a full node path (seed §8.6); without it, stdout-path's
    "dtuart": {"type": "string", "pattern": r"^([a-z][a-z0-9_-]*|/[^\s\"'$;\\#:]*)$"},
    # The console's speed; without it, stdout-path's options, else 115200
    "console": _obj({"baudrate": {"type": "integer", "minimum": 50, "maximum": 20000000}}),
    "xen": _obj({"cmdline": _CMDLINE}),
    "dom0": _obj({"cmdline": _CMDLINE, "memory_mb": {"type": "integer", "minimum": 1},
                  "vcpus": {"type": "integer", "minimum": 1}}),
    "timeouts": _obj({stage: _SECONDS for stage in STAGES}),
    "timeout_multiplier": _SECONDS,
}, required=["description", "arch", "emulated", "memory", "uboot", "load_command",
             "boot_command", "boot_command_why", "dtb", "xen", "dom0",
             "timeouts", "timeout_multiplier"])

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


@attr.s(frozen=True, auto_attribs=True)
class DtbQemu:
    binary: str
    args: tuple[str, ...]


@attr.s(frozen=True, auto_attribs=True)
class Fixup:
    disable: str
    why: str


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

    return BoardProfile(
        name=path.stem, path=path.resolve(), description=data["description"],
        arch=data["arch"], emulated=data["emulated"],
        memory=Memory(mem["start"], mem["end"], tuple(reserved)),
        uboot=UBoot(data["uboot"]["prompt"], data["uboot"]["autoboot"],
                    data["uboot"]["interrupt"], _init_commands(data["uboot"], fail)),
        load_command=data["load_command"], boot_command=data["boot_command"],
        boot_command_why=data["boot_command_why"], dtb=dtb,
        dtb_fixups=tuple(Fixup(f["disable"], f["why"]) for f in data.get("dtb_fixups", [])),
        dtuart=data.get("dtuart"), xen_cmdline=data["xen"]["cmdline"].strip(),
        dom0=Dom0(data["dom0"]["cmdline"].strip(), data["dom0"]["memory_mb"], data["dom0"]["vcpus"]),
        timeouts=tuple((s, float(data["timeouts"][s])) for s in STAGES),
        timeout_multiplier=float(data["timeout_multiplier"]), notes=data.get("notes", ""),
        baudrate=data.get("console", {}).get("baudrate"))
