"""The results dashboard (xenlab.dashboard), built from fabricated results.

The site is checked in a real headless Chromium (Debian's `chromium`,
installed by scripts/install-chromium when missing) over a local HTTP
server: the matrix is in the DOM after the script ran, a regression is
highlighted, the infrastructure filter works, and a console log holding
`<script>` stays text.
"""

from __future__ import annotations

import datetime as dt
import html.parser
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

import support.fabricate as bench
from xenlab.cli import build_parser, main
from xenlab.errors import Status
from xenlab.reports import dashboard
from xenlab.reports.dashindex import open_index
from xenlab.run.record import RunRecord, list_runs

REPO = Path(__file__).resolve().parent.parent

BOARDS, NIGHTS = 6, 40
LAST, BEFORE = 39, 38
EVIL = ("<script>document.title='pwned'</script>"
        "<img src=x onerror=\"document.title='pwned-img'\">\n")
# The newest night against the one before, board by board.
STORY = {0: (Status.PASS, Status.PASS), 1: (Status.PASS, Status.FAIL),  # a regression
         2: (Status.FAIL, Status.FAIL), 3: (Status.PASS, Status.KNOWN),  # still failing, and a
         # regression that matches a known issue: explained, never excused
         4: (Status.PASS, Status.ERROR), 5: (Status.FAIL, Status.PASS)}  # lab error, fixed


def night(n: int) -> str:
    return (bench.FIRST_NIGHT + dt.timedelta(days=n)).isoformat()


def fabricate(root: Path, nights: int = NIGHTS, first: int = 0, boards: int = BOARDS) -> None:
    override = {}
    for b, (before, last) in STORY.items():
        override[(b, BEFORE)], override[(b, LAST)] = before, last
    bench.fabricate(root, boards, nights, first=first, override=override,
                    console_extra={(0, LAST): EVIL})


