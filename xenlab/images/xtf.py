"""XTF on Arm: the Xen Test Framework's tests, cross-built as Xen's CI builds them.

The XTF source is the tester's input, as a Xen source is: a directory or a
tarball of its Arm branch (`--xtf-source`), never code xenlab carries.  Each
named test is built with Debian's aarch64-linux-gnu toolchain and the
variables xen.git's automation/scripts/include/xtf-arm64 sets
(`CONFIG_GICV2=y CONFIG_SBSA_UART=y TESTS=tests/<name>`), and cached by
content: the source's identity, the test, the toolchain and this recipe.
A failed build is one line plus its log's tail, the log kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import attr

from ..errors import XenlabError
from . import buildlog
from .cache import build_aside, cache_root, sha256_bytes, sha256_file

RECIPE_VERSION = "1"
CROSS = "aarch64-linux-gnu-"
ENV = "mmu64le"  # XTF's arm64 environment: 64-bit, MMU on, little endian
MAKE_VARS = ("ARCH=arm64", f"CROSS_COMPILE={CROSS}", "CONFIG_GICV2=y", "CONFIG_SBSA_UART=y")
TEST_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# What an XTF tree has: its build system, its Arm code, its tests.
MARKS = ("build/common.mk", "arch/arm", "tests")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")
ROLE_PREFIX = "xtf-"  # an XTF test's artifact in an image set: xtf-<test>
DEFAULT_TEST = "hyp-xen-version"  # what Xen CI's two XTF jobs run


@attr.s(frozen=True, auto_attribs=True)
class XtfSource:
    spec: str  # as the tester named it
    path: Path
    identity: str  # sha256 of the tarball, or of every file of the directory
    tests: tuple[str, ...]  # tests/<name>/ with a Makefile

    @property
    def short(self) -> str:
        return f"{Path(self.spec).name} ({self.identity[:12]})"


def resolve(spec: str) -> XtfSource:
    """A directory or tarball that holds XTF, or one XenlabError line."""
    path = Path(spec)
    if path.is_dir():
        _check_tree(path, spec)
        return XtfSource(spec, path.resolve(), _tree_identity(path), _tests(path))
    if path.is_file() and path.name.endswith(TARBALL_SUFFIXES):
        try:
            with tarfile.open(path) as tar:
                names = tar.getnames()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise XenlabError(f"{spec}: not a readable tarball ({exc})", where="--xtf-source") from None
        top = _top(names)
        rel = {n[len(top):] for n in names}
        missing = [m for m in MARKS if not any(r == m or r.startswith(m + "/") for r in rel)]
        if missing:
            raise XenlabError(f"{spec}: not an XTF source (no {', '.join(missing)})", where="--xtf-source")
        tests = tuple(sorted({r.split("/")[1] for r in rel
                              if r.startswith("tests/") and r.endswith("/Makefile") and r.count("/") == 2}))
        return XtfSource(spec, path.resolve(), sha256_file(path), tests)
    raise XenlabError(f"{spec}: no such XTF directory or tarball ({', '.join(TARBALL_SUFFIXES)})",
                      where="--xtf-source")


def _top(names: list[str]) -> str:
    """The tarball's one top directory with its slash ("xtf-arm-6a70315/"), or ""."""
    tops = {n.split("/", 1)[0] for n in names if n}
    if len(tops) == 1 and any("/" in n for n in names):
        return tops.pop() + "/"
    return ""


def _check_tree(tree: Path, spec: str) -> None:
    missing = [m for m in MARKS if not (tree / m).exists()]
    if missing:
        raise XenlabError(f"{spec}: not an XTF source (no {', '.join(missing)})", where="--xtf-source")


def _tests(tree: Path) -> tuple[str, ...]:
    return tuple(sorted(p.parent.name for p in (tree / "tests").glob("*/Makefile")))


def _tree_identity(tree: Path) -> str:
    files = []
    for root, dirs, names in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(names):
            p = Path(root) / name
            if p.is_file() and not p.is_symlink():
                files.append((str(p.relative_to(tree)), sha256_file(p)))
    return sha256_bytes(json.dumps(files).encode())


