"""The content-addressed cache under XENLAB_CACHE (default ~/.cache/xenlab).

Everything downloaded or built lives here, keyed by content, never in git.
Writers build aside and rename into place, so an interrupted build leaves
nothing half-written that a later run could mistake for complete.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import secrets
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
    with _write_aside(path, durable, 0o600) as f:
        f.write(data)


def atomic_copy(src: Path, path: Path, durable: bool = True) -> None:
    """Copy `src` to `path` as `atomic_write` writes, readable by all (a TFTP server, a card)."""
    with open(src, "rb") as s, _write_aside(path, durable, 0o644) as f:
        shutil.copyfileobj(s, f, 1 << 20)


@contextlib.contextmanager
def _write_aside(path: Path, durable: bool, mode: int):
    """A new file beside `path`, renamed over it once written; removed if writing fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with its mode, never chmod-ed: FAT (an SD card's boot partition) refuses chmod.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def gzipped(path: Path) -> Path:
    """`path` gzip-compressed, in the cache by its content: <name>.gz, the same bytes every time.

    Xen decompresses a gzip'd kernel module itself (xen/arch/arm/kernel.c,
    kernel_decompress), as Xen CI's arm32 gzip job boots one.
    """
    path = Path(path)
    final = cache_root() / "gz" / sha256_file(path)[:32]
    out = final / f"{path.name}.gz"
    if not out.is_file():
        with build_aside(final) as tmp, open(path, "rb") as src, \
                gzip.GzipFile(tmp / out.name, "wb", compresslevel=9, mtime=0) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)
    return out
