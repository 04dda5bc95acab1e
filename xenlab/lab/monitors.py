"""What a board's console says: the markers each boot stage waits for, the monitors
for what must never appear, the one classifier of a failure (used live by the
strategy and on replayed logs), and the versions that really ran (LAVA's
monitors, Xen's panic path).

Harmless under QEMU and deliberately absent: "CPU0 has no enable method",
"Guests without CPU erratum workarounds can deadlock", "vGICD: unhandled word
write", "Unhandled SMC/HVC" (shared/notes/qemu-xen.md).
"""

from __future__ import annotations

import re

import attr

from ..console_text import PREFIX, body, clean_lines
from ..errors import Status

# What each stage waits for, in order. The ready marker comes from the image set.
STAGE_MARKERS = {
    "xen": [("xen-banner", r"Xen version (\d+\.\d+[^\s(]*)\s"),  # \s: the version is whole
            ("dom0-loading", r"\*\*\* LOADING DOMAIN 0 \*\*\*"),
            # Xen builds Dom0 between these two: a panic there ("Could not set up DOM0
            # guest OS") is Xen's failure, so the Xen stage ends when Xen hands over.
            ("xen-handover", r"\*\*\* Serial input to ")],
    # Linux's first two lines: Xen's own output on the shared UART can split either one
    # ("B(XEN) d1v0: ...ooting Linux"), a dom0less DomU's in particular.
    "dom0": [("dom0-linux", r"Booting Linux on physical CPU|\] Linux version \d"),
             ("dom0-ready", "{ready}")],
}


def xen_markers(plan) -> list[tuple[str, str]]:
    """The Xen stage's markers for this plan: Dom0's, then one per dom0less DomU, in Xen's order.

    Xen prints "LOADING DOMU cpus=N memory=<hex>KB" for each xen,domain node
    (create_domUs, after Dom0 is built), then hands the console over.
    """
    first, dom0, handover = STAGE_MARKERS["xen"]
    out = [first] + ([dom0] if plan.has_dom0 else [])
    out += [(f"domu-loading:{d.name}", rf"\*\*\* LOADING DOMU cpus={d.cpus} memory={d.memory_kb:x}KB \*\*\*")
            for d in plan.domus]
    return out + [handover]


UBOOT_BANNER = re.compile(r"^U-Boot (20\d\d\.\d\d\S*)")  # not "U-Boot SPL 20..": that precedes it


@attr.s(frozen=True, auto_attribs=True)
class Monitor:
    """A console line that proves a failure."""

    regex: re.Pattern = attr.ib(converter=re.compile)
    status: str  # "FAIL": the software under test; "ERROR": the lab
    classification: str  # "{guest}" becomes dom0 or domu, by stage
    after_boot: bool = False  # counts only once the boot has started

    @property
    def live_pattern(self) -> str:
        """The regex for a console stream, where lines start after a newline."""
        return "(?m)" + self.regex.pattern


MONITORS: tuple[Monitor, ...] = (
    Monitor(r"Panic on CPU \d+", "FAIL", "xen-panic"),
    Monitor(r"Xen BUG at ", "FAIL", "xen-bug"),
    # Bounded: an unbounded '.+' rescans the line from every "Assertion '" (quadratic);
    # the condition is ASSERT()'s source text, not its expansion, so it is short.
    Monitor(r"Assertion '.{1,200}?' failed", "FAIL", "xen-bug"),
    Monitor(r"Kernel panic - not syncing", "FAIL", "{guest}-panic"),
    # The bootloader's banner again after the boot started: the board reset.
    Monitor(UBOOT_BANNER.pattern, "FAIL", "uboot-reset-loop", after_boot=True),
    Monitor(r"TFTP error: 'File not found'", "ERROR", "tftp-file-missing"),
    Monitor(r"TFTP error: trying to overwrite reserved memory", "ERROR", "tftp-load-error"),
    Monitor(r"Bad Linux ARM(64 Image| zImage) magic", "FAIL", "boot-image-format"),
    # Printed only by debug builds' early printk (seed §6.3): firmware left the CPU in EL1 or secure.
    Monitor(r"- Xen must be entered in NS EL2 mode -", "FAIL", "xen-not-hyp-mode"),
)


def _any_of(patterns) -> re.Pattern:
    """One compiled pass that finds every line that might match one of `patterns`.

    Per-line searches cost a few microseconds times the monitors, times a
    million lines of garbage; this finds the candidates in one scan, and only
    those lines get the exact, ordered check.  A pattern anchored to the line
    body ('^') may follow a console prefix here.
    """
    alts = [p.replace("^", f"^(?:{PREFIX})?", 1) if p.startswith("^") else p for p in patterns]
    return re.compile("|".join(f"(?:{a})" for a in alts), re.M)


