"""The boot plan: where every file goes in RAM and what /chosen must say.

Computed once, like ImageBuilder's uboot-script-gen: each file at a 2 MiB
boundary from its real size, skipping what U-Boot, firmware and the DTB
reserve; then /chosen's module nodes (docs/misc/arm/device-tree/booting.txt,
seed §8.4) as a list of edits.  The plan is a value: it prints as an address
table and renders the same edits twice without recomputing anything, as
U-Boot `fdt` commands (`uboot_commands`, `boot_script`) and as a DTB edited
offline with pyfdt (`offline_dtb`, the seed's "edit the .dts" path).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Mapping

import attr
from pyfdt.pyfdt import FdtNode, FdtProperty, FdtPropertyStrings, FdtPropertyWords

from .profile import BoardProfile, Region, check_cmdline
from ..images.cache import atomic_write, sha256_file
from .chosen import CpupoolSpec, DomUSpec, DtEdit, SharedMem, chosen_edits, edit_bytes, uboot_edit  # noqa: F401
from .dtb import DtbInfo, read_dtb, set_prop
from .uart import ConsoleUart, console_uart, require_dtuart
from ..errors import XenlabError
from ..images.imageformat import image_info
from .loadnames import _check_file, _check_name, load_path
from .layout import ALIGN, SCRIPT_SLOT, MiB  # noqa: F401  (the plan's units, for its readers)
from .layout import align as _align, check_memory, human as _human, layout, place_script
from .domains import DOMAIN_NAME_RE, check_domus as _check_domus  # noqa: F401  (DOMAIN_NAME_RE: its readers)
from .domains import resolve_cpupools as _resolve_cpupools, static_banks as _static_banks
from .domains import static_heap_banks as _static_heap_banks

FDT_PAGE = 0x1000  # `fdt resize` ends the blob on a 4 KiB boundary
FDT_RESIZE_RSV = 5 * 16  # ... after room for five /memreserve/ entries (fdt_shrink_to_minimum)
FDT_BOOT_PAD = 0x3000  # booti/bootz then grow an in-place DTB by CONFIG_SYS_FDT_PAD for their fix-ups
# What the run types around each command (labgrid UBootDriver.run: echo markers, the status)
COMMAND_WRAP = 64
# The /chosen property each command-line key becomes (booting.txt)
BOOTARGS_KEYS = (("xen,xen-bootargs", "xen.cmdline"), ("xen,dom0-bootargs", "dom0.cmdline"))

ROLES = ("xen", "dom0-kernel", "dom0-ramdisk")


@attr.s(frozen=True, auto_attribs=True)
class Placement:
    role: str  # xen, dom0-kernel, dom0-ramdisk, domu:<name>:kernel, domu:<name>:ramdisk, dtb
    filename: str  # the load name (TFTP, SD card): the DTB's is <board>.dtb, the others' their basename
    path: Path
    addr: int
    size: int  # exact file size: what `reg` says
    sha256: str
    span: int  # memory kept for it: bss past the file for Xen, `fdt resize` headroom for the DTB

    @property
    def end(self) -> int:
        return self.addr + self.span


@attr.s(frozen=True, auto_attribs=True)
class BootPlan:
    profile: BoardProfile
    placements: tuple[Placement, ...]
    script_addr: int
    xen_bootargs: str
    dom0_bootargs: str
    domus: tuple[DomUSpec, ...]
    dtb_headroom: int  # bytes for `fdt resize`: the /chosen edits fit in it
    edits: tuple[DtEdit, ...]
    console: ConsoleUart | None = None  # Xen's UART and the speed the lab must read it at
    cpupools: tuple[CpupoolSpec, ...] = ()
    static_heap: tuple[tuple[int, int], ...] = ()  # (address, size): Xen's heap, all the guests get
    load_dir: str = ""  # the run's own directory on the TFTP server (staged_in), or its root

    @property
    def has_dom0(self) -> bool:
        return any(p.role == "dom0-kernel" for p in self.placements)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, profile: BoardProfile, files: Mapping[str, os.PathLike], dtb_path: os.PathLike,
              *, script_addr: int | None = None, domus=(), fixed: Mapping[str, int] | None = None,
              cpupools=(), xen_cmdline: str = "", xen_bootargs: str | None = None,
              static_heap=(), load_window: tuple[int, int] | None = None) -> "BootPlan":
        """Lay out `files` ({"xen", "dom0-kernel"?, "dom0-ramdisk"?: path}), the DomUs and the DTB.

        Without "dom0-kernel" the plan boots dom0less without a Dom0: then it
        needs DomUs.  `fixed` pins roles to addresses (2 MiB aligned);
        everything else flows around them and around the DomUs' static banks.
        `xen_cmdline` is appended to Xen's (a variant's options); `xen_bootargs`
        replaces the whole of it (ImageBuilder's XEN_CMD).  `static_heap`
        ((address, size) banks) is the only RAM Xen gives guests: no file loads there.
        `load_window` (start, end) keeps the files inside it (ImageBuilder's MEMORY_START/END);
        the guests still take the board's RAM.
        """
        unknown = sorted(set(files) - set(ROLES))
        if unknown:
            raise XenlabError(f"boot plan: unknown file role '{unknown[0]}' (roles: {', '.join(ROLES)})")
        domus, cpupools = tuple(domus), tuple(cpupools)
        if not files.get("xen"):
            raise XenlabError("boot plan: no xen file given")
        dom0 = bool(files.get("dom0-kernel"))
        if not dom0 and (files.get("dom0-ramdisk") or not domus):
            raise XenlabError("boot plan: no dom0-kernel file given" +
                              ("" if domus else ", and no dom0less domains to boot instead"))
        _check_domus(domus, cpupools)

        # What goes where, in ImageBuilder's order: Dom0, DomUs, Xen, then the host DTB.
        wanted: list[tuple[str, Path]] = [("dom0-kernel", Path(files["dom0-kernel"]))] if dom0 else []
        if files.get("dom0-ramdisk"):
            wanted.append(("dom0-ramdisk", Path(files["dom0-ramdisk"])))
        # Domains booting one file share its one copy: Xen copies a kernel into each
        # domain, and takes a module of one kind listed twice at one address once.
        shared: dict[str, str] = {}  # domu role -> the role whose placement it uses
        for d in domus:
            for kind, path in (("kernel", d.kernel), ("ramdisk", d.ramdisk)):
                if not path:
                    continue
                role = f"domu:{d.name}:{kind}"
                first = next((r for r, p in wanted if r.endswith(kind) and p == Path(path)), None)
                if first:
                    shared[role] = first
                else:
                    wanted.append((role, Path(path)))
        wanted.append(("xen", Path(files["xen"])))
        wanted.append(("dtb", Path(dtb_path)))
        # The DTB's file is the cache's <sha256>.dtb; it loads as <board>.dtb, a name
        # to type and to find on a card.  Not its source's name: the Pi firmware reads
        # bcm2711-rpi-4-b.dtb from the same boot partition for U-Boot's own use.
        load_names = {role: path.name for role, path in wanted}
        load_names["dtb"] = f"{profile.name}.dtb"
        names: dict[str, str] = {}
        for role, path in wanted:
            name = _check_file(role, path, load_names[role])
            if name in names:
                raise XenlabError(f"boot plan: {role} file {path} and {names[name]} file share the "
                                  f"load name '{name}'; rename one")
            names[name] = role

        mem = profile.memory
        info = DtbInfo.load(Path(dtb_path))
        busy = list(mem.reserved) + [Region(a, b, f"{why} in the DTB")
                                     for a, b, why in info.reserved_regions()
                                     if a < mem.end and mem.start < b]

        outside = []  # RAM outside the load window: no file there, but the guests' all the same
        if load_window is not None:
            start, end = load_window
            if not (mem.start <= start < end <= mem.end):
                raise XenlabError(f"load window {start:#x}-{end:#x} is not inside the board's RAM "
                                  f"({mem.start:#x}-{mem.end:#x}, key 'memory' of {profile.where})")
            outside = [Region(a, b, "outside the load window") for a, b in
                       ((mem.start, start), (end, mem.end)) if a < b]
        busy += _static_banks(profile, busy, domus, info)
        static_heap = tuple((int(a), int(s)) for a, s in static_heap)
        heap = _static_heap_banks(profile, busy, static_heap, info)
        busy += heap + outside  # after the banks and heap, which may lie outside the window
        cpupools = _resolve_cpupools(profile, info, cpupools)
        root_cells = info.cells("/")

        uart = console_uart(profile, info)
        dom0_opts = f"dom0_mem={profile.dom0.memory_mb}M dom0_max_vcpus={profile.dom0.vcpus} " if dom0 else ""
        if xen_bootargs is None:
            xen_bootargs = " ".join(f"console=dtuart dtuart={require_dtuart(uart, profile)} {dom0_opts}"
                                    f"{profile.xen_cmdline} {xen_cmdline}".split())
        dom0_bootargs = profile.dom0.cmdline if dom0 else ""
        for what, value in (("Xen command line", xen_bootargs), ("Dom0 command line", dom0_bootargs)):
            why = check_cmdline(value)
            if why:
                raise XenlabError(f"{what} {value!r} {why}", where=profile.where)
        has_chosen = info.node("/chosen") is not None

        # Headroom for `fdt resize`: the edits' size with every address at its longest.
        worst = {role: Placement(role, "", path, mem.end - 1, 0, "", 0) for role, path in wanted}
        worst.update({role: worst[first] for role, first in shared.items()})
        headroom = _align(edit_bytes(chosen_edits(worst, has_chosen, xen_bootargs, dom0_bootargs,
                                                    domus, cpupools, static_heap, root_cells)) + 0x400,
                          FDT_PAGE)

        spans = {}
        for role, path in wanted:
            size = path.stat().st_size
            if role == "xen":
                spans[role] = image_info(path).effective_size  # its bss follows the file
            elif role == "dtb":
                grown = _align(_fdt_content_size(path) + FDT_RESIZE_RSV + headroom, FDT_PAGE)
                spans[role] = max(size, grown + FDT_BOOT_PAD)
            else:
                spans[role] = size

        script_addr = place_script(profile, busy, script_addr)
        busy.append(Region(script_addr, script_addr + SCRIPT_SLOT, "boot script slot"))
        placed = layout(profile, wanted, spans, busy, fixed or {}, script_addr + SCRIPT_SLOT)
        # The files fit; now what Xen must give the guests at boot has to, too.
        check_memory(profile, info, [r for r in busy if r not in heap and r not in outside],
                     spans["xen"], domus, dom0, heap)

        by_role = {}
        for role, path in wanted:
            by_role[role] = Placement(role, load_names[role], path, placed[role], path.stat().st_size,
                                      sha256_file(path), spans[role])
        placements = tuple(sorted(by_role.values(), key=lambda p: p.addr))
        by_role.update({role: by_role[first] for role, first in shared.items()})
        edits = chosen_edits(by_role, has_chosen, xen_bootargs, dom0_bootargs, domus, cpupools,
                             static_heap, root_cells)
        plan = cls(profile, placements, script_addr, xen_bootargs, dom0_bootargs, domus, headroom,
                   tuple(edits), uart, cpupools, static_heap)
        plan.check_command_lengths()
        return plan

    # ------------------------------------------------------------------ queries
    def placement(self, role: str) -> Placement:
        for p in self.placements:
            if p.role == role:
                return p
        raise KeyError(role)

    def files(self) -> dict[str, Path]:
        """Load name -> file, what the TFTP directory (or boot partition) must hold."""
        return {p.filename: p.path for p in self.placements}

    def uboot_prelude(self) -> list[str]:
        """The profile's init commands (network up ...), run before anything is loaded."""
        return list(self.profile.uboot.init_commands)

    def script_commands(self, script_name: str = "boot.scr") -> list[str]:
        """How to load and run the boot script written by `boot_script`."""
        _check_name("boot script", script_name, script_name)
        return [f"{self.profile.load_command} {self.script_addr:#x} {script_name}",
                f"source {self.script_addr:#x}"]

    def check_command_lengths(self) -> None:
        """Refuse a command longer than the board's U-Boot reads: U-Boot drops what does not
        fit its console buffer (CONFIG_SYS_CBSIZE), and the run types each command wrapped."""
        limit = self.profile.uboot.max_command
        for cmd in self.uboot_prelude() + self.uboot_commands():
            if len(cmd) + COMMAND_WRAP > limit:
                key = next((k for prop, k in BOOTARGS_KEYS if f" {prop} " in cmd),
                           "domains.cmdline" if " bootargs " in cmd else "uboot")
                raise XenlabError(f"key '{key}': a U-Boot command of {len(cmd)} bytes ({cmd[:40]}...) "
                                  f"is over what the board's U-Boot reads: uboot.max_command "
                                  f"{limit} (CONFIG_SYS_CBSIZE), {COMMAND_WRAP} of it for the "
                                  "run's markers", where=self.profile.where)

    # ------------------------------------------------------------------ renderings
    def uboot_commands(self, *, edit_dtb: bool = True) -> list[str]:
        """Load every file, write /chosen with `fdt`, boot Xen.

        With edit_dtb=False the `fdt` edits are left out: for bootloaders
        without `fdt`, serve `offline_dtb()` under the DTB's load name instead.
        """
        load = self.profile.load_command
        cmds = [f"{load} {p.addr:#x} {load_path(self.load_dir, p.filename)}" for p in self.placements]
        dtb = self.placement("dtb")
        if edit_dtb:
            # U-Boot reads `fdt resize`'s argument as hex.
            cmds += [f"fdt addr {dtb.addr:#x}", f"fdt resize {self.dtb_headroom:#x}"]
            cmds += [uboot_edit(e) for e in self.edits]
        # Keep the DTB where it is: booti/bootz would otherwise copy it next to
        # U-Boot's own reservation (ImageBuilder does the same).
        high = "0xffffffffffffffff" if self.profile.arch == "arm64" else "0xffffffff"
        cmds.append(f"setenv fdt_high {high}")
        cmds.append(f"{self.profile.boot_command} {self.placement('xen').addr:#x} - {dtb.addr:#x}")
        return cmds

    def boot_script(self, path: os.PathLike, source: os.PathLike | None = None) -> Path:
        """Write the commands to `source` (default boot.cmd beside `path`) and wrap them with
        mkimage into `path` (boot.scr)."""
        return write_boot_script(self.profile, self.uboot_commands(), path, source)

    def offline_dtb(self, out_path: os.PathLike) -> Path:
        """The DTB with the same /chosen edits applied by pyfdt, written to `out_path`."""
        dtb = self.placement("dtb")
        fdt = read_dtb(dtb.path)
        for e in self.edits:
            parent_path, _, name = e.node.rpartition("/")
            if e.prop is None:
                parent = fdt.resolve_path(parent_path or "/")
                if not isinstance(parent, FdtNode) or fdt.resolve_path(e.node) is not None:
                    raise XenlabError(f"{dtb.path}: cannot create node {e.node}")
                node = FdtNode(name)
                node.set_parent_node(parent)
                parent.append(node)
                continue
            node = fdt.resolve_path(e.node)
            if e.kind == "words":
                prop = FdtPropertyWords(e.prop, list(e.value))
            elif e.kind == "strings":
                prop = FdtPropertyStrings(e.prop, list(e.value))
            else:
                prop = FdtProperty(e.prop)
            set_prop(node, prop)
        blob = fdt.to_dtb()
        if len(blob) > dtb.span:
            raise XenlabError(f"edited DTB ({len(blob)} bytes) outgrows the {dtb.span} bytes kept "
                              f"for it at {dtb.addr:#x}")
        out = Path(out_path)
        atomic_write(out, blob)
        return out

    def qemu_loader_args(self, dtb: os.PathLike) -> list[str]:
        """QEMU's own loader as the firmware, for a board whose firmware QEMU cannot run.

        Xen is QEMU's `-kernel`, handed `dtb` (`offline_dtb`: the /chosen edits made)
        as a boot loader would; every other file goes by `-device loader` to the
        plan's address. QEMU refuses a file that overlaps where it put Xen or the DTB
        ("rom: requested regions overlap"), so a clash cannot pass unnoticed.
        """
        args = ["-kernel", _qemu_path(self.placement("xen").path), "-dtb", _qemu_path(Path(dtb))]
        for p in self.placements:
            if p.role not in ("xen", "dtb"):
                args += ["-device", f"loader,file={_qemu_path(p.path)},addr={p.addr:#x},force-raw=on"]
        return args

    def table(self) -> str:
        """A printable address table: role, file, start, end (exclusive), size, sha256."""
        rows = [("role", "file", "start", "end", "size", "sha256"),
                ("script", "boot.scr", f"{self.script_addr:#x}", f"{self.script_addr + SCRIPT_SLOT:#x}",
                 f"<= {_human(SCRIPT_SLOT)}", "-")]
        rows += [(p.role, p.filename, f"{p.addr:#x}", f"{p.end:#x}", _human(p.size), p.sha256[:12])
                 for p in self.placements]
        rows += [("static-heap", "-", f"{a:#x}", f"{a + n:#x}", _human(n), "-") for a, n in self.static_heap]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def write_boot_script(profile: BoardProfile, commands: list[str], path: os.PathLike,
                      source: os.PathLike | None = None) -> Path:
    """`commands` as `source` (default boot.cmd beside `path`), wrapped by mkimage into `path`."""
    scr = Path(path)
    cmd = Path(source) if source is not None else scr.with_suffix(".cmd")
    atomic_write(cmd, "\n".join(commands) + "\n")
    mkimage = shutil.which("mkimage")
    if mkimage is None:
        raise XenlabError("mkimage not found (Debian package u-boot-tools)")
    tmp = scr.with_name(f".{scr.name}.tmp")
    # mkimage stamps the header with SOURCE_DATE_EPOCH when set: the same plan then
    # makes the same boot.scr, and restaging it onto a card changes nothing.
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")}
    proc = subprocess.run([mkimage, "-A", profile.mkimage_arch, "-O", "linux", "-T", "script",
                           "-C", "none", "-n", f"xenlab {profile.name}"[:31],
                           "-d", str(cmd), str(tmp)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise XenlabError(f"mkimage failed for {cmd}: {proc.stderr.strip() or proc.stdout.strip()}")
    if tmp.stat().st_size > SCRIPT_SLOT:
        tmp.unlink()
        raise XenlabError(f"boot script {scr} is larger than its {_human(SCRIPT_SLOT)} slot")
    os.replace(tmp, scr)
    return scr


# --------------------------------------------------------------------------- checks

def _qemu_path(path: Path) -> str:
    # QEMU splits option values at commas; a doubled one would be read as one, but a
    # cache path never has any, and a tester's file with one is better renamed.
    text = str(Path(path).resolve())
    if "," in text:
        raise XenlabError(f"{text}: QEMU's loader cannot take a path with a comma; rename it")
    return text


def _fdt_content_size(path: Path) -> int:
    """What `fdt resize` keeps of a blob: everything up to the end of its strings."""
    with open(path, "rb") as f:
        head = f.read(40)
    off_strings, = struct.unpack_from(">I", head, 12)
    size_strings, = struct.unpack_from(">I", head, 32)
    return off_strings + size_strings
