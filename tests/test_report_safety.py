"""Reports never trust a record: hardening issue 16, the parts about reports.

Each test starts from records written by the fabricator (tests/support/fabricate.py)
and then breaks them as a hand edit, a failing disk or an older, more lenient
xenlab would: the Test Day tables are rendered by a real CommonMark + GFM-table
renderer (markdown-it-py, which rich brings) and read back cell by cell; the
dashboard is built and its files are looked for everywhere under the test's
directory; `--serve` is asked over real HTTP.
"""

from __future__ import annotations

import html
import html.parser
import http.client
import json
import math
import os
import random
import re
import socket
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

import support.fabricate as fab
import xenlab.run.record as record_module
from xenlab.errors import Status
from xenlab.reports import dashboard, nightly, testday
from xenlab.reports.site import Site
from xenlab.run import compare
from xenlab.run.record import Unreadable, list_runs

KNOWN_BOARD = 3  # the fabricator's board with KNOWN nights


def records(root: Path, boards: int = 2, known: bool = True) -> list:
    """Fabricated runs of one night, board-03 (if `known`) with a known issue."""
    override = {(b, 0): Status.PASS for b in range(boards)}
    if known:
        boards = max(boards, KNOWN_BOARD + 1)
        override[(KNOWN_BOARD, 0)] = Status.KNOWN
    fab.fabricate(root, boards=boards, nights=1, retries=False, override=override)
    return sorted(list_runs(root), key=lambda r: r.target)


def with_known(run, label: str, link):
    """The run with its known issue relabelled (as a hand-edited known-issues file would)."""
    for step in run.steps:
        if step.status is Status.KNOWN:
            step.known = dict(step.known, label=label, link=link)
    return run


# --------------------------------------------------------------------------- Markdown, rendered

RENDER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


