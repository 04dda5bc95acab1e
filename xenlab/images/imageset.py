"""The image set: Xen, Dom0 and DomU images built from a pinned manifest.

`build_image_set` turns a manifest (``hypervisor/<arch>.yaml``) into a
directory of artifacts in the content-addressed cache:

    xen  xen.config  dom0-kernel  dom0-kernel.config  dom0-rootfs.cpio.gz
    domU-kernel  domU-kernel.config  domU-rootfs.cpio.gz  domU-disk.img
    manifest.json

The set's key hashes the manifest, the recipe files under ``hypervisor/rootfs``
and every override, so a second build with the same inputs is a lookup.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import attr

from ..errors import XenlabError
from ..schema import validate
from . import debs, kconfig, rootfs, xenbuild
from .cache import build_aside, cache_root, sha256_bytes, sha256_file
from .imageformat import xen_line, xen_version, xen_version_of
from .integrity import (KERNEL_ARTIFACTS, OVERRIDABLE, VERIFIED, CorruptSet,  # noqa: F401
                        check_overrides, discard_set, verify_artifacts)
from .manifest import ARCHES, Manifest, load_manifest, manifest_path
from . import xtf
from .rootfs import RECIPE_DIR
from .readiness import DOMU_READY_MARKER, dom0_readiness, ready_pattern

# Bump when the build logic changes what a manifest produces.
BUILDER_VERSION = "6"  # 6: manifest.json says when Dom0 is ready (marker or prompt)

DISK_MARKER = "xenlab-pv-block-marker"



@attr.s(frozen=True, auto_attribs=True)
class Artifact:
    name: str
    size: int
    sha256: str
    source: str  # "PACKAGE VERSION", "built from ...", or "override"
    path: str = ""  # for overrides: where the file came from

    def as_dict(self) -> dict:
        return attr.asdict(self)


_TEXT = {"type": "string"}
_VERSIONS = {"type": "object", "required": ["hypervisor", "tools"],
             "properties": {"hypervisor": _TEXT, "tools": _TEXT}}
# manifest.json as readers use it: a set from a later or broken build is refused on open.
SET_SCHEMA = {
    "type": "object",
    "required": ["arch", "artifacts", "image_format", "dom0_ready_marker", "domU_ready_marker"],
    "properties": {
        "arch": {"enum": list(ARCHES)},
        "artifacts": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "size", "sha256", "source"],
            "properties": {"name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"},
                           "size": {"type": "integer", "minimum": 0},
                           "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                           "source": _TEXT, "path": _TEXT}}},
        "image_format": _TEXT,
        "dom0_ready_marker": {"type": ["string", "null"], "minLength": 1},
        "dom0_ready_prompt": {"type": ["string", "null"], "minLength": 1},
        "domU_ready_marker": {"type": "string", "minLength": 1},
        "xen_version": _TEXT,
        "xen": {"type": "object", "required": ["version"],
                "properties": {"version": _TEXT, "tools_version": {"type": ["string", "null"]}}},
        "toolstack_mismatch": {"oneOf": [{"type": "null"}, _VERSIONS]},
    },
}


@attr.s(frozen=True, auto_attribs=True)
class ImageSet:
    """A built image set: a directory of artifacts described by manifest.json."""

    dir: Path
    info: dict

    @classmethod
    def open(cls, directory: Path) -> "ImageSet":
        """The set in `directory`; a missing or invalid manifest.json is one XenlabError line."""
        directory = Path(directory)
        if not directory.is_dir():
            raise XenlabError("not an image set directory", where=str(directory))
        path = directory / "manifest.json"
        try:
            info = json.loads(path.read_bytes())
        except OSError as exc:
            raise XenlabError(f"not an image set ({exc.strerror})", where=str(path)) from None
        except (ValueError, RecursionError) as exc:
            raise XenlabError(f"not valid JSON ({str(exc)[:120]})", where=str(path)) from None
        validate(info, SET_SCHEMA, str(path))
        return cls(directory, info)

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

    def verify(self) -> dict[str, str]:
        """Every artifact checked against manifest.json (integrity.verify_artifacts)."""
        return verify_artifacts(self.dir, self.artifacts.values())

    @property
    def overrides(self) -> dict[str, str]:
        return {a.name: a.sha256 for a in self.artifacts.values() if a.source == "override"}

    def path(self, name: str) -> Path:
        if name not in self.artifacts:
            raise XenlabError(f"image set has no artifact '{name}'", where=str(self.dir))
        return self.dir / name

    @property
    def xen(self) -> dict:
        """The Xen under test: version, changeset, config, source (and its build key)."""
        return self.info.get("xen") or {"version": self.info.get("xen_version"),
                                        "changeset": None, "config": "debian", "source": None}

    @property
    def xen_version(self) -> str:
        """The hypervisor's version, read from the binary (sets before 4: the manifest's)."""
        return self.xen["version"]

    @property
    def tools_version(self) -> str:
        """The Dom0 toolstack's Xen version; differs from xen_version only if allowed."""
        return self.xen.get("tools_version") or self.xen_version

    @property
    def toolstack_mismatch(self) -> dict | None:
        return self.info.get("toolstack_mismatch")

    @property
    def dom0_ready_pattern(self) -> str:
        """The regex that says Dom0 is up: xenlab's marker, or the tester's rootfs's prompt."""
        return ready_pattern(self.info)

    @property
    def dom0_prompt(self) -> str | None:
        """A Dom0 rootfs of the tester's: its shell prompt (None: xenlab's rootfs, `dom0# `)."""
        return self.info.get("dom0_ready_prompt")

    @property
    def domU_ready_marker(self) -> str:
        return self.info["domU_ready_marker"]