def _candidates(finder: re.Pattern, lines: list[str], text: str | None = None):
    """(index, line) of the lines `finder` matches, in order, each once (`text`: the lines joined)."""
    text = "\n".join(lines) if text is None else text
    index = pos = 0
    while (m := finder.search(text, pos)):
        index += text.count("\n", pos, m.start())  # pos is always a line start
        yield index, lines[index]
        end = text.find("\n", m.start())
        if end < 0:
            return
        pos, index = end + 1, index + 1


_MONITOR_LINES = _any_of(m.regex.pattern for m in MONITORS)

_XEN_BANNER = re.compile(r"Xen version (\d+\.\d+[^\s(]*)")
_LINUX = re.compile(r"Linux version (\S+)")
_XL_GUEST = re.compile(r"\bxl\s+(?:-\S+\s+){0,8}(?:create|console)\b")
_BUILD_ID = re.compile(r"build-id: ([0-9a-f]+)")
# Every branch of parse_console_facts needs one of these on its line.
_FACT_LINES = _any_of([UBOOT_BANNER.pattern, _XEN_BANNER.pattern, "Latest ChangeSet:",
                       _BUILD_ID.pattern, _LINUX.pattern, _XL_GUEST.pattern])


def parse_console_facts(text: str) -> dict:
    """The versions that really ran, read from a console transcript.

    Keys (only those found): uboot_version, xen_version, xen_changeset,
    xen_build_id, dom0_kernel, domU_kernel.  The first Linux banner after
    Xen's is Dom0's; the DomU's is the next one after an `xl create`/`xl
    console`, or one a dom0less DomU prints through Xen (`(XEN) DOM1: `).
    """
    facts: dict = {}
    xen_seen = xl_seen = False
    for _, line in _candidates(_FACT_LINES, clean_lines(text)):
        text_body = body(line)
        if "uboot_version" not in facts and (m := UBOOT_BANNER.match(text_body)):
            facts["uboot_version"] = m.group(1)
        elif not xen_seen and (m := _XEN_BANNER.search(text_body)):
            facts["xen_version"], xen_seen = m.group(1), True
        elif xen_seen and "xen_changeset" not in facts and "Latest ChangeSet:" in text_body:
            value = text_body.split("Latest ChangeSet:", 1)[1].strip()
            if value:
                facts["xen_changeset"] = value
        elif xen_seen and "xen_build_id" not in facts and (m := _BUILD_ID.search(text_body)):
            facts["xen_build_id"] = m.group(1)
        elif xen_seen and (m := _LINUX.search(text_body)):
            if re.search(r"\bDOM\d+:", line) or ("dom0_kernel" in facts and xl_seen):
                facts.setdefault("domU_kernel", m.group(1))
            else:
                facts.setdefault("dom0_kernel", m.group(1))
        elif "dom0_kernel" in facts and _XL_GUEST.search(line):
            xl_seen = True
    return facts


REASON_LINES = 3


def panic_reason(lines: list[str], i: int) -> list[str]:
    """The lines Xen's panic() prints after "Panic on CPU n:" (why), up to its row of stars.

    Nothing for any other line: a kernel panic and a Xen BUG say why on their own line.
    """
    if not _XEN_PANIC.search(lines[i]):
        return []
    out = []
    for line in lines[i + 1:i + 1 + REASON_LINES]:
        if body(line).startswith("****"):
            break
        if body(line):
            out.append(line)
    return out


def quote(evidence: list[str]) -> str:
    """The line classify() matched, with the reason Xen printed after a panic: for messages.

    classify() takes the earliest match, so no line before it matches a monitor.
    """
    first = next((k for k, line in enumerate(evidence)
                  if any(m.regex.search(body(line)) for m in MONITORS)), len(evidence) - 1)
    return " ".join([evidence[first].strip()] + [body(line) for line in evidence[first + 1:]])


_XEN_PANIC = re.compile(r"Panic on CPU \d+:?\s*$")
_BOOT_STARTED = re.compile(r"^U-Boot 20\d\d|Starting kernel|^\(XEN\)", re.M)
CONTEXT_LINES = 4
CAUSE_LOOKBACK = 200  # lines before the match searched for the cause (a partition list sits between)
# Lines that name why a kernel or Xen gave up, printed before the panic line
# and easily further back than the context (Linux lists the partitions first).
_CAUSES = re.compile(r"VFS: Cannot open root device|Please append a correct \"root=\"|"
                     r"No working init found|Failed to execute |"
                     r"\(XEN\) Panic on CPU|Could not set up DOM0|Unable to mount root fs|"
                     # a Xen trap's call trace: the function it trapped in
                     r"\(XEN\)\s+\[<[0-9a-f]+>\] \S+ \(PC\)")