def run_of(results: Path, board: int, n: int) -> RunRecord:
    """The night's newest run of the board."""
    runs = [r for r in list_runs(results, bench.board_name(board)) if r.start_time[:10] == night(n)]
    return runs[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    results, out = root / "results", root / "site"
    fabricate(results)
    stats = dashboard.build(results, out)
    assert stats.read == stats.runs == BOARDS * NIGHTS + NIGHTS // 10  # board 0's retries
    return results, out


# --------------------------------------------------------------------------- a real browser

@pytest.fixture(scope="session")
def chromium():
    if shutil.which("chromium") is None:
        subprocess.run([str(REPO / "scripts" / "install-chromium")], check=True)
    path = shutil.which("chromium")
    assert path, "scripts/install-chromium did not put chromium on PATH"
    return path


@pytest.fixture(scope="module")
def server(site):
    httpd = dashboard.make_server(site[1], 0)  # the same server as `xenlab dashboard --serve`
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def browse(chromium, server, tmp_path):
    def run(path: str, *extra: str) -> str:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", *extra,
               f"{server}/{path}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout
    return run


class Dom(html.parser.HTMLParser):
    """Elements of a dumped DOM: (tag, attrs) in order, and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_title:
            self.title += data

    def cells(self) -> dict[tuple[str, str], dict]:
        """Matrix cells by (board, night), read from their titles."""
        out = {}
        for tag, attrs in self.elements:
            if tag == "td" and "cell" in attrs.get("class", "").split() and attrs.get("title"):
                board, rest = attrs["title"].split(" ", 1)
                out[(board, rest[:10])] = attrs
        return out


def test_matrix_renders_with_the_regression_highlighted(browse, site):
    dom = Dom(browse("index.html", "--dump-dom"))
    cells = dom.cells()
    window = [night(n) for n in range(NIGHTS - dashboard.INDEX_NIGHTS, NIGHTS)]
    assert set(cells) == {(bench.board_name(b), n) for b in range(BOARDS) for n in window}
    classes = {b: cells[(bench.board_name(b), night(LAST))]["class"].split() for b in STORY}
    assert "regression" in classes[1] and "v-FAIL" in classes[1]
    assert "still-failing" in classes[2] and "regression" not in classes[2]
    assert "fixed" in classes[5] and "v-PASS" in classes[5]
    assert "known" in classes[3] and "v-KNOWN" in classes[3] and "regression" in classes[3]
    assert "infra" in classes[4] and "regression" not in classes[4]
    assert not {"regression", "fixed", "still-failing"} & set(classes[0])
    # The list on top names the regressions and the runs they are measured against.
    regressions = [a for t, a in dom.elements if t == "li" and a.get("class") == "regression"]
    assert len(regressions) == 2
    text = "".join(dom.text)
    prev = run_of(site[0], 1, BEFORE).run_id
    assert f"REGR. vs. {prev}" in text
    # Each cell links to its run page.
    links = [a["href"] for t, a in dom.elements if t == "a" and a.get("href", "").startswith("runs/")]
    assert f"runs/board-01/{run_of(site[0], 1, LAST).run_id}.html" in links


def test_infrastructure_filter_hides_error_cells(browse):
    dom = Dom(browse("index.html#hide-infra", "--dump-dom"))
    body = next(a for t, a in dom.elements if t == "body")
    assert "hide-infra" in body.get("class", "")  # the script ran and applied the filter
    box = next(a for t, a in dom.elements if t == "p" and a.get("class") == "filter")
    assert "hidden" not in box  # shown once the script can drive it
    plain = Dom(browse("index.html", "--dump-dom"))
    assert "hide-infra" not in next(a for t, a in plain.elements if t == "body").get("class", "")


def test_console_log_with_script_stays_text(browse, site):
    run = run_of(site[0], 0, LAST)
    page = f"runs/board-00/{run.run_id}.console.html"
    raw = browse(page, "--dump-dom")
    dom = Dom(raw)
    assert dom.title == f"console.log of board-00 {run.run_id}"  # the script never ran
    assert "pwned" not in dom.title
    assert not [t for t, _ in dom.elements if t in ("script", "img")]
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in raw
    assert "<script>document.title='pwned'</script>" in "".join(dom.text)


def test_board_page_plots_each_stage(browse, site):
    dom = Dom(browse("boards/board-01.html", "--dump-dom"))
    series = [a for t, a in dom.elements if t == "path" and a.get("class") == "series"]
    assert len(series) == len(bench.MARKS)
    assert all(a["d"].startswith("M") for a in series)
    rows = [a for t, a in dom.elements if t == "tr" and "class" in a]
    assert len(rows) == NIGHTS


def test_screenshot(browse, tmp_path):
    shot = tmp_path / "index.png"
    browse("index.html", f"--screenshot={shot}", "--window-size=1300,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


# --------------------------------------------------------------------------- pages and content

def test_newest_run_of_the_night_wins(site):
    results, out = site
    runs = [r for r in list_runs(results, "board-00") if r.start_time[:10] == night(30)]
    assert len(runs) == 2 and runs[1].verdict is Status.ERROR  # the 01:00 retry
    index = (out / "index.html").read_text()
    assert f"runs/board-00/{runs[0].run_id}.html" in index
    assert f"runs/board-00/{runs[1].run_id}.html" not in index


def test_known_issue_label_and_link_on_the_run_page(site):
    results, out = site
    run = run_of(results, 3, LAST)
    page = (out / "runs" / "board-03" / f"{run.run_id}.html").read_text()
    assert (f'<a class="known" href="{bench.KNOWN["link"]}">known: {bench.KNOWN["label"]}</a>'
            in page)
    assert "(was FAIL)" in page
    board = (out / "boards" / "board-03.html").read_text()
    assert f"known: {bench.KNOWN['label']}" in board


def test_run_page_escapes_and_refuses_script_links(tmp_path):
    results = tmp_path / "results"
    r = RunRecord.start(results, "b", arch="arm64", tester="<i>t</i>")

    class Issue:
        culprit = "harness"

        def to_dict(self):
            return {"id": "x", "label": "<b>label</b>", "link": "javascript:alert(1)",
                    "culprit": "harness"}
    r.step_finished("uboot", "FAIL", 1, message="<script>alert(1)</script>",
                    evidence=["<img src=x onerror=alert(1)>"], known=Issue())
    r.finish()
    dashboard.build(results, tmp_path / "out")
    page = (tmp_path / "out" / "runs" / "b" / f"{r.run_id}.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "<i>t</i>" not in page and "<b>label</b>" not in page
    assert "javascript:" not in page
    assert '<span class="known">known: &lt;b&gt;label&lt;/b&gt;</span>' in page
    assert "script-src 'none'" in page


# --------------------------------------------------------------------------- incremental

def _mtimes(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.html")}


def test_nothing_new_reads_and_writes_nothing(tmp_path):
    fabricate(tmp_path / "r", nights=5)
    dashboard.build(tmp_path / "r", tmp_path / "o")
    before = (tmp_path / "o" / "index.html").stat().st_mtime_ns
    stats = dashboard.build(tmp_path / "r", tmp_path / "o")
    assert (stats.read, stats.removed, stats.pages) == (0, 0, 0)
    assert (tmp_path / "o" / "index.html").stat().st_mtime_ns == before


def test_a_new_night_writes_only_its_pages(tmp_path):
    results, out = tmp_path / "r", tmp_path / "o"
    fabricate(results, nights=12)
    dashboard.build(results, out)
    old = _mtimes(out)
    fabricate(results, nights=1, first=12)
    stats = dashboard.build(results, out)
    assert stats.read == BOARDS
    # two pages per new run, a page per board, one month page, the index, and the
    # boards × builds page with its one build's page (the fabricated runs share one Xen)
    assert stats.pages == 2 * BOARDS + BOARDS + 1 + 1 + 2
    runs_before = {k: v for k, v in old.items() if "builds" not in str(k)}
    assert _mtimes(out).items() >= runs_before.items()  # no older run page was rewritten
    assert len(_mtimes(out)) == len(old) + 2 * BOARDS


def test_pages_per_night_do_not_grow_with_history(tmp_path):
    counts = []
    for nights in (3, 45):
        results, out = tmp_path / f"r{nights}", tmp_path / f"o{nights}"
        bench.fabricate(results, BOARDS, nights, first=100 - nights, retries=False)
        dashboard.build(results, out)
        bench.fabricate(results, BOARDS, 1, first=100, retries=False)
        counts.append(dashboard.build(results, out).pages)
        index = (out / "index.html").read_text()
        assert index.count('<td class="cell') <= BOARDS * dashboard.INDEX_NIGHTS
    assert counts[0] == counts[1]


def test_a_changed_record_is_read_again(tmp_path):
    results, out = tmp_path / "r", tmp_path / "o"
    fabricate(results, nights=3)
    dashboard.build(results, out)
    record = run_of(results, 2, 2)
    record.verdict, record.verdict_reason = Status.FAIL, "reclassified by hand"
    record.save()  # atomically, as every writer of run.json does
    stats = dashboard.build(results, out)
    assert stats.read == 1
    page = (out / "runs" / "board-02" / f"{record.run_id}.html").read_text()
    assert "reclassified by hand" in page
    assert "reclassified by hand" in (out / "boards" / "board-02.html").read_text()


def test_a_removed_run_leaves_the_site(tmp_path):
    results, out = tmp_path / "r", tmp_path / "o"
    fabricate(results, nights=3)
    dashboard.build(results, out)
    record = run_of(results, 1, 2)
    shutil.rmtree(record.path)
    stats = dashboard.build(results, out)
    assert stats.removed == 1
    assert not (out / "runs" / "board-01" / f"{record.run_id}.html").exists()
    assert record.run_id not in (out / "index.html").read_text()


def test_new_templates_rebuild_every_page(tmp_path, monkeypatch):
    results, out = tmp_path / "r", tmp_path / "o"
    fabricate(results, nights=2)
    first = dashboard.build(results, out)
    monkeypatch.setattr(dashboard, "_render_version", lambda: "other")
    again = dashboard.build(results, out)
    assert again.read == first.read and again.pages == first.pages


def test_other_results_start_a_fresh_site(tmp_path):
    fabricate(tmp_path / "a", nights=2)
    bench.fabricate(tmp_path / "b", boards=1, nights=1, first=50, retries=False)
    out = tmp_path / "o"
    dashboard.build(tmp_path / "a", out)
    stats = dashboard.build(tmp_path / "b", out)
    assert stats.read == 1
    assert sorted(p.name for p in (out / "boards").iterdir()) == ["board-00.html"]
    assert len(list((out / "runs").rglob("*.html"))) == 2


def test_the_index_lives_in_the_out_dir(site):
    results, out = site
    db = open_index(out, results, dashboard._render_version())
    try:
        (n,) = db.execute("SELECT count(*) FROM runs").fetchone()
    finally:
        db.close()
    assert n == BOARDS * NIGHTS + NIGHTS // 10
    assert not list(results.glob("*.sqlite"))


# --------------------------------------------------------------------------- command

def _args(*argv):
    return build_parser().parse_args(["dashboard", *argv])  # the xenlab command's own parser


def test_command_builds_beside_the_results(tmp_path, capsys):
    fabricate(tmp_path / "results", nights=2)
    args = _args("--results", str(tmp_path / "results"))
    assert args.func(args) == 0
    assert (tmp_path / "dashboard" / "index.html").is_file()
    assert "dashboard: 13 runs (13 read" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--port", "8000"], "--port 8000: only with --serve"),
    (["--serve", "--port", "70000"], "argument --port: '70000': not a TCP port"),
    (["--results", "{tmp}/none"], "argument --results: '{tmp}/none': no such directory"),
    (["--results", "{tmp}", "--out", "{tmp}"], "must not be the results directory"),
])
def test_command_errors_are_one_line(tmp_path, capsys, argv, message):
    # Argument checks (argparse) and checks between arguments (the command) end alike:
    # exit 2 and one `xenlab: error:` line, nothing built.
    assert main(["dashboard", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("xenlab: error: ")
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "dashboard").exists()


def test_served_only_on_loopback(site):
    httpd = dashboard.make_server(site[1], 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        assert httpd.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and b"Nightly board results" in resp.read()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_runaway_console_keeps_its_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(dashboard, "CONSOLE_MAX", 4000)
    log = tmp_path / "console.log"
    log.write_text("U-Boot first line\n" + "noise\n" * 5000 + "\x1b[6n(XEN) Panic on CPU 0:\r\r\r\n")
    text = dashboard.console_text(log)
    assert text.startswith("U-Boot first line") and text.endswith("(XEN) Panic on CPU 0:")
    assert "bytes left out" in text and len(text) < 4200


def test_boards_by_xen_build_and_a_page_per_build(tmp_path):
    """One board × Xen-build matrix, and each build's own runs only: the filter by build."""
    results, out = tmp_path / "r", tmp_path / "o"
    builds = {"a": ("4.17.5", "debian"), "b": ("4.17.5", "debug"), "c": ("4.20.5-pre", "debian")}
    for target, (version, config) in builds.items():
        r = RunRecord.start(results, f"board-{target}", arch="arm64", tester="t")
        r.set_info(xen_version=version, xen_build={"version": version, "config": config,
                                                   "changeset": "cs", "source": "s"})
        r.step_finished("uboot", "PASS" if target != "b" else "FAIL", 1.0)
        r.finish()
    dashboard.build(results, out)
    page = (out / "builds.html").read_text()
    for version, config in builds.values():
        assert f"{version} {config}" in page
    debug = (out / "builds" / dashboard.build_page("4.17.5 debug")).read_text()
    assert "board-b" in debug and "board-a" not in debug and "board-c" not in debug
    assert "v-FAIL" in debug


def test_a_row_per_board_and_variant_each_compared_in_its_lane(tmp_path):
    """`xenlab matrix` runs are rows of their own ("board [variant]"): a dom0less run that
    fails after passing is that lane's regression, and never the dom0 smoke test's."""
    results, out = tmp_path / "r", tmp_path / "o"
    story = {(None, 0): "PASS", (None, 1): "PASS", ("dom0less", 0): "PASS", ("dom0less", 1): "FAIL",
             ("staticmem", 1): "PASS"}
    ids = {}
    for (variant, n), status in story.items():
        stamp = f"{night(n)}T0{2 if variant else 1}:00:00.000Z"
        run_id = f"{night(n).replace('-', '')}T0{2 if variant else 1}0000Z-{variant or 'dom0'}"
        r = RunRecord(path=results / "qemu-arm64" / run_id, target="qemu-arm64",
                      profile="qemu-virt-arm64", run_id=run_id, arch="arm64", tester="t",
                      host="lab", start_time=stamp,
                      info={"xen_version": "4.17.5", **({"variant": variant} if variant else {})})
        r.path.mkdir(parents=True)
        r.step_finished("xen_creates_every_domu", status, 1.0)
        r.finish()
        ids[(variant, n)] = run_id
    dashboard.build(results, out)
    index = (out / "index.html").read_text()
    rows = {h: row for row in index.split("<tr>")[1:]
            for h in ["qemu-arm64", "qemu-arm64 [dom0less]", "qemu-arm64 [staticmem]"]
            if f'boards/qemu-arm64.html">{h}</a></th>' in row}
    assert len(rows) == 3, index
    assert f'runs/qemu-arm64/{ids[("dom0less", 1)]}.html' in rows["qemu-arm64 [dom0less]"]
    assert "regression" in rows["qemu-arm64 [dom0less]"]
    assert "regression" not in rows["qemu-arm64"] and "v-FAIL" not in rows["qemu-arm64"]
    # The list on top names the lane, and links the board's run.
    regressions = index.split('<ul class="entries regression">')[1].split("</ul>")[0]
    assert "qemu-arm64 [dom0less]</a>" in regressions
    assert f'runs/qemu-arm64/{ids[("dom0less", 1)]}.html' in regressions
    assert "staticmem" not in regressions and ids[(None, 1)] not in regressions
    board = (out / "boards" / "qemu-arm64.html").read_text()
    assert "<th>lane</th>" in board and "<td>qemu-arm64 [staticmem]</td>" in board
    assert board.count("REGR. vs.") == 1 and f"REGR. vs. {ids[('dom0less', 0)]}" in board
    builds = (out / "builds.html").read_text()
    assert "qemu-arm64 [dom0less]</a></th>" in builds
