"""The cross toolchain of a Xen build: its compiler and -dev packages, and the make variables
around them (a Python that skips setup.py, a directory of libraries to link)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import attr

from ..errors import XenlabError
from .manifest import Manifest


@attr.s(frozen=True, auto_attribs=True)
class Toolchain:
    xen_arch: str  # XEN_TARGET_ARCH: arm64 | arm32
    triplet: str  # aarch64-linux-gnu | arm-linux-gnueabihf
    debian_arch: str
    packages: tuple[str, ...]  # Debian packages the build needs (for the error hint)
    link_libraries: tuple[str, ...] = ()  # libfdt.so.1: linked as -lfdt from a directory of ours

    @property
    def cross(self) -> str:
        return f"{self.triplet}-"

    def versions(self) -> dict:
        """What of the toolchain decides the build's bytes: gcc and the -dev packages."""
        gcc = shutil.which(f"{self.triplet}-gcc")
        if gcc is None:
            raise XenlabError(f"cross compiler {self.triplet}-gcc not found: install Debian "
                              f"package gcc-{self.triplet} (scripts/setup-host does)",
                              where="--xen-source")
        first = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
        proc = subprocess.run(["dpkg-query", "-W", "-f", "${Package}:${Architecture}="
                               "${Version} ${Status}\n", *self.packages],
                              capture_output=True, text=True)
        installed = {l.split("=", 1)[0]: l.split("=", 1)[1] for l in proc.stdout.splitlines()
                     if l.endswith("install ok installed")}
        missing = [p for p in self.packages if _with_arch(p) not in installed]
        if missing:
            raise XenlabError(f"missing build packages: {' '.join(missing)} (apt-get install "
                              f"{' '.join(missing)}; scripts/setup-host does)",
                              where="--xen-source")
        return {"gcc": first.splitlines()[0] if first else "?", "packages": installed}


def _with_arch(pkg: str) -> str:
    return pkg if ":" in pkg else f"{pkg}:amd64"


def toolchain(m: Manifest) -> Toolchain:
    src = m.source or {}
    return Toolchain(src.get("xen_target_arch", m.arch), m.triplet, m.debian_arch,
                     tuple(src.get("build_packages", ())), tuple(src.get("link_libraries", ())))


# setup.py would build the toolstack's Python bindings and pygrub against the host's
# Python headers, which a 32-bit target refuses (LONG_BIT); a Dom0 here needs neither.
PYTHON_WRAPPER = """#!/bin/sh
[ "$1" = setup.py ] && exit 0
exec python3 "$@"
"""


def build_helpers(work: Path, tc: Toolchain) -> dict:
    """Make variables for the wrapper above and the directory of link_libraries."""
    python = work / "python"
    python.write_text(PYTHON_WRAPPER)
    python.chmod(0o755)
    out = {"PYTHON": str(python)}
    if tc.link_libraries:
        lib = work / "lib"
        lib.mkdir(exist_ok=True)
        for name in tc.link_libraries:
            real = Path("/usr/lib") / tc.triplet / name
            if not real.exists():
                raise XenlabError(f"{real} not found: install the {tc.debian_arch} package that "
                                  "ships it (scripts/setup-host does)", where="--xen-source")
            link = lib / (name.split(".so.")[0] + ".so")
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(real)
        out["APPEND_LIB"] = str(lib)
    return out
