"""Xen's Kconfig as data: named fragments from ``hypervisor/configs/`` over the tree's defconfig.

A fragment is a list of `CONFIG_X=value` (or `# CONFIG_X is not set`) lines.
It is merged into the defconfig and resolved with `olddefconfig`; then every
line must hold in the final .config.  A symbol the tree's Kconfig does not
know is an error naming the symbol, and so is one whose dependencies kept
it from being set.
"""

from __future__ import annotations

import re
from pathlib import Path

import attr

from ..errors import XenlabError
from .cache import sha256_bytes
from .manifest import HYPERVISOR_DIR

CONFIGS_DIR = HYPERVISOR_DIR / "configs"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@attr.s(frozen=True, auto_attribs=True)
class Config:
    """What to build: the tree's defconfig plus fragments, in order."""

    name: str  # "release" (no fragment), "debug", "debug+static-mem", or a file's stem
    fragments: tuple[str, ...]  # names or file paths, as given
    wanted: tuple[tuple[str, str | None, str], ...]  # (symbol, value or None = unset, from)

    @property
    def identity(self) -> str:
        return sha256_bytes(repr(self.wanted).encode())[:16]

    def text(self) -> str:
        return "".join(f"{s}={v}\n" if v is not None else f"# {s} is not set\n"
                       for s, v, _ in self.wanted)


def available() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.config"))


def load_config(specs=()) -> Config:
    """Fragments by name (hypervisor/configs/NAME.config) or by file path."""
    wanted: dict[str, tuple[str, str | None, str]] = {}
    names = []
    for spec in specs:
        if NAME_RE.match(spec) and not Path(spec).exists():
            path = CONFIGS_DIR / f"{spec}.config"
            if not path.is_file():
                raise XenlabError(f"unknown Kconfig fragment '{spec}' (known: "
                                  f"{', '.join(available())}; or give a file)", where="--xen-config")
        else:
            path = Path(spec)
            if not path.is_file():
                raise XenlabError(f"Kconfig fragment {spec} not found", where="--xen-config")
        where = str(path)
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise XenlabError(f"cannot read Kconfig fragment: {exc}", where=where) from None
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if (m := _SET.match(line)):
                wanted[m.group(1)] = (m.group(1), m.group(2), f"{where}:{n}")
            elif (m := _UNSET.match(line)):
                wanted[m.group(1)] = (m.group(1), None, f"{where}:{n}")
            elif line and not line.startswith("#"):
                raise XenlabError(f"line {n}: {line!r} is not CONFIG_X=value", where=where)
        names.append(path.stem)
    return Config("+".join(names) or "release", tuple(specs), tuple(wanted.values()))


def read_config(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        if (m := _SET.match(line)):
            out[m.group(1)] = m.group(2)
    return out


def same_value(want: str, have: str | None) -> bool:
    if have is None:
        return False
    if want == have:
        return True
    try:  # hex and decimal spellings of one number
        return int(want.strip('"'), 0) == int(have.strip('"'), 0)
    except ValueError:
        return False


def known_symbols(xen_dir: Path) -> set[str]:
    symbols = set()
    for path in xen_dir.rglob("Kconfig*"):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        symbols.update("CONFIG_" + s for s in re.findall(r"(?m)^\s*(?:menu)?config\s+(\w+)", text))
    return symbols


def configure(tree: Path, config: Config, make: list[str], env: dict, attempt) -> None:
    """xen/.config = defconfig + fragments, resolved, checked (skipped when already so)."""
    xen = tree / "xen"
    stamp = xen / ".xenlab-config"
    if stamp.exists() and stamp.read_text() == config.identity and (xen / ".config").exists():
        return
    stamp.unlink(missing_ok=True)
    attempt.run(make + ["-C", "xen", "defconfig"], tree, "Kconfig defconfig", env=env)
    if config.wanted:
        symbols = known_symbols(xen)
        for symbol, _, where in config.wanted:
            if symbol not in symbols:
                raise XenlabError(f"unknown Kconfig symbol {symbol}: this Xen's Kconfig has "
                                  "no such option", where=where)
        with open(xen / ".config", "a") as f:
            f.write("\n" + config.text())
        attempt.run(make + ["-C", "xen", "olddefconfig"], tree, "Kconfig olddefconfig", env=env)
        final = read_config(xen / ".config")
        for symbol, value, where in config.wanted:
            have = final.get(symbol)
            if value is None and have not in (None, "n"):
                raise XenlabError(f"{symbol} is still {have} after olddefconfig (something "
                                  "selects it)", where=where)
            if value is not None and value != "n" and not same_value(value, have):
                raise XenlabError(f"{symbol}={value} did not take: after olddefconfig it is "
                                  f"{have if have is not None else 'not set'} (its dependencies "
                                  "are not met)", where=where)
    stamp.write_text(config.identity)
