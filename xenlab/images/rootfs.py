"""Root file systems from packages: busybox, the toolstack with exactly its libraries, modules.

`Sources` sees every extracted package as one tree and remembers which
package provided what, so a build fails when a listed package goes unused or
a needed file is missing.  Programs pull in the shared libraries their ELF
headers name (read with pyelftools), kernel modules the dependencies their
`.modinfo` names (the .deb ships no modules.dep).  The trees are written by
`cpio.RootfsTree`; the DomU's disk is a reproducible ext2 image.
"""

from __future__ import annotations

import lzma
import os
import re
import subprocess
import tempfile
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from ..errors import XenlabError
from .cpio import RootfsTree
from .manifest import Manifest

RECIPE_DIR = Path(__file__).resolve().parent.parent.parent / "hypervisor" / "rootfs"


class Sources:
    """All extracted packages seen as one tree, remembering who provides what."""

    def __init__(self, m: Manifest, trees: dict[str, Path]):
        self.m = m
        self.trees = trees
        self.used: set[str] = set()

    def find(self, rel: str) -> tuple[str, Path] | None:
        rel = rel.lstrip("/")
        # Merged /usr (trixie): /bin, /sbin and /lib are links into /usr in a real system.
        merged = [f"usr/{rel}"] if rel.split("/", 1)[0] in ("bin", "sbin", "lib") else []
        for candidate in [rel, *merged]:
            for name, root in self.trees.items():
                p = root / candidate
                if p.exists() or p.is_symlink():
                    return name, p
        return None

    def get(self, rel: str, package: str | None = None) -> Path:
        if package is not None:
            p = self.trees[package] / rel.lstrip("/")
            if not p.exists():
                raise XenlabError(f"{rel} is not in package {package}", where=str(self.m.path))
            self.used.add(package)
            return p
        found = self.find(rel)
        if found is None:
            raise XenlabError(f"no listed package provides {rel}", where=str(self.m.path))
        self.used.add(found[0])
        return found[1]


def base_tree(src: Sources, who: str) -> RootfsTree:
    """busybox, the device nodes the kernel needs before init, and the recipe files."""
    tree = RootfsTree()
    for d in ("proc", "sys", "dev", "run", "tmp", "mnt", "root", "sbin", "usr/bin",
              "usr/sbin", "var/log", "var/lib"):
        tree.dir(d)
    tree.symlink("/var/run", "/run")
    tree.symlink("/var/lock", "/run/lock")
    # Without /dev/console in the archive the kernel starts init with no stdio.
    tree.chardev("/dev/console", 5, 1)
    tree.copy("/bin/busybox", src.get("bin/busybox"), 0o755)
    tree.symlink("/bin/sh", "busybox")
    for f in sorted((RECIPE_DIR / who).rglob("*")):
        if f.is_file():
            tree.copy("/" + str(f.relative_to(RECIPE_DIR / who)), f)
    return tree


class Modules:
    """Kernel modules with their dependencies, in load order (depends first)."""

    def __init__(self, src: Sources, package: str, root: str):
        self.src, self.package, self.root = src, package, root.strip("/")
        base = src.trees[package] / self.root
        # trixie's kernels ship modules xz-compressed; busybox insmod takes plain ones.
        self.index = {p.name[:-len(".ko.xz")]: p for p in base.rglob("*.ko.xz")}
        self.index.update({p.stem: p for p in base.rglob("*.ko")})
        builtin = base / "modules.builtin"
        self.builtin = {Path(l).stem for l in builtin.read_text().split()} \
            if builtin.exists() else set()

    def add(self, tree: RootfsTree, wanted: list[str]) -> list[str]:
        order: list[str] = []

        def visit(name: str, chain: tuple[str, ...]):
            key = name.replace("_", "-")
            ko = self.index.get(name) or self.index.get(key) or self.index.get(name.replace("-", "_"))
            if ko is None:
                if name in self.builtin or key in self.builtin or name.replace("-", "_") in self.builtin:
                    return  # built into this kernel: nothing to load
                raise XenlabError(f"module '{name}' is neither a .ko nor built into "
                                  f"{self.package}", where=str(self.src.m.path))
            rel = str(ko.relative_to(self.src.trees[self.package]))
            if rel in order or name in chain:
                return
            for dep in modinfo_depends(ko):
                visit(dep, chain + (name,))
            order.append(rel)

        for name in wanted:
            visit(name, ())
        loaded = []
        for rel in order:
            data = module_bytes(self.src.get(rel, self.package))
            rel = rel.removesuffix(".xz")
            tree.file("/" + rel, data, 0o644)
            loaded.append("/" + rel)
        # The init loads them in this order (there is no modprobe or modules.dep).
        tree.file("/etc/xenlab/modules", "".join(f"{rel}\n" for rel in loaded).encode())
        return loaded


