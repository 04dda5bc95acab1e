"""The dashboard's index: an SQLite table of every run record, read only when new or changed.

out/index.sqlite remembers every run.json by path, mtime and size, so a build
reads only new or changed records (through `RunRecord`, like every reader),
and says which targets and months must be redrawn.  A record that cannot be
read, or whose names could not make a page inside the site, is kept in the
`unreadable` table with its one-line reason until it is fixed or removed: the
index page lists it, and one bad record never takes the dashboard down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import attr

from ..errors import XenlabError
from ..run.record import NAME_RE, RunRecord
from ..schema import show

SCHEMA = 5  # 5: runs.lane; 4: unreadable; 3: runs.build; 2: runs.target (1 said board)
PAGE_DIRS = ("runs", "boards", "nights", "builds", "bisect")  # what a build writes besides index.html


_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    path TEXT PRIMARY KEY,          -- <target>/<run-id>, relative to the results root
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    target TEXT NOT NULL,
    lane TEXT NOT NULL,             -- the target and its board variant: "qemu-arm64 [dom0less]"
    run_id TEXT NOT NULL,
    night TEXT NOT NULL,            -- UTC date of the start
    start TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    classification TEXT,
    tester TEXT, arch TEXT, xen TEXT,
    build TEXT NOT NULL,            -- the Xen under test: version and config ("4.17.5 debug")
    console INTEGER NOT NULL,       -- 1 if the run has a console.log
    steps TEXT NOT NULL,            -- JSON [[name, status, seconds, known label, known link]]
    marks TEXT NOT NULL             -- JSON {stage: seconds since power-on}
);
CREATE TABLE IF NOT EXISTS unreadable (
    path TEXT PRIMARY KEY,          -- <target>/<run-id>, relative to the results root
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    reason TEXT NOT NULL            -- one line: the file, the key and the value
);
CREATE INDEX IF NOT EXISTS runs_target_night ON runs (target, night, start);
CREATE INDEX IF NOT EXISTS runs_night ON runs (night);
CREATE INDEX IF NOT EXISTS runs_lane_night ON runs (lane, night, start);
CREATE INDEX IF NOT EXISTS runs_build ON runs (build, target, start);
"""
NIGHT_RE = re.compile(r"\d{4}-\d\d-\d\d")  # a page name: nights/<yyyy-mm>.html
_COLS = ("target", "lane", "run_id", "night", "start", "verdict", "reason", "classification", "tester",
         "arch", "xen", "build", "console", "steps", "marks")


def open_index(out: Path, results: Path, render: str) -> sqlite3.Connection:
    """out/index.sqlite, emptied when it was built for other results or other templates."""
    out.mkdir(parents=True, exist_ok=True)
    existed = (out / "index.sqlite").exists()
    db = sqlite3.connect(out / "index.sqlite")
    db.row_factory = sqlite3.Row
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    want = {"results": str(results.resolve()), "render": f"{SCHEMA}-{render}"}
    stale = any(meta.get(k) != v for k, v in want.items())
    if stale:  # an older schema's tables lack columns: made again, and every page rewritten
        db.executescript("DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS unreadable;")
    db.executescript(_DDL)
    if stale:
        if existed:  # pages of runs this index no longer knows would never be removed
            for generated in PAGE_DIRS:
                shutil.rmtree(out / generated, ignore_errors=True)
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", want.items())
        db.commit()
    return db


def scan(results: Path) -> dict[str, tuple[int, int]]:
    """Every run.json under results: {"<board>/<run-id>": (mtime_ns, size)} — stat only."""
    # One stat per run: the only cost of a build that grows with history
    # (about 7 µs a run). A finished run.json may still be rewritten (by a
    # later reclassification), so no directory-mtime shortcut.
    found = {}
    try:
        boards = list(os.scandir(results))
    except FileNotFoundError:
        return found
    match, stat = NAME_RE.fullmatch, os.stat
    for b in boards:
        if not (match(b.name) and b.is_dir()):
            continue
        for name in os.listdir(b.path):
            if not match(name):
                continue
            try:
                st = stat(f"{b.path}/{name}/run.json")
            except (FileNotFoundError, NotADirectoryError):
                continue  # a run killed in its first millisecond, or a stray file
            found[f"{b.name}/{name}"] = (st.st_mtime_ns, st.st_size)
    return found


def _row(path: str, stamp: tuple[int, int], r: RunRecord, console: bool) -> tuple:
    steps = [[s.name, s.status.value, s.duration_s, (s.known or {}).get("label"),
              (s.known or {}).get("link")] for s in r.steps]
    marks = r.info.get("stage_marks") if isinstance(r.info.get("stage_marks"), dict) else {}
    start = str(r.start_time or "")
    return (path, *stamp, r.target, r.lane, r.run_id, start[:10] or "unknown", start,
            r.verdict.value, r.verdict_reason or "", r.classification, r.tester, r.arch,
            r.info.get("xen_version"), build_label(r.info), int(console), json.dumps(steps),
            json.dumps(marks))


def build_label(info: dict) -> str:
    """A run's Xen build as the dashboard groups it: version and config."""
    build = info.get("xen_build") if isinstance(info.get("xen_build"), dict) else {}
    label = f"{info.get('xen_version') or build.get('version') or '?'} " \
            f"{build.get('config') or 'debian'}"
    patches = build.get("patches") if isinstance(build.get("patches"), list) else []
    label += "".join(f" +{p}" for p in patches if isinstance(p, str))  # a patched Xen is another
    return label + (" tools-mismatch" if info.get("toolstack_mismatch") else "")


