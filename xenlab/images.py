"""The bundled image set: Xen, Dom0 and DomU images built from pinned Debian packages.

A manifest in ``hypervisor/<arch>.yaml`` lists packages by exact name, version
and sha256, and says which files of them make the set.  `build_image_set`
turns it into a directory of artifacts in the content-addressed cache:

    xen  xen.config  dom0-kernel  dom0-kernel.config  dom0-rootfs.cpio.gz
    domU-kernel  domU-kernel.config  domU-rootfs.cpio.gz  domU-disk.img
    manifest.json

The set's key hashes the manifest, the recipe files under ``hypervisor/rootfs``
and every override, so a second build with the same inputs is a lookup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import attr
import yaml

from . import debs
from .cache import build_aside, cache_root, sha256_bytes, sha256_file
from .errors import Finding, Severity, XenlabError
from .imageformat import image_format
from .initramfs import RootfsTree

# Bump when the build logic changes what a manifest produces.
BUILDER_VERSION = "3"

HYPERVISOR_DIR = Path(__file__).resolve().parent.parent / "hypervisor"
RECIPE_DIR = HYPERVISOR_DIR / "rootfs"
ARCHES = ("arm64", "arm32")

DOM0_READY_MARKER = "XENLAB-DOM0-READY"
DOMU_READY_MARKER = "XENLAB-DOMU-READY"
DISK_MARKER = "xenlab-pv-block-marker"

# Artifact name -> override option name (`--xen PATH`, `--dom0-kernel PATH` ...).
OVERRIDABLE = ("xen", "dom0-kernel", "domU-kernel", "dom0-rootfs.cpio.gz",
               "domU-rootfs.cpio.gz", "domU-disk.img")
KERNEL_ARTIFACTS = ("xen", "dom0-kernel", "domU-kernel")


# --------------------------------------------------------------------------- manifest

@attr.s(frozen=True, auto_attribs=True)
class Manifest:
    """A pinned recipe (``hypervisor/<arch>.yaml``), validated."""

    path: Path
    arch: str
    debian_arch: str
    triplet: str
    image_format: str
    packages: tuple[debs.DebPackage, ...]
    xen: dict
    kernel: dict
    dom0: dict
    domU: dict
    raw: bytes

    def package(self, name: str) -> debs.DebPackage:
        for pkg in self.packages:
            if pkg.name == name:
                return pkg
        raise XenlabError(f"package '{name}' is used but not listed under 'packages'",
                          where=str(self.path))


_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_VERSION = re.compile(r"^[0-9A-Za-z.+~:-]+$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def manifest_path(arch: str) -> Path:
    if arch not in ARCHES:
        raise XenlabError(f"unknown arch '{arch}' (choose from {', '.join(ARCHES)})",
                          where="--arch")
    return HYPERVISOR_DIR / f"{arch}.yaml"


def load_manifest(path: Path) -> Manifest:
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise XenlabError(f"cannot read manifest: {exc.strerror}", where=where) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise XenlabError(f"not valid YAML: {str(exc).splitlines()[0]}", where=where) from None
    if not isinstance(data, dict):
        raise XenlabError("expected a mapping at the top level", where=where)

    def need(key: str, kind=str, within=data, prefix=""):
        if key not in within:
            raise XenlabError(f"missing key '{prefix}{key}'", where=where)
        value = within[key]
        if not isinstance(value, kind):
            raise XenlabError(f"key '{prefix}{key}': {value!r} is not a {kind.__name__}",
                              where=where)
        return value

    known = {"arch", "debian_arch", "triplet", "image_format", "packages", "xen", "kernel",
             "dom0", "domU"}
    for key in data:
        if key not in known:
            raise XenlabError(f"unknown key '{key}'", where=where)
    arch = need("arch")
    if arch not in ARCHES:
        raise XenlabError(f"key 'arch': unknown arch '{arch}'", where=where)
    debian_arch = need("debian_arch")
    packages = []
    for i, entry in enumerate(need("packages", list)):
        if not isinstance(entry, dict) or set(entry) != {"name", "version", "sha256"}:
            raise XenlabError(f"key 'packages[{i}]': expected name, version and sha256",
                              where=where)
        name, version, sha = (str(entry["name"]), str(entry["version"]), str(entry["sha256"]))
        if not _NAME.match(name):
            raise XenlabError(f"key 'packages[{i}].name': {name!r} is not a package name",
                              where=where)
        if not _VERSION.match(version):
            raise XenlabError(f"key 'packages[{i}].version': {version!r} is not a version",
                              where=where)
        if not _SHA.match(sha):
            raise XenlabError(f"key 'packages[{i}].sha256': {sha!r} is not a sha256",
                              where=where)
        packages.append(debs.DebPackage(name, version, sha, debian_arch))
    fmt = need("image_format")
    if fmt not in ("arm64-image", "zimage"):
        raise XenlabError(f"key 'image_format': {fmt!r} is not arm64-image or zimage",
                          where=where)
    manifest = Manifest(
        path=Path(path), arch=arch, debian_arch=debian_arch, triplet=need("triplet"),
        image_format=fmt, packages=tuple(packages), xen=need("xen", dict),
        kernel=need("kernel", dict), dom0=need("dom0", dict), domU=need("domU", dict), raw=raw)
    for section, keys in (("xen", ("package", "image", "config")),
                          ("kernel", ("package", "image", "config", "modules")),
                          ("dom0", ("programs", "modules", "xen_bin")),
                          ("domU", ("modules",))):
        for key in keys:
            need(key, (str, list), getattr(manifest, section), f"{section}.")
    manifest.package(manifest.xen["package"])
    manifest.package(manifest.kernel["package"])
    return manifest


# --------------------------------------------------------------------------- the set

@attr.s(frozen=True, auto_attribs=True)
class Artifact:
    name: str
    size: int
    sha256: str
    source: str  # "PACKAGE VERSION", "built from ...", or "override"
    path: str = ""  # for overrides: where the file came from

    def as_dict(self) -> dict:
        return attr.asdict(self)


@attr.s(frozen=True, auto_attribs=True)
class ImageSet:
    """A built image set: a directory of artifacts described by manifest.json."""

    dir: Path
    info: dict

    @classmethod
    def open(cls, directory: Path) -> "ImageSet":
        path = Path(directory) / "manifest.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise XenlabError(f"not an image set ({exc})", where=str(path)) from None
        return cls(Path(directory), info)

    @property
    def arch(self) -> str:
        return self.info["arch"]

    @property
    def hash(self) -> str:
        """Identifies exactly what booted: the sha256 of manifest.json."""
        return sha256_file(self.dir / "manifest.json")

    @property
    def artifacts(self) -> dict[str, Artifact]:
        return {a["name"]: Artifact(**a) for a in self.info["artifacts"]}

    @property
    def overrides(self) -> dict[str, str]:
        return {a.name: a.sha256 for a in self.artifacts.values() if a.source == "override"}

    def path(self, name: str) -> Path:
        if name not in self.artifacts:
            raise XenlabError(f"image set has no artifact '{name}'", where=str(self.dir))
        return self.dir / name

    @property
    def xen_version(self) -> str:
        return self.info["xen_version"]

    @property
    def dom0_ready_marker(self) -> str:
        return self.info["dom0_ready_marker"]

    @property
    def domU_ready_marker(self) -> str:
        return self.info["domU_ready_marker"]


def set_key(manifest: Manifest, overrides: dict[str, str]) -> str:
    """Hash of everything that decides the set's bytes."""
    recipe = []
    for f in sorted(RECIPE_DIR.rglob("*")):
        if f.is_file():
            recipe.append((str(f.relative_to(RECIPE_DIR)), sha256_bytes(f.read_bytes()),
                           os.access(f, os.X_OK)))
    material = json.dumps({"builder": BUILDER_VERSION, "manifest": sha256_bytes(manifest.raw),
                           "recipe": recipe, "overrides": overrides}, sort_keys=True)
    return sha256_bytes(material.encode())[:32]


