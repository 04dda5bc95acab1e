"""The dashboard's index: an SQLite table of every run record, read only when new or changed.

out/index.sqlite remembers every run.json by path, mtime and size, so a build
reads only new or changed records (through `RunRecord`, like every reader),
and says which targets and months must be redrawn.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import attr

from ..errors import XenlabError
from ..run.record import NAME_RE, RunRecord

SCHEMA = 3  # 3: runs.build; 2: runs.target (1 said board)
PAGE_DIRS = ("runs", "boards", "nights", "builds")  # what a build writes besides index.html


_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    path TEXT PRIMARY KEY,          -- <target>/<run-id>, relative to the results root
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    target TEXT NOT NULL,
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
CREATE INDEX IF NOT EXISTS runs_target_night ON runs (target, night, start);
CREATE INDEX IF NOT EXISTS runs_night ON runs (night);
CREATE INDEX IF NOT EXISTS runs_build ON runs (build, target, start);
"""
_COLS = ("target", "run_id", "night", "start", "verdict", "reason", "classification", "tester",
         "arch", "xen", "build", "console", "steps", "marks")


def open_index(out: Path, results: Path, render: str) -> sqlite3.Connection:
    """out/index.sqlite, emptied when it was built for other results or other templates."""
    out.mkdir(parents=True, exist_ok=True)
    existed = (out / "index.sqlite").exists()
    db = sqlite3.connect(out / "index.sqlite")
    db.row_factory = sqlite3.Row
    db.executescript(_DDL)
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    want = {"results": str(results.resolve()), "render": f"{SCHEMA}-{render}"}
    if any(meta.get(k) != v for k, v in want.items()):
        db.execute("DELETE FROM runs")  # every page is rewritten from scratch
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
    return (path, *stamp, r.target, r.run_id, start[:10] or "unknown", start,
            r.verdict.value, r.verdict_reason or "", r.classification, r.tester, r.arch,
            r.info.get("xen_version"), build_label(r.info), int(console), json.dumps(steps),
            json.dumps(marks))


def build_label(info: dict) -> str:
    """A run's Xen build as the dashboard groups it: version and config."""
    build = info.get("xen_build") if isinstance(info.get("xen_build"), dict) else {}
    label = f"{info.get('xen_version') or build.get('version') or '?'} " \
            f"{build.get('config') or 'debian'}"
    return label + (" tools-mismatch" if info.get("toolstack_mismatch") else "")


@attr.s(auto_attribs=True)
class Changes:
    """What a build must redraw: runs (path -> row or None if gone), boards, months."""

    runs: dict = attr.ib(factory=dict)
    boards: set = attr.ib(factory=set)
    months: set = attr.ib(factory=set)


def update_index(db: sqlite3.Connection, results: Path) -> tuple[int, Changes]:
    """Read the run.json files that are new or changed since the last build; (runs, changes)."""
    on_disk = scan(results)
    plain = db.cursor()
    plain.row_factory = None  # tuples: this query reads every indexed run
    known = {path: rest for path, *rest in
             plain.execute("SELECT path, mtime_ns, size, target, night FROM runs")}
    changes = Changes()
    rows = []
    for path, stamp in on_disk.items():
        old = known.get(path)
        if old is not None and (old[0], old[1]) == stamp:
            continue
        try:
            record = RunRecord.load(results / path)
        except XenlabError:
            continue  # unreadable now; a later build will see a new mtime
        row = _row(path, stamp, record, (results / path / "console.log").is_file())
        rows.append(row)
        changes.runs[path] = row
        changes.boards.add(row[3])
        changes.months.add(row[5][:7])
        if old is not None:
            changes.months.add(old[3][:7])
    gone = [p for p in known if p not in on_disk]
    for path in gone:
        changes.runs[path] = None
        changes.boards.add(known[path][2])
        changes.months.add(known[path][3][:7])
    db.executemany(f"INSERT OR REPLACE INTO runs (path, mtime_ns, size, {', '.join(_COLS)}) "
                   f"VALUES ({', '.join('?' * (len(_COLS) + 3))})", rows)
    db.executemany("DELETE FROM runs WHERE path = ?", [(p,) for p in gone])
    # A changed night changes the comparison of the board's next night, maybe in the next month.
    for target, month in {(r[3], r[5][:7]) for r in rows}:
        nxt = db.execute("SELECT night FROM runs WHERE target = ? AND night > ? ORDER BY night "
                         "LIMIT 1", (target, f"{month}-99")).fetchone()
        if nxt:
            changes.months.add(nxt["night"][:7])
    db.commit()
    return len(on_disk), changes
