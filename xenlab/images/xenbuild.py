"""The Xen under test, built here: hypervisor and toolstack from one Xen source, cross-compiled.

A source is a Xen tree (a xen.git checkout, dirty or clean, or an unpacked
release), a release tarball, or `debian` (the manifest's Debian source
package, fetched with `apt-get source` through a private apt).  The recipe
is the seed's §11: `make dist-xen` and `./configure; make dist-tools` with
Debian's cross toolchain, Kconfig fragments from ``hypervisor/configs/``
merged over the tree's defconfig.

Builds are cached by content: the key is the source identity (git tree id
plus the diff and untracked files, or the tarball's sha256), the config,
the toolchain versions and this recipe.  A source tree is built in a
persistent work directory, synced file by file, so a one-file change
rebuilds only what depends on it; the finished build enters the cache by
rename, so an interrupted build leaves nothing half-written there.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import attr

from ..errors import XenlabError
from . import buildlog, kconfig, patches, toolchains, xentools
from .aptsuite import PrivateApt
from .cache import build_aside, cache_root, sha256_bytes, sha256_file
from .manifest import Manifest
from .patches import FIXES, PATCHES_DIR, apply_fix, patched_files
from .toolchains import Toolchain, build_helpers, toolchain

RECIPE_VERSION = "1"  # bump when the commands below change what a source produces
CONFIGURE = ["--prefix=/usr", "--disable-docs", "--disable-stubdom",
             "--disable-qemu-traditional", "--with-system-qemu=/usr/bin/qemu-system-i386",
             "--disable-golang", "--disable-ocamltools", "--disable-seabios", "--disable-rombios",
             "--disable-ipxe", "--disable-pvshim", "--disable-xsmpolicy", "--disable-werror"]


@attr.s(frozen=True, auto_attribs=True)
class XenSource:
    """A Xen source, identified by content."""

    kind: str  # git | tree | tarball | debian
    tree: Path  # the Xen tree (for a tarball: unpacked in the cache)
    identity: str  # sha256 of what decides the source's bytes
    changeset: str  # git describe, or "<tarball name> sha256:<12 hex>"
    origin: str  # what the user named
    commit: str | None = None  # a git source's HEAD (what a bisection names); None otherwise


@attr.s(frozen=True, auto_attribs=True)
class XenBuild:
    """A finished build in the cache: xen, xen.config, tools/ and build.json."""

    dir: Path
    info: dict

    @classmethod
    def open(cls, directory: Path) -> "XenBuild":
        try:
            info = json.loads((Path(directory) / "build.json").read_text())
        except (OSError, ValueError) as exc:
            raise XenlabError(f"not a Xen build ({exc})", where=str(directory)) from None
        return cls(Path(directory), info)

    @property
    def xen(self) -> Path:
        return self.dir / "xen"

    @property
    def config(self) -> Path:
        return self.dir / "xen.config"

    @property
    def tools(self) -> Path:
        return self.dir / "tools"


# --------------------------------------------------------------------------- sources

def resolve_source(spec: str, manifest: Manifest, log=lambda m: None) -> XenSource:
    """`debian`, a Xen tree or a release tarball: a XenSource, or one XenlabError line."""
    if spec == "debian":
        return _debian_source(manifest, log)
    path = Path(spec).expanduser()
    if path.is_dir():
        tree = path.resolve()
        _check_tree(tree, spec)
        if _git(tree, "rev-parse", "--show-toplevel") == str(tree):
            return _git_source(tree, spec)
        return XenSource("tree", tree, _hash_files(tree, _walk(tree)), f"tree {tree.name}", spec)
    if path.is_file():
        return _tarball_source(path.resolve(), spec)
    raise XenlabError(f"{spec}: no such Xen tree or tarball", where="--xen-source")


def _check_tree(tree: Path, spec: str) -> None:
    missing = [p for p in ("xen/Makefile", "tools", "Config.mk") if not (tree / p).exists()]
    if missing:
        raise XenlabError(f"{spec} is not a Xen tree (no {', '.join(missing)})",
                          where="--xen-source")


def _git(tree: Path, *args: str, binary: bool = False):
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True,
                          text=not binary, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return None
    return proc.stdout if binary else proc.stdout.strip()


def git_files(tree: Path) -> list[str]:
    """Tracked and untracked (not ignored) files of a checkout, that exist."""
    out = _git(tree, "ls-files", "-z", "--cached", "--others", "--exclude-standard", binary=True)
    names = sorted({n.decode() for n in out.split(b"\0") if n})
    return [n for n in names if os.path.lexists(tree / n)]


def _git_source(tree: Path, spec: str) -> XenSource:
    head_tree = _git(tree, "rev-parse", "HEAD^{tree}") or "no-commit"
    diff = _git(tree, "diff", "HEAD", "--binary", binary=True) or b""
    untracked = (_git(tree, "ls-files", "-z", "--others", "--exclude-standard", binary=True)
                 or b"").split(b"\0")
    material = hashlib.sha256(f"git {head_tree}\n".encode() + diff)
    material.update(_hash_files(tree, sorted(u.decode() for u in untracked if u)).encode())
    changeset = _git(tree, "describe", "--always", "--dirty", "--tags") or head_tree[:12]
    return XenSource("git", tree, material.hexdigest(), changeset, spec, _git(tree, "rev-parse", "HEAD"))


def _walk(tree: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel = os.path.relpath(root, tree)
        out += [os.path.normpath(os.path.join(rel, f)) for f in sorted(files)]
    return out


def _hash_files(tree: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        p = tree / name
        data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def _tarball_source(path: Path, spec: str, kind: str = "tarball") -> XenSource:
    if not tarfile.is_tarfile(path):
        raise XenlabError(f"{spec} is not a tarball (nor a directory)", where="--xen-source")
    digest = sha256_file(path)
    final = cache_root() / "xen-src" / digest[:32]
    if not final.exists():
        with build_aside(final) as tmp:
            try:
                with tarfile.open(path) as tar:
                    tar.extractall(tmp, filter="data")  # no absolute paths, links out, devices
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise XenlabError(f"{spec}: cannot unpack ({exc})", where="--xen-source") from None
    tops = [p for p in final.iterdir() if p.is_dir()]
    tree = tops[0] if len(tops) == 1 and not (final / "xen").exists() else final
    _check_tree(tree, spec)
    return XenSource(kind, tree, digest, f"{path.name} sha256:{digest[:12]}", spec)


def _debian_source(m: Manifest, log) -> XenSource:
    deb = (m.source or {}).get("debian")
    if not deb:
        raise XenlabError("this manifest names no Debian source package (source.debian)",
                          where=str(m.path))
    dest = cache_root() / "xen-src" / "debian" / f"{deb['package']}_{deb['version']}"
    orig = next(iter(sorted(dest.glob("*.orig.tar.*"))), None) if dest.is_dir() else None
    if orig is None:
        log(f"apt-get source {deb['package']}={deb['version']} ({deb['suite']})")
        with build_aside(dest) as tmp:
            PrivateApt(deb["suite"], "source").source(deb["package"], deb["version"], tmp)
        orig = next(iter(sorted(dest.glob("*.orig.tar.*"))), None)
        if orig is None:
            raise XenlabError(f"apt-get source {deb['package']}={deb['version']} gave no "
                              ".orig tarball", where=str(dest))
    return _tarball_source(orig, "debian", kind="debian")


# --------------------------------------------------------------------------- the build

def build_key(source: XenSource, tc: Toolchain, config: kconfig.Config, fixes: tuple[str, ...],
              versions: dict) -> str:
    recipe = [sha256_file(Path(m.__file__)) for m in (kconfig, patches, toolchains)]
    recipe.append(sha256_file(Path(__file__)))
    recipe += [sha256_file(PATCHES_DIR / FIXES[f]) for f in fixes]
    material = json.dumps({"recipe": RECIPE_VERSION, "files": recipe, "source": source.identity,
                           "arch": tc.xen_arch, "config": config.identity, "fixes": fixes,
                           "toolchain": versions}, sort_keys=True)
    return sha256_bytes(material.encode())[:32]


def build_xen(source: XenSource, m: Manifest, config: kconfig.Config,
              fixes: tuple[str, ...] = (), log=lambda msg: None) -> XenBuild:
    """The build of `source` for the manifest's arch: from the cache, or made now."""
    for fix in fixes:
        if fix not in FIXES:
            raise XenlabError(f"unknown fix '{fix}' (known: {', '.join(FIXES)})",
                              where="--apply-fix")
    tc = toolchain(m)
    versions = tc.versions()
    key = build_key(source, tc, config, fixes, versions)
    final = cache_root() / "xen-builds" / f"{tc.xen_arch}-{key}"
    if (final / "build.json").exists():
        log(f"Xen build {final.name}: cached")
        return XenBuild.open(final)
    # One work directory per source location and config: a changed file rebuilds little.
    place = sha256_bytes(f"{source.kind}:{source.tree}:{tc.xen_arch}:{config.identity}:"
                         f"{fixes}".encode())[:16]
    work = cache_root() / "xen-work" / f"{tc.xen_arch}-{place}"
    work.mkdir(parents=True, exist_ok=True)
    attempt = buildlog.Attempt(cache_root() / "xen-logs" / f"{tc.xen_arch}-{key}")
    with open(work.parent / f".{work.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds of one tree take turns
        t0 = time.monotonic()
        tree = work / "src"
        changed, index = sync_tree(source, tree)
        log(f"Xen source {source.changeset}: {changed} file(s) changed in {tree}")
        for fix in fixes:
            apply_fix(fix, source.tree, tree, attempt)
        helpers = build_helpers(work, tc)
        env = dict(os.environ, XEN_TARGET_ARCH=tc.xen_arch, CROSS_COMPILE=tc.cross,
                   PKG_CONFIG_LIBDIR=f"/usr/lib/{tc.triplet}/pkgconfig:/usr/share/pkgconfig",
                   LC_ALL="C", **helpers)  # configure reads APPEND_LIB into config/Tools.mk
        make = ["make", f"-j{os.cpu_count() or 2}", f"XEN_TARGET_ARCH={tc.xen_arch}",
                f"CROSS_COMPILE={tc.cross}", f"PYTHON={helpers['PYTHON']}"]
        # A build killed mid-way (Ctrl-C, a cancelled job) can leave an object without its
        # dependency file, which fails every later build here: clean what it was building.
        building = tree / ".xenlab-building"
        if building.exists():
            phase = building.read_text().strip() if building.read_text().strip() in ("xen", "tools") else "xen"
            log(f"the last {phase} build in {work} was interrupted: make clean-{phase} first")
            attempt.run(make + [f"clean-{phase}"], tree, f"clean-{phase} after an interrupted build",
                        env=env, ok=range(256))
        kconfig.configure(tree, config, make, env, attempt)
        building.write_text("xen")
        log("make dist-xen")
        try:
            attempt.run(make + ["dist-xen"], tree, "hypervisor build (make dist-xen)", env=env)
        except buildlog.BuildFailure:
            building.unlink()  # make stopped on an error: what it left is consistent
            raise
        t_xen = time.monotonic() - t0
        configure = [f"--host={tc.triplet}", "--build=x86_64-linux-gnu", *CONFIGURE]
        tools_key = xentools.tools_key(index, {
            "recipe": [RECIPE_VERSION, sha256_file(Path(toolchains.__file__))], "arch": tc.xen_arch,
            "toolchain": versions, "configure": configure, "link": list(tc.link_libraries),
            "patches": [sha256_file(PATCHES_DIR / FIXES[f]) for f in fixes
                        if any(map(xentools.builds_tools, patched_files(PATCHES_DIR / FIXES[f])))]})
        tools = xentools.cached_tools(tc.xen_arch, tools_key)
        if tools is not None:
            log(f"toolstack {tools.name}: cached (no toolstack source changed)")
        else:
            stamp, stamped = tree / ".xenlab-configure", " ".join(configure + sorted(helpers.values()))
            if not (tree / "config.status").exists() or not stamp.exists() or \
                    stamp.read_text() != stamped:
                log("./configure")
                attempt.run(["./configure", *configure], tree, "toolstack configure", env=env)
                stamp.write_text(stamped)
            log("make dist-tools")
            building.write_text("tools")
            try:
                attempt.run(make + ["dist-tools"], tree, "toolstack build (make dist-tools)", env=env)
            except buildlog.BuildFailure:
                building.unlink()
                raise
            tools = xentools.store_tools(tree, tc.xen_arch, tools_key)
        building.unlink()
        t_tools = time.monotonic() - t0 - t_xen
        with build_aside(final) as out:
            _collect(tree, out, source, tc, config, fixes, key, versions, tools,
                     {"hypervisor_s": round(t_xen, 1), "tools_s": round(t_tools, 1)})
    attempt.done()
    prune_work_dirs(work.parent, keep=work)
    return XenBuild.open(final)


WORK_DIR_MAX_AGE_S = 14 * 24 * 3600


def prune_work_dirs(root: Path, keep: Path, max_age: float = WORK_DIR_MAX_AGE_S) -> None:
    """Drop work directories no build used for two weeks (a tree deleted, a config dropped)."""
    now = time.time()
    for lock in root.glob(".*.lock"):
        work = root / lock.name[1:-len(".lock")]
        if work == keep or now - lock.stat().st_mtime < max_age:
            continue
        with open(lock, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not while a build holds it
            except OSError:
                continue
            shutil.rmtree(work, ignore_errors=True)
        lock.unlink(missing_ok=True)


def sync_tree(source: XenSource, tree: Path) -> tuple[int, dict]:
    """Make `tree` hold exactly the source's files, touching only those that changed:
    (files changed, {name: [size, mtime_ns, sha256 or link target]})."""
    names = git_files(source.tree) if source.kind == "git" else _walk(source.tree)
    index_path = tree / ".xenlab-sync.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    tree.mkdir(parents=True, exist_ok=True)
    new_index, changed = {}, 0
    for name in names:
        src, dst = source.tree / name, tree / name
        st = src.lstat()
        stamp = [st.st_size, st.st_mtime_ns]
        old = index.get(name)
        if old and old[:2] == stamp and os.path.lexists(dst):
            new_index[name] = old
            continue
        digest = os.readlink(src) if src.is_symlink() else sha256_file(src)
        new_index[name] = stamp + [digest]
        if old and old[2] == digest and os.path.lexists(dst):
            continue  # touched, not changed: keep the build's view of it
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(dst):
            dst.unlink()
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copyfile(src, dst)  # a fresh mtime: make sees it as newer than its objects
            shutil.copymode(src, dst)
        changed += 1
    for name in set(index) - set(new_index):
        with_gone = tree / name
        if os.path.lexists(with_gone):
            with_gone.unlink()
            changed += 1
    index_path.write_text(json.dumps(new_index))
    return changed, new_index


def xen_version_of_tree(tree: Path) -> str:
    """XEN_VERSION.XEN_SUBVERSION + XEN_EXTRAVERSION, as the tree's xen/Makefile says."""
    text = (tree / "xen" / "Makefile").read_text()
    values = {k: (re.search(rf"(?m)^export {k}\s*\??=\s*(\S*)", text) or [None, ""])[1]
              for k in ("XEN_VERSION", "XEN_SUBVERSION", "XEN_EXTRAVERSION")}
    extra = values["XEN_EXTRAVERSION"].replace("$(XEN_VENDORVERSION)", "")
    return f"{values['XEN_VERSION']}.{values['XEN_SUBVERSION']}{extra}"


def _collect(tree: Path, out: Path, source: XenSource, tc: Toolchain, config: kconfig.Config,
             fixes, key: str, versions: dict, tools: Path, times: dict) -> None:
    boot = tree / "dist" / "install" / "boot"
    images = sorted(p for p in boot.glob("xen-*") if not p.name.endswith((".config", ".gz"))
                    and p.is_file() and not p.is_symlink())
    if not images:
        raise XenlabError(f"make dist-xen left no hypervisor in {boot}")
    shutil.copyfile(images[0], out / "xen")
    shutil.copyfile(tree / "xen" / ".config", out / "xen.config")
    xentools.link_tools(tools, out / "tools")
    info = {"key": key, "kind": source.kind, "origin": source.origin,
            "changeset": source.changeset, "commit": source.commit, "identity": source.identity,
            "tree": str(source.tree) if source.kind in ("git", "tree") else None,
            "tools": tools.name,
            "xen_version": xen_version_of_tree(tree), "xen_target_arch": tc.xen_arch,
            "config": config.name, "config_fragments": list(config.fragments), "fixes": list(fixes),
            "toolchain": versions, "seconds": times}
    (out / "build.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
