"""`xenlab dashboard`: a static site of the farm's nightly results.

The index is a board × night matrix (a night is the UTC date a run started;
a cell is the newest run of that board that night), coloured by verdict,
with regressions, fixes and still-failing boards against each board's
previous night marked on the cells and listed on top (KernelCI's tree
compare, OSSTest's wording, both via `nightly.compare`).  Lab and harness
errors can be hidden: the dashboard feature KernelCI users ask for most.

Incremental by design: an SQLite index (out/index.sqlite) remembers every
run.json by path, mtime and size, so a build reads only new or changed
records, writes run pages only for those runs, and rewrites only the board
pages, month pages and index they touch.  Those pages show bounded windows
(the last INDEX_NIGHTS / BOARD_NIGHTS nights, or one month), so adding a
night costs the same after a year as after a week.

Console logs are untrusted text: every page is rendered with autoescape on
and a Content-Security-Policy that allows no script but the filter's own.
Records are untrusted too: one that cannot be read is listed on the index
("could not read") and everything else is built, and every page path made
from a record's fields is checked against the site (`site.Site`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sqlite3
import time
from pathlib import Path

import attr
import jinja2

from ..console_text import clean_lines
from ..errors import XenlabError
from ..run.compare import Change, change_between, compare
from ..run.bisectstate import BISECT_DIR, read_bisections
from ..run.record import RunRecord
from ..run.steps import verdict_label
from .dashindex import Changes, open_index, unreadable_reasons, update_index
from .plot import plot
from .site import Site, make_server, serve  # noqa: F401  (make_server, serve: `--serve`)

INDEX_NIGHTS = 30  # columns of the index matrix
BOARD_NIGHTS = 90  # rows and plot points of a board page
CONSOLE_MAX = 4 << 20  # bytes of console shown; a runaway log keeps its head and tail
INFRA = ("ERROR", "ABORTED", "RUNNING")
SHORT = {"PASS": "P", "FAIL": "F", "ERROR": "E", "KNOWN": "K", "SKIP": "S", "ABORTED": "A",
         "RUNNING": "R"}

# The only script the site runs: the infrastructure filter.  Its hash goes
# into the pages' CSP, so an injected <script> could not run even if escaping failed.
FILTER_JS = """(function () {
  var box = document.getElementById('infra-filter');
  if (!box) return;
  function apply(on) { document.body.classList.toggle('hide-infra', on); box.checked = on; }
  apply(location.hash.indexOf('hide-infra') >= 0);
  box.addEventListener('change', function () {
    apply(box.checked);
    history.replaceState(null, '', box.checked ? '#hide-infra' : location.pathname);
  });
  box.closest('.filter').hidden = false;
})();"""
FILTER_HASH = "sha256-" + base64.b64encode(hashlib.sha256(FILTER_JS.encode()).digest()).decode()


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("xenlab.reports", "templates"),
                             autoescape=True,  # console text and step messages are untrusted
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.globals.update(short=SHORT, filter_js=FILTER_JS, filter_hash=FILTER_HASH,
                       safe_url=safe_url, infra=INFRA,
                       marked=("regression", "fixed", "still-failing"))
    return env


def _render_version() -> str:
    """Changes when a template or this module changes: then every page is rebuilt."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for path in [Path(__file__).resolve(), *sorted((here / "templates").glob("*.html"))]:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def safe_url(link) -> str | None:
    """A known issue's link, if it is a plain http(s) URL (never javascript: and friends)."""
    return link if isinstance(link, str) and link.startswith(("https://", "http://")) else None


# --------------------------------------------------------------------------- page data

def _cell(row: sqlite3.Row) -> dict:
    steps = json.loads(row["steps"])
    return {"target": row["target"], "lane": row["lane"], "run_id": row["run_id"], "night": row["night"],
            "start": row["start"], "verdict": row["verdict"], "reason": row["reason"],
            "label": verdict_label(row["verdict"], [st[1] for st in steps]),
            "classification": row["classification"], "xen": row["xen"], "build": row["build"],
            "tester": row["tester"],
            "steps": steps, "marks": json.loads(row["marks"]), "console": bool(row["console"]),
            "known": list(dict.fromkeys((s[3], s[4]) for s in steps if s[1] == "KNOWN" and s[3])),
            "change": None, "previous": None}


