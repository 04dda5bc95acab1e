"""A build attempt's log, kept with the attempt, and what a failed build's log says.

Every command of a Xen build appends to ``xen-logs/<key>/build-<time>.log``
as it runs, so an interrupted build keeps its log too.  A failure becomes
one `BuildFailure` line (what failed, and why when the log shows a known
cause, with the fix) plus the log's tail for the CLI to print.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from ..errors import XenlabError

TAIL_LINES = 25

# Debian -dev packages for what configure or the compiler cannot find ({arch}: arm64, armhf).
DEV_PACKAGES = {"yajl": "libyajl-dev", "uuid": "uuid-dev", "zlib": "zlib1g-dev",
                "z": "zlib1g-dev", "fdt": "libfdt-dev", "libfdt": "libfdt-dev",
                "ncurses": "libncurses-dev", "curses": "libncurses-dev", "zstd": "libzstd-dev",
                "lzma": "liblzma-dev", "bz2": "libbz2-dev", "bzip2": "libbz2-dev",
                "python": "python3-dev", "iasl": "iasl", "flex": "flex", "bison": "bison",
                "pkg-config": "pkg-config"}
HEADERS = {"yajl/yajl_version.h": "yajl", "uuid/uuid.h": "uuid", "zlib.h": "zlib",
           "libfdt.h": "fdt", "ncurses.h": "ncurses", "curses.h": "ncurses",
           "zstd.h": "zstd", "lzma.h": "lzma", "bzlib.h": "bz2", "Python.h": "python"}


class BuildFailure(XenlabError):
    """A build step failed: the message is one line, `tail` the end of the log."""

    def __init__(self, message: str, tail: list[str], log: Path):
        self.tail = tail
        self.log = log
        super().__init__(message)


def explain(text: str, arch: str) -> str | None:
    """The known cause of a failed build, in one sentence with its fix; None if unknown."""
    if re.search(r'"PSR_MODE_EL3h" redefined', text):
        return ('"PSR_MODE_EL3h" redefined: a system header defines the PSR_MODE_* macros Xen '
                "defines too (the seed's §14.1); rebuild with --apply-fix psr-mode, which adds "
                "the seed's #undef PSR_MODE_* (hypervisor/patches/psr-mode.patch)")
    m = re.search(r"(\S+-linux-gnu\S*-(?:gcc|ld|as|objcopy))[:,]? (?:command )?not found|"
                  r"(\S+-linux-gnu\S*-gcc): No such file or directory", text)
    if m:
        tool = m.group(1) or m.group(2)
        triplet = tool.rsplit("-", 1)[0]
        return f"the cross compiler {tool} is missing: install Debian package gcc-{triplet}"
    m = re.search(r"configure: error: (.+)", text)
    if m:
        msg = m.group(1).strip()
        lib = re.search(r"(?:find|missing|requires?|need)\s+(?:an?\s+)?(?:valid\s+)?"
                        r"(?:lib)?([A-Za-z0-9_+-]+)", msg, re.I)
        name = lib.group(1).lower() if lib else ""
        pkg = DEV_PACKAGES.get(name.removeprefix("lib"))
        hint = f" (install Debian package {pkg}:{arch})" if pkg else ""
        return f"configure: {msg}{hint}"
    m = re.search(r"fatal error: ([\w./+-]+\.h): No such file or directory", text)
    if m:
        header = m.group(1)
        pkg = DEV_PACKAGES.get(HEADERS.get(header, ""))
        hint = f": install Debian package {pkg}:{arch}" if pkg else ""
        return f"header {header} is missing{hint}"
    m = re.search(r"(?m)^.*\berror: .+$", text)
    return m.group(0).strip()[:240] if m else None


class Attempt:
    """One build attempt: its log file, and `run` for each command."""

    def __init__(self, directory: Path, arch: str = "arm64"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.arch = arch
        self.log = self.dir / f"build-{time.strftime('%Y%m%dT%H%M%S')}.log"

    def run(self, cmd: list[str], cwd: Path, what: str, env: dict | None = None,
            ok=(0,)) -> None:
        with open(self.log, "ab") as log:
            log.write(f"\n$ {' '.join(cmd)}    # {what}, in {cwd}\n".encode())
            log.flush()
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        if proc.returncode not in ok:
            text = self.log.read_text(errors="replace")
            tail = [l for l in text.splitlines() if l.strip()][-TAIL_LINES:]
            why = explain(text, self.arch)
            raise BuildFailure(f"{what} failed (exit {proc.returncode})"
                               + (f": {why}" if why else "") + f"; log: {self.log}",
                               tail, self.log)

    def done(self) -> None:
        """A successful attempt's log stays beside the failed ones, for comparison."""