def cause_lines(lines: list[str], i: int) -> list[str]:
    """The lines before `lines[i]` (outside its context) that name the cause, in order."""
    start, end = max(0, i - CAUSE_LOOKBACK), max(0, i - CONTEXT_LINES)
    return [l for l in lines[start:end] if _CAUSES.search(l)][-6:]


def classify(text: str, stage: str) -> tuple[Status, str, list[str]] | None:
    """Explain a failure from the console: (status, classification, evidence) or None.

    The earliest matching line wins: what follows a panic (a reset, a
    second banner) is its consequence.  A kernel panic is Dom0's unless the
    stage is a DomU one.  Evidence is the line with a few lines before it.
    """
    found = _first_alarm(text)
    if found is None:
        return None
    mon, lines, i = found
    # A dom0less DomU's lines come through Xen as "(XEN) DOM1: ...".
    guest = "domu" if "domu" in stage.lower() or _DOMU_LINE.search(lines[i]) else "dom0"
    evidence = cause_lines(lines, i) + lines[max(0, i - CONTEXT_LINES):i + 1] + panic_reason(lines, i)
    return Status(mon.status), mon.classification.format(guest=guest), evidence


_DOMU_LINE = re.compile(r"\bDOM[1-9]\d*: ")


def _first_alarm(text: str) -> tuple[Monitor, list[str], int] | None:
    """The earliest monitor line of a console: (monitor, its lines, the line's index)."""
    lines = clean_lines(text)
    joined = "\n".join(lines)
    # The boot has started on the line after the first one that starts it.
    started = next((i for i, _ in _candidates(_BOOT_STARTED, lines, joined)), len(lines))
    for i, line in _candidates(_MONITOR_LINES, lines, joined):
        text_body = body(line)
        for mon in MONITORS:
            if mon.after_boot and i <= started:
                continue
            if mon.regex.search(text_body):
                return mon, lines, i
    return None


def first_alarm(text: str) -> Monitor | None:
    """The monitor whose line comes first in `text`, as classify() finds it; None if none."""
    found = _first_alarm(text)
    return found[0] if found else None


def alarm_failure(text: str, tail: list[str], stage: str, waiting_for: str,
                  mon: Monitor) -> tuple[str, str, str, list[str]]:
    """(status, classification, message, evidence) of a step a monitor's line ended:
    classified from the whole console, the cause and the lines after it as evidence."""
    found = classify(text, stage)
    if found is None:  # the recorder saw less than the console did
        return (mon.status, mon.classification.format(guest="domu" if "domu" in stage else "dom0"),
                f"waiting for {waiting_for}: console matched {mon.regex.pattern!r}", tail)
    status, classification, cause = found
    return (status.value, classification, f"waiting for {waiting_for}: console shows "
            f"{quote(cause)!r}", cause + [line for line in tail if line not in cause])


def closed_failure(text: str, tail: list[str], stage: str, waiting_for: str,
                   exited: str | None) -> tuple[str, str, str, list[str]]:
    """(status, classification, message, evidence) of a step whose console closed: what the
    console last showed explains it (a Xen panic, then QEMU's -no-reboot exit), or it is the
    lab's: the board or its serial link went away."""
    found = classify(text, stage)
    if found is not None:
        status, classification, cause = found
        return (status.value, classification, f"the console closed waiting for {waiting_for}; "
                f"it showed {quote(cause)!r}", cause + [line for line in tail if line not in cause])
    return ("ERROR", "board-died" if exited else "console-lost",
            f"{exited or 'the console closed'} while waiting for {waiting_for}", tail)


def uboot_reply_failure(cmd: str, text: str, code: int, server: str = "") -> tuple[str, str, str]:
    """(status, classification, message) of a U-Boot command that returned `code` != 0."""
    found = classify(text, "uboot")
    status, classification = (found[0].value, found[1]) if found else \
        ("ERROR", "uboot-command-failed")
    message = f"U-Boot command {cmd!r} failed (status {code})"
    if cmd.split()[0] in ("tftpb", "tftpboot") and classification == "uboot-command-failed":
        classification = "tftp-load-failed"
        # Not one block came (the progress is '#'s after "Loading:").
        if "Retry count exceeded" in text and not re.search(r"(?m)^(Loading:|[ \t]).*#", text):
            classification = "tftp-server-unreachable"
            message = f"TFTP server {server or 'serverip'} did not answer {cmd!r}"
    return status, classification, message
