"""Debian packages by exact name and version: download, verify, extract.

`apt-get download` fetches a .deb by name (no install, no maintainer scripts);
its sha256 is checked against the pinned manifest before the file enters the
cache as ``debs/<sha256>.deb``; `dpkg -x` unpacks it into ``extract/<sha256>/``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import attr

from .aptsuite import PrivateApt, apt_error
from .cache import build_aside, cache_root, sha256_file
from ..errors import XenlabError


@attr.s(frozen=True, auto_attribs=True)
class DebPackage:
    name: str
    version: str
    sha256: str
    arch: str  # Debian architecture: arm64, armhf, all
    suite: str | None = None  # another suite than the host's: fetched through a private apt

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.arch}={self.version}"

    def deb_path(self) -> Path:
        return cache_root() / "debs" / f"{self.sha256}.deb"

    def extract_path(self) -> Path:
        return cache_root() / "extract" / self.sha256


class Downloads:
    """Counts what actually came from the registry (tests assert on it)."""
    count = 0


def fetch(packages: list[DebPackage], where: str = "manifest") -> dict[DebPackage, Path]:
    """Make sure every package is in the cache, verified; return their paths.

    A cached .deb is checked against its pinned sha256 each time a set is built from it;
    a bad one is downloaded again once (the download is checked too: then one line)."""
    missing = [p for p in packages if not p.deb_path().exists()]
    for pkg in packages:
        if pkg not in missing and sha256_file(pkg.deb_path()) != pkg.sha256:
            pkg.deb_path().unlink(missing_ok=True)  # changed in the cache: fetched again
            missing.append(pkg)
    for suite in sorted({p.suite or "" for p in missing}):
        _download([p for p in missing if (p.suite or "") == suite], suite or None, where)
    return {p: p.deb_path() for p in packages}


def _download(missing: list[DebPackage], suite: str | None, where: str) -> None:
    if missing:
        debs = cache_root() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".dl-", dir=debs) as tmp:
            # apt drops privileges to _apt for downloads; let it write here.
            os.chmod(tmp, 0o777)
            proc = _apt_download([p.spec for p in missing], missing[0].arch, suite, Path(tmp))
            if proc.returncode != 0:
                raise XenlabError(f"apt-get download failed: {apt_error(proc.stderr)}"
                                  " (is the version still in the archive? run `apt-get update`;"
                                  " `xenlab images pin` refreshes the manifest)", where=where)
            got = {f.name: f for f in Path(tmp).glob("*.deb")}
            for pkg in missing:
                deb = _find_deb(got, pkg)
                if deb is None:
                    raise XenlabError(f"apt-get download produced no .deb for {pkg.spec}", where=where)
                actual = sha256_file(deb)
                if actual != pkg.sha256:
                    raise XenlabError(f"checksum mismatch for {pkg.name} {pkg.version}: "
                                      f"manifest says sha256 {pkg.sha256}, archive gave {actual}",
                                      where=where)
                try:
                    os.replace(deb, pkg.deb_path())
                except OSError as exc:
                    raise disk_error(exc, pkg.deb_path()) from None
                Downloads.count += 1


def _apt_download(specs: list[str], arch: str, suite: str | None,
                  dest: Path) -> subprocess.CompletedProcess:
    """`apt-get download` into `dest`: the host's apt, or a foreign suite's private one."""
    if suite:
        return PrivateApt(suite, arch).download(specs, dest)
    return subprocess.run(["apt-get", "download", "-q", *specs], cwd=dest, capture_output=True,
                          text=True)


def _find_deb(got: dict[str, Path], pkg: DebPackage) -> Path | None:
    # apt names files NAME_VERSION_ARCH.deb with ':' in versions escaped as %3a.
    version = pkg.version.replace(":", "%3a")
    for name, path in got.items():
        if name.startswith(f"{pkg.name}_{version}_"):
            return path
    return None


def extract(pkg: DebPackage) -> Path:
    """Unpack a fetched package (data only: no maintainer scripts run)."""
    final = pkg.extract_path()
    if final.exists():
        return final
    try:
        with build_aside(final) as tmp:
            proc = subprocess.run(["dpkg-deb", "-x", str(pkg.deb_path()), str(tmp)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                if "No space left" in proc.stderr:
                    raise OSError(errno.ENOSPC, "No space left on device")
                raise XenlabError(f"dpkg -x {pkg.name} failed: {proc.stderr.strip()}")
    except OSError as exc:
        raise disk_error(exc, final) from None
    return final


def disk_error(exc: OSError, path: Path) -> XenlabError:
    if exc.errno == errno.ENOSPC:
        return XenlabError(f"disk full while writing {path} (free space under {cache_root()})")
    return XenlabError(f"cannot write {path}: {exc.strerror}")


def query_candidate(name: str, arch: str, suite: str | None = None) -> tuple[str, str]:
    """The version apt would download now and the sha256 of that .deb (for `images pin`)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        proc = _apt_download([f"{name}:{arch}"], arch, suite, Path(tmp))
        if proc.returncode != 0:
            raise XenlabError(f"apt-get download {name}:{arch} failed: {apt_error(proc.stderr)}")
        (deb,) = Path(tmp).glob("*.deb")
        m = re.match(rf"{re.escape(name)}_(.+)_[^_]+\.deb$", deb.name)
        version = m.group(1).replace("%3a", ":") if m else "?"
        digest = sha256_file(deb)
        debs = cache_root() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        shutil.move(str(deb), debs / f"{digest}.deb")
        return version, digest


def apt_pin(name: str, arch: str, version: str | None = None) -> DebPackage:
    """The package apt would install (or `version` of it), pinned by the sha256 its index
    lists, and fetched (verified) into the cache unless it is there already."""
    spec = f"{name}:{arch}" + (f"={version}" if version else "")
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", spec], capture_output=True,
                          text=True)
    fields = dict(re.findall(r"(?m)^(Version|SHA256): (\S+)$", proc.stdout))
    if proc.returncode != 0 or len(fields) != 2:
        raise XenlabError(f"apt-cache show {spec}: {apt_error(proc.stderr) if proc.stderr.strip() else 'no such package'}"
                          " (run `apt-get update`?)")
    pkg = DebPackage(name, fields["Version"], fields["SHA256"], arch)
    fetch([pkg], where=spec)
    return pkg