def set_key(manifest: Manifest, overrides: dict[str, str], extra: dict | None = None) -> str:
    """Hash of everything that decides the set's bytes."""
    recipe = []
    for f in sorted(RECIPE_DIR.rglob("*")):
        if f.is_file():
            recipe.append((str(f.relative_to(RECIPE_DIR)), sha256_bytes(f.read_bytes()),
                           os.access(f, os.X_OK)))
    material = json.dumps({"builder": BUILDER_VERSION, "manifest": sha256_bytes(manifest.raw),
                           "recipe": recipe, "overrides": overrides, **(extra or {})},
                          sort_keys=True)
    return sha256_bytes(material.encode())[:32]


def build_image_set(arch: str = "arm64", overrides: dict[str, Path] | None = None,
                    manifest: Path | None = None, log=lambda msg: None, *,
                    xen_source: str | None = None, xen_config=(), fixes=(),
                    allow_tools_mismatch: bool = False, dom0_ready: dict | None = None,
                    rebuild: bool = True, xtf_source: str | None = None,
                    xtf_tests: tuple[str, ...] = ()) -> ImageSet:
    """Build (or find in the cache, checked against its manifest) the image set for `arch`.

    A cached set whose files no longer match its manifest.json, or that has none, is
    rebuilt (`rebuild=False`: refused in one line).  With `xen_source`, the hypervisor and
    the Dom0 toolstack are built from that one source (xenbuild) in place of the manifest's
    prebuilt Xen packages; with `xtf_source`, XTF tests join the set (xtf.for_image_set).
    """
    m = load_manifest(Path(manifest) if manifest else manifest_path(arch))
    if m.arch != arch:
        raise XenlabError(f"key 'arch': manifest is for {m.arch}, not {arch}", where=str(m.path))
    overrides = dict(overrides or {})
    xtf_built = xtf.for_image_set(m.arch, xtf_source, tuple(xtf_tests), log)  # cheap: first
    build = None
    if xen_source:
        if m.source is None:
            raise XenlabError("this manifest has no 'source' section: it cannot build Xen",
                              where=str(m.path))
        if "xen" in overrides:
            raise XenlabError("--xen and --xen-source both name the hypervisor: give one",
                              where="--xen")
        source = xenbuild.resolve_source(xen_source, m, log)
        config = kconfig.load_config(tuple(xen_config))
        build = xenbuild.build_xen(source, m, config, tuple(fixes), log)
    elif xen_config or fixes:
        raise XenlabError("--xen-config and --apply-fix configure a build: add --xen-source",
                          where="--xen-config" if xen_config else "--apply-fix")
    packages = _packages(m, build)
    checked = check_overrides(m, overrides)
    xen = _xen_facts(m, build, checked, allow_tools_mismatch)
    ready = dom0_readiness(overrides, **(dom0_ready or {}))
    key = set_key(m, {name: digest for name, (_, digest) in checked.items()},
                  {"xen_build": build.info["key"] if build else None,
                   "allow_tools_mismatch": bool(xen.get("mismatch")), "dom0_ready": ready,
                   **({"xtf": {r: digest for r, (_, digest, _) in xtf_built.items()}} if xtf_built else {})})
    final = cache_root() / "sets" / f"{arch}-{key}"
    if final.exists():
        try:
            cached = ImageSet.open(final)
            cached.verify()
            log(f"image set {final.name}: cached")
            return cached
        except XenlabError as exc:  # changed on disk, or a set without its manifest
            if not rebuild:
                raise
            log(f"{exc}: rebuilding the set")
            discard_set(final)
    fetched = debs.fetch(packages, where=str(m.path))
    log(f"fetched {len(fetched)} packages")
    trees = {pkg.name: debs.extract(pkg) for pkg in packages}
    try:
        with build_aside(final) as out:
            _build_into(out, m, trees, checked, log, build, packages, xen, ready, xtf_built)
    except OSError as exc:
        raise debs.disk_error(exc, final) from None
    return ImageSet.open(final)