def check_test(source: XtfSource, name: str) -> None:
    if not TEST_RE.match(name) or name not in source.tests:
        shown = ", ".join(source.tests[:12]) + (" ..." if len(source.tests) > 12 else "")
        raise XenlabError(f"XTF test {name!r} is not in {source.spec} (its tests: {shown})",
                          where="--xtf-test")


def _compiler() -> str:
    gcc = shutil.which(f"{CROSS}gcc")
    if gcc is None:
        raise XenlabError(f"cross compiler {CROSS}gcc not found: install Debian package "
                          "gcc-aarch64-linux-gnu", where="--xtf-source")
    return subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]


def build_test(source: XtfSource, name: str, log=lambda msg: None) -> Path:
    """The test's arm64 binary (test-mmu64le-<name>): from the cache, or built now."""
    check_test(source, name)
    key = sha256_bytes(json.dumps({"recipe": RECIPE_VERSION, "source": source.identity,
                                   "test": name, "make": MAKE_VARS, "gcc": _compiler()},
                                  sort_keys=True).encode())[:32]
    final = cache_root() / "xtf-builds" / f"arm64-{key}"
    binary = f"test-{ENV}-{name}"
    if (final / "build.json").is_file():
        log(f"XTF {name}: cached ({final.name})")
        return final / binary
    attempt = buildlog.Attempt(cache_root() / "xtf-logs" / f"arm64-{key}")
    work_root = cache_root() / "xtf-work"
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=work_root) as work:
        tree = _unpack(source, Path(work))
        log(f"XTF {name}: make {' '.join(MAKE_VARS)} TESTS=tests/{name}")
        attempt.run(["make", f"-j{os.cpu_count() or 2}", *MAKE_VARS, f"TESTS=tests/{name}"],
                    tree, f"XTF build of tests/{name}", env=dict(os.environ, LC_ALL="C"))
        built = tree / "tests" / name / binary
        if not built.is_file():
            raise XenlabError(f"XTF test {name!r} builds no arm64 binary ({binary}): its "
                              f"TEST-ENVS leave out {ENV}; log: {attempt.log}", where="--xtf-test")
        with build_aside(final) as out:
            shutil.copyfile(built, out / binary)
            (out / "build.json").write_text(json.dumps({
                "test": name, "source": source.spec, "identity": source.identity,
                "make": list(MAKE_VARS), "sha256": sha256_file(built)}, indent=2) + "\n")
    attempt.done()
    return final / binary


def _unpack(source: XtfSource, work: Path) -> Path:
    """A private copy to build in: the tester's tree is never written to."""
    tree = work / "xtf"
    if source.path.is_dir():
        shutil.copytree(source.path, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        return tree
    with tarfile.open(source.path) as tar:
        tar.extractall(work / "x", filter="data")  # no absolute paths, no links out, no devices
    entries = list((work / "x").iterdir())
    os.replace(entries[0] if len(entries) == 1 and entries[0].is_dir() else work / "x", tree)
    return tree


def role(name: str) -> str:
    return f"{ROLE_PREFIX}{name}"


def for_image_set(arch: str, source: str | None, tests: tuple[str, ...], log) -> dict:
    """role -> (binary, sha256, origin) of each XTF test an image set takes (default: Xen
    CI's hyp-xen-version); {} without a source."""
    if source is None:
        if tests:
            raise XenlabError("--xtf-test names a test of an XTF source: add --xtf-source",
                              where="--xtf-test")
        return {}
    if arch != "arm64":
        raise XenlabError(f"XTF's Arm tests are built for arm64 (Xen CI's jobs), not {arch}",
                          where="--xtf-source")
    src = resolve(source)
    out = {}
    for name in tests or (DEFAULT_TEST,):
        binary = build_test(src, name, log)
        out[role(name)] = (binary, sha256_file(binary), f"XTF tests/{name} from {src.short}, "
                           f"built by xenlab ({' '.join(MAKE_VARS[2:])})")
    return out
