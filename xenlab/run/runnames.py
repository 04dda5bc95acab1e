"""Names of runs and targets, and where their directories are: under the results root,
never outside it."""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
from pathlib import Path

from ..errors import XenlabError
from .recordschema import NAME_PATTERN

NAME_RE = re.compile(NAME_PATTERN)


def default_results_dir() -> Path:
    """The one default results directory: $XENLAB_RESULTS, else results/ in the current directory."""
    return Path(os.environ.get("XENLAB_RESULTS") or "results")


def safe_name(value, what: str) -> str:
    """`value` if it is a safe target or run name, else a one-line XenlabError.

    Such names become directory names under the results root, so they must
    never contain a separator, be `.`/`..` or start with a dot or dash.
    """
    # fullmatch: with match(), "$" would let a trailing newline through.
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or value in (".", ".."):
        raise XenlabError(f"{what} name {value!r} must match {NAME_RE.pattern}")
    return value


def _inside(root: Path, *names: str) -> Path:
    """root/names..., refusing anything that resolves outside root (e.g. via a symlink)."""
    base = root.resolve()
    path = base.joinpath(*names).resolve()
    if path == base or base not in path.parents:
        raise XenlabError(f"{'/'.join(names)} resolves to {path}, outside the results root {base}")
    return path


def new_run_id() -> str:
    # The random suffix keeps parallel runs started in the same second apart.
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"