def unsafe(path, target, run_id, night) -> str | None:
    """Why a row's names would not make pages inside the site (nights/<yyyy-mm>.html,
    boards/<target>.html, runs/<target>/<run-id>.html), or None.

    Validation of run.json already refuses such values; this holds for rows of
    an older index and for whatever a later reader lets through.
    """
    parts = path.split("/") if isinstance(path, str) else []
    if len(parts) != 2 or not all(NAME_RE.fullmatch(p) for p in parts):
        return f"path {show(path)} is not <target>/<run-id>"
    for key, value, pattern in (("target", target, NAME_RE), ("run_id", run_id, NAME_RE),
                                ("start", night, NIGHT_RE)):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            what = f"night {show(value)}" if key == "start" else show(value)
            return f"key '{key}': {what} would name a page outside the site"
    return None


def _read(results: Path, path: str, stamp: tuple[int, int]) -> tuple[tuple | None, str]:
    """(the run's row, "") or (None, the one line that says why it cannot be indexed)."""
    where = results / path / "run.json"
    try:
        record = RunRecord.load(results / path)
        row = _row(path, stamp, record, (results / path / "console.log").is_file())
    except XenlabError as exc:
        return None, " ".join(str(exc).split())
    except Exception as exc:  # noqa: BLE001
        # Valid but odd values (a pid beyond pid_t) are a reader's bug, and
        # one record must still never take the farm's dashboard down.
        return None, " ".join(f"{where}: cannot be read ({type(exc).__name__}: {exc})".split())
    why = unsafe(path, row[3], row[5], row[6])
    return (None, f"{where}: {why}") if why else (row, "")


@attr.s(auto_attribs=True)
class Changes:
    """What a build must redraw: runs (path -> row or None if gone), boards, months,
    and whether the list of unreadable records changed."""

    runs: dict = attr.ib(factory=dict)
    boards: set = attr.ib(factory=set)
    months: set = attr.ib(factory=set)
    unreadable: bool = False

    def touch(self, target, night) -> None:
        """Redraw the board's page and the night's month, if they are names of the site."""
        if isinstance(target, str) and NAME_RE.fullmatch(target):
            self.boards.add(target)
        if isinstance(night, str) and NIGHT_RE.fullmatch(night):
            self.months.add(night[:7])


def update_index(db: sqlite3.Connection, results: Path) -> tuple[int, Changes]:
    """Read the run.json files that are new or changed since the last build; (runs, changes)."""
    on_disk = scan(results)
    plain = db.cursor()
    plain.row_factory = None  # tuples: this query reads every indexed run
    known = {path: rest for path, *rest in
             plain.execute("SELECT path, mtime_ns, size, target, night, run_id FROM runs")}
    bad = {path: (mtime, size) for path, mtime, size in
           plain.execute("SELECT path, mtime_ns, size FROM unreadable")}
    changes = Changes()
    rows, unreadable, dropped = [], [], []
    for path, stamp in on_disk.items():
        old = known.get(path)
        if old is not None and (old[0], old[1]) == stamp:
            why = unsafe(path, old[2], old[4], old[3])
            if why is None:
                continue
            row, why = None, f"{results / path / 'run.json'}: {why}"  # a row of an older index
        elif old is None and bad.get(path) == stamp:
            continue  # still unreadable: listed already
        else:
            row, why = _read(results, path, stamp)
        if old is not None:
            changes.touch(old[2], old[3])
        if row is None:
            unreadable.append((path, *stamp, why))
            if old is not None:  # its pages go: it is listed as unreadable instead
                dropped.append(path)
                changes.runs[path] = None
            continue
        rows.append(row)
        changes.runs[path] = row
        changes.touch(row[3], row[6])
    fixed = [p for p in bad if p not in on_disk or p in changes.runs and changes.runs[p]]
    gone = [p for p in known if p not in on_disk]
    for path in gone:
        changes.runs[path] = None
        changes.touch(known[path][2], known[path][3])
    changes.unreadable = bool(unreadable or fixed)
    db.executemany(f"INSERT OR REPLACE INTO runs (path, mtime_ns, size, {', '.join(_COLS)}) "
                   f"VALUES ({', '.join('?' * (len(_COLS) + 3))})", rows)
    db.executemany("DELETE FROM runs WHERE path = ?", [(p,) for p in gone + dropped])
    db.executemany("DELETE FROM unreadable WHERE path = ?", [(p,) for p in fixed])
    db.executemany("INSERT OR REPLACE INTO unreadable VALUES (?, ?, ?, ?)", unreadable)
    # A changed night changes the comparison of the board's next night, maybe in the next month.
    for target, month in {(r[3], r[5][:7]) for r in rows}:
        nxt = db.execute("SELECT night FROM runs WHERE target = ? AND night > ? ORDER BY night "
                         "LIMIT 1", (target, f"{month}-99")).fetchone()
        if nxt:
            changes.touch(target, nxt["night"])
    db.commit()
    return len(on_disk), changes


def unreadable_reasons(db: sqlite3.Connection) -> list[str]:
    """The one-line reason of every record the dashboard could not read, by path."""
    return [r[0] for r in db.execute("SELECT reason FROM unreadable ORDER BY path")]
