"""A new board's profile from what its tester already has: its DTB and its U-Boot.

`xenlab board new` reads the DTB (memory, reserved regions, console, CPUs,
PSCI) and the U-Boot binary's own bytes (its default environment, prompt,
autoboot line, PSCI and NONSEC code, an Allwinner SPL header) and writes a
profile in which every value says where it came from.  What neither file can
tell is a commented line naming what to measure on the board, never a guess.
Dom0's memory is chosen so that the boot plan fits (`prepare` plans it).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import attr

from ..errors import XenlabError
from .dtb import DtbInfo
from .boardsources import Input
from .firmware import UBootBinary
from .profile import NAME_RE, load_profile

MiB = 1 << 20
# Armv7-A cores: a board of these is arm32 (any other Cortex-A in a DTB is Armv8).
ARMV7_CORES = ("arm,cortex-a5", "arm,cortex-a7", "arm,cortex-a8", "arm,cortex-a9",
               "arm,cortex-a12", "arm,cortex-a15", "arm,cortex-a17")
RAM_RE = re.compile(r"^(?P<size>\d+)(?P<unit>[MG])(@(?P<start>0x[0-9a-fA-F]+|\d+))?$")
DOM0_MIN_MB, DOM0_MAX_MB = 128, 1024
TIMEOUTS = "{uboot: 60, xen: 30, dom0: 120, shell: 30, domu: 90}"
DOM0_CMDLINE = "console=hvc0 earlycon=xen rdinit=/init clk_ignore_unused"


# --------------------------------------------------------------------------- the facts

@attr.s(frozen=True, auto_attribs=True)
class Value:
    value: object
    why: str  # where it came from, or "default: why"


def yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a double-quoted YAML scalar


@attr.s(auto_attribs=True)
class BoardFacts:
    """What the DTB and U-Boot say, each value with its source (see `render`)."""

    name: str
    dtb: Input
    info: DtbInfo
    uboot: Input | None
    binary: UBootBinary | None
    arch: Value
    memory: tuple[Value, Value]  # start, end
    memory_from: str  # dtb | firmware
    load_command: Value
    dom0_mb: int = 0

    @classmethod
    def read(cls, name: str, dtb: Input, uboot: Input | None, arch: str | None,
             ram: str | None, load_command: str | None) -> "BoardFacts":
        if not NAME_RE.match(name):
            raise XenlabError(f"board name {name!r} must match {NAME_RE.pattern} (it names "
                              "boards/NAME.yaml)")
        info = DtbInfo.load(dtb.path, f"--dtb {dtb.shown}")
        binary = UBootBinary.read(uboot.path) if uboot else None
        if binary is not None and not binary.env:
            raise XenlabError(f"--uboot {uboot.shown}: no U-Boot default environment in it "
                              "(no bootcmd=/baudrate= strings): is it a U-Boot image?")
        return cls(name, dtb, info, uboot, binary, arch_of(info, binary, arch),
                   *_memory(info, dtb, ram), _load(load_command))

    @property
    def u(self) -> str:
        return f"U-Boot {self.uboot.shown}" if self.uboot else ""


def arch_of(info: DtbInfo, binary: UBootBinary | None, given: str | None) -> Value:
    if given:
        return Value(given, "--arch")
    cpu = (binary.env.get("cpu") if binary else None) or ""
    if cpu in ("armv7", "armv8"):
        return Value("arm32" if cpu == "armv7" else "arm64", f"U-Boot's environment: cpu={cpu}")
    cores = sorted({c.compatible for c in info.cpus() if c.compatible})
    if not cores:
        raise XenlabError("the DTB names no CPU cores: give --arch arm32|arm64")
    arm32 = all(c in ARMV7_CORES for c in cores)
    return Value("arm32" if arm32 else "arm64", f"/cpus: {', '.join(cores)} "
                 f"({'Armv7-A' if arm32 else 'Armv8-A'})")


def _memory(info: DtbInfo, dtb: Input, ram: str | None) -> tuple:
    banks = info.memory_banks()
    if ram is None:
        if not banks:
            node = "empty" if info.memory_nodes() else "missing"
            raise XenlabError(f"--dtb {dtb.shown}: /memory is {node} (the firmware writes it at "
                              "boot): give --ram SIZE[@START], e.g. --ram 512M@0x40000000, as "
                              "U-Boot's 'DRAM:' line and bdinfo report")
        (start, end), rest = banks[0], banks[1:]
        why = "/memory's first bank" + (f" (Xen takes the others, {', '.join(f'{a:#x}-{b:#x}' for a, b in rest)}, "
                                        "from the DTB too)" if rest else "")
        return (Value(start, why), Value(end, why)), "dtb"
    m = RAM_RE.match(ram)
    if not m:
        raise XenlabError(f"--ram {ram!r}: give SIZE[@START], e.g. 512M@0x40000000 or 2G")
    size = int(m["size"]) * (MiB if m["unit"] == "M" else 1024 * MiB)
    if m["start"] is not None:
        start, where = int(m["start"], 0), "--ram"
    else:
        regs = [a for n in info.memory_nodes() for a, _ in info.regs(n)]
        if not regs:
            raise XenlabError(f"--ram {ram}: the DTB has no /memory node to take the start from: "
                              "give --ram SIZE@START (bdinfo's DRAM bank start)")
        start, where = regs[0], f"{info.memory_nodes()[0]}'s address"
    return (Value(start, f"{where}; the firmware fills /memory"),
            Value(start + size, f"--ram {ram}")), "dtb" if banks else "firmware"


def _load(given: str | None) -> Value:
    if given:
        return Value(given, "--load-command")
    return Value("tftpb", "default: a lab's boards load over TFTP (--load-command 'fatload mmc 0:1' "
                 "for the SD card)")


# --------------------------------------------------------------------------- the profile

def render(f: BoardFacts) -> str:
    """The profile's YAML, every value with its source as a comment."""
    info, arch = f.info, f.arch.value
    model = info.string("/", "model") or f.name
    root = info.compatibles("/")
    cores = sorted({c.compatible.split(",")[-1] for c in info.cpus() if c.compatible})
    gic = next((c[0] for _, c in info.interrupt_controllers() if c and "gic" in c[0]), None)
    soc = root[-1] if root else "?"
    desc = f"{model} ({soc}, {len(info.cpus())}x {'/'.join(cores) or '?'}" + (f", {gic})" if gic else ")")
    out = [f"# {model}: written by `xenlab board new` from",
           f"#   DTB {f.dtb.shown}"] + ([f"#   {f.u}"] if f.uboot else []) + [
           "# Each value says where it came from; MEASURE lines name what only the board can tell.",
           f"description: {yaml_scalar(desc)}",
           f"arch: {arch}                  # {f.arch.why}",
           "emulated: false", "", "memory:",
           f"  start: {f.memory[0].value:#010x}      # {f.memory[0].why}",
           f"  end: {f.memory[1].value:#010x}        # {f.memory[1].why}"]
    for a, z, where in info.reserved_regions():
        out.append(f"  # {a:#x}-{z:#x} ({where}) is kept out of the plan from the DTB itself")
    out += ["  # MEASURE: U-Boot relocates itself to the top of RAM (bdinfo: relocaddr, and its",
            "  # malloc arena below); the plan loads from the start, so list it under",
            "  # reserved: [{start, end, why}] only if the files reach it.", ""]
    out += _uboot(f) + [""]
    out += _boot(f) + [""]
    out += _dtb(f) + [""]
    out += _console(f) + [""]
    out += _firmware(f) + [""]
    out += _sdcard(f)
    out += ["xen:", "  cmdline: console_timestamps=boot   # default: timestamps on Xen's lines "
            "(a farm's own needs go in its target's xen_cmdline)",
            "dom0:",
            f"  cmdline: {DOM0_CMDLINE}   # default: ImageBuilder's (clk_ignore_unused: "
            "Linux leaves the clock of Xen's UART on)",
            f"  memory_mb: {f.dom0_mb}             # chosen: a quarter of the RAM, 256-1024 MiB, "
            "smaller until the plan fits",
            "  vcpus: 1", "",
            f"timeouts: {TIMEOUTS}   # default: a real board's; an emulated one scales them "
            "(timeout_scale in its farm target)",
            "timeout_multiplier: 1"]
    return "\n".join(out) + "\n"


