"""A results disk that fills mid-run: the run ends ABORTED, `results-disk-full`, in one line.

Every write of a run (run.json, junit.xml, the console log) needs free blocks, and a
record that cannot be rewritten would stay RUNNING for ever. So each run keeps a little
space of its own from the start (`.space-kept`, written out, since tmpfs and sparse
files only take blocks that hold data) and gives it back when the disk fills: the last
run.json, saying ABORTED, is written into it. The run then stops at once and the
harness says so in one `xenlab:` line (run/plugin.py); the board is powered off as at
the end of any run.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from ..errors import Status
from ..images.cache import atomic_write
from .steps import now

SPACE_KEPT = ".space-kept"
KEEP_BYTES = 64 * 1024  # a record with its evidence is 5-20 KiB, its junit.xml 2-10 KiB
CLASSIFICATION = "results-disk-full"


class ResultsDiskFull(Exception):
    """The results disk filled: the run has been ended. Not a XenlabError, so no step's
    handler can take it for a bad input: it stops the session."""


def is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def keep_space(run_dir: Path) -> None:
    """Take KEEP_BYTES of the results disk for the run's last record."""
    try:
        with open(run_dir / SPACE_KEPT, "xb") as f:
            f.write(bytes(KEEP_BYTES))
    except OSError:  # no such room: none is kept (the first save that fails says so)
        give_back(run_dir)


def give_back(run_dir: Path) -> None:
    try:
        (run_dir / SPACE_KEPT).unlink()
    except FileNotFoundError:
        pass


def end_on_full_disk(record, exc: OSError) -> None:
    """Called with the record's lock held when a save found the disk full: end the run
    ABORTED (the running step ERROR results-disk-full), write that record into the space
    kept for it, and raise ResultsDiskFull once; later saves that fail change nothing."""
    first = record.disk_full is None
    if first:
        record.disk_full = f"{exc.filename or record.run_json}: {exc.strerror}"
    why = f"results disk full: {record.disk_full}"
    for step in record.steps:
        if step.status is Status.RUNNING:
            step.status, step.classification, step.message = Status.ERROR, CLASSIFICATION, why
    record.verdict, record.classification, record.verdict_reason = Status.ABORTED, CLASSIFICATION, why
    record.end_time = record.end_time or now()
    give_back(record.path)
    try:
        atomic_write(record.run_json, record.json_text())
        written = True
    except OSError:
        written = False
    if written and first:
        try:
            record.write_junit()
        except OSError:
            pass
    elif not written and _says_running(record.run_json):
        os.unlink(record.run_json)  # no record rather than one that says RUNNING for ever
    if first:
        kept = "run.json says ABORTED" if written else "no run.json could be written"
        raise ResultsDiskFull(f"{why}: run {record.run_id} of {record.target} ended as ERROR "
                              f"{CLASSIFICATION} ({kept}); free space under {record.path.parent.parent}")


def _says_running(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("verdict") == Status.RUNNING.value
    except (OSError, ValueError, AttributeError):
        return False
