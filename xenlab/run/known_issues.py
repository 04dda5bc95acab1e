"""Known issues as data: ``boards/known-issues.yaml``.

A failure that matches an entry is reported as KNOWN with the entry's label
and link, never hidden (twister's quarantine list, OSSTest's allow lists).
Each entry names its culprit, so a report can tell a Xen bug from a lab fault
(KernelCI's issue culprits: code, tool or harness).

An entry's `regex` is searched in the text the strategy hands to `match`:
the step's classification, message and evidence lines, one per line.  The
wider console excerpt is deliberately left out: it holds harmless noise that
would make an entry match failures it does not explain.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Sequence

import attr

from .. import schema
from ..errors import XenlabError
from ..plan.profile import boards_dir

CULPRITS = ("xen", "dom0", "domu", "lab", "harness")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
KEYS = ("id", "board", "step", "regex", "label", "link", "culprit")


@attr.s(frozen=True, auto_attribs=True)
class KnownIssue:
    """One known issue: where it applies (board and step globs) and how it shows."""

    id: str
    board: str  # fnmatch glob on the board name, e.g. "qemu-*"
    step: str  # fnmatch glob on the step name, e.g. "domu*"
    regex: re.Pattern = attr.ib(repr=lambda p: repr(p.pattern))
    label: str  # one line for reports
    link: str  # a bug tracker URL, mailing-list thread or document
    culprit: str  # one of CULPRITS

    def matches(self, board: str, step: str, text: str) -> bool:
        return (fnmatch.fnmatchcase(board, self.board)
                and fnmatch.fnmatchcase(step, self.step)
                and self.regex.search(text) is not None)

    def to_dict(self) -> dict:
        return {"id": self.id, "label": self.label, "link": self.link, "culprit": self.culprit}


_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
SCHEMA = {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": list(KEYS),
    "properties": {**{key: _TEXT for key in KEYS},
                   "id": {"type": "string", "pattern": ID_RE.pattern},
                   "culprit": {"enum": list(CULPRITS)}}}}


def _entry(where: str, index: int, entry: dict) -> KnownIssue:
    try:
        regex = re.compile(entry["regex"])
    except re.error as e:
        raise XenlabError(f"key '[{index}].regex': {entry['regex']!r} is not a valid regular "
                          f"expression ({e})", where=where) from None
    return KnownIssue(entry["id"], entry["board"], entry["step"], regex,
                      entry["label"], entry["link"], entry["culprit"])


def default_file() -> Path:
    """known-issues.yaml beside the board profiles (XENLAB_BOARDS, as plan.profile reads it)."""
    return boards_dir() / "known-issues.yaml"


def load_known_issues(path: Path | str | None = None) -> list[KnownIssue]:
    """Read and validate a known-issues file; any mistake is one XenlabError line."""
    if path is None:
        path = default_file()
        if not path.exists():  # a user's own boards directory need not have one
            return []
    where = str(path)
    data = schema.read_yaml(path, "known issues", where)
    if data is None:
        return []
    schema.validate(data, SCHEMA, where)
    issues = [_entry(where, i, entry) for i, entry in enumerate(data)]
    seen: set[str] = set()
    for i, issue in enumerate(issues):
        if issue.id in seen:
            raise XenlabError(f"key '[{i}].id': {issue.id!r} is used twice", where=where)
        seen.add(issue.id)
    return issues


def failure_text(classification: str | None, message: str, evidence: Sequence[str]) -> str:
    """The text an entry's regex is searched in (see the module docstring)."""
    return "\n".join([classification or "", message, *evidence])


def match(board: str, step: str, text: str, *,
          issues: Sequence[KnownIssue] | None = None) -> KnownIssue | None:
    """The first known issue that explains this failure, or None.

    `issues` defaults to `default_file()`, ``boards/known-issues.yaml``.
    """
    if issues is None:
        issues = load_known_issues()
    return next((i for i in issues if i.matches(board, step, text)), None)
