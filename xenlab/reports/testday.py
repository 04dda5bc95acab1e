"""Test Day tables: the smoke test's results as the wiki's per-board table, ready to paste.

Xen's Test Days keep a per-board results table on the wiki ("Xen ARM Manual
Smoke Test/Results"); it never gained momentum because filling it by hand was
work.  Here the table is made from the run records, in MediaWiki and
Markdown, every cell escaped: records quote console text and may be edited
by hand.  A cell shows exactly its text (no template, link, markup or HTML of
the record's); a link is made only from an http(s) URL, percent-encoded so
that nothing in it ends the link.  Runs whose record could not be read are
listed under the table ("Could not read"), never left out silently.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import re
import urllib.parse
from pathlib import Path
from typing import Iterable, Sequence

import attr

from ..console_text import clean_lines
from ..errors import Status
from ..run.record import RunRecord, Unreadable


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
    firmware: str  # the board's firmware, and the emulator when QEMU models the board
    boot: str  # its boot medium: TFTP, SD card, QEMU loader
    steps: dict  # step name -> status
    verdict: str
    result: str  # the verdict as shown: "PASS (1 skipped)"
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
            issue = (s.known.get("label") or "", s.known.get("link") or "") \
                if isinstance(s.known, dict) else None
            if s.status is Status.KNOWN and issue and issue not in known:
                known.append(issue)
        log = r.console_log if r.console_log.exists() or not (r.path / "pytest.log").exists() \
            else r.path / "pytest.log"
        rows.append(Row(target=r.lane, arch=r.arch, tester=r.tester or "-",
                        date=str(r.start_time or "")[:10],
                        xen=r.info.get("xen_version") or "-", build=_build(r.info),
                        firmware=_firmware(r.info), boot=str(r.info.get("boot_medium") or "-"),
                        steps={s.name: s.status.value for s in r.steps},
                        verdict=r.verdict.value, result=r.verdict_label, known=tuple(known),
                        log=os.path.relpath(log, base)))
    return steps, rows


# Mid-line wiki syntax: cell separators, links, templates, bold/italic, signatures,
# header separators, and ":" of a free link ("ftp://..." links itself).  Line-start
# syntax (-, *, #, =) cannot occur: a cell never starts a line.  "__" would start a
# magic word such as __NOTOC__.
_WIKI_ESC = {c: f"&#{ord(c)};" for c in "|[]{}'~!:"}
# Markdown inline syntax, backslash-escaped (CommonMark renders "\x" as "x"); "(" and
# "!" only matter after or before an (escaped) bracket.  An underscore inside a word
# ("xen_boots") emphasises nothing and stays as it is.
_MD_SYNTAX = re.compile(r"[\\`*~\[\]{}|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MD_LINE_START = re.compile(r"^(?=[-+>#])|^(\d+)(?=[.)])")
# Characters a link's URL keeps; every other one is percent-encoded (space, "()",
# "|", "[]", "{}", quotes, "<>", "\"), so nothing in the URL can end the link.  The
# wiki also encodes "!'*_~": bold, italic, magic words and signatures.
_MD_URL_SAFE = "/:?#@!$&'*+,;=%-._~"
_WIKI_URL_SAFE = "/:?#@$&+,;=%-."
_BOLD = "'" * 3  # wiki bold


def _one_line(text) -> str:
    """A cell's text: one line, without terminal escapes or control characters."""
    return " ".join(" ".join(clean_lines(str(text))).split())


def _wiki(text) -> str:
    # Entities render as the character but never as table, link or template syntax.
    text = html.escape(_one_line(text), quote=False)
    return "".join(_WIKI_ESC.get(c, c) for c in text).replace("__", "&#95;&#95;")


def _md(text) -> str:
    text = _MD_SYNTAX.sub(lambda m: "\\" + m.group(0), _one_line(text))
    # "&" too: a record's "&lt;" shows as "&lt;", not as "<".
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_line(text) -> str:
    """A Markdown list item's text: escaped, and never a heading, a quote or a list."""
    return _MD_LINE_START.sub(lambda m: f"{m.group(1) or ''}\\", _md(text), count=1)


def _build(info: dict) -> str:
    build = info.get("xen_build") if isinstance(info.get("xen_build"), dict) else {}
    words = [str(build[k]) for k in ("config", "changeset") if build.get(k)]
    mismatch = info.get("toolstack_mismatch")
    if mismatch:
        words.append(f"tools {mismatch.get('tools') if isinstance(mismatch, dict) else '?'} "
                     "MISMATCH")
    return " ".join(words) or "-"