def module_bytes(ko: Path) -> bytes:
    """A module's ELF bytes (a .ko.xz unpacked)."""
    data = ko.read_bytes()
    if ko.name.endswith(".xz"):
        try:
            return lzma.decompress(data)
        except lzma.LZMAError as exc:
            raise XenlabError(f"{ko}: not an xz-compressed module ({exc})") from None
    return data


def modinfo_depends(ko: Path) -> list[str]:
    """The `depends=` of a module's .modinfo (the .deb ships no modules.dep)."""
    data = module_bytes(ko)
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def add_programs(tree: RootfsTree, src: Sources, m: Manifest, programs: list) -> None:
    """The toolstack programs and exactly the shared libraries they need."""
    search = [f"lib/{m.triplet}", f"usr/lib/{m.triplet}", "lib", "usr/lib"]
    pending: list[tuple[str, str]] = []
    for prog in programs:
        if isinstance(prog, dict):  # {path: ..., links: [...]}
            path, links = prog["path"], prog.get("links", [])
        else:
            path, links = prog, []
        pending.append((path, path))
        for link in links:
            tree.symlink(link, "/" + path)
    done: set[str] = set()
    while pending:
        rel, needed_by = pending.pop()
        if rel in done:
            continue
        done.add(rel)
        found = src.find(rel)
        if found is None:
            raise XenlabError(f"no listed package provides {rel} (needed by {needed_by})",
                              where=str(m.path))
        pkg, path = found
        src.used.add(pkg)
        # Keep the library's symlink chain (libfoo.so.1 -> libfoo.so.1.2).
        while path.is_symlink():
            target = os.readlink(path)
            tree.symlink("/" + rel, target)
            rel = str((Path(rel).parent / target)) if not target.startswith("/") else target.lstrip("/")
            rel = os.path.normpath(rel)
            found = src.find(rel)
            if found is None:
                raise XenlabError(f"dangling link {path} -> {target}", where=str(m.path))
            pkg, path = found
            src.used.add(pkg)
        tree.copy("/" + rel, path)
        for lib in elf_needed(path):
            for d in search:
                if src.find(f"{d}/{lib}") is not None:
                    pending.append((f"{d}/{lib}", rel))
                    break
            else:
                raise XenlabError(f"{rel} needs {lib}, which no listed package provides",
                                  where=str(m.path))
        interp = elf_interpreter(path)
        if interp:
            pending.append((interp.lstrip("/"), rel))


def make_disk(dest: Path, files: dict[str, bytes], size: str = "8M") -> None:
    """A small, reproducible ext2 image (fixed UUID, hash seed, times, owners)."""
    uuid = "78656e6c-6162-4000-8000-000000000001"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for name, data in files.items():
            (root / name).write_bytes(data)
            os.utime(root / name, (0, 0))
        os.utime(root, (0, 0))
        env = dict(os.environ, E2FSPROGS_FAKE_TIME="1")
        cmd = ["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-N", "64", "-m", "0",
               "-L", "xenlab", "-U", uuid, "-E", f"root_owner=0:0,hash_seed={uuid}",
               "-d", str(root), str(dest), size]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise XenlabError(f"mke2fs failed: {proc.stderr.strip()}", where=str(dest))
        # populate_fs copies the source's ctime, which cannot be set: pin it.
        script = "".join(f"sif /{name} ctime 1\n" for name in files)
        subprocess.run(["debugfs", "-w", "-f", "-", str(dest)], input=script, env=env,
                       capture_output=True, text=True, check=True)


def _elf(path: Path):
    """(NEEDED libraries, interpreter) of an ELF file; ([], None) for anything else."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return [], None
            f.seek(0)
            elf = ELFFile(f)
            needed = [tag.needed for sec in elf.iter_sections() if isinstance(sec, DynamicSection)
                      for tag in sec.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
            interp = next((seg.get_interp_name() for seg in elf.iter_segments()
                           if seg["p_type"] == "PT_INTERP"), None)
            return needed, interp
    except (OSError, ELFError) as exc:
        raise XenlabError(f"{path}: not a readable ELF file ({exc})") from None


def elf_needed(path: Path) -> list[str]:
    return _elf(path)[0]


def elf_interpreter(path: Path) -> str | None:
    return _elf(path)[1]