class Rendered(html.parser.HTMLParser):
    """A rendered Markdown table: each row's cells as text, and the elements inside cells."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.elements: list[tuple[str, dict, str]] = []  # (tag, attrs, text) inside cells
        self.items: list[str] = []  # list items (the "could not read" section)
        self._cell: list[str] | None = None
        self._item: list[str] | None = None
        self._open: list[tuple[str, dict, list]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "li":
            self._item = []
        elif self._cell is not None:
            self._open.append((tag, dict(attrs), []))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "li" and self._item is not None:
            self.items.append("".join(self._item))
            self._item = None
        elif self._open and self._open[-1][0] == tag:
            name, attrs, text = self._open.pop()
            self.elements.append((name, attrs, "".join(text)))

    def handle_data(self, data):
        for sink in [self._cell, self._item, *(t for _, _, t in self._open)]:
            if sink is not None:
                sink.append(data)


def markdown(runs, tmp_path, unreadable=()) -> tuple[dict, list[dict], Rendered]:
    steps, rows = testday.table_rows(runs, tmp_path)
    table = testday.markdown_table(steps, rows, unreadable) if unreadable else \
        testday.markdown_table(steps, rows)
    page = Rendered(RENDER.render(table))
    head, *body = page.rows
    assert all(len(r) == len(head) for r in body)
    return head, [dict(zip(head, r, strict=True)) for r in body], page


def shown(value: str) -> str:
    return " ".join(value.split())  # a cell is one line: whitespace runs become one space


def test_markdown_date_column_shows_exactly_its_text(tmp_path):
    # Issue 16: "The Markdown Date column is not escaped."  Dates come from `start`,
    # which validation makes a timestamp on read, but the table takes any RunRecord.
    run = records(tmp_path, known=False)[0]
    run.start_time = "_&amp;~~x~~_T00:00:00Z"
    _, rows, page = markdown([run], tmp_path)
    assert rows[0]["Date"] == "_&amp;~~x~"
    assert [e for e in page.elements if e[0] != "a"] == []  # no <em>, <s> from the date


NASTY = ["&lt;a href=x&gt;", "<a href='javascript:alert(1)'>y</a>", "{{Delete}}", "a|b",
         "two\nlines", "_e_", "~~s~~", "**b**", "\\|", "&amp;", "`c`", "[x](y)", "![i](y)",
         "a\\", "&#124;", "#1", "<!-- c -->", "*", "_", "x_y_z", "\\*"]


@pytest.mark.parametrize("value", NASTY)
def test_every_markdown_cell_shows_exactly_its_text(tmp_path, value):
    run = records(tmp_path, known=False)[0]
    run.target, run.arch, run.tester = value, value, value
    run.info = dict(run.info, xen_version=value, xen_build={"config": value})
    run.steps[0].name = value
    head, rows, page = markdown([run], tmp_path)
    assert shown(value) in head
    row = rows[0]
    for column in ("Board", "Arch", "Tester", "Xen", "Xen build"):
        assert row[column] == shown(value), column
    assert row[shown(value)] == "PASS"
    assert [e[0] for e in page.elements] == ["a"]  # only the log's link


def test_random_cells_show_exactly_their_text(tmp_path):
    rng = random.Random(16)
    alphabet = "ab _*~`|\\[](){}<>&#;!:/.-\n'\""
    run = records(tmp_path, known=False)[0]
    for _ in range(200):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        run.tester = value
        _, rows, page = markdown([run], tmp_path)
        assert rows[0]["Tester"] == shown(value), repr(value)
        assert [e[0] for e in page.elements] == ["a"], repr(value)


def test_an_a_href_from_a_record_stays_text(tmp_path):
    # Issue 16: "... and neither is <a href=...> from a record."  Raw HTML, entity-
    # encoded HTML and a Markdown link in a record are all text; the only links are
    # the known issue's (a plain https URL) and the log's.
    raw = '<a href="javascript:alert(1)">click</a>'
    encoded = '&lt;a href="https://evil.example/"&gt;click&lt;/a&gt;'
    runs = records(tmp_path)
    runs[0].tester = raw
    runs[1].tester = encoded
    known = with_known(runs[KNOWN_BOARD], "[x](javascript:alert(1)) " + encoded,
                       "https://gitlab.com/xen-project/xen/-/issues/123")
    _, rows, page = markdown(runs, tmp_path)
    assert rows[0]["Tester"] == raw and rows[1]["Tester"] == encoded
    assert rows[KNOWN_BOARD]["Known issues"] == "[x](javascript:alert(1)) " + encoded
    links = sorted(e[1]["href"] for e in page.elements if e[0] == "a")
    assert links == sorted(["https://gitlab.com/xen-project/xen/-/issues/123"]
                           + [f"{r.target}/{r.run_id}/console.log" for r in runs])
    assert {e[0] for e in page.elements} == {"a"}
    assert known.verdict is Status.KNOWN


@pytest.mark.parametrize("link", ["javascript:alert(1)", "data:text/html,<b>x</b>",
                                  "//evil.example/", "HTTPS://", "https://", "http://[::1"])
def test_only_http_links_become_links(tmp_path, link):
    runs = records(tmp_path)
    with_known(runs[KNOWN_BOARD], "the issue", link)
    _, rows, page = markdown(runs, tmp_path)
    assert rows[KNOWN_BOARD]["Known issues"] == "the issue"
    assert all(e[1]["href"].endswith("console.log") for e in page.elements if e[0] == "a")


def test_a_parenthesis_does_not_end_a_markdown_link(tmp_path):
    # Issue 16: "a ) breaks a Markdown link."
    link = "https://en.wikipedia.org/wiki/Xen_(hypervisor) page|2"
    runs = records(tmp_path)
    with_known(runs[KNOWN_BOARD], "Xen (hypervisor)", link)
    _, rows, page = markdown(runs, tmp_path)
    assert rows[KNOWN_BOARD]["Known issues"] == "Xen (hypervisor)"  # nothing of the URL leaks
    (a,) = [e for e in page.elements if e[0] == "a" and "wikipedia" in e[1]["href"]]
    assert a[1]["href"] == "https://en.wikipedia.org/wiki/Xen_%28hypervisor%29%20page%7C2"
    assert urllib.parse.unquote(a[1]["href"]) == link and a[2] == "Xen (hypervisor)"


# --------------------------------------------------------------------------- wiki

WIKI_SYNTAX = ("{{", "}}", "[[", "''", "~~~", "__", "|", "!!", "://", "<b", "<a", "<!--")


def wiki_row(runs, tmp_path, target: str) -> list[str]:
    steps, rows = testday.table_rows(runs, tmp_path)
    text = testday.wiki_table(steps, rows)
    lines = [l for l in text.splitlines() if l.startswith("| ")]
    cells = lines[[r.target for r in runs].index(target)][2:].split(" || ")
    assert len(cells) == 8 + len(steps) + 1 + 2
    return cells


def test_wiki_cells_keep_no_template(tmp_path):
    # Issue 16: "Wiki cells keep {{...}} templates": the known issue's URL went in as it was.
    link = "https://x.example/{{Delete}}/''b''/~~~~/__NOTOC__/a|b/[[c]]/!!"
    tester = "{{Delete}} ''i'' ~~~~ __NOTOC__ [[Main]] ftp://evil.example/ a|b !! <b>x</b>"
    runs = records(tmp_path)
    runs[KNOWN_BOARD].tester = tester
    # The firmware and boot columns come from the record too: a lab's own words.
    runs[KNOWN_BOARD].info.update(firmware=tester, boot_medium="[[SD]] |card",
                                  emulation="{{QEMU}} ''x''")
    with_known(runs[KNOWN_BOARD], "{{tpl}} label", link)
    cells = wiki_row(runs, tmp_path, runs[KNOWN_BOARD].target)
    text_cells = cells[:8] + [cells[-1][len("<code>"):-len("</code>")]]
    for cell in text_cells:
        for syntax in WIKI_SYNTAX:
            assert syntax not in cell, (syntax, cell)
    assert html.unescape(cells[2]) == tester.replace("\n", " ")
    assert html.unescape(cells[6]) == f"{tester} on {{{{QEMU}}}} ''x''"
    assert html.unescape(cells[7]) == "[[SD]] |card"
    url, label = re.fullmatch(r"\[(\S+) (.*)\]", cells[-2]).groups()
    assert urllib.parse.unquote(url) == link and url.startswith("https://x.example/")
    assert not set(url) & set("{}'~_|[]! ")
    assert html.unescape(label) == "{{tpl}} label" and "{{" not in label


# --------------------------------------------------------------------------- could not read

def clean(reason: str) -> str:
    """The reason as a report shows it: one line, the terminal escape gone."""
    return shown(reason.replace("\x1b[31m", ""))


def bad_reason(tmp_path) -> Unreadable:
    path = tmp_path / "board-09" / "r"
    return Unreadable(path, f"{path}/run.json: key 'steps[0].status': '<b>|{{{{x}}}}\\n' "
                            "is not one of PASS, FAIL\n# and \x1b[31ma second line")


def test_testday_tables_list_the_records_that_could_not_be_read(tmp_path):
    runs = records(tmp_path, known=False)
    bad = bad_reason(tmp_path)
    wiki, md_path, md = testday.write_tables(runs, tmp_path, date="2025-01-01", unreadable=[bad])
    page = Rendered(RENDER.render(md))
    assert len(page.rows) == 1 + len(runs)  # every readable run is in the table
    assert "<strong>Could not read</strong> (1 run record(s), not in the table):" \
        in RENDER.render(md)
    assert page.items == [clean(bad.reason)]
    text = wiki.read_text()
    tail = text[text.index("|}") + 2:]
    assert "Could not read" in tail
    (item,) = [l for l in tail.splitlines() if l.startswith("* ")]
    assert not any(s in item for s in ("{{", "|", "<b>"))
    assert html.unescape(item[len("* <code>"):-len("</code>")]) == clean(bad.reason)


def test_testday_tables_hold_odd_but_valid_records(tmp_path):
    """Values the schema allows: a known issue without link, no tester, no Xen version."""
    runs = records(tmp_path)
    with_known(runs[KNOWN_BOARD], "no link", None)
    runs[0].tester, runs[0].info = None, {}
    _, md_path, md = testday.write_tables(runs, tmp_path, date="2025-01-01")
    _, rows, _ = markdown(runs, tmp_path)
    assert rows[KNOWN_BOARD]["Known issues"] == "no link"
    assert rows[0]["Tester"] == "-" and rows[0]["Xen"] == "-"


def test_nightly_summary_lists_the_records_that_could_not_be_read(tmp_path):
    fab.fabricate(tmp_path, boards=2, nights=2, retries=False)
    history = list_runs(tmp_path)
    current = compare.newest_night(history)
    bad = bad_reason(tmp_path)
    text = nightly.format_summary(compare.compare(compare.previous_runs(history, current),
                                                  current), tmp_path, unreadable=[bad])
    lines = text.splitlines()
    assert lines[0].endswith("2 pass, 1 could not be read")
    at = lines.index("COULD NOT READ")
    assert lines[at + 1:] == [f"  {bad.path}/run.json: key 'steps[0].status': '<b>|{{{{x}}}}\\n' "
                              "is not one of PASS, FAIL # and a second line"]
    assert not any(c in text for c in "\x1b\x00")


# --------------------------------------------------------------------------- dashboard

def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def outside(tmp_path: Path, *inside: Path) -> set[Path]:
    """Files under tmp_path but not under any of `inside`."""
    return {p for p in files_under(tmp_path)
            if not any(d == p or d in p.parents for d in inside)}


def edit(run_dir: Path, **fields) -> None:
    data = json.loads((run_dir / "run.json").read_text())
    data.update(fields)
    (run_dir / "run.json").write_text(json.dumps(data))


def section(index: str) -> str:
    """The index page's "could not read" section ('' when there is none)."""
    m = re.search(r'<section class="unreadable">.*?</section>', index, re.S)
    return m.group(0) if m else ""


