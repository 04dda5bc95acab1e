"""Test Day tables: the smoke test's results as the wiki's per-board table, ready to paste.

Xen's Test Days keep a per-board results table on the wiki ("Xen ARM Manual
Smoke Test/Results"); it never gained momentum because filling it by hand was
work.  Here the table is made from the run records, in MediaWiki and
Markdown, every cell escaped: records quote console text.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
from pathlib import Path
from typing import Iterable, Sequence

import attr

from ..errors import Status
from ..run.record import RunRecord


STATUS_COLOUR = {"PASS": "#cfc", "FAIL": "#fcc", "ERROR": "#fdb", "KNOWN": "#ffc",
                 "SKIP": "#eee", "ABORTED": "#ddd", "RUNNING": "#ddf"}


@attr.s(frozen=True, auto_attribs=True)
class Row:
    target: str
    arch: str
    tester: str
    date: str
    xen: str
    build: str  # the Xen's config, changeset and source ("debian 4.17.5+72-g01140da4e8-1 ...")
    steps: dict  # step name -> status
    verdict: str
    known: tuple  # (label, link) of each KNOWN step, in step order
    log: str  # console.log, relative to the table's directory


def table_rows(records: Iterable[RunRecord], base: Path) -> tuple[list[str], list[Row]]:
    """(step names, rows): steps are the union of the records' steps in first-seen order."""
    steps: list[str] = []
    rows = []
    for r in records:
        for s in r.steps:
            if s.name not in steps:
                steps.append(s.name)
        known = []
        for s in r.steps:
            issue = (s.known.get("label", ""), s.known.get("link", "")) if s.known else None
            if s.status is Status.KNOWN and issue and issue not in known:
                known.append(issue)
        log = r.console_log if r.console_log.exists() or not (r.path / "pytest.log").exists() \
            else r.path / "pytest.log"
        rows.append(Row(target=r.target, arch=r.arch, tester=r.tester, date=r.start_time[:10],
                        xen=r.info.get("xen_version") or "-", build=_build(r.info),
                        steps={s.name: s.status.value for s in r.steps},
                        verdict=r.verdict.value, known=tuple(known),
                        log=os.path.relpath(log, base)))
    return steps, rows


# Mid-line wiki syntax: cell separators, links, templates, bold/italic, signatures,
# header separators.  Line-start syntax (-, *, #, :, =) cannot occur: a cell never
# starts a line.  "__" would start a magic word such as __NOTOC__.
_WIKI_ESC = {c: f"&#{ord(c)};" for c in "|[]{}'~!"}


def _wiki(text: str) -> str:
    # Entities render as the character but never as table or link syntax.
    text = html.escape(" ".join(str(text).split()), quote=False)
    return "".join(_WIKI_ESC.get(c, c) for c in text).replace("__", "&#95;&#95;")


def _md(text: str) -> str:
    text = " ".join(str(text).split()).replace("\\", "\\\\")
    for c in "|*[]`":
        text = text.replace(c, "\\" + c)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _build(info: dict) -> str:
    build = info.get("xen_build") if isinstance(info.get("xen_build"), dict) else {}
    words = [str(build[k]) for k in ("config", "changeset") if build.get(k)]
    if info.get("toolstack_mismatch"):
        words.append(f"tools {info['toolstack_mismatch'].get('tools')} MISMATCH")
    return " ".join(words) or "-"


def _safe_url(link: str) -> str | None:
    return link if link.startswith(("https://", "http://")) and not any(
        c in link for c in " \t\n|[]<>\"") else None


def wiki_table(steps: Sequence[str], rows: Sequence[Row]) -> str:
    head = ["Board", "Arch", "Tester", "Date", "Xen", "Xen build", *steps, "Result",
            "Known issues", "Log"]
    out = ['{| class="wikitable sortable"', "! " + " !! ".join(_wiki(h) for h in head)]
    for row in rows:
        cells = [_wiki(row.target), _wiki(row.arch), _wiki(row.tester), _wiki(row.date),
                 _wiki(row.xen), _wiki(row.build)]
        for status in [row.steps.get(s, "") for s in steps] + [row.verdict]:
            cells.append(f'style="background:{STATUS_COLOUR[status]}" | {status}'
                         if status in STATUS_COLOUR else "-")
        known = []
        for label, link in row.known:
            url = _safe_url(link)
            known.append(f"[{url} {_wiki(label)}]" if url else _wiki(label))
        cells.append(", ".join(known))
        cells.append(f"<code>{_wiki(row.log)}</code>")  # a wiki cannot link to a local file
        out += ["|-", "| " + " || ".join(cells)]
    out.append("|}")
    return "\n".join(out) + "\n"


def markdown_table(steps: Sequence[str], rows: Sequence[Row]) -> str:
    head = ["Board", "Arch", "Tester", "Date", "Xen", "Xen build", *steps, "Result",
            "Known issues", "Log"]
    out = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        known = []
        for label, link in row.known:
            url = _safe_url(link)
            known.append(f"[{_md(label)}]({url})" if url else _md(label))
        cells = [_md(row.target), _md(row.arch), _md(row.tester), _md(row.date), _md(row.xen),
                 _md(row.build),
                 *[row.steps.get(s, "-") for s in steps], row.verdict, ", ".join(known),
                 f"[{_md(Path(row.log).name)}]({_md(row.log).replace(' ', '%20')})"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_tables(records: Sequence[RunRecord], results: Path, date: str | None = None) \
        -> tuple[Path, Path, str]:
    """Write results/testday-<date>.{wiki,md} (a -2, -3... suffix rather than overwrite)."""
    results = Path(results)
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    steps, rows = table_rows(records, results)
    stem, n = f"testday-{date}", 1
    while (results / f"{stem}.wiki").exists() or (results / f"{stem}.md").exists():
        n += 1
        stem = f"testday-{date}-{n}"
    md = markdown_table(steps, rows)
    (results / f"{stem}.wiki").write_text(wiki_table(steps, rows))
    (results / f"{stem}.md").write_text(md)
    return results / f"{stem}.wiki", results / f"{stem}.md", md