def _uboot(f: BoardFacts) -> list[str]:
    b = f.binary
    if b is None:
        prompt = Value("=> ", "default: U-Boot's (MEASURE: the board's prompt; --uboot reads it)")
        auto = Value("Hit any key to stop autoboot:", "default: U-Boot's CONFIG_AUTOBOOT_PROMPT")
    else:
        prompt = Value(b.prompt, "the binary's own CONFIG_SYS_PROMPT" if len(b.prompts) == 1 else
                       "U-Boot's default: the binary sets no other" if not b.prompts else
                       f"default: U-Boot's; MEASURE: the binary has {', '.join(map(repr, b.prompts))}")
        auto = Value(b.autoboot, "the binary's autoboot line") if b.autoboot else \
            Value("Hit any key to stop autoboot:", "default; MEASURE: the binary has no such line "
                  "(CONFIG_AUTOBOOT_KEYED?)")
    out = ["uboot:", f"  prompt: {yaml_scalar(prompt.value)}          # {prompt.why}",
           f"  autoboot: {yaml_scalar(auto.value)}   # {auto.why}",
           '  interrupt: "\\n"']
    if f.load_command.value.startswith("tftp"):
        out += ["  init_commands:", "    - setenv autoload no       # plain dhcp would also "
                "TFTP a file named after the IP",
                "    - dhcp                     # the board's IP; serverip: the farm target's "
                "tftp_server"]
    else:
        out += ["  init_commands: []"]
    return out


