"""Image-set manifests: ``hypervisor/<arch>.yaml``, validated on load and re-pinned in place.

A manifest lists Debian packages by exact name, version and sha256, and says
which of their files make the set.  It is validated by the same jsonschema
loader as board profiles; `pin_manifest` rewrites versions and hashes with
ruamel.yaml, keeping the file's comments and layout.
"""

from __future__ import annotations

import re
from pathlib import Path

import attr
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from .. import schema
from ..errors import XenlabError
from .debs import DebPackage

HYPERVISOR_DIR = Path(__file__).resolve().parent.parent.parent / "hypervisor"
ARCHES = ("arm64", "arm32")

_TEXT = {"type": "string", "minLength": 1}
_PATHS = {"type": "array", "items": _TEXT}


def _obj(properties: dict, required=None) -> dict:
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "required": list(properties) if required is None else required}


_PACKAGE = _obj({
    "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9.+-]*$"},
    # YAML reads some versions (1.2) as numbers: quote them in the file.
    "version": {"type": "string", "pattern": r"^[0-9A-Za-z.+~:-]+$"},
    "sha256": {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
})
_PROGRAMS = {"type": "array", "items": {"oneOf": [
    _TEXT, _obj({"path": _TEXT, "links": _PATHS}, required=["path"])]}}

SCHEMA = _obj({
    "suite": {"type": "string", "pattern": r"^[a-z]+$"},
    "arch": {"enum": list(ARCHES)},
    "debian_arch": {"enum": ["arm64", "armhf", "armel"]},
    "triplet": {"type": "string", "pattern": r"^[a-z0-9_]+-linux-gnu[a-z]*$"},
    "image_format": {"enum": ["arm64-image", "zimage"]},
    "packages": {"type": "array", "minItems": 1, "items": _PACKAGE},
    "xen": _obj({"package": _TEXT, "image": _TEXT, "config": _TEXT}),
    "kernel": _obj({"package": _TEXT, "image": _TEXT, "config": _TEXT, "modules": _TEXT}),
    "dom0": _obj({"xen_bin": _TEXT, "programs": _PROGRAMS, "modules": _PATHS}),
    "domU": _obj({"modules": _PATHS}),
    # `--xen-source`: Xen built here replaces the prebuilt hypervisor and toolstack.
    "source": _obj({
        "debian": _obj({"package": _TEXT, "version": _TEXT,
                        "suite": {"type": "string", "pattern": r"^[a-z]+$"}}),
        "xen_target_arch": {"enum": ["arm64", "arm32"]},
        "build_packages": _PATHS,
        # Runtime libraries linked where their -dev package can't be installed for two
        # arches at once (libfdt-dev is not Multi-Arch: same): /usr/lib/<triplet>/NAME.
        "link_libraries": {"type": "array", "items": {"type": "string",
                                                      "pattern": r"^lib[a-z0-9_+-]+\.so\.[0-9]+$"}},
        "replaces": _PATHS,  # the prebuilt Xen packages the build stands in for
        "packages": {"type": "array", "items": _PACKAGE},  # runtime libraries only it needs
        "xen_bin": _TEXT,
        "programs": _PROGRAMS,
    }, required=["xen_target_arch", "build_packages", "replaces", "packages", "xen_bin",
                 "programs"]),
}, required=["arch", "debian_arch", "triplet", "image_format", "packages", "xen", "kernel",
             "dom0", "domU"])


@attr.s(frozen=True, auto_attribs=True)
class Manifest:
    """A pinned recipe (``hypervisor/<arch>.yaml``), validated."""

    path: Path
    arch: str
    debian_arch: str
    triplet: str
    image_format: str
    packages: tuple[DebPackage, ...]
    xen: dict
    kernel: dict
    dom0: dict
    domU: dict
    raw: bytes
    source: dict | None = None  # how to build Xen from source for this set
    suite: str | None = None  # a Debian suite other than the host's (private apt)
    source_packages: tuple[DebPackage, ...] = ()

    def package(self, name: str) -> DebPackage:
        for pkg in self.packages + self.source_packages:
            if pkg.name == name:
                return pkg
        raise XenlabError(f"package '{name}' is used but not listed under 'packages'",
                          where=str(self.path))


def manifest_path(arch: str, name: str | None = None) -> Path:
    """hypervisor/<arch>.yaml, or the manifest `name` (hypervisor/<name>.yaml, or a file)."""
    if arch not in ARCHES:
        raise XenlabError(f"unknown arch '{arch}' (choose from {', '.join(ARCHES)})",
                          where="--arch")
    if not name:
        return HYPERVISOR_DIR / f"{arch}.yaml"
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
    elif re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        path = HYPERVISOR_DIR / f"{name}.yaml"
    else:
        raise XenlabError(f"{name!r} is not a manifest name or file", where="--manifest")
    if not path.is_file():
        known = sorted(p.stem for p in HYPERVISOR_DIR.glob("*.yaml"))
        raise XenlabError(f"no manifest {name} (known: {', '.join(known)})", where="--manifest")
    return path


def load_manifest(path: Path) -> Manifest:
    path = Path(path)
    data = schema.load(path, SCHEMA, "manifest")
    raw = path.read_bytes()
    suite = data.get("suite")

    def pkgs(entries):
        return tuple(DebPackage(p["name"], p["version"], p["sha256"], data["debian_arch"], suite)
                     for p in entries)
    source = data.get("source")
    manifest = Manifest(path=path, arch=data["arch"], debian_arch=data["debian_arch"],
                        triplet=data["triplet"], image_format=data["image_format"],
                        packages=pkgs(data["packages"]), xen=data["xen"], kernel=data["kernel"],
                        dom0=data["dom0"], domU=data["domU"], raw=raw, source=source,
                        suite=suite, source_packages=pkgs((source or {}).get("packages", [])))
    manifest.package(manifest.xen["package"])
    manifest.package(manifest.kernel["package"])
    return manifest


def pin_manifest(path: Path, query) -> list[str]:
    """Rewrite the versions and sha256s of a manifest to what `query` says; the changes.

    `query(name, debian_arch) -> (version, sha256)` asks apt (debs.query_candidate).
    Comments, order and flow style survive: ruamel.yaml edits the document in place.
    """
    path = Path(path)
    m = load_manifest(path)
    yaml = YAML()  # round-trip mode
    yaml.preserve_quotes = True
    yaml.width = 4096  # one package a line, as written
    yaml.indent(mapping=2, sequence=4, offset=2)  # "  - item", as the manifests are laid out
    doc = yaml.load(path.read_text())
    changed = []
    entries = list(doc["packages"]) + list((doc.get("source") or {}).get("packages") or [])
    for entry in entries:
        version, digest = query(str(entry["name"]), m.debian_arch, m.suite)
        if (version, digest) != (str(entry["version"]), str(entry["sha256"])):
            changed.append(f"{entry['name']}: {entry['version']} -> {version}")
        entry["version"] = DoubleQuotedScalarString(version)
        entry["sha256"] = digest
    with open(path, "w") as f:
        yaml.dump(doc, f)
    return changed

