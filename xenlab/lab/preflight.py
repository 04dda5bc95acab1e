"""The doctor before power-on, on the board as the farm wires it.

Every run asks the doctor first (pytest, Test Day, nightly, matrix): an error
it can see on paper (a UART this Xen cannot drive, a GIC it lacks, a dtuart
that resolves to nothing) would otherwise cost the whole stage timeout and end
as a bare `stage-timeout`.  Here it ends the run at once, as the lab's ERROR
`board-setup`, with the doctor's lines as the evidence.
"""

from __future__ import annotations

from ..errors import Finding, Severity, StageFailure
from ..images.checks import kernel_config_findings
from ..images.xenfeatures import xen_under_test
from ..plan.doctor import doctor
from ..plan.prepare import PreparedBoard
from ..plan.variant import variant_findings

# Local ports run at their `speed:`; over the network, ser2net's own
# configuration decides unless RFC 2217 carries the setting.
_SPEED_SET_HERE = ("RawSerialPort", "USBSerialPort", "SerialPort")


def preflight(prepared: PreparedBoard, target=None) -> list[Finding]:
    """The doctor's findings on `prepared`, and how `target` reads its console."""
    images = prepared.images
    extra = kernel_config_findings(images)
    if prepared.variant is not None:  # the Kconfig the variant needs (CONFIG_STATIC_MEMORY ...)
        extra = variant_findings(prepared.variant, images.dir / "xen.config", images.dir.name,
                                 images.xen.get("patches")) + extra
    findings = doctor(prepared.profile, prepared.files, dtb_path=prepared.dtb, plan=prepared.plan,
                      extra_findings=extra, xen=xen_under_test(images))
    if target is not None:
        findings += wiring_findings(prepared, target)
    return findings


def wiring_findings(prepared: PreparedBoard, target) -> list[Finding]:
    """The serial port's speed against the board's console speed."""
    console = prepared.plan.console
    out = []
    for resource in getattr(target, "resources", []):
        kind = type(resource).__name__
        speed = getattr(resource, "speed", None)
        if console is None or not isinstance(speed, int) or not kind.endswith("SerialPort"):
            continue
        if speed == console.baudrate:
            continue
        protocol = getattr(resource, "protocol", None)
        decisive = kind in _SPEED_SET_HERE or protocol == "rfc2217"
        out.append(Finding(
            Severity.ERROR if decisive else Severity.WARN, "console-speed-mismatch",
            f"target {target.name}: {kind} speed {speed}, but the board's console runs at "
            f"{console.baudrate} baud (from {console.baudrate_from})",
            "at another speed the console reads garbage and every stage times out; set the "
            "farm file's `speed:`" + ("" if decisive else " and ser2net's connection speed")))
    return out


def doctor_verdict(findings: list[Finding], board: str) -> tuple[list[str], StageFailure | None]:
    """The findings as record lines, and the ERROR `board-setup` their first error makes."""
    bad = [f for f in findings if f.severity is Severity.ERROR]
    if not bad:
        return [_line(f) for f in findings], None
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return [_line(f) for f in findings], StageFailure(
        "doctor", "ERROR", "board-setup",
        f"doctor: {bad[0].code}: {bad[0].message}{more}; `xenlab doctor {board}` explains it",
        [_line(f) for f in bad] + [_line(f) for f in findings if f not in bad])


def _line(finding: Finding) -> str:
    return str(finding).replace("\n      ", " -- ")  # the hint on the same line