def test_unreadable_records_are_listed_on_the_dashboard_until_fixed(tmp_path):
    # Issue 16: "Unreadable records are skipped silently ... the dashboard gives no warning."
    results, out = tmp_path / "results", tmp_path / "site"
    dirs = fab.fabricate(results, boards=3, nights=2, retries=False)
    bogus, cut = dirs[1], dirs[4]
    good = (bogus / "run.json").read_text()
    data = json.loads(good)
    data["steps"][0]["status"] = "<b>BOGUS</b>"
    (bogus / "run.json").write_text(json.dumps(data))
    (cut / "run.json").write_text(good[:100])  # a full disk
    stats = dashboard.build(results, out)
    listed = section((out / "index.html").read_text())
    assert "Could not read (2)" in listed
    assert f"{bogus}/run.json: key &#39;steps[0].status&#39;: &#39;&lt;b&gt;BOGUS&lt;/b&gt;&#39;" \
        in listed and "<b>BOGUS" not in listed
    assert f"{cut}/run.json: not a valid run record" in listed
    assert (stats.runs, stats.read, stats.unreadable) == (6, 4, 2)
    # Everything else is built.
    for run_dir in set(dirs) - {bogus, cut}:
        assert (out / "runs" / run_dir.parent.name / f"{run_dir.name}.html").is_file()
    assert not (out / "runs" / bogus.parent.name / f"{bogus.name}.html").exists()
    # Nothing changed: still listed, nothing read again.
    again = dashboard.build(results, out)
    assert (again.read, again.unreadable) == (0, 2)
    assert "Could not read (2)" in (out / "index.html").read_text()
    # Fixed: it leaves the list and gets its page; removed: the list goes.
    (bogus / "run.json").write_text(good)
    assert dashboard.build(results, out).unreadable == 1
    index = (out / "index.html").read_text()
    assert "Could not read (1)" in index and str(bogus) not in index
    assert (out / "runs" / bogus.parent.name / f"{bogus.name}.html").is_file()
    (cut / "run.json").unlink()
    dashboard.build(results, out)
    assert section((out / "index.html").read_text()) == ""


