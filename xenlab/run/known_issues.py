"""Known issues as data: ``boards/known-issues.yaml``.

A failure that matches an entry is reported as KNOWN with the entry's label
and link, never hidden (twister's quarantine list, OSSTest's allow lists).
Each entry names its culprit, so a report can tell a Xen bug from a lab fault
(KernelCI's issue culprits: code, tool or harness), and its scope (target,
profile, arch, variant, emulated, Xen versions), so an entry explains the
failure it was written for and not a new one that looks alike.  A known
issue explains; it never excuses: a lane that passed before and fails now is
a regression whatever entry matches (run/compare.py), and a lab entry makes
the run the lab's ERROR, never the board's pass.

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
REQUIRED = ("id", "regex", "label", "link", "culprit")
GLOBS = ("step", "target", "profile", "variant")  # fnmatch globs; "*" when left out
# A version range: clauses joined by commas, each an operator and a dotted version,
# or ==X.Y.* for a whole line ("4.17.*"): ">=4.17, <4.20".
_CLAUSE = re.compile(r"^(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)(\.\*)?$")
_VERSION = re.compile(r"^(\d+(?:\.\d+)*)")


@attr.s(frozen=True, auto_attribs=True)
class RunContext:
    """Where a failure happened: what an entry's scope keys are matched against."""

    target: str  # the farm's target (results/<target>/)
    profile: str | None = None  # its board profile
    arch: str | None = None
    variant: str | None = None  # a board variant; None: the dom0 smoke test ("dom0")
    emulated: bool = False  # QEMU's model of the board, not the board
    xen: str | None = None  # the Xen under test's version ("4.17.5"); None: not known yet


def version_tuple(text: str) -> tuple[int, ...] | None:
    m = _VERSION.match(text or "")
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def parse_range(text: str) -> tuple:
    """">=4.17, <4.20" as ((op, version, whole_line), ...); ValueError naming a bad clause."""
    clauses = []
    for part in text.split(","):
        m = _CLAUSE.match(part.strip())
        if not m:
            raise ValueError(f"{part.strip()!r} is not an operator (>=, <=, ==, !=, >, <) and a "
                             "version such as 4.17 or 4.17.*")
        clauses.append((m.group(1), version_tuple(m.group(2)), bool(m.group(3))))
    return tuple(clauses)


def in_range(version: str | None, clauses: tuple) -> bool:
    have = version_tuple(version or "")
    if have is None:
        return False  # an unknown Xen is in no range: the entry cannot be proven to apply
    for op, want, whole_line in clauses:
        if whole_line and op in ("==", "!="):
            same = have[:len(want)] == want
            ok = same if op == "==" else not same
        else:
            n = max(len(have), len(want))
            a, b = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
            ok = {">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b, ">": a > b,
                  "<": a < b}[op]
        if not ok:
            return False
    return True


@attr.s(frozen=True, auto_attribs=True)
class KnownIssue:
    """One known issue: where it applies (its scope) and how it shows (its regex)."""

    id: str
    regex: re.Pattern = attr.ib(repr=lambda p: repr(p.pattern))
    label: str  # one line for reports
    link: str  # a bug tracker URL, mailing-list thread or document
    culprit: str  # one of CULPRITS
    step: str = "*"
    target: str = "*"
    profile: str = "*"
    variant: str = "*"  # "dom0": the plain smoke test (no variant)
    arch: str | None = None
    emulated: bool | None = None
    xen: tuple = ()  # parse_range's clauses; () any Xen
    xen_text: str = ""

    def applies(self, ctx: RunContext, step: str) -> bool:
        """Whether this entry's scope covers a failure of `step` in `ctx`."""
        return (fnmatch.fnmatchcase(step, self.step)
                and fnmatch.fnmatchcase(ctx.target, self.target)
                and fnmatch.fnmatchcase(ctx.profile or "", self.profile)
                and fnmatch.fnmatchcase(ctx.variant or "dom0", self.variant)
                and (self.arch is None or ctx.arch == self.arch)
                and (self.emulated is None or ctx.emulated == self.emulated)
                and (not self.xen or in_range(ctx.xen, self.xen)))

    def matches(self, ctx: RunContext, step: str, text: str) -> bool:
        return self.applies(ctx, step) and self.regex.search(text) is not None

    def to_dict(self) -> dict:
        return {"id": self.id, "label": self.label, "link": self.link, "culprit": self.culprit}


_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
SCHEMA = {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": list(REQUIRED),
    "properties": {**{key: _TEXT for key in REQUIRED + GLOBS + ("xen",)},
                   "id": {"type": "string", "pattern": ID_RE.pattern},
                   "culprit": {"enum": list(CULPRITS)},
                   "arch": {"enum": ["arm64", "arm32"]},
                   "emulated": {"type": "boolean"}}}}


def _entry(where: str, index: int, entry: dict) -> KnownIssue:
    def fail(key: str, message: str):
        raise XenlabError(f"key '[{index}].{key}': {message}", where=where)

    try:
        regex = re.compile(entry["regex"])
    except re.error as e:
        fail("regex", f"{entry['regex']!r} is not a valid regular expression ({e})")
    xen = ()
    if "xen" in entry:
        try:
            xen = parse_range(entry["xen"])
        except ValueError as e:
            fail("xen", str(e))
    # A Xen bug is a bug of some Xen: without a scope it would explain every later
    # failure that looks alike, a regression included.
    if entry["culprit"] == "xen" and not (xen or "arch" in entry):
        fail("culprit", "'xen' needs the Xen versions (key xen: '>=4.17, <4.20') or the arch "
                        "(key arch) the bug is known in")
    # The lab is only known to fail this way where it emulates the board (TCG).
    if entry["culprit"] == "lab" and entry.get("emulated") is not True:
        fail("culprit", "'lab' entries describe the emulator: add emulated: true")
    return KnownIssue(entry["id"], regex, entry["label"], entry["link"], entry["culprit"],
                      **{key: entry[key] for key in GLOBS if key in entry},
                      arch=entry.get("arch"), emulated=entry.get("emulated"), xen=xen,
                      xen_text=entry.get("xen", ""))


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
    for i, entry in enumerate(data if isinstance(data, list) else []):
        if isinstance(entry, dict) and "board" in entry:  # before 2026-12: matched the target
            raise XenlabError(f"key '[{i}].board': an entry names the farm's 'target' or the "
                              "board 'profile' now (globs, as board was)", where=where)
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


def match(ctx: RunContext | str, step: str, text: str, *,
          issues: Sequence[KnownIssue] | None = None) -> KnownIssue | None:
    """The first known issue that explains this failure, or None.

    `ctx` is where it happened (a bare target name: nothing else known); `issues`
    defaults to `default_file()`, ``boards/known-issues.yaml``.
    """
    if isinstance(ctx, str):
        ctx = RunContext(ctx)
    if issues is None:
        issues = load_known_issues()
    return next((i for i in issues if i.matches(ctx, step, text)), None)