def _boot(f: BoardFacts) -> list[str]:
    arch, env = f.arch.value, (f.binary.env if f.binary else {})
    cmd, why = ("booti", "an arm64 Xen is an Image (ARM\\x64 at offset 0x38), started with booti") \
        if arch == "arm64" else \
        ("bootz", "an arm32 Xen carries a zImage header (magic 0x016f2818 at offset 0x24), which bootz takes")
    out = [f"load_command: {f.load_command.value}   # {f.load_command.why}",
           f"boot_command: {cmd}", f"boot_command_why: {yaml_scalar(why)}"]
    addrs = {k: env[k] for k in ("kernel_addr_r", "fdt_addr_r", "ramdisk_addr_r", "scriptaddr") if k in env}
    if addrs:
        out.append("# U-Boot's own load addresses (" + ", ".join(f"{k}={v}" for k, v in addrs.items())
                   + "): the plan places files itself, from memory.start, as ImageBuilder does")
    return out


def _dtb(f: BoardFacts) -> list[str]:
    if f.dtb.pin is None:
        return ["dtb:", f"  file: {yaml_scalar(str(f.dtb.path))}"]
    p = f.dtb.pin
    return ["dtb:", "  debian:                    # pinned by `board new`: the .deb's sha256",
            f"    package: {p.package}", f"    version: {yaml_scalar(p.version)}", f"    sha256: {p.sha256}",
            f"    arch: {p.arch}", f"    path: {p.path}"]


def _console(f: BoardFacts) -> list[str]:
    info = f.info
    stdout, opts = info.stdout_path(), info.stdout_options()
    baud = (f.binary.env.get("baudrate") if f.binary else None)
    if stdout and info.resolve(stdout):
        out = [f"# dtuart: none; Xen takes stdout-path \"{stdout}{':' + opts if opts else ''}\" -> "
               f"{info.resolve(stdout)}"]
    else:
        serial = sorted(k for k in (info.aliases() or {}) if k.startswith("serial"))
        if serial:
            out = [f"dtuart: {serial[0]}              # the DTB has no usable stdout-path; "
                   f"MEASURE: the UART your console cable is on (aliases: {', '.join(serial)})"]
        else:
            out = ["# MEASURE: dtuart: the DTB has no stdout-path and no serial alias; name the "
                   "console UART's node path"]
    speed = re.match(r"\d+", opts or "")
    if not speed and baud and baud != "115200":
        out += ["console:", f"  baudrate: {baud}            # U-Boot's environment: baudrate"]
    elif not speed:
        out += [f"# console speed: {baud or 115200} (" + ("U-Boot's baudrate" if baud else "default") + ")"]
    return out