def test_a_record_that_becomes_unreadable_leaves_the_pages(tmp_path):
    results, out = tmp_path / "results", tmp_path / "site"
    dirs = fab.fabricate(results, boards=2, nights=1, retries=False)
    dashboard.build(results, out)
    page = out / "runs" / dirs[1].parent.name / f"{dirs[1].name}.html"
    assert page.is_file()
    (dirs[1] / "run.json").write_text("{}")
    stats = dashboard.build(results, out)
    assert f"{dirs[1]}/run.json: key &#39;schema&#39;" in section((out / "index.html").read_text())
    assert not page.exists() and (stats.removed, stats.unreadable) == (1, 1)


def test_odd_records_are_listed_and_the_rest_builds(tmp_path):
    # Issue 16: "xenlab dashboard crashes for the whole farm on one such record."  Python's
    # json reads Infinity and NaN, and a pid of 2**63 is an integer: the reader refuses
    # all three with one line each, and every other record still gets its pages.
    results, out = tmp_path / "results", tmp_path / "site"
    dirs = fab.fabricate(results, boards=5, nights=1, retries=False)
    edit(dirs[0], info={"stage_marks": {"uboot": math.inf, "xen-banner": 1.5}})
    edit(dirs[1], info={}, steps=[{"name": "uboot", "status": "PASS", "duration_s": math.nan}])
    edit(dirs[2], harness_pid=2 ** 63, host=socket.gethostname(), verdict="RUNNING", end=None)
    edit(dirs[3], steps=[{"name": "uboot", "status": "KNOWN", "original_status": "FAIL",
                          "known": {"id": "i", "label": "no link", "link": None}}],
         verdict="KNOWN")
    stats = dashboard.build(results, out)
    assert (stats.read, stats.unreadable) == (2, 3)
    listed = section((out / "index.html").read_text())
    assert f"{dirs[0]}/run.json: not a valid run record (Infinity is not a JSON number)" in listed
    assert f"{dirs[1]}/run.json: not a valid run record (NaN is not a JSON number)" in listed
    assert f"{dirs[2]}/run.json: key &#39;harness_pid&#39;: {2 ** 63}" in listed
    for d in (dirs[3], dirs[4]):
        assert (out / "boards" / f"{d.parent.name}.html").is_file()
    assert "known: no link" in (out / "runs" / dirs[3].parent.name / f"{dirs[3].name}.html"
                                ).read_text()


