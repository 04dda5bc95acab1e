"""The dashboard's files: where a page may be written, and who may read them.

Page names come from record fields (target, run id, night, build label), and
the index may hold rows older than today's validation.  So every page path
goes through `Site.path`, which takes only plain names and refuses anything
that resolves outside the site (`..`, an absolute name, a symlink): month
pages were nights/<start[:7]>.html, so an absolute or "../../" `start` once
put a page (and unlinked one) wherever it pointed.  The server hands out the
pages and nothing else: no directory listing, no index.sqlite or its
journal, no dotfile.
"""

from __future__ import annotations

import http.server
import os
import re
import urllib.parse
from functools import partial
from http import HTTPStatus
from pathlib import Path

from ..errors import XenlabError

# One path component: no separator, never "." or "..", no dotfile (a page's temporary file).
PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PAGE_SUFFIXES = (".html", ".css", ".js", ".svg", ".png")  # what the server hands out


class Site:
    """The output root; paths inside it, and the ones that were refused (shown on the index)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.root = self.out.resolve()
        self.refused: list[str] = []

    def path(self, *parts: str, suffix: str = ".html") -> Path | None:
        """out/<parts...><suffix>, or None (recorded in `refused`) if it would leave the site."""
        names = [*parts[:-1], f"{parts[-1]}{suffix}"] if parts else []
        if not names or not all(isinstance(p, str) and PART.fullmatch(p) for p in parts):
            return self._refuse(parts, "not a plain file name")
        path = self.root.joinpath(*names)
        try:
            real = path.resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            return self._refuse(parts, str(exc))
        if self.root not in real.parents:
            return self._refuse(parts, f"resolves to {real}")
        return path

    def _refuse(self, parts, why: str) -> None:
        shown = "/".join(map(repr, parts))
        self.refused.append(f"page {shown}: {' '.join(why.split())}, outside the site "
                            f"{self.root}: not written")
        return None

    def write(self, path: Path | None, text: str) -> int:
        """Write a page (1) or nothing (0) when its path was refused."""
        if path is None:
            return 0
        # Replace, so `--serve` never hands out half a page; no fsync: pages can be rebuilt.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return 1

    @staticmethod
    def unlink(path: Path | None) -> None:
        if path is not None:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- serve

def make_server(out: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the site on 127.0.0.1 only: results are not for the whole network."""
    handler = partial(_SiteHandler, directory=str(out))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise XenlabError(f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror})") from None


def serve(out: Path, port: int, log=print) -> None:
    with make_server(out, port) as httpd:
        log(f"serving {out} on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            log("stopped")


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    """The site's pages and assets; 404 for everything else, listings included."""

    def send_head(self):
        if not self._is_page():
            self.send_error(HTTPStatus.NOT_FOUND, "Not found")
            return None
        return super().send_head()

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND, "Not found")
        return None

    def _is_page(self) -> bool:
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if any(p.startswith(".") or "\\" in p or "\0" in p for p in url_path.split("/")):
            return False  # "..", dotfiles and the pages' temporary files
        root = Path(self.directory).resolve()
        file = Path(self.translate_path(self.path))
        try:
            if file.is_dir():
                file = file / "index.html"  # a directory is its index page or nothing
            real = file.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            return False
        return real.is_file() and root in real.parents and real.suffix in PAGE_SUFFIXES

    def log_message(self, format, *args):  # one line per request is noise in a terminal
        pass
