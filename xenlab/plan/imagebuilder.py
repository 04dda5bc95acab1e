"""ImageBuilder's config (xen.git's imagebuilder, scripts/uboot-script-gen -c CONFIG) as data.

An ImageBuilder config is a shell fragment: `KEY=value` and `KEY[n]=value`
lines.  It is parsed here, never sourced: a value is one word or one quoted
string, and anything a shell would expand (`$`, backquotes) or run (`;`,
`|`, `&`) is refused.  So is a key xenlab does not know or does not support
yet, with its name and line.  What the file says becomes the same BootPlan a
board variant makes: its files, its Dom0 and DomUs, its cpupools.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import attr

from ..errors import XenlabError
from .bootplan import BootPlan
from .chosen import CpupoolSpec, DomUSpec, SharedMem
from .dtb import DtbInfo
from .profile import BoardProfile, Dom0, check_cmdline
from .variant import DomainSpec, Variant

SCALAR_KEYS = {"MEMORY_START", "MEMORY_END", "DEVICE_TREE", "XEN", "XEN_CMD", "DOM0_KERNEL",
               "DOM0_RAMDISK", "DOM0_CMD", "DOM0_MEM", "DOM0_VCPUS", "NUM_DOMUS", "NUM_CPUPOOLS",
               "LOAD_CMD", "BOOT_CMD", "UBOOT_SCRIPT", "UBOOT_SOURCE", "XEN_STATIC_HEAP"}
INDEXED_KEYS = {"DOMU_KERNEL", "DOMU_RAMDISK", "DOMU_CMD", "DOMU_MEM", "DOMU_VCPUS",
                "DOMU_STATIC_MEM", "DOMU_SHARED_MEM", "CPUPOOL", "DOMU_CPUPOOL", "DOMU_DIRECTMAP",
                "DOMU_ENHANCED", "DOMU_NOBOOT"}
# Read by ImageBuilder's uboot-script-gen, but not by xenlab's boot plan yet.
NOT_YET = {"FIT": "a FIT image", "FIT_ENC_KEY_DIR": "an encrypted FIT", "FIT_ENC_UB_DTB": "an encrypted FIT",
           "DOMU_PASSTHROUGH_DTB": "device passthrough", "DOMU_PASSTHROUGH_PATHS": "device passthrough",
           "BITSTREAM": "FPGA bitstreams", "NUM_DT_OVERLAY": "DT overlays", "DT_OVERLAY": "DT overlays",
           "DOMU_COLORS": "cache colouring", "XEN_COLORS": "cache colouring",
           "DOM0_COLORS": "cache colouring", "LINUX": "Linux without Xen", "LINUX_RAMDISK": "Linux without Xen",
           "LINUX_CMD": "Linux without Xen", "LINUX_ROOTFS": "Linux without Xen",
           "DOM0_ROOTFS": "a Dom0 root on a disk", "DOMU_ROOTFS": "a DomU root on a disk",
           "APPEND_EXTRA_CMDS": "extra U-Boot commands", "NUM_BOOT_AUX_FILE": "auxiliary boot files",
           "BOOT_AUX_FILE": "auxiliary boot files", "DOMU_STATIC_EVTCHNS": "static event channels"}
YES = {"1", "y", "yes", "true", "enabled"}
IMAGEBUILDER_FILE = "(config)"  # a domain's file, as the config names it (not an image-set role)  # how configs say a DOMU_* flag is on
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)(?:\[(\d{1,3})\])?=(.*)$")
_SHELL = set("$`;|&<>(){}\\")
MiB = 1 << 20


@attr.s(frozen=True, auto_attribs=True)
class ImageBuilderConfig:
    path: Path
    values: dict  # KEY or (KEY, n) -> value
    lines: dict  # the same keys -> line number

    def get(self, key, default=None):
        return self.values.get(key, default)


def read_config(path: Path) -> ImageBuilderConfig:
    where = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise XenlabError(f"cannot read ImageBuilder config: {why}", where=where) from None
    values, lines = {}, {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise XenlabError(f"line {n}: {line[:60]!r} is not KEY=value or KEY[n]=value "
                              "(the file is read as data, never run as a shell script)", where=where)
        key, index, value = m.group(1), m.group(2), m.group(3)
        if key in NOT_YET:
            raise XenlabError(f"line {n}: key {key} ({NOT_YET[key]}) is not supported by xenlab yet",
                              where=where)
        known = INDEXED_KEYS if index is not None else SCALAR_KEYS
        if key not in known:
            hint = " (it takes an index: KEY[n]=)" if key in INDEXED_KEYS else \
                (" (it takes no index)" if key in SCALAR_KEYS else "")
            raise XenlabError(f"line {n}: unknown key {key}{'[' + index + ']' if index else ''}{hint}",
                              where=where)
        bad = next((c for c in value if c in _SHELL), None)
        if bad is not None and not _quoted_only(value):
            raise XenlabError(f"line {n}: {key} value {value[:60]!r} has {bad!r}, which a shell would "
                              "expand or run; xenlab reads values as plain text", where=where)
        try:
            words = shlex.split(value, comments=True, posix=True)
        except ValueError as exc:
            raise XenlabError(f"line {n}: {key}: {exc}", where=where) from None
        if len(words) > 1:
            raise XenlabError(f"line {n}: {key} value {value[:60]!r} is several words: quote it",
                              where=where)
        k = (key, int(index)) if index is not None else key
        # Set again, the later value holds, as in the shell that sources it: Xen CI's scripts
        # append a variant's NUM_DOMUS=2 or DOMU_MEM[0]="128" after the base config.
        values[k], lines[k] = (words[0] if words else ""), n
    return ImageBuilderConfig(Path(path), values, lines)


def _quoted_only(value: str) -> bool:
    """Shell characters only inside quotes, where they are text; `$` and backquotes nowhere."""
    quote = None
    for c in value:
        if quote:
            if c == quote:
                quote = None
            elif c == "$" or c == "`":
                return False
        elif c in "'\"":
            quote = c
        elif c in _SHELL:
            return False
    return True


def _fail(cfg: ImageBuilderConfig, key, message: str) -> XenlabError:
    name = f"{key[0]}[{key[1]}]" if isinstance(key, tuple) else key
    line = cfg.lines.get(key)
    return XenlabError(f"{'line ' + str(line) + ': ' if line else ''}{name}: {message}", where=str(cfg.path))


def _int(cfg, key, default=None, *, minimum: int = 0) -> int:
    value = cfg.get(key)
    if value is None:
        if default is None:
            raise _fail(cfg, key, "missing")
        return default
    try:
        number = int(value, 0)
    except ValueError:
        raise _fail(cfg, key, f"{value!r} is not a number") from None
    if number < minimum:
        raise _fail(cfg, key, f"{number} is below {minimum}")
    return number


def _file(cfg, key, required=True) -> Path | None:
    value = cfg.get(key)
    if not value:
        if required:
            raise _fail(cfg, key, "missing")
        return None
    path = (cfg.path.parent / value) if not value.startswith("/") else Path(value)
    try:
        found = "\0" not in value and path.is_file()
    except OSError as exc:  # a name too long for the filesystem
        raise _fail(cfg, key, f"{value[:60]!r}: {exc.strerror}") from None
    if not found:
        raise _fail(cfg, key, f"{value!r}: no such file (relative to {cfg.path.parent})")
    return path


def _numbers(cfg, key, count: int) -> list[int]:
    words = (cfg.get(key) or "").split()
    try:
        numbers = [int(w, 0) for w in words]
    except ValueError:
        raise _fail(cfg, key, f"{cfg.get(key)!r}: not numbers") from None
    if not numbers or len(numbers) % count:
        raise _fail(cfg, key, f"{cfg.get(key)!r}: wants groups of {count} numbers")
    return numbers


def plan_from(cfg: ImageBuilderConfig, profile: BoardProfile) -> BootPlan:
    """The BootPlan the config describes, on `profile`'s board (its U-Boot, reserved RAM, console)."""
    # MEMORY_START/END is where the files load (Xen CI gives a 2 GiB machine 256 MiB of it); the
    # board's RAM, from its profile and DTB, is what the guests take.
    start, end = _int(cfg, "MEMORY_START", profile.memory.start), _int(cfg, "MEMORY_END", profile.memory.end)
    if end <= start:
        raise _fail(cfg, "MEMORY_END", f"{end:#x} is not above MEMORY_START {start:#x}")
    mem = profile.memory
    if not (mem.start <= start and end <= mem.end):
        raise _fail(cfg, "MEMORY_START" if start < mem.start else "MEMORY_END",
                    f"the window {start:#x}-{end:#x} is not inside board {profile.name}'s RAM "
                    f"({mem.start:#x}-{mem.end:#x})")
    for key, want in (("LOAD_CMD", profile.load_command), ("BOOT_CMD", profile.boot_command)):
        if cfg.get(key) and cfg.get(key) != want:
            raise _fail(cfg, key, f"{cfg.get(key)!r}, but board {profile.name} uses {want!r} (key "
                        f"'{key.lower()[:4]}_command' of {profile.where})")
    for key in ("XEN_CMD", "DOM0_CMD"):
        why = check_cmdline(cfg.get(key) or "")
        if why:
            raise _fail(cfg, key, f"{cfg.get(key)!r} {why}")
    dom0 = Dom0(cfg.get("DOM0_CMD", profile.dom0.cmdline),
                _int(cfg, "DOM0_MEM", profile.dom0.memory_mb, minimum=1),
                _int(cfg, "DOM0_VCPUS", profile.dom0.vcpus, minimum=1))
    board = attr.evolve(profile, dom0=dom0)
    files = {"xen": _file(cfg, "XEN")}
    if cfg.get("DOM0_KERNEL"):
        files["dom0-kernel"] = _file(cfg, "DOM0_KERNEL")
        if cfg.get("DOM0_RAMDISK"):
            files["dom0-ramdisk"] = _file(cfg, "DOM0_RAMDISK")
    dtb = _file(cfg, "DEVICE_TREE")
    DtbInfo.load(dtb)  # a corrupt DTB: one line now

    pools = []
    for i in range(_int(cfg, "NUM_CPUPOOLS", 0)):
        words = (cfg.get(("CPUPOOL", i)) or "").split()
        if not words:
            raise _fail(cfg, ("CPUPOOL", i), "missing (NUM_CPUPOOLS counts it)")
        cpus = []
        for name in words[0].split(","):
            m = re.fullmatch(r"(?:/cpus/)?cpu@([0-9a-f]+)", name)
            if m is None:
                raise _fail(cfg, ("CPUPOOL", i), f"{name!r} is not a CPU node (cpu@N)")
            cpus.append(int(m.group(1), 16))
        pools.append(CpupoolSpec(i + 1, tuple(cpus), words[1] if len(words) > 1 else ""))

    domus = []
    for i, d in _domus(cfg, "dom0-kernel" in files):
        shm = ()
        if cfg.get(("DOMU_SHARED_MEM", i)):
            words = cfg.get(("DOMU_SHARED_MEM", i)).split()
            if len(words) != 4:
                raise _fail(cfg, ("DOMU_SHARED_MEM", i), "wants 'ID HOST GUEST SIZE'")
            try:
                host, guest, size = (int(w, 0) for w in words[1:])
            except ValueError:
                raise _fail(cfg, ("DOMU_SHARED_MEM", i), f"{' '.join(words)!r}: not numbers") from None
            shm = (SharedMem(words[0], host, guest, size, "owner" if i == 0 else "borrower"),)
        domus.append(DomUSpec(
            f"domU{i}", _file(cfg, ("DOMU_KERNEL", i)), _file(cfg, ("DOMU_RAMDISK", i), required=False),
            d["memory_mb"] * 1024, d["vcpus"], True, d["cmdline"], enhanced=d["enhanced"],
            static_mem=d["static"], direct_map=d["direct_map"], shared_mem=shm, cpupool=d["cpupool"]))
    heap = _numbers(cfg, "XEN_STATIC_HEAP", 2) if cfg.get("XEN_STATIC_HEAP") else []
    try:
        return BootPlan.build(board, files, dtb, domus=domus, cpupools=pools,
                              xen_bootargs=cfg.get("XEN_CMD"), static_heap=tuple(zip(heap[0::2], heap[1::2])),
                              load_window=(start, end))
    except XenlabError as exc:
        raise XenlabError(f"{exc}", where=str(cfg.path)) from None