BAD_FIELDS = {
    "start-absolute": lambda tmp: {"start": "/tmp/xl-01T00:00:00.000Z"},  # month "/tmp/xl"
    "start-dotdot": lambda tmp: {"start": "../../x-01T00:00:00.000Z"},
    "target-absolute": lambda tmp: {"target": str(tmp / "abs" / "evil")},
    "target-dotdot": lambda tmp: {"target": "../../evil"},
    "run-id-dotdot": lambda tmp: {"run_id": "../../../evil"},
    "build-dotdot": lambda tmp: {"info": {"xen_version": "../../../evil",
                                          "xen_build": {"config": "/tmp/xl"}}},
}


@pytest.mark.parametrize("name", list(BAD_FIELDS))
def test_the_dashboard_writes_nothing_outside_out(tmp_path, monkeypatch, name):
    # Issue 16: "The dashboard writes and unlinks files outside --out, driven by a
    # record's start field."  The schema refuses these values now; the dashboard must
    # hold on its own, so validation is switched off here (an older, lenient reader).
    monkeypatch.setattr(record_module, "check_record", lambda data, where: data)
    victim = Path("/tmp/xl.html")  # where the absolute start once wrote its month page
    before = victim.read_bytes() if victim.exists() else None
    results, out = tmp_path / "results", tmp_path / "site"
    dirs = fab.fabricate(results, boards=2, nights=1, retries=False)
    edit(dirs[1], **BAD_FIELDS[name](tmp_path))
    try:
        dashboard.build(results, out)
        assert outside(tmp_path, results, out) == set()
        assert (victim.read_bytes() if victim.exists() else None) == before
    finally:
        if before is None:
            victim.unlink(missing_ok=True)
    index = (out / "index.html").read_text()
    assert (out / "runs" / dirs[0].parent.name / f"{dirs[0].name}.html").is_file()
    if not name.startswith("build"):  # a build label only names a page through its hash
        assert f"{dirs[1]}/run.json: key" in section(index)
        assert "would name a page outside the site" in section(index)


def test_index_rows_cannot_write_or_unlink_outside_out(tmp_path):
    """Rows of an older index (or written by anything else) are checked too."""
    results, out = tmp_path / "results", tmp_path / "site"
    dirs = fab.fabricate(results, boards=2, nights=1, retries=False)
    dashboard.build(results, out)
    victims = [tmp_path / "victim.html", tmp_path / "v.html", tmp_path / "w.html",
               tmp_path / "abs" / "victim.html"]
    for v in victims:
        v.parent.mkdir(exist_ok=True)
        v.write_text("keep me")
    db = sqlite3.connect(out / "index.sqlite")
    columns = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    row = dict(zip(columns, db.execute("SELECT * FROM runs LIMIT 1").fetchone()))
    # A run that is gone from disk, whose board and night were never names of the site.
    db.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(columns))})",
               [{**row, "path": "gone/r1", "target": "../../victim",
                 "night": "../../v-01"}[c] for c in columns])
    # A run read again (its mtime changed) whose old night pointed above the site.
    db.execute("UPDATE runs SET mtime_ns = 0, night = '../../w-01' WHERE path = ?",
               (f"{dirs[0].parent.name}/{dirs[0].name}",))
    # An unchanged run whose row says an absolute target.
    db.execute("UPDATE runs SET target = ? WHERE path = ?",
               (str(tmp_path / "abs" / "victim"), f"{dirs[1].parent.name}/{dirs[1].name}"))
    db.commit()
    db.close()
    dashboard.build(results, out)
    assert all(v.read_text() == "keep me" for v in victims)
    assert outside(tmp_path, results, out) == set(victims)
    listed = section((out / "index.html").read_text())
    assert f"{dirs[1]}/run.json: key &#39;target&#39;" in listed