def _firmware(f: BoardFacts) -> list[str]:
    info, b, arch = f.info, f.binary, f.arch.value
    cpus = info.cpus()
    methods = {c.enable_method for c in cpus}
    psci = info.psci()
    if psci:
        fw_psci, why = "dtb", f"the DTB's {psci[0]} (method {psci[1] or '?'}) gives the CPUs PSCI"
    elif b is not None and b.adds_psci:
        fw_psci, why = "uboot", "U-Boot adds /psci at boot (its binary carries CONFIG_ARMV7_PSCI's code)"
    elif len(cpus) <= 1 or methods == {"spin-table"}:
        fw_psci, why = "none", ("one CPU" if len(cpus) <= 1 else "the CPUs use spin-table") + \
            ": no PSCI is needed"
    else:
        fw_psci, why = None, "MEASURE: the DTB has no /psci and the firmware's is unknown"
    if f.memory_from == "firmware":
        why += "; the firmware writes /memory from the DRAM it finds"
    if arch == "arm64":
        entry, ewhy = "el2", "Xen is entered at EL2, as Armv8 U-Boot runs under TF-A or a stub"
    elif b is not None and b.nonsec:
        entry, ewhy = "hyp", "U-Boot enters the OS in non-secure HYP mode (CONFIG_ARMV7_NONSEC's code)"
    else:
        entry, ewhy = "hyp", "Xen needs non-secure HYP; MEASURE: a debug Xen says '- Xen must be " \
                             "entered in NS EL2 mode -' if the firmware does not"
    out = ["firmware:", f"  why: {yaml_scalar(f'{why}; {ewhy}')}"]
    if fw_psci:
        out.append(f"  psci: {fw_psci}")
    else:
        out.append("  # psci: MEASURE: dtb | uboot | tf-a | none")
    out += [f"  memory: {f.memory_from}", f"  entry: {entry}"]
    if f.uboot is not None and f.uboot.pin is not None:
        p = f.uboot.pin
        out += ["  uboot:", "    debian:", f"      package: {p.package}", f"      version: {yaml_scalar(p.version)}",
                f"      sha256: {p.sha256}", f"      arch: {p.arch}", f"      path: {p.path}"]
    return out


def _sdcard(f: BoardFacts) -> list[str]:
    b, load = f.binary, f.load_command.value
    from_card = " mmc " in f" {load} "
    pinned = f.uboot is not None and f.uboot.pin is not None
    if b is not None and b.allwinner_spl and not pinned:
        return ["# sdcard: the boot ROM reads this SPL (eGON.BT0) 8 KiB into the card; a farm that",
                "# writes the card needs the build pinned: --debian-uboot, or your own card", ""]
    if b is not None and b.allwinner_spl:
        out = ["sdcard:", "  why: the boot ROM reads the SPL (its eGON.BT0 header) from the card 8 KiB in"
               + ("; U-Boot loads every boot file from the FAT partition" if from_card else ""),
               f"  size_mb: {128 if from_card else 64}", "  bootloader_offset: 8192"]
        return out + (["  boot_partition: {}"] if from_card else []) + [""]
    if not from_card:
        return []
    out = ["sdcard:", "  why: >-", "    U-Boot loads every boot file from the card's FAT partition"]
    files = []
    if f.uboot is not None and f.uboot.pin is not None:
        files.append(f"      {Path(f.uboot.pin.path).name}: uboot")
    if files:
        out[-1] += ";"
        out += ["    the firmware that starts U-Boot (a Raspberry Pi's start4.elf) reads it and",
                "    the DTB by name from the same partition"]
        files.append(f"      {Path(f.dtb.path).name}: dtb")
    out += ["  size_mb: 128", "  boot_partition:" + ("" if files else " {}")]
    if files:
        out += ["    firmware_files:"] + files
    return out + [""]


# --------------------------------------------------------------------------- fit and write

def dom0_first_guess(f: BoardFacts) -> int:
    ram_mb = (f.memory[1].value - f.memory[0].value) // MiB
    return max(DOM0_MIN_MB, min(DOM0_MAX_MB, max(256, ram_mb // 4), ram_mb // 2) // 64 * 64)


def fitted(f: BoardFacts, plan) -> str:
    """The profile text with the largest first-guess Dom0 whose plan fits; `plan(path)` plans
    it (raising XenlabError when it does not fit)."""
    f.dom0_mb = dom0_first_guess(f)
    with tempfile.TemporaryDirectory(prefix="xenlab-board-") as tmp:
        path = Path(tmp) / f"{f.name}.yaml"
        while True:
            text = render(f)
            path.write_text(text)
            try:
                load_profile(path)  # the schema's one line, should a fact not fit it
                plan(path)
                return text
            except XenlabError as exc:
                said = str(exc).replace(str(path), f"{f.name}.yaml")
                if "dom0.memory_mb" not in said or f.dom0_mb // 2 < DOM0_MIN_MB:
                    raise XenlabError(f"the profile written from these files does not plan: {said}") from None
                f.dom0_mb //= 2


def write(out: Path, text: str, force: bool) -> None:
    if out.exists() and not force:
        raise XenlabError(f"{out} exists: give --force to replace it")
    if not NAME_RE.match(out.stem) or out.suffix != ".yaml":
        raise XenlabError(f"--out {out}: a profile is NAME.yaml with NAME matching {NAME_RE.pattern}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