def _domus(cfg, dom0: bool):
    """(index, settings) of each DomU the config boots, with ImageBuilder's defaults: the
    plan and the run's variant read them from here."""
    for i in range(_int(cfg, "NUM_DOMUS", 0)):
        if _flag(cfg, ("DOMU_NOBOOT", i)):  # ImageBuilder writes no node for it: Xen never sees it
            continue
        banks = _numbers(cfg, ("DOMU_STATIC_MEM", i), 2) if cfg.get(("DOMU_STATIC_MEM", i)) else []
        static = tuple(zip(banks[0::2], banks[1::2]))
        cmdline = cfg.get(("DOMU_CMD", i), "console=ttyAMA0")
        why = check_cmdline(cmdline)
        if why:
            raise _fail(cfg, ("DOMU_CMD", i), f"{cmdline!r} {why}")
        pool = cfg.get(("DOMU_CPUPOOL", i))
        yield i, {"static": static, "cmdline": cmdline,
                  "memory_mb": _int(cfg, ("DOMU_MEM", i), sum(s for _, s in static) // MiB or 512, minimum=1),
                  "vcpus": _int(cfg, ("DOMU_VCPUS", i), 1, minimum=1),
                  # xenstore when there is a Dom0, direct-map with static memory
                  "enhanced": _flag(cfg, ("DOMU_ENHANCED", i), dom0 and not static),
                  "direct_map": _flag(cfg, ("DOMU_DIRECTMAP", i), bool(static)),
                  "cpupool": None if pool is None else _int(cfg, ("DOMU_CPUPOOL", i)) + 1}


def _flag(cfg, key, default: bool = False) -> bool:
    value = cfg.get(key)
    if value is None or value == "":
        return default
    if value.lower() in YES or value.lower() in ("0", "n", "no", "false", "disabled"):
        return value.lower() in YES
    raise _fail(cfg, key, f"{value!r} is not a yes or no (1/0, y/n, true/false)")


def source_name(cfg: ImageBuilderConfig) -> str | None:
    """UBOOT_SOURCE: the name uboot-script-gen gives the script's text, beside UBOOT_SCRIPT."""
    return cfg.get("UBOOT_SOURCE") or None


def script_name(cfg: ImageBuilderConfig) -> str | None:
    return cfg.get("UBOOT_SCRIPT") or None


def variant_of(cfg: ImageBuilderConfig, board: str) -> Variant:
    """What the smoke test needs to know of the config's boot (its domains, a Dom0 or not),
    as a board variant: the dom0less steps that apply to it run (--xenlab-imagebuilder)."""
    dom0 = bool(cfg.get("DOM0_KERNEL"))
    domains = [DomainSpec(f"domU{i}", IMAGEBUILDER_FILE,
                          IMAGEBUILDER_FILE if cfg.get(("DOMU_RAMDISK", i)) else None, d["memory_mb"],
                          d["vcpus"], d["cmdline"], True, d["enhanced"], d["static"], d["direct_map"], (),
                          d["cpupool"], ()) for i, d in _domus(cfg, dom0)]
    if not domains and not dom0:
        raise _fail(cfg, "NUM_DOMUS", "no Dom0 and no DomU: nothing to boot")
    return Variant("imagebuilder", cfg.path.resolve(), f"ImageBuilder config {cfg.path.name}",
                   (board,), (), "", dom0, tuple(domains), (), ())
