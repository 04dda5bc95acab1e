"""The content-addressed cache under XENLAB_CACHE (default ~/.cache/xenlab).

Everything downloaded or built lives here, keyed by content, never in git.
Writers build aside and rename into place, so an interrupted build leaves
nothing half-written that a later run could mistake for complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("XENLAB_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "xenlab")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: os.PathLike, bufsize: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def build_aside(final: Path):
    """Yield a temporary directory beside `final`; rename it to `final` on success.

    On any exception (including KeyboardInterrupt) the temporary directory is
    removed, so `final` either exists complete or not at all.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():  # not a lost race with another builder
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: Path, data: bytes | str, durable: bool = True) -> None:
    """Write `path` so that readers see the old or the new content, never a part.

    `durable` also survives a power cut (fsync before the rename); bulk writers
    that can redo their work may skip it.
    """
    if isinstance(data, str):
        data = data.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
