"""The bottom of the pipeline: errors, findings and the one verdict vocabulary.

A `XenlabError` is one line naming the file, key and value at fault; the CLI and
the pytest plugin print it without a traceback.  A `Finding` is one preflight or
image-check result, with a severity and the seed's explanation.  `Status` is
what a step or a run ended as, and `StageFailure` is how a board stage says
it failed; every layer above speaks these words.
"""

from __future__ import annotations

import enum

import attr


class XenlabError(Exception):
    """A mistake the user can fix: the message is the whole story."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class Severity(str, enum.Enum):
    ERROR = "error"
    WARN = "warn"
    INFO = "info"


@attr.s(frozen=True, auto_attribs=True)
class Finding:
    """One observation about a board, a DTB or an image set."""

    severity: Severity
    code: str  # stable identifier, e.g. "dtuart-alias-missing"
    message: str  # what was found, naming the file/node/value
    hint: str = ""  # why it matters, in the seed's terms (with its section)

    def __str__(self) -> str:
        text = f"{self.severity.value:5} {self.code}: {self.message}"
        return f"{text}\n      {self.hint}" if self.hint else text


class StageFailure(Exception):
    """A boot stage or smoke step went wrong on the board.

    `status` separates the software under test from the lab (KernelCI's model):
    "FAIL" when Xen, Dom0 or the DomU misbehaved, "ERROR" when the lab or the
    harness did (power, serial, TFTP, U-Boot never reached, images missing).
    `classification` is a stable label such as ``xen-panic`` or
    ``stage-timeout:dom0``; `evidence` holds the console lines that prove it.
    """

    def __init__(self, stage: str, status: str, classification: str,
                 message: str, evidence: list[str] | None = None):
        assert status in ("FAIL", "ERROR"), status
        self.stage = stage
        self.status = status
        self.classification = classification
        self.message = message
        self.evidence = list(evidence or [])
        super().__init__(f"{status} at stage {stage} [{classification}]: {message}")


class Status(str, enum.Enum):
    """What a step or a run ended as (KernelCI's model: the board apart from the software)."""

    PASS = "PASS"
    FAIL = "FAIL"  # Xen, Dom0 or the DomU misbehaved
    ERROR = "ERROR"  # the lab or the harness: power, serial, TFTP, no U-Boot, no image set
    SKIP = "SKIP"  # not run, with a reason
    KNOWN = "KNOWN"  # a FAIL/ERROR that matches a known issue: reported with its label
    RUNNING = "RUNNING"  # run.json written mid-run (or left so by a SIGKILL)
    ABORTED = "ABORTED"  # Ctrl-C, a crash, a killed QEMU: the run did not end normally

    def __str__(self) -> str:
        return self.value
