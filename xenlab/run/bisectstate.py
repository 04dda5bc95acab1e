"""A bisection's record: ``<results>/.bisect/<id>/bisect.json``, written after every probe.

It is what `xenlab bisect --resume` goes on from and what the dashboard shows
beside the regression it explains: the range, the step and failure bisected,
each probe (its commit, verdict and why, its run record, its build and boot
times) and, once done, the first bad commit or the candidates skips left.
Written atomically; read through one schema, so a damaged file is one line.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Iterable

import attr

from ..errors import XenlabError
from ..images.cache import atomic_write
from ..schema import read_data, validate
from .recordschema import NAME_PATTERN
from .runnames import safe_name

BISECT_DIR = ".bisect"  # under the results root: a dot, so no target is named so
VERDICTS = ("good", "bad", "skip")

_TEXT = {"type": "string"}
_OPT_TEXT = {"type": ["string", "null"]}
_SHA = {"type": "string", "pattern": "^[0-9a-f]{40}$"}
_SECONDS = {"type": ["number", "null"], "minimum": 0}
_COMMIT = {"type": "object", "required": ["commit", "subject", "author_date"],
           "properties": {"commit": _SHA, "subject": _TEXT, "author_date": _TEXT, "excerpt": _TEXT,
                          "run_id": _OPT_TEXT}}
# What a schema-valid bisection may leave out, as its readers take it.
OPTIONAL = {"variant": None, "classification": None, "configs": [], "fixes": [],
            "from_run": None, "started": "", "ended": None, "reason": "", "first_bad": None,
            "candidates": []}
SCHEMA = {
    "type": "object",
    "required": ["schema", "id", "tree", "good", "bad", "target", "step", "status", "probes"],
    "properties": {
        "schema": {"enum": [1]},
        "id": {"type": "string", "pattern": NAME_PATTERN},
        "tree": _TEXT, "good": _SHA, "bad": _SHA,
        "target": {"type": "string", "pattern": NAME_PATTERN},
        "variant": _OPT_TEXT,
        "step": _TEXT,  # "" until the first probe of the --bad commit says which step fails
        "classification": _OPT_TEXT,  # the failure being bisected: learnt from the first bad probe
        "configs": {"type": "array", "items": _TEXT},
        "fixes": {"type": "array", "items": _TEXT},
        "from_run": _OPT_TEXT,  # the regression's run id (`--from`, `nightly --bisect`)
        "started": _TEXT, "ended": _OPT_TEXT,
        "status": {"enum": ["running", "interrupted", "done", "failed"]},
        "reason": _TEXT,
        "probes": {"type": "array", "items": {
            "type": "object", "required": ["n", "commit", "verdict"],
            "properties": {"n": {"type": "integer", "minimum": 1}, "commit": _SHA, "subject": _TEXT,
                           "verdict": {"enum": list(VERDICTS)}, "why": _TEXT, "run_id": _OPT_TEXT,
                           "attempts": {"type": "integer", "minimum": 1},
                           "build_s": _SECONDS, "boot_s": _SECONDS, "build_log": _OPT_TEXT}}},
        "first_bad": {"oneOf": [{"type": "null"}, _COMMIT]},
        "candidates": {"type": "array", "items": _COMMIT},
    },
}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@attr.s(eq=False, auto_attribs=True)
class Bisection:
    """What a bisection set out to do and what it has found so far (bisect.json)."""

    root: Path  # the results directory
    data: dict

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def dir(self) -> Path:
        return self.root / BISECT_DIR / self.id

    @property
    def probes(self) -> list[dict]:
        return self.data["probes"]

    @property
    def done(self) -> bool:
        return self.data["status"] == "done"

    def marks(self) -> list[tuple[str, str]]:
        return [(p["commit"], p["verdict"]) for p in self.probes]

    def save(self) -> None:
        validate(self.data, SCHEMA, str(self.dir / "bisect.json"))  # never write what can't be read
        atomic_write(self.dir / "bisect.json", json.dumps(self.data, indent=2) + "\n")

    @classmethod
    def new(cls, root: Path, **fields) -> "Bisection":
        data = {"schema": 1, "status": "running", "started": now(), "ended": None, "probes": [],
                "first_bad": None, "candidates": [], **fields}
        safe_name(data["id"], "bisection")
        b = cls(Path(root), data)
        if b.dir.exists():
            raise XenlabError(f"bisection {b.id} exists already under {root}")
        b.save()
        return b

    @classmethod
    def load(cls, root: Path, bisection_id: str) -> "Bisection":
        safe_name(bisection_id, "bisection")
        path = Path(root) / BISECT_DIR / bisection_id / "bisect.json"
        if not path.exists() and not path.is_symlink():
            raise XenlabError(f"no bisection {bisection_id} under {root}")
        try:
            data = json.loads(read_data(path, "bisection state"))
        except (ValueError, RecursionError) as exc:
            raise XenlabError(f"not valid JSON ({str(exc)[:120]})", where=str(path)) from None
        validate(data, SCHEMA, str(path))
        if data["id"] != bisection_id:
            raise XenlabError(f"key 'id': {data['id']!r} is not its directory's name", where=str(path))
        # The optional keys, present for every reader (the dashboard's templates are strict).
        return cls(Path(root), {**OPTIONAL, **data})


def read_bisections(root: Path) -> tuple[list[Bisection], list[tuple[Path, str]]]:
    """Every bisection under a results root, and the files that could not be read (path, why)."""
    found, unreadable = [], []
    for path in sorted((Path(root) / BISECT_DIR).glob("*/bisect.json")):
        try:
            found.append(Bisection.load(root, path.parent.name))
        except XenlabError as exc:
            unreadable.append((path, str(exc)))
    return found, unreadable


def explaining(bisections: Iterable[Bisection], target: str, run_id: str) -> Bisection | None:
    """The newest bisection started from `target`'s run `run_id` (a regression)."""
    mine = [b for b in bisections if b.data.get("from_run") == run_id and b.data["target"] == target]
    return max(mine, key=lambda b: b.data["started"], default=None)
