"""The files a new board's profile is made from: on disk, or inside a pinned Debian package.

`PACKAGE[=VERSION]:PATH` is pinned as the shipped profiles' `debian:` entries
are: the version apt gives (or VERSION), and the sha256 of that .deb, which
stays in the cache under it.
"""

from __future__ import annotations

import re
from pathlib import Path

import attr

from ..errors import XenlabError
from ..images import debs
from .profile import DebianFile

DEBIAN_SPEC_RE = re.compile(r"^(?P<pkg>[a-z0-9][a-z0-9.+-]*)(=(?P<version>[0-9A-Za-z.+~:-]+))?"
                            r":(?P<path>[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*)$")


@attr.s(frozen=True, auto_attribs=True)
class Input:
    """A file the profile is made from: on disk, or inside a pinned Debian package."""

    path: Path
    shown: str  # how the profile's comments name it
    pin: DebianFile | None = None


def debian_input(spec: str, option: str, deb_arch: str) -> Input:
    """PKG[=VERSION]:PATH, pinned to the version apt gives (or VERSION) and its sha256."""
    m = DEBIAN_SPEC_RE.match(spec)
    if not m:
        raise XenlabError(f"{option} {spec!r}: give PACKAGE[=VERSION]:PATH, e.g. "
                          "u-boot-sunxi:usr/lib/u-boot/nanopi_neo/u-boot-sunxi-with-spl.bin")
    try:
        deb = debs.apt_pin(m["pkg"], deb_arch, m["version"])
    except XenlabError as exc:
        raise XenlabError(f"{option} {spec!r}: {exc}") from None
    version = deb.version
    pin = DebianFile(m["pkg"], version, deb.sha256, deb_arch, m["path"])
    path = debs.extract(pin.deb()) / pin.path
    if not path.is_file():
        raise XenlabError(f"{option} {spec!r}: {pin.path} is not in {pin.package} {version} "
                          f"({deb_arch})")
    return Input(path, f"{pin.package} {version}:{pin.path}", pin)


def file_input(path: str, option: str) -> Input:
    p = Path(path)
    if not p.is_file():
        raise XenlabError(f"{option} {path}: no such file")
    return Input(p.resolve(), str(p))


def dtb_deb_arch(spec: str, arch: str | None) -> str:
    """The Debian architecture of a kernel package: its flavour says it, or --arch."""
    if arch:
        return "arm64" if arch == "arm64" else "armhf"
    pkg = spec.split(":", 1)[0].split("=", 1)[0]
    if pkg.endswith("-arm64"):
        return "arm64"
    if "armmp" in pkg or pkg.endswith("-armhf"):
        return "armhf"
    raise XenlabError(f"--debian-dtb {spec!r}: which Debian architecture is {pkg}? give --arch")