def _packages(m: Manifest, build) -> list:
    if build is None:
        return list(m.packages)
    replaced = set(m.source["replaces"])
    return [p for p in m.packages if p.name not in replaced] + list(m.source_packages)


def _xen_facts(m: Manifest, build, checked: dict, allow_mismatch: bool) -> dict:
    """The Xen of the set, from its binaries: and a refusal if hypervisor and tools differ."""
    if build is not None:
        tools = build.info["xen_version"]
        xen = {"version": xen_version(build.xen) or tools, "changeset": build.info["changeset"],
               "config": build.info["config"], "source": build.info["origin"],
               "build": build.info["key"], "kind": build.info["kind"], "tools_version": tools,
               "patches": list(build.info.get("fixes", [])),
               # a git source's commit and the fragments: what a bisection builds again
               "commit": build.info.get("commit"), "tree": build.info.get("tree"),
               "config_fragments": list(build.info.get("config_fragments", []))}
    else:
        pkg = m.package(m.xen["package"])
        tools = xen_version_of(pkg.version)
        xen = {"version": tools, "changeset": pkg.version, "config": "debian",
               "source": f"{pkg.name} {pkg.version}", "build": None, "kind": "debian-package",
               "tools_version": tools}
    if "xen" in checked:
        path = checked["xen"][0]
        version = xen_version(path)
        if version is None:
            raise XenlabError(f"{path}: cannot tell which Xen this is (no version in the "
                              "binary)", where="--xen")
        xen.update(version=version, changeset=None, config="override", source=str(path),
                   kind="override")
        if xen_line(version) != xen_line(tools):  # the domctl interface is per release line
            if not allow_mismatch:
                raise XenlabError(f"{path} is Xen {version} but the set's Dom0 toolstack is Xen "
                                  f"{tools}: a hypervisor needs the tools of its own version "
                                  "(xl breaks otherwise); build both with --xen-source, or "
                                  "add --allow-tools-mismatch", where="--xen")
            xen["mismatch"] = {"hypervisor": version, "tools": tools}
    return xen


