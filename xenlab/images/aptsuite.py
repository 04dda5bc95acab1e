"""A private apt for a suite the host does not use: its state under the cache, never the host's.

Debian's bookworm sources (for `--xen-source debian`) and trixie's arm64 Xen
4.20 come from the host's own mirror, but through `apt-get -o Dir::...`
options that point apt at ``cache_root()/apt/<name>/``: sources, lists and
archives live there, and the host's /etc/apt is never touched, so the host
cannot be upgraded to another suite by accident.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import attr

from ..errors import XenlabError
from .cache import cache_root

DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE_RE = re.compile(r"^[a-z]+(-[a-z]+)?$")
LISTS_MAX_AGE_S = 24 * 3600  # refresh the lists once a day at most


def host_mirror() -> str:
    """The Debian mirror the host's own sources name (the notes: use the same one)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + \
            [Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        m = re.search(r"(?m)^URIs:\s*(\S+/debian)/?\s*$", text) or \
            re.search(r"(?m)^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", text)
        if m:
            return m.group(1)
    return DEFAULT_MIRROR


@attr.s(frozen=True, auto_attribs=True)
class PrivateApt:
    """apt for one suite and architecture, with all of its state under the cache."""

    suite: str
    arch: str  # Debian architecture of the binaries ("source" for deb-src only)

    def __attrs_post_init__(self):
        if not SUITE_RE.match(self.suite):
            raise XenlabError(f"suite {self.suite!r} is not a Debian suite name")

    @property
    def root(self) -> Path:
        return cache_root() / "apt" / f"{self.suite}-{self.arch}"

    def options(self) -> list[str]:
        r = self.root
        opts = ["-o", f"Dir::Etc={r}/etc", "-o", f"Dir::Etc::SourceList={r}/etc/sources.list",
                "-o", f"Dir::Etc::SourceParts={r}/etc/sources.list.d",
                "-o", f"Dir::Etc::Preferences={r}/etc/preferences",
                "-o", f"Dir::Etc::PreferencesParts={r}/etc/preferences.d",
                "-o", "Dir::Etc::TrustedParts=/usr/share/keyrings",
                "-o", f"Dir::State::Lists={r}/lists", "-o", f"Dir::State::Status={r}/status",
                "-o", f"Dir::Cache={r}/cache", "-o", "APT::Get::List-Cleanup=false"]
        if self.arch != "source":
            opts += ["-o", f"APT::Architecture={self.arch}",
                     "-o", f"APT::Architectures::={self.arch}"]
        return opts

    def _prepare(self) -> None:
        r = self.root
        for d in ("etc/sources.list.d", "etc/preferences.d", "lists/partial",
                  "cache/archives/partial"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "status").touch()
        kind = "deb-src" if self.arch == "source" else f"deb [arch={self.arch}]"
        line = f"{kind} {host_mirror()} {self.suite} main\n"
        sources = r / "etc" / "sources.list"
        if not sources.exists() or sources.read_text() != line:
            sources.write_text(line)
            for old in (r / "lists").glob("*_*"):
                old.unlink()

    def update(self, force: bool = False) -> None:
        """`apt-get update` for this suite, at most once a day unless forced."""
        self._prepare()
        stamp = self.root / "lists" / ".updated"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S:
            return
        proc = self._apt("apt-get", "update", "-q")
        if proc.returncode != 0:
            raise XenlabError(f"apt-get update of {self.suite} ({self.arch}) failed: "
                              f"{apt_error(proc.stderr)}", where=str(self.root))
        stamp.touch()

    def _apt(self, tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([tool, *self.options(), *args], capture_output=True, text=True,
                              cwd=cwd, stdin=subprocess.DEVNULL)

    def download(self, specs: list[str], dest: Path) -> subprocess.CompletedProcess:
        """`apt-get download SPEC...` into `dest` (binary packages)."""
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o777)  # apt drops privileges to _apt for downloads
        proc = self._apt("apt-get", "download", "-q", *specs, cwd=dest)
        if proc.returncode != 0 and "Unable to locate" in proc.stderr + proc.stdout:
            self.update(force=True)  # the lists may be a day old: once more, fresh
            proc = self._apt("apt-get", "download", "-q", *specs, cwd=dest)
        return proc

    def source(self, package: str, version: str, dest: Path) -> list[Path]:
        """`apt-get source --download-only PACKAGE=VERSION` into `dest`; the files it wrote."""
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o777)
        proc = self._apt("apt-get", "source", "--download-only", "-q",
                         f"{package}={version}", cwd=dest)
        if proc.returncode != 0:
            raise XenlabError(f"apt-get source {package}={version} ({self.suite}) failed: "
                              f"{apt_error(proc.stderr)}")
        return sorted(dest.iterdir())

    def candidate(self, package: str) -> str | None:
        """The version apt would download now, or None."""
        self.update()
        proc = self._apt("apt-cache", "policy", package)
        m = re.search(r"Candidate:\s*(\S+)", proc.stdout)
        return m.group(1) if m and m.group(1) != "(none)" else None


def apt_error(stderr: str) -> str:
    lines = [l.strip() for l in stderr.splitlines() if l.startswith("E:")]
    if lines:
        return "; ".join(lines)
    tail = stderr.strip().splitlines()
    return tail[-1] if tail else "unknown apt error"