def _firmware(info: dict) -> str:
    """"U-Boot 2023.01 (u-boot-rpi rpi_4) on QEMU 10.0.2 -M raspi4b": the firmware the run
    booted through, and the emulator when QEMU models the board."""
    words = str(info.get("firmware") or (f"U-Boot {info['uboot_version']}"
                                         if info.get("uboot_version") else "-"))
    return f"{words} on {info['emulation']}" if info.get("emulation") else words


def _safe_url(link, safe: str) -> str | None:
    """An http(s) URL, percent-encoded but for the characters in `safe`; else None."""
    if not isinstance(link, str) or not link.startswith(("https://", "http://")) \
            or any(ord(c) < 32 or ord(c) == 127 for c in link):
        return None
    try:
        if not urllib.parse.urlsplit(link).netloc:
            return None
    except ValueError:  # an unbalanced "[" in the host
        return None
    # Not urllib's quote(): it never encodes "_" or "~", and "__"/"~~~" are wiki syntax.
    return "".join(c if c.isascii() and c.isalnum() or c in safe
                   else urllib.parse.quote(c, safe="").replace("_", "%5F").replace("~", "%7E")
                   for c in link)


def wiki_table(steps: Sequence[str], rows: Sequence[Row],
               unreadable: Sequence[Unreadable] = ()) -> str:
    head = ["Board", "Arch", "Tester", "Date", "Xen", "Xen build", "Firmware", "Boot", *steps,
            "Result", "Known issues", "Log"]
    out = ['{| class="wikitable sortable"', "! " + " !! ".join(_wiki(h) for h in head)]
    for row in rows:
        cells = [_wiki(row.target), _wiki(row.arch), _wiki(row.tester), _wiki(row.date),
                 _wiki(row.xen), _wiki(row.build), _wiki(row.firmware), _wiki(row.boot)]
        shown = [(row.steps.get(s, ""), row.steps.get(s, "")) for s in steps]
        for status, text in shown + [(row.verdict, row.result)]:
            cells.append(f'style="background:{STATUS_COLOUR[status]}" | {_wiki(text)}'
                         if status in STATUS_COLOUR else "-")
        known = []
        for label, link in row.known:
            url = _safe_url(link, _WIKI_URL_SAFE)
            known.append(f"[{url} {_wiki(label)}]" if url else _wiki(label))
        cells.append(", ".join(known))
        cells.append(f"<code>{_wiki(row.log)}</code>")  # a wiki cannot link to a local file
        out += ["|-", "| " + " || ".join(cells)]
    out.append("|}")
    if unreadable:
        out += ["", f"{_BOLD}Could not read{_BOLD} ({len(unreadable)} run record(s), "
                "not in the table):"]
        out += [f"* <code>{_wiki(u.reason)}</code>" for u in unreadable]
    return "\n".join(out) + "\n"


def markdown_table(steps: Sequence[str], rows: Sequence[Row],
                   unreadable: Sequence[Unreadable] = ()) -> str:
    head = ["Board", "Arch", "Tester", "Date", "Xen", "Xen build", "Firmware", "Boot", *steps,
            "Result", "Known issues", "Log"]
    out = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        known = []
        for label, link in row.known:
            url = _safe_url(link, _MD_URL_SAFE)
            known.append(f"[{_md(label)}]({url})" if url else _md(label))
        log = urllib.parse.quote(row.log, safe="/-._~")
        cells = [_md(row.target), _md(row.arch), _md(row.tester), _md(row.date), _md(row.xen),
                 _md(row.build), _md(row.firmware), _md(row.boot),
                 *[_md(row.steps.get(s, "-")) for s in steps], _md(row.result),
                 ", ".join(known), f"[{_md(Path(row.log).name)}]({log})"]
        out.append("| " + " | ".join(cells) + " |")
    if unreadable:
        out += ["", f"**Could not read** ({len(unreadable)} run record(s), not in the table):",
                ""]
        out += [f"- {_md_line(u.reason)}" for u in unreadable]
    return "\n".join(out) + "\n"


def write_tables(records: Sequence[RunRecord], results: Path, date: str | None = None,
                 unreadable: Sequence[Unreadable] = ()) -> tuple[Path, Path, str]:
    """Write results/testday-<date>.{wiki,md} (a -2, -3... suffix rather than overwrite).

    `unreadable`: this Test Day's runs whose record could not be read, listed under the tables.
    """
    results = Path(results)
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    steps, rows = table_rows(records, results)
    stem, n = f"testday-{date}", 1
    while (results / f"{stem}.wiki").exists() or (results / f"{stem}.md").exists():
        n += 1
        stem = f"testday-{date}-{n}"
    md = markdown_table(steps, rows, unreadable)
    (results / f"{stem}.wiki").write_text(wiki_table(steps, rows, unreadable))
    (results / f"{stem}.md").write_text(md)
    return results / f"{stem}.wiki", results / f"{stem}.md", md