def test_site_paths_refuse_every_escape(tmp_path):
    out = tmp_path / "site"
    (out / "runs").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "runs" / "linked")
    site = Site(out)
    assert site.path("nights", "2025-01") == out.resolve() / "nights" / "2025-01.html"
    assert site.path("runs", "b", "r1", suffix=".console.html") == \
        out.resolve() / "runs" / "b" / "r1.console.html"
    refused = [("nights", "/tmp/PW"), ("nights", "../../x"), ("boards", "../x"),
               ("boards", str(tmp_path / "abs")), ("runs", "b", "../../../x"),
               ("runs", "..", "x"), ("runs", ".", "x"), ("builds", "a/b"), ("boards", ".x"),
               ("boards", ""), ("boards", None), ("runs", "linked", "r1"), ("index\n",)]
    for parts in refused:
        assert site.path(*parts) is None, parts
    assert len(site.refused) == len(refused)
    assert all("not written" in r and "\n" not in r for r in site.refused)
    assert site.write(None, "x") == 0


# --------------------------------------------------------------------------- --serve

@pytest.fixture
def served(tmp_path):
    results, out = tmp_path / "results", tmp_path / "site"
    dirs = fab.fabricate(results, boards=2, nights=1, retries=False)
    dashboard.build(results, out)
    for name in ("index.sqlite-journal", "index.sqlite-wal", ".hidden.html", "notes.txt"):
        (out / name).write_text("secret")
    (out / "runs" / dirs[0].parent.name / ".page.html.tmp").write_text("secret")
    (tmp_path / "outside.html").write_text("secret")
    os.symlink(tmp_path / "outside.html", out / "boards" / "linked.html")
    httpd = dashboard.make_server(out, 0)  # what `xenlab dashboard --serve` runs
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, dirs
    httpd.shutdown()
    httpd.server_close()


def get(httpd, path: str) -> tuple[int, bytes]:
    """GET the path as it is sent (no client-side normalisation of ".." or "%2e")."""
    conn = http.client.HTTPConnection(*httpd.server_address, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_serve_hands_out_pages_and_nothing_else(served):
    # Issue 16: "dashboard --serve gives directory listings and serves index.sqlite."
    httpd, dirs = served
    assert httpd.server_address[0] == "127.0.0.1"
    run = f"runs/{dirs[0].parent.name}/{dirs[0].name}"
    for page in ("/", "/index.html", f"/{run}.html", f"/{run}.console.html", "/builds.html",
                 f"/boards/{dirs[0].parent.name}.html?x=1"):
        status, body = get(httpd, page)
        assert status == 200 and b"<!DOCTYPE html>" in body, page
    url = f"http://127.0.0.1:{httpd.server_address[1]}/runs"
    with pytest.raises(urllib.error.HTTPError) as exc:  # a real client, redirects followed
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 404
    for path in ("/runs/", f"/runs/{dirs[0].parent.name}/", "/boards/", "/nights/",
                 "/index.sqlite", "/index.sqlite-journal", "/index.sqlite-wal", "/notes.txt",
                 "/.hidden.html", f"/runs/{dirs[0].parent.name}/.page.html.tmp",
                 "/boards/linked.html", "/../outside.html", "/%2e%2e/outside.html",
                 "/runs/%2E%2E/index.sqlite", "/%2e/index.sqlite", "/index.sqlite%00.html",
                 "/missing.html"):
        status, body = get(httpd, path)
        assert status == 404, path
        assert b"secret" not in body and b"SQLite" not in body and b"Directory listing" not in body