# A row of the dashboard is a lane: a board's dom0 smoke test ("qemu-arm64"), or one
# board variant of it ("qemu-arm64 [dom0less]"); a night compares within its lane.

def _newest_per_night(rows) -> dict[tuple[str, str], dict]:
    cells: dict[tuple[str, str], dict] = {}
    for row in rows:  # ordered by start: the night's newest run wins
        cells[(row["lane"], row["night"])] = _cell(row)
    return cells


def _before(db, lane: str, night: str) -> dict | None:
    """The lane's cell on its last night before `night`."""
    row = db.execute("SELECT * FROM runs WHERE lane = ? AND night < ? "
                     "ORDER BY night DESC, start DESC LIMIT 1", (lane, night)).fetchone()
    return _cell(row) if row else None


def _lane_targets(cells: dict) -> dict[str, str]:
    """Each lane's target, whose board page and run pages the row links to."""
    return {lane: cell["target"] for (lane, _), cell in cells.items()}


def _mark_changes(db, lanes: list[str], nights: list[str], cells: dict) -> None:
    """Each cell's change against the lane's previous night (which may lie before the window)."""
    for lane in lanes:
        prev = _before(db, lane, nights[0]) if nights else None
        for night in nights:
            cell = cells.get((lane, night))
            if cell is None:
                continue
            cell["change"] = change_between(prev, cell).value if prev is not None else None
            cell["previous"] = prev["run_id"] if prev is not None else None
            prev = cell


def matrix(db, nights: list[str]) -> dict:
    """lanes × nights cells for the given (ascending) nights, changes marked."""
    if not nights:
        return {"boards": [], "nights": [], "cells": {}, "targets": {}}
    rows = db.execute("SELECT * FROM runs WHERE night BETWEEN ? AND ? ORDER BY start, run_id",
                      (nights[0], nights[-1])).fetchall()
    wanted = set(nights)
    cells = {k: v for k, v in _newest_per_night(rows).items() if k[1] in wanted}
    boards = sorted({b for b, _ in cells})
    _mark_changes(db, boards, nights, cells)
    return {"boards": boards, "nights": nights, "cells": cells, "targets": _lane_targets(cells)}


def summary(db, m: dict) -> dict:
    """The newest night against each lane's previous night, for the list on top."""
    if not m["nights"]:
        return {"night": None, "entries": {}}
    last = m["nights"][-1]
    current = {b: m["cells"][(b, last)] for b in m["boards"] if (b, last) in m["cells"]}
    previous = {b: p for b in current if (p := _before(db, b, last)) is not None}
    # Missing: boards that ran on the night before and not on this one.
    if len(m["nights"]) > 1:
        before = m["nights"][-2]
        for b in m["boards"]:
            if b not in current and (b, before) in m["cells"]:
                previous[b] = m["cells"][(b, before)]
    comparison = compare(previous, current)
    keep = (Change.REGRESSION, Change.FIXED, Change.STILL_FAILING, Change.INFRA,
            Change.NEW, Change.MISSING)
    return {"night": last, "entries": {c.value: comparison.of(c) for c in keep}}