def build_image_set(arch: str = "arm64", overrides: dict[str, Path] | None = None,
                    manifest: Path | None = None, log=lambda msg: None) -> ImageSet:
    """Build (or find in the cache) the image set for `arch`."""
    m = load_manifest(Path(manifest) if manifest else manifest_path(arch))
    if m.arch != arch:
        raise XenlabError(f"key 'arch': manifest is for {m.arch}, not {arch}", where=str(m.path))
    checked = _check_overrides(m, overrides or {})
    key = set_key(m, {name: digest for name, (_, digest) in checked.items()})
    final = cache_root() / "sets" / f"{arch}-{key}"
    if (final / "manifest.json").exists():
        log(f"image set {final.name}: cached")
        return ImageSet.open(final)
    fetched = debs.fetch(list(m.packages), where=str(m.path))
    log(f"fetched {len(fetched)} packages")
    trees = {pkg.name: debs.extract(pkg) for pkg in m.packages}
    try:
        with build_aside(final) as out:
            _build_into(out, m, trees, checked, log)
    except OSError as exc:
        raise debs._disk_error(exc, final) from None
    return ImageSet.open(final)


def _check_overrides(m: Manifest, overrides: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    checked = {}
    for name, path in overrides.items():
        if name not in OVERRIDABLE:
            raise XenlabError(f"cannot override '{name}' (choose from {', '.join(OVERRIDABLE)})",
                              where=f"--{name}")
        path = Path(path)
        if not path.is_file():
            raise XenlabError(f"no such file: {path}", where=f"--{name}")
        if name in KERNEL_ARTIFACTS and image_format(path) != m.image_format:
            raise XenlabError(f"{path} is not a {m.arch} kernel image "
                              f"(expected {m.image_format}, found {image_format(path)})",
                              where=f"--{name}")
        if name.endswith(".cpio.gz") and Path(path).read_bytes()[:2] != b"\x1f\x8b":
            raise XenlabError(f"{path} is not a gzip'd cpio archive", where=f"--{name}")
        checked[name] = (path, sha256_file(path))
    return checked


class _Sources:
    """All extracted packages seen as one tree, remembering who provides what."""

    def __init__(self, m: Manifest, trees: dict[str, Path]):
        self.m = m
        self.trees = trees
        self.used: set[str] = set()

    def find(self, rel: str) -> tuple[str, Path] | None:
        rel = rel.lstrip("/")
        for name, root in self.trees.items():
            p = root / rel
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


def _build_into(out: Path, m: Manifest, trees: dict[str, Path],
                overrides: dict[str, tuple[Path, str]], log) -> None:
    src = _Sources(m, trees)
    xen_pkg, kernel_pkg = m.package(m.xen["package"]), m.package(m.kernel["package"])
    origin = {
        "xen": f"{xen_pkg.name} {xen_pkg.version}",
        "xen.config": f"{xen_pkg.name} {xen_pkg.version}",
        "dom0-kernel": f"{kernel_pkg.name} {kernel_pkg.version}",
        "dom0-kernel.config": f"{kernel_pkg.name} {kernel_pkg.version}",
        "domU-kernel": f"{kernel_pkg.name} {kernel_pkg.version}",
        "domU-kernel.config": f"{kernel_pkg.name} {kernel_pkg.version}",
    }
    shutil.copyfile(src.get(m.xen["image"], xen_pkg.name), out / "xen")
    shutil.copyfile(src.get(m.xen["config"], xen_pkg.name), out / "xen.config")
    for who in ("dom0", "domU"):
        shutil.copyfile(src.get(m.kernel["image"], kernel_pkg.name), out / f"{who}-kernel")
        shutil.copyfile(src.get(m.kernel["config"], kernel_pkg.name), out / f"{who}-kernel.config")
    for name, (path, _) in overrides.items():
        if name in ("xen", "dom0-kernel", "domU-kernel"):
            shutil.copyfile(path, out / name)
            if name != "xen":
                # The package's config no longer describes this kernel.
                (out / f"{name}.config").unlink()
                origin.pop(f"{name}.config")

    modules_root = m.kernel["modules"]
    mods = _Modules(src, kernel_pkg.name, modules_root)

    # The DomU's disk: an ext2 file system holding the marker the PV block step reads.
    if "domU-disk.img" in overrides:
        shutil.copyfile(overrides["domU-disk.img"][0], out / "domU-disk.img")
    else:
        _make_disk(out / "domU-disk.img", {"marker": (DISK_MARKER + "\n").encode()})
        origin["domU-disk.img"] = "built by xenlab (mke2fs)"

    # DomU root: busybox, the front-end modules, an init printing the ready marker.
    if "domU-rootfs.cpio.gz" in overrides:
        shutil.copyfile(overrides["domU-rootfs.cpio.gz"][0], out / "domU-rootfs.cpio.gz")
    else:
        domu = _base_tree(src, "domU")
        mods.add(domu, m.domU["modules"])
        domu.write_cpio_gz(out / "domU-rootfs.cpio.gz")
        origin["domU-rootfs.cpio.gz"] = "built by xenlab from busybox-static and " + kernel_pkg.name

    # Dom0 root: busybox, the toolstack with its libraries, back-end modules, and
    # the DomU's kernel, root and disk under /root so `xl create` needs no network.
    if "dom0-rootfs.cpio.gz" in overrides:
        shutil.copyfile(overrides["dom0-rootfs.cpio.gz"][0], out / "dom0-rootfs.cpio.gz")
    else:
        dom0 = _base_tree(src, "dom0")
        mods.add(dom0, m.dom0["modules"])
        _add_programs(dom0, src, m)
        dom0.file("/etc/xenlab/env", f"XEN_BIN={m.dom0['xen_bin']}\n".encode())
        dom0.copy("/root/Image", out / "domU-kernel", 0o644)
        dom0.copy("/root/domU-rootfs.cpio.gz", out / "domU-rootfs.cpio.gz", 0o644)
        dom0.copy("/root/domU-disk.img", out / "domU-disk.img", 0o644)
        dom0.write_cpio_gz(out / "dom0-rootfs.cpio.gz")
        origin["dom0-rootfs.cpio.gz"] = "built by xenlab from " + ", ".join(
            sorted(src.used - {xen_pkg.name}))

    unused = [p.name for p in m.packages if p.name not in src.used]
    if unused and not overrides:
        raise XenlabError(f"packages listed but not used by the set: {', '.join(unused)}"
                          " (the manifest must list exactly what the set needs)",
                          where=str(m.path))

    artifacts = []
    for f in sorted(out.iterdir(), key=lambda p: p.name):
        if f.name in overrides:
            art = Artifact(f.name, f.stat().st_size, overrides[f.name][1], "override",
                           str(overrides[f.name][0]))
        else:
            art = Artifact(f.name, f.stat().st_size, sha256_file(f), origin[f.name])
        artifacts.append(art.as_dict())
    info = {
        "arch": m.arch,
        "manifest": m.path.name,
        "manifest_sha256": sha256_bytes(m.raw),
        "builder": BUILDER_VERSION,
        "xen_version": xen_version_of(xen_pkg.version),
        "kernel_version": kernel_pkg.version,
        "image_format": m.image_format,
        "dom0_ready_marker": DOM0_READY_MARKER,
        "domU_ready_marker": DOMU_READY_MARKER,
        "disk_marker": DISK_MARKER,
        "packages": [{"name": p.name, "version": p.version, "sha256": p.sha256}
                     for p in m.packages],
        "artifacts": artifacts,
    }
    (out / "manifest.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log(f"built {len(artifacts)} artifacts")


def xen_version_of(debian_version: str) -> str:
    """'4.17.5+72-g01140da4e8-1' -> '4.17.5' (what Xen prints in its banner)."""
    return re.match(r"^(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", debian_version).group(1)


def _base_tree(src: _Sources, who: str) -> RootfsTree:
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


class _Modules:
    """Kernel modules with their dependencies, in load order (depends first)."""

    def __init__(self, src: _Sources, package: str, root: str):
        self.src, self.package, self.root = src, package, root.strip("/")
        base = src.trees[package] / self.root
        self.index = {p.stem: p for p in base.rglob("*.ko")}
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
        for rel in order:
            tree.copy("/" + rel, self.src.get(rel, self.package), 0o644)
        # The init loads them in this order (there is no modprobe or modules.dep).
        tree.file("/etc/xenlab/modules", "".join(f"/{rel}\n" for rel in order).encode())
        return ["/" + rel for rel in order]


def modinfo_depends(ko: Path) -> list[str]:
    """The `depends=` of a module's .modinfo (the .deb ships no modules.dep)."""
    data = ko.read_bytes()
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def _add_programs(tree: RootfsTree, src: _Sources, m: Manifest) -> None:
    """The toolstack programs and exactly the shared libraries they need."""
    search = [f"lib/{m.triplet}", f"usr/lib/{m.triplet}", "lib", "usr/lib"]
    pending: list[tuple[str, str]] = []
    for prog in m.dom0["programs"]:
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


def _readelf(path: Path, flag: str) -> str:
    proc = subprocess.run(["readelf", flag, "-W", str(path)], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


def elf_needed(path: Path) -> list[str]:
    if Path(path).read_bytes()[:4] != b"\x7fELF":
        return []
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _readelf(path, "-d"))


def elf_interpreter(path: Path) -> str | None:
    if Path(path).read_bytes()[:4] != b"\x7fELF":
        return None
    m = re.search(r"Requesting program interpreter: ([^\]]+)\]", _readelf(path, "-l"))
    return m.group(1) if m else None


def _make_disk(dest: Path, files: dict[str, bytes], size: str = "8M") -> None:
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


# --------------------------------------------------------------------------- checks

SEED_APPENDED_DTB = ("seed §9: with ARM_APPENDED_DTB an appended DTB replaces the one Xen "
                     "provides, and unless its memory matches what Xen gives Dom0 the kernel "
                     "crashes; do not append a DTB to the Dom0 kernel (or disable the option)")
SEED_DEBUG_LL = ("seed §10.1: CONFIG_DEBUG_LL makes the guest poke the host UART it cannot "
                 "see; the DomU console stays silent and `xenctx` shows PC 0x0000000c "
                 "(an early trap). Build the DomU kernel without it")


def kernel_config(path: Path) -> dict[str, str]:
    config = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            config[key] = value
    return config


def check_kernel_config(config: dict[str, str], role: str, where: str) -> list[Finding]:
    findings = []
    if role == "dom0":
        for key in ("CONFIG_XEN", "CONFIG_XEN_DOM0"):
            if config.get(key) != "y":
                findings.append(Finding(Severity.ERROR, f"dom0-config-{key[7:].lower()}",
                                        f"{where}: {key} is not set",
                                        "seed §6.1.5/§9: a Dom0 kernel needs Xen support "
                                        "(CONFIG_XEN and CONFIG_XEN_DOM0)"))
        if config.get("CONFIG_ARM_APPENDED_DTB") == "y":
            findings.append(Finding(Severity.WARN, "dom0-appended-dtb",
                                    f"{where}: CONFIG_ARM_APPENDED_DTB=y", SEED_APPENDED_DTB))
    if role == "domU":
        if config.get("CONFIG_XEN") != "y":
            findings.append(Finding(Severity.ERROR, "domU-config-xen",
                                    f"{where}: CONFIG_XEN is not set",
                                    "seed §6.1.7: a DomU kernel needs Xen guest support"))
        if config.get("CONFIG_DEBUG_LL") == "y":
            findings.append(Finding(Severity.WARN, "domU-debug-ll",
                                    f"{where}: CONFIG_DEBUG_LL=y", SEED_DEBUG_LL))
    return findings


def check_image_set(image_set: ImageSet) -> list[Finding]:
    """Headers of the three kernel images and the seed's kernel-config pitfalls."""
    findings = []
    want = image_set.info["image_format"]
    arts = image_set.artifacts
    for name in KERNEL_ARTIFACTS:
        fmt = image_format(image_set.dir / name)
        if fmt != want:
            findings.append(Finding(Severity.ERROR, f"{name}-format",
                                    f"{name}: expected {want} header, found {fmt}",
                                    "booti needs an arm64 Image, bootz a zImage (seed §8.2)"))
        else:
            findings.append(Finding(Severity.INFO, f"{name}-format", f"{name}: {fmt} header"))
    for name, actual in ((a.name, sha256_file(image_set.dir / a.name)) for a in arts.values()):
        if actual != arts[name].sha256:
            findings.append(Finding(Severity.ERROR, "artifact-changed",
                                    f"{name}: sha256 {actual} does not match manifest.json"))
    for role in ("dom0", "domU"):
        cfg = image_set.dir / f"{role}-kernel.config"
        if cfg.exists():
            findings += check_kernel_config(kernel_config(cfg), role, cfg.name)
        else:
            findings.append(Finding(Severity.INFO, f"{role}-config-unknown",
                                    f"{role}-kernel is an override without a .config; "
                                    "its Xen options could not be checked"))
    return findings


# --------------------------------------------------------------------------- pinning

def pin_manifest(arch: str, log=print) -> list[str]:
    """Rewrite the versions and sha256s of `hypervisor/<arch>.yaml` to what apt serves now."""
    path = manifest_path(arch)
    m = load_manifest(path)
    text = path.read_text()
    changed = []
    for pkg in m.packages:
        version, digest = debs.query_candidate(pkg.name, pkg.arch)
        if (version, digest) != (pkg.version, pkg.sha256):
            changed.append(f"{pkg.name}: {pkg.version} -> {version}")
        text = re.sub(
            rf"(- \{{name: {re.escape(pkg.name)}, version: )\"[^\"]*\"(, sha256: )[0-9a-f]{{64}}",
            lambda mo: f'{mo.group(1)}"{version}"{mo.group(2)}{digest}', text)
    path.write_text(text)
    return changed
