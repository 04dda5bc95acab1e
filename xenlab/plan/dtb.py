"""The host device tree: resolve a profile's DTB and read what Xen needs from it.

`resolve_dtb` turns a profile's `dtb:` source (a file, a DTB inside a Debian
kernel package, or a QEMU dump) into one deterministic file in the cache,
``dtbs/<sha256>.dtb``: QEMU's random /chosen seeds removed, the profile's
fix-ups applied.  `DtbInfo` answers the questions `doctor` and the boot plan
ask (memory banks, aliases, stdout-path, CPUs and PSCI, reserved memory).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import attr
from pyfdt.pyfdt import (Fdt, FdtBlobParse, FdtNode, FdtProperty, FdtPropertyStrings,
                         FdtPropertyWords)

from .firmware import debian_file
from .profile import BoardProfile, DtbDebian, DtbFile, DtbQemu
from ..images.cache import atomic_write, cache_root, sha256_bytes
from ..errors import XenlabError

FDT_MAGIC = 0xD00DFEED
# QEMU writes fresh random values here on every dump; without them a dump is
# reproducible and content-hashable (shared/notes/qemu-xen.md).
RANDOM_SEEDS = ("rng-seed", "kaslr-seed")


# --------------------------------------------------------------------------- parsing

class CorruptDtb(XenlabError):
    """The bytes are not a valid flattened device tree."""


def parse_dtb(data: bytes, what: str) -> Fdt:
    """Parse a flattened device tree, or raise a one-line XenlabError naming `what`."""
    if len(data) < 40:
        raise CorruptDtb(f"{what}: not a DTB (only {len(data)} bytes)")
    magic, total, off_struct, off_strings, off_rsv, version = struct.unpack_from(">6I", data)
    if magic != FDT_MAGIC:
        raise CorruptDtb(f"{what}: not a DTB (magic {magic:#010x}, expected {FDT_MAGIC:#010x})")
    if total > len(data) or not all(16 <= off <= total for off in (off_struct, off_strings, off_rsv)):
        raise CorruptDtb(f"{what}: corrupt DTB (header says {total} bytes, offsets "
                          f"{off_struct:#x}/{off_strings:#x}/{off_rsv:#x}; file has {len(data)})")
    noise = io.StringIO()
    try:
        # pyfdt prints "Unknown Tag" for garbage instead of failing: treat that as corrupt.
        with contextlib.redirect_stdout(noise):
            fdt = FdtBlobParse(io.BytesIO(data[:total])).to_fdt()
    except Exception as exc:  # pyfdt raises bare Exception, TypeError, struct.error ...
        raise CorruptDtb(f"{what}: corrupt DTB ({type(exc).__name__}: {exc})") from None
    if noise.getvalue() or fdt.get_rootnode() is None:
        raise CorruptDtb(f"{what}: corrupt DTB (unknown structure tags)")
    return fdt


def read_dtb(path: Path, what: str | None = None) -> Fdt:
    what = what or str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise XenlabError(f"{what}: cannot read DTB: {exc.strerror}") from None
    return parse_dtb(data, what)


def set_prop(node: FdtNode, prop) -> None:
    """Add or replace a property (what U-Boot's `fdt set` does).

    Properties go before the node's subnodes: libfdt stops looking for a
    property at the first subnode, so one appended after them is invisible
    to U-Boot, Xen and `fdtget` (a /chosen with children, common on real boards).
    """
    with contextlib.suppress(ValueError):
        node.remove(prop.get_name())
    first_child = next((i for i, item in enumerate(node.subdata) if isinstance(item, FdtNode)),
                       None)
    if first_child is None:
        node.append(prop)
    else:
        node.insert(first_child, prop)


# --------------------------------------------------------------------------- resolving

def resolve_dtb(profile: BoardProfile) -> Path:
    """The profile's DTB, fixed up, as ``cache_root()/dtbs/<sha256>.dtb`` (deterministic)."""
    where = profile.where
    src = profile.dtb
    if isinstance(src, DtbFile):
        if not src.path.is_file():
            raise XenlabError(f"key 'dtb.file': {src.path} not found", where=where)
        data, what = src.path.read_bytes(), str(src.path)
    elif isinstance(src, DtbDebian):
        data, what = _from_debian(src, where)
    elif isinstance(src, DtbQemu):
        data, what = _from_qemu(src, where), f"{src.binary} dumpdtb"
    else:  # pragma: no cover - the schema allows nothing else
        raise TypeError(src)

    fdt = parse_dtb(data, what)
    chosen = fdt.resolve_path("/chosen")
    if isinstance(chosen, FdtNode):
        for seed in RANDOM_SEEDS:
            with contextlib.suppress(ValueError):
                chosen.remove(seed)
    for i, fixup in enumerate(profile.dtb_fixups):
        key = "disable" if fixup.disable else "remove" if fixup.remove else "node"
        node = fdt.resolve_path(fixup.path)
        if not isinstance(node, FdtNode) or fixup.path == "/":
            raise XenlabError(f"key 'dtb_fixups[{i}].{key}': no node {fixup.path} in {what}",
                              where=where)
        if fixup.disable:
            set_prop(node, FdtPropertyStrings("status", ["disabled"]))
        elif fixup.remove:
            parent = fdt.resolve_path(fixup.path.rsplit("/", 1)[0] or "/")
            parent.remove(node.get_name())
        else:
            set_prop(node, FdtPropertyWords("reg", list(fixup.reg)))

    blob = fdt.to_dtb()
    out = cache_root() / "dtbs" / f"{sha256_bytes(blob)}.dtb"
    if not out.exists():
        atomic_write(out, blob)
    return out


def _from_debian(src: DtbDebian, where: str) -> tuple[bytes, str]:
    return debian_file(src, where, "dtb.debian").read_bytes(), f"{src.package}:{src.path}"


def _from_qemu(src: DtbQemu, where: str) -> bytes:
    binary = shutil.which(src.binary)
    if binary is None:
        raise XenlabError(f"key 'dtb.qemu.binary': {src.binary} not found "
                          "(Debian package qemu-system-arm)", where=where)
    with tempfile.TemporaryDirectory(prefix="xenlab-dtb-") as tmp:
        out = Path(tmp) / "dump.dtb"
        # -nodefaults: the default NIC needs a ROM file and no default device
        # appears in the virt board's DTB, so the dump is the same without them.
        cmd = [binary, *src.args, "-nodefaults", "-display", "none",
               "-machine", f"dumpdtb={out}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise XenlabError("key 'dtb.qemu': the DTB dump did not finish in 60 s", where=where) from None
        if proc.returncode != 0 or not out.exists():
            msg = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise XenlabError(f"key 'dtb.qemu.args': QEMU could not dump the DTB: {msg}", where=where)
        return out.read_bytes()


# --------------------------------------------------------------------------- reading

def prop_words(prop) -> list[int]:
    if isinstance(prop, FdtPropertyWords):
        return list(prop.words)
    return []


def prop_strings(prop) -> list[str]:
    if isinstance(prop, FdtPropertyStrings):
        return list(prop.strings)
    return []


def _cells(words: list[int], n: int) -> int:
    value = 0
    for w in words[:n]:
        value = (value << 32) | w
    return value


@attr.s(frozen=True, auto_attribs=True)
class Cpu:
    path: str
    enable_method: str | None  # the node's own, else the one on /cpus
    release_addr: int | None  # cpu-release-addr (spin-table)
    compatible: str = ""  # the core, e.g. arm,cortex-a72
    reg: int | None = None  # the CPU's number (MPIDR affinity)
    phandle: int | None = None


@attr.s(frozen=True, eq=False)
class DtbInfo:
    """Read-only questions about one parsed DTB."""

    fdt: Fdt = attr.ib()

    @classmethod
    def load(cls, path: Path, what: str | None = None) -> "DtbInfo":
        return cls(read_dtb(path, what))

    def node(self, path: str) -> FdtNode | None:
        found = self.fdt.resolve_path(path)
        return found if isinstance(found, FdtNode) else None

    def prop(self, path: str, name: str):
        node = self.node(path)
        if node is None:
            return None
        for item in node:
            if isinstance(item, FdtProperty) and item.get_name() == name:
                return item
        return None

    def string(self, path: str, name: str) -> str | None:
        values = prop_strings(self.prop(path, name))
        return values[0] if values else None

    def children(self, path: str) -> list[tuple[str, FdtNode]]:
        node = self.node(path)
        base = "" if path == "/" else path
        return [(f"{base}/{n.get_name()}", n) for n in (node or []) if isinstance(n, FdtNode)]

    def cells(self, path: str) -> tuple[int, int]:
        """(#address-cells, #size-cells) that apply to `path`'s children (spec defaults 2, 1)."""
        a = prop_words(self.prop(path, "#address-cells"))
        s = prop_words(self.prop(path, "#size-cells"))
        return (a[0] if a else 2, s[0] if s else 1)

    def regs(self, path: str) -> list[tuple[int, int]]:
        """`reg` of a node as (address, size) pairs, decoded with the parent's cells."""
        parent = path.rsplit("/", 1)[0] or "/"
        ac, sc = self.cells(parent)
        words = prop_words(self.prop(path, "reg"))
        step = ac + sc
        if step == 0:
            return []
        return [(_cells(words[i:i + ac], ac), _cells(words[i + ac:i + step], sc))
                for i in range(0, len(words) - step + 1, step)]

    def aliases(self) -> dict[str, str] | None:
        """/aliases as name -> path; None when the node does not exist."""
        node = self.node("/aliases")
        if node is None:
            return None
        return {p.get_name(): p[0] for p in node if isinstance(p, FdtPropertyStrings)}

    def resolve(self, alias_or_path: str) -> str | None:
        """The node path an alias or a path names, if that node exists."""
        path = alias_or_path if alias_or_path.startswith("/") else (self.aliases() or {}).get(alias_or_path)
        if path is None or self.node(path) is None:
            return None
        return path.rstrip("/") or "/"

    def stdout_path(self) -> str | None:
        """/chosen/stdout-path (or the older linux,stdout-path) without its `:options`."""
        value = self.string("/chosen", "stdout-path") or self.string("/chosen", "linux,stdout-path")
        return value.split(":", 1)[0] if value else None

    def stdout_options(self) -> str:
        """What follows ':' in stdout-path (`115200n8`), "" when nothing does."""
        value = self.string("/chosen", "stdout-path") or self.string("/chosen", "linux,stdout-path")
        return value.split(":", 1)[1] if value and ":" in value else ""

    def compatibles(self, path: str) -> list[str]:
        return prop_strings(self.prop(path, "compatible"))

    def _walk(self):
        """(path, item) of every node and property; pyfdt's own walk() fails on an empty root."""
        root = self.fdt.get_rootnode()
        return root.walk() if len(root) else iter(())

    def interrupt_controllers(self) -> list[tuple[str, list[str]]]:
        """(path, compatibles) of every node that says it is an interrupt-controller."""
        out = []
        for path, item in self._walk():
            if isinstance(item, FdtProperty) and item.get_name() == "interrupt-controller":
                node = path.rsplit("/", 1)[0] or "/"
                out.append((node, self.compatibles(node)))
        return out

    def memory_nodes(self) -> list[str]:
        return [p for p, n in self.children("/")
                if n.get_name() == "memory" or n.get_name().startswith("memory@")
                or self.string(p, "device_type") == "memory"]

    def memory_banks(self) -> list[tuple[int, int]]:
        """Non-empty (start, end) RAM banks from every /memory node."""
        return [(a, a + s) for p in self.memory_nodes() for a, s in self.regs(p) if s]

    def reserved_regions(self) -> list[tuple[int, int, str]]:
        """Fixed /reserved-memory regions and /memreserve/ entries as (start, end, name)."""
        out = [(a, a + s, f"/reserved-memory/{n.get_name()}")
               for p, n in self.children("/reserved-memory") for a, s in self.regs(p) if s]
        for entry in self.fdt.reserve_entries or []:
            if entry["size"]:
                out.append((entry["address"], entry["address"] + entry["size"], "/memreserve/"))
        return out

    def cpus(self) -> list[Cpu]:
        default = self.string("/cpus", "enable-method")
        out = []
        for path, node in self.children("/cpus"):
            if not (node.get_name() == "cpu" or node.get_name().startswith("cpu@")
                    or self.string(path, "device_type") == "cpu"):
                continue  # cpu-map, l2-cache ...
            release = prop_words(self.prop(path, "cpu-release-addr"))
            reg = prop_words(self.prop(path, "reg"))
            handle = prop_words(self.prop(path, "phandle"))
            out.append(Cpu(path, self.string(path, "enable-method") or default,
                           _cells(release, len(release)) if release else None,
                           self.string(path, "compatible") or "",
                           _cells(reg, len(reg)) if reg else None, handle[0] if handle else None))
        return out

    def phandles(self) -> set[int]:
        """Every phandle the DTB uses (a new node's must differ)."""
        return {w for _, item in self._walk()
                if isinstance(item, FdtPropertyWords) and item.get_name() in ("phandle", "linux,phandle")
                for w in item.words[:1]}

    def find_compatible(self, prefix: str) -> str | None:
        """Path of the first node whose compatible starts with `prefix`."""
        for path, item in self._walk():
            if (isinstance(item, FdtPropertyStrings) and item.get_name() == "compatible"
                    and any(c.startswith(prefix) for c in item.strings)):
                return path.rsplit("/", 1)[0] or "/"
        return None

    def psci(self) -> tuple[str, str] | None:
        """(path, conduit) of the PSCI node, found by compatible as Xen does; None when absent."""
        path = self.find_compatible("arm,psci")
        if path is None:
            return None
        return path, self.string(path, "method") or ""

    def status(self, path: str) -> str:
        return self.string(path, "status") or "okay"

    def summary(self) -> list[str]:
        """What Xen will find in this DTB, one line per topic (for `xenlab doctor`)."""
        banks = ", ".join(f"{a:#x}-{b:#x}" for a, b in self.memory_banks())
        if not banks:
            banks = "zero-sized /memory (firmware fills it)" if self.memory_nodes() else "no /memory node"
        stdout = self.stdout_path()
        console = f"{stdout} -> {self.resolve(stdout) or 'nothing'}" if stdout else "none"
        aliases = self.aliases()
        serial = {k: v for k, v in (aliases or {}).items() if k.startswith("serial")}
        cpus = self.cpus()
        methods = ", ".join(sorted({str(c.enable_method) for c in cpus})) or "-"
        psci = self.psci()
        reserved = ", ".join(f"{a:#x}-{b:#x} {n}" for a, b, n in self.reserved_regions()) or "none"
        return [f"RAM: {banks}",
                f"stdout-path: {console}",
                "serial aliases: " + (", ".join(f"{k}={v}" for k, v in sorted(serial.items()))
                                      if serial else ("none" if aliases is not None else "no /aliases node")),
                f"CPUs: {len(cpus)} (enable-method {methods})",
                f"PSCI: {psci[0]} method {psci[1] or '?'}" if psci else "PSCI: none",
                f"reserved: {reserved}"]