def console_text(path: Path) -> str:
    """The console log as readable text: no escapes or control characters, bounded size."""
    try:
        # Without blocking, and only a regular file: a FIFO would wait for a writer for ever.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return ""
            size = st.st_size
            if size <= CONSOLE_MAX:
                data = f.read()
            else:
                head = f.read(CONSOLE_MAX // 4)
                f.seek(size - CONSOLE_MAX * 3 // 4)
                gap = f"\n[... {size - CONSOLE_MAX} bytes left out ...]\n".encode()
                data = head + gap + f.read()
    except OSError:
        return ""
    return "\n".join(clean_lines(data.decode("utf-8", errors="replace")))


# --------------------------------------------------------------------------- the build

@attr.s(auto_attribs=True)
class BuildStats:
    runs: int = 0  # run.json files found
    read: int = 0  # read this build (new or changed)
    removed: int = 0
    pages: int = 0  # pages written
    seconds: float = 0.0
    index_seconds: float = 0.0  # scan and index update; the rest is rendering
    unreadable: int = 0  # run records listed under "could not read"
    refused: list = attr.ib(factory=list)  # pages not written: their path left the site


def build(results: Path | str, out: Path | str, *, index_nights: int = INDEX_NIGHTS,
          board_nights: int = BOARD_NIGHTS) -> BuildStats:
    t0 = time.monotonic()
    results, out = Path(results), Path(out)
    if not results.is_dir():
        raise XenlabError(f"--results {results}: no such directory")
    if out.exists() and not out.is_dir():
        raise XenlabError(f"--out {out}: not a directory")
    db = open_index(out, results, _render_version())
    try:
        stats = BuildStats()
        stats.runs, changes = update_index(db, results)
        stats.index_seconds = time.monotonic() - t0
        stats.read = sum(r is not None for r in changes.runs.values())
        stats.removed = len(changes.runs) - stats.read
        stats.unreadable = len(unreadable_reasons(db))
        if changes.runs or changes.unreadable or not (out / "index.html").exists() or \
                _bisected_since(results, out / "index.html"):
            site = Site(out)
            stats.pages = _render(db, results, site, changes, index_nights, board_nights)
            stats.refused = site.refused
    finally:
        db.close()
    stats.seconds = time.monotonic() - t0
    return stats


def _bisected_since(results: Path, index: Path) -> bool:
    """A bisection written after the index: its answer belongs next to its regression."""
    try:
        built = index.stat().st_mtime_ns
    except OSError:
        return True
    return any(p.stat().st_mtime_ns > built for p in (results / BISECT_DIR).glob("*/bisect.json"))


def _render(db, results: Path, site: Site, changes: Changes, index_nights: int,
            board_nights: int) -> int:
    env = _templates()
    pages = 0
    for path, row in changes.runs.items():
        board, _, run_id = path.partition("/")
        if row is None:
            for suffix in (".html", ".console.html"):
                site.unlink(site.path("runs", board, run_id, suffix=suffix))
            continue
        pages += _run_pages(env, results / path, site, board, run_id)
    months = [r[0] for r in db.execute("SELECT DISTINCT substr(night, 1, 7) FROM runs ORDER BY 1")]
    for board in sorted(changes.boards):
        pages += _board_page(env, db, site, board, board_nights)
    for month in sorted(changes.months):
        nights = [r[0] for r in db.execute("SELECT DISTINCT night FROM runs WHERE night LIKE ? "
                                           "ORDER BY night", (f"{month}-%",))]
        target = site.path("nights", month)
        if not nights:
            site.unlink(target)
            continue
        pages += site.write(target, env.get_template("month.html").render(
            root="../", title=f"Nights of {month}", month=month, m=matrix(db, nights),
            months=months))
    nights = [r[0] for r in db.execute("SELECT DISTINCT night FROM runs ORDER BY night DESC "
                                       "LIMIT ?", (index_nights,))][::-1]
    m = matrix(db, nights)
    boards = [r[0] for r in db.execute("SELECT DISTINCT target FROM runs ORDER BY 1")]
    pages += _builds_pages(env, db, site)
    bisections, unreadable = read_bisections(results)
    for b in bisections:  # a regression's bisection: its answer and its probes
        pages += site.write(site.path("bisect", b.id), env.get_template("bisect.html").render(
            root="../", title=f"Bisection {b.id}", b=b))
    bisected = {(b.data["target"], b.data["from_run"]): b for b in sorted(
        bisections, key=lambda b: b.data["started"]) if b.data.get("from_run")}
    # Last: the index lists the pages refused above with the records that could not be read.
    return pages + site.write(site.path("index"), env.get_template("index.html").render(
        root="", title="xenlab: nightly board results", m=m, s=summary(db, m), months=months,
        boards=boards, generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        bisected=bisected, unreadable=unreadable_reasons(db) + [why for _, why in unreadable]
        + site.refused))


def build_page(label: str) -> str:
    """A build's page name: derived from its label by hash, never the label itself."""
    return hashlib.sha256(str(label).encode()).hexdigest()[:16] + ".html"


def _builds_pages(env, db, site: Site) -> int:
    """boards × Xen builds (each cell the board's newest run of that build), and per build
    the boards × nights matrix of its runs only: the filter by build."""
    builds = [r[0] for r in db.execute("SELECT build FROM runs GROUP BY build "
                                       "ORDER BY max(start) DESC")]
    cells = {}
    # The newest run of each board and build (SQLite takes the bare columns from the max row).
    for row in db.execute("SELECT *, max(start) FROM runs GROUP BY lane, build"):
        cells[(row["lane"], row["build"])] = _cell(row)
    boards = sorted({b for b, _ in cells})
    pages = site.write(site.path("builds"), env.get_template("builds.html").render(
        root="", title="xenlab: boards × Xen builds", builds=builds, boards=boards, cells=cells,
        targets=_lane_targets(cells), page=build_page))
    for label in builds:
        nights = [r[0] for r in db.execute("SELECT DISTINCT night FROM runs WHERE build = ? "
                                           "ORDER BY night DESC LIMIT ?", (label, INDEX_NIGHTS))]
        rows = db.execute("SELECT * FROM runs WHERE build = ? AND night >= ? ORDER BY start, "
                          "run_id", (label, min(nights))).fetchall()
        m_cells = {k: v for k, v in _newest_per_night(rows).items() if k[1] in set(nights)}
        m = {"boards": sorted({b for b, _ in m_cells}), "nights": nights[::-1], "cells": m_cells,
             "targets": _lane_targets(m_cells)}
        pages += site.write(site.path("builds", build_page(label), suffix=""),
                            env.get_template("build.html").render(
                                root="../", title=f"Xen {label}", label=label, m=m))
    return pages


def _run_pages(env, run_dir: Path, site: Site, board: str, run_id: str) -> int:
    page = site.path("runs", board, run_id)
    if page is None:
        return 0
    try:
        record = RunRecord.load(run_dir)
        d = {**record.to_dict(), "label": record.verdict_label}
    except XenlabError:
        d = {"target": board, "run_id": run_id, "verdict": "ERROR", "steps": [], "info": {},
             "label": "ERROR",
             "verdict_reason": "run.json unreadable"}
    has_console = (run_dir / "console.log").is_file()
    pages = site.write(page, env.get_template("run.html").render(
        root="../../", title=f"{board} {run_id}", r=d, info=d.get("info") or {},
        has_console=has_console))
    if has_console:
        pages += site.write(site.path("runs", board, run_id, suffix=".console.html"),
                            env.get_template("console.html").render(
                                root="../../", title=f"console.log of {board} {run_id}",
                                board=board, run_id=run_id,
                                text=console_text(run_dir / "console.log")))
    return pages


def _board_page(env, db, site: Site, board: str, board_nights: int) -> int:
    rows = db.execute("SELECT * FROM runs WHERE target = ? AND night >= coalesce((SELECT night "
                      "FROM (SELECT DISTINCT night FROM runs WHERE target = ? ORDER BY night DESC "
                      "LIMIT ?) ORDER BY night LIMIT 1), '') ORDER BY start, run_id",
                      (board, board, board_nights)).fetchall()
    target = site.path("boards", board)
    if not rows:
        site.unlink(target)
        return 0
    cells_by_night = _newest_per_night(rows)  # every lane of the board: its variants too
    nights = sorted({n for _, n in cells_by_night})
    lanes = sorted({lane for lane, _ in cells_by_night})
    _mark_changes(db, lanes, nights, cells_by_night)
    cells = [cells_by_night[k] for k in sorted(cells_by_night, key=lambda k: (k[1], k[0]))]
    months = [r[0] for r in db.execute("SELECT DISTINCT substr(night, 1, 7) FROM runs "
                                       "WHERE target = ? ORDER BY 1", (board,))]
    return site.write(target, env.get_template("board.html").render(
        root="../", title=f"Board {board}", board=board, history=cells[::-1],
        plot=plot([c for c in cells if c["lane"] == board] or cells), months=months,
        latest=cells[-1], lanes=lanes))