def _build_into(out: Path, m: Manifest, trees: dict[str, Path],
                overrides: dict[str, tuple[Path, str]], log, build, packages: list,
                xen: dict, ready: dict, xtf_built: dict | None = None) -> None:
    origin_xtf = {role: why for role, (_, _, why) in (xtf_built or {}).items()}
    for role, (binary, _, _) in (xtf_built or {}).items():
        shutil.copyfile(binary, out / role)
    if build is not None:  # the built toolstack is one more tree the Dom0 draws from
        trees = {**trees, "xen-build": build.tools}
    src = rootfs.Sources(m, trees)
    kernel_pkg = m.package(m.kernel["package"])
    kernel = f"{kernel_pkg.name} {kernel_pkg.version}"
    origin = {f"{who}-kernel{ext}": kernel for who in ("dom0", "domU") for ext in ("", ".config")}
    if build is not None:
        made = f"built from {build.info['origin']} ({build.info['changeset']}, " \
               f"config {build.info['config']})"
        origin.update({"xen": made, "xen.config": made})
        shutil.copyfile(build.xen, out / "xen")
        shutil.copyfile(build.config, out / "xen.config")
    else:
        xen_pkg = m.package(m.xen["package"])
        origin.update({"xen": f"{xen_pkg.name} {xen_pkg.version}",
                       "xen.config": f"{xen_pkg.name} {xen_pkg.version}"})
        shutil.copyfile(src.get(m.xen["image"], xen_pkg.name), out / "xen")
        shutil.copyfile(src.get(m.xen["config"], xen_pkg.name), out / "xen.config")
    if "xen" not in overrides:  # version truth: what the binary says, not the manifest
        xen["version"] = xen_version(out / "xen") or xen["version"]
        if build is None:  # one Debian source package made hypervisor and tools
            xen["tools_version"] = xen["version"]
    for who in ("dom0", "domU"):
        shutil.copyfile(src.get(m.kernel["image"], kernel_pkg.name), out / f"{who}-kernel")
        shutil.copyfile(src.get(m.kernel["config"], kernel_pkg.name), out / f"{who}-kernel.config")
    for name, (path, _) in overrides.items():
        if name in ("xen", "dom0-kernel", "domU-kernel"):
            shutil.copyfile(path, out / name)
            # The package's (or the build's) config no longer describes this image.
            (out / f"{name}.config").unlink()
            origin.pop(f"{name}.config")

    modules_root = m.kernel["modules"]
    mods = rootfs.Modules(src, kernel_pkg.name, modules_root)

    # The DomU's disk: an ext2 file system holding the marker the PV block step reads.
    if "domU-disk.img" in overrides:
        shutil.copyfile(overrides["domU-disk.img"][0], out / "domU-disk.img")
    else:
        rootfs.make_disk(out / "domU-disk.img", {"marker": (DISK_MARKER + "\n").encode()})
        origin["domU-disk.img"] = "built by xenlab (mke2fs)"

    # DomU root: busybox, the front-end modules, an init printing the ready marker.
    if "domU-rootfs.cpio.gz" in overrides:
        shutil.copyfile(overrides["domU-rootfs.cpio.gz"][0], out / "domU-rootfs.cpio.gz")
    else:
        domu = rootfs.base_tree(src, "domU")
        mods.add(domu, m.domU["modules"])
        domu.write_cpio_gz(out / "domU-rootfs.cpio.gz")
        origin["domU-rootfs.cpio.gz"] = "built by xenlab from busybox-static and " + kernel_pkg.name

    # Dom0 root: busybox, the toolstack with its libraries, back-end modules, and
    # the DomU's kernel, root and disk under /root so `xl create` needs no network.
    if "dom0-rootfs.cpio.gz" in overrides:
        shutil.copyfile(overrides["dom0-rootfs.cpio.gz"][0], out / "dom0-rootfs.cpio.gz")
    else:
        dom0 = rootfs.base_tree(src, "dom0")
        mods.add(dom0, m.dom0["modules"])
        toolstack = m.source if build is not None else m.dom0
        rootfs.add_programs(dom0, src, m, toolstack["programs"])
        dom0.file("/etc/xenlab/env", f"XEN_BIN={toolstack['xen_bin']}\n".encode())
        dom0.copy("/root/Image", out / "domU-kernel", 0o644)
        dom0.copy("/root/domU-rootfs.cpio.gz", out / "domU-rootfs.cpio.gz", 0o644)
        dom0.copy("/root/domU-disk.img", out / "domU-disk.img", 0o644)
        dom0.write_cpio_gz(out / "dom0-rootfs.cpio.gz")
        origin["dom0-rootfs.cpio.gz"] = "built by xenlab from " + ", ".join(
            sorted(src.used - {m.xen["package"]}))

    unused = [p.name for p in packages if p.name not in src.used]
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
            art = Artifact(f.name, f.stat().st_size, sha256_file(f),
                           origin_xtf.get(f.name) or origin[f.name])
        artifacts.append(art.as_dict())
    info = {
        "arch": m.arch,
        "manifest": m.path.name,
        "manifest_sha256": sha256_bytes(m.raw),
        "builder": BUILDER_VERSION,
        "xen_version": xen["version"],  # from the binary
        "xen": xen,
        "kernel_version": kernel_pkg.version,
        "toolstack_mismatch": xen.get("mismatch"),
        "image_format": m.image_format,
        **ready,  # dom0_ready_marker, dom0_ready_prompt
        "domU_ready_marker": DOMU_READY_MARKER,
        "disk_marker": DISK_MARKER,
        "packages": [{"name": p.name, "version": p.version, "sha256": p.sha256}
                     for p in packages],
        "artifacts": artifacts,
    }
    (out / "manifest.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log(f"built {len(artifacts)} artifacts")
