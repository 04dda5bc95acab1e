"""Fabricated run records for many boards × nights × verdicts, written by RunRecord itself.

`fabricate` writes real run records (RunRecord's own JSON, with console logs);
tests/test_dashboard.py, tests/test_nightly.py, tests/test_testday.py and
bench/dashboard.py use it.  Test support only: never a board's result.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from xenlab.errors import Status
from xenlab.run.record import RunRecord
from xenlab.run.steps import Step, compute_verdict

STEPS = ("uboot", "xen_boots", "dom0_boots", "xl_info", "xl_list", "domu_create_console",
         "pv_block", "pv_network", "domu_shutdown_destroy")
MARKS = {"uboot": 0.3, "xen-banner": 1.6, "dom0-loading": 1.8, "dom0-linux": 2.6,
         "dom0-ready": 5.2, "shell": 5.3}
FIRST_NIGHT = dt.date(2025, 1, 1)
KNOWN = {"id": "xen-pv-console-stall", "label": "DomU PV console stalls on Xen 4.17 (arm64)",
         "link": "https://gitlab.com/xen-project/xen/-/issues/123", "culprit": "xen"}
PANIC = ["(XEN) ****************************************", "(XEN) Panic on CPU 0:",
         "(XEN) Assertion 'd->arch.vgic.handler' failed at vgic.c:120",
         "(XEN) ****************************************"]


def board_name(i: int) -> str:
    return f"board-{i:02d}"


def outcome(seed: int, board: int, night: int) -> Status:
    """The night's verdict for a board: mostly PASS, failing streaks, lab errors, a known issue.

    A pure function of (seed, board, night), so history can be extended a
    night at a time and comes out the same as if written at once.
    """
    streak = random.Random(f"{seed}:{board}:streak:{night // 5}").random()
    rng = random.Random(f"{seed}:{board}:{night}").random()
    if streak < 0.08:
        return Status.FAIL  # five failing nights in a row: a regression, still failing, fixed
    if rng < 0.03:
        return Status.ERROR
    if board % 10 == 3 and rng < 0.25:
        return Status.KNOWN
    if rng > 0.995:
        return Status.FAIL  # a one-night failure
    return Status.PASS


def _steps(verdict: Status, started: str, rng: random.Random) -> tuple[list[Step], list[str]]:
    steps = []
    console = ["U-Boot 2023.01+dfsg-2+deb12u3 (Jan 01 2025)", "Hit any key to stop autoboot:"]
    broken = False
    for name in STEPS:
        secs = round(rng.uniform(0.1, 4.0), 3)
        if broken:
            steps.append(Step(name, Status.SKIP, started, 0.0, reason="board did not boot: "
                              "xen stage FAIL [xen-panic]"))
        elif verdict is Status.ERROR and name == "uboot":
            steps.append(Step(name, Status.ERROR, started, secs, "tftp-file-missing",
                              "TFTP could not load xen", ["TFTP error: 'File not found'"]))
            console.append("TFTP error: 'File not found'")
            broken = True
        elif verdict is Status.FAIL and name == "xen_boots":
            steps.append(Step(name, Status.FAIL, started, secs, "xen-panic",
                              "Xen panicked", PANIC[1:3]))
            console += ["(XEN) Xen version 4.17.5 (Debian 4.17.5+72-g01140da4e8-1)"] + PANIC
            broken = True
        elif verdict is Status.KNOWN and name == "domu_create_console":
            steps.append(Step(name, Status.KNOWN, started, secs, "stage-timeout:domu",
                              "no answer on the console in time", ["xl console guest"],
                              original_status=Status.FAIL, known=dict(KNOWN)))
        else:
            steps.append(Step(name, Status.PASS, started, secs))
            if name == "xen_boots":
                console.append("(XEN) Xen version 4.17.5 (Debian 4.17.5+72-g01140da4e8-1)")
            if name == "dom0_boots":
                console.append("[    0.000000] Linux version 6.1.0-50-cloud-arm64")
    return steps, console


def fabricate(root: Path | str, boards: int = 50, nights: int = 365, *, first: int = 0,
              seed: int = 1, retries: bool = True, console_extra: dict | None = None,
              override: dict | None = None) -> list[Path]:
    """Write run records for boards × nights [first, first + nights); return the run dirs.

    Run directories and files are exactly what the pytest plugin writes
    (run.json from RunRecord.to_dict, console.log beside it).  With
    `retries`, board 0 has an earlier ERROR run on every tenth night: the
    dashboard must show the night's newest run.  `console_extra` maps
    (board, night) to text appended to that run's console log; `override`
    maps (board, night) to the verdict that night must have.
    """
    root = Path(root)
    written = []
    for n in range(first, first + nights):
        day = FIRST_NIGHT + dt.timedelta(days=n)
        for b in range(boards):
            runs = [(1, Status.ERROR)] if retries and b == 0 and n % 10 == 0 else []
            runs.append((2, (override or {}).get((b, n)) or outcome(seed, b, n)))
            for hour, verdict in runs:
                rng = random.Random(f"{seed}:{b}:{n}:{hour}")
                started = dt.datetime.combine(day, dt.time(hour, b % 60))
                start, end = (f"{t:%Y-%m-%dT%H:%M:%S}.000Z" for t in
                              (started, started + dt.timedelta(seconds=25 + b % 10)))
                run_id = f"{day:%Y%m%d}T0{hour}{b % 60:02d}00Z-{b:03d}{n % 1000:03d}"
                steps, console = _steps(verdict, start, rng)
                drift = 1 + n / 2000 + (b % 7) / 20
                marks = {k: round(v * drift * rng.uniform(0.95, 1.05), 2) for k, v in MARKS.items()}
                if verdict is Status.FAIL:  # Xen panicked: no Dom0 stages
                    marks = {k: marks[k] for k in ("uboot", "xen-banner")}
                elif verdict is Status.ERROR:  # TFTP failed: U-Boot only
                    marks = {"uboot": marks["uboot"]}
                target = board_name(b)
                record = RunRecord(path=root / target / run_id, target=target,
                                   profile="qemu-virt-arm64", run_id=run_id,
                                   arch="arm64" if b % 4 else "arm32",
                                   tester="nightly", host="lab", start_time=start,
                                   end_time=end,
                                   info={"xen_version": "4.17.5", "expected_xen_version": "4.17.5",
                                         "stage_marks": marks},
                                   steps=steps)
                record.verdict, record.verdict_reason, record.classification = \
                    compute_verdict(steps)
                record.path.mkdir(parents=True, exist_ok=True)
                record.save(durable=False)  # RunRecord's own writer, without an fsync per run
                text = "\n".join(console) + "\n" + (console_extra or {}).get((b, n), "")
                record.console_log.write_text(text)
                written.append(record.path)
    return written
