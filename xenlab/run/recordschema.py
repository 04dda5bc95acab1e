"""The one schema of run.json, used by the writer's tests and by every reader.

A record on disk may be truncated by a full disk, edited by hand or written by
a later xenlab.  Readers (results, Test Day, the nightly, the dashboard) trust
the types they load, so a record is validated once, where it is read: an
invalid one is one line naming the file, the key and the value, and the reader
skips it.  `info` holds facts that grow with xenlab (Xen build, variant,
bisection); the keys readers use are typed here, others are free.
"""

from __future__ import annotations

from ..errors import Status
from ..schema import validate
from .steps import STEP_RESULTS

SCHEMA_VERSION = 2  # 2: "target" and "profile" (1 had "board", the target's name)
READABLE_SCHEMAS = (1, 2)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TIME_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$"

_TEXT = {"type": "string"}
_OPT_TEXT = {"type": ["string", "null"]}
_TIME = {"type": "string", "pattern": TIME_PATTERN}
_STATUS = {"enum": [s.value for s in Status]}
_STEP_STATUS = {"enum": [s.value for s in (*STEP_RESULTS, Status.KNOWN, Status.RUNNING,
                                           Status.ABORTED)]}

_KNOWN = {"type": "object", "required": ["id", "label"],
          "properties": {"id": _TEXT, "label": _TEXT, "link": _OPT_TEXT, "culprit": _OPT_TEXT}}

STEP = {
    "type": "object",
    "required": ["name", "status"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "status": _STEP_STATUS,
        "started": _TIME,
        "duration_s": {"type": ["number", "null"], "minimum": 0},
        "classification": _OPT_TEXT,
        "message": _TEXT,
        "evidence": {"type": "array", "items": _TEXT},
        "reason": _TEXT,
        "original_status": {"enum": [None, "FAIL", "ERROR"]},
        "known": {"oneOf": [{"type": "null"}, _KNOWN]},
    },
}

_VERSIONS = {"type": "object", "properties": {"hypervisor": _TEXT, "tools": _TEXT}}
INFO = {
    "type": "object",
    "properties": {
        "image_set": _TEXT,
        "image_set_hash": _TEXT,
        # Each artifact's sha256, checked against the set's manifest before the boot
        "image_set_verified": {"type": "object", "additionalProperties": {
            "type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "expected_xen_version": _OPT_TEXT,
        "xen_version": _OPT_TEXT,
        "xen_changeset": _OPT_TEXT,
        "xen_build_id": _OPT_TEXT,
        "xen_commandline": _OPT_TEXT,
        "uboot_version": _OPT_TEXT,
        "firmware": _OPT_TEXT,  # the board's firmware as the profile names it
        "boot_medium": _OPT_TEXT,  # TFTP, SD card, QEMU loader
        "emulation": _OPT_TEXT,  # "QEMU 10.0.2 -M raspi4b": an emulated board
        "target_dtb_fixups": {"type": "array", "items": {"type": "string"}},  # the farm target's
        "target_xen_cmdline": _OPT_TEXT,  # ... and its Xen options
        # A remote place a killed run of this host left acquired, freed by this run
        "place_freed": {"type": "object"},
        # A local board's lock: how long the run waited for it, and the holder it freed
        # (a killed run's pid, run id and start, written in the lock file)
        "board_lock": {"type": "object", "required": ["waited_s"], "properties": {
            "waited_s": {"type": "number", "minimum": 0},
            "freed": {"type": ["object", "null"]}}},
        # Seed §7: the Dom0 kernel booted without Xen: boots, fails, not-run, error
        "native": {"type": "object", "required": ["result"], "properties": {
            "result": {"enum": ["boots", "fails", "not-run", "error"]}, "console": _TEXT,
            "reason": _TEXT, "classification": _OPT_TEXT, "message": _TEXT, "bootargs": _TEXT,
            "seconds": {"type": "number"}}},
        "dom0_kernel": _OPT_TEXT,
        "domU_kernel": _OPT_TEXT,
        "nr_cpus": {"type": "integer"},
        "toolstack_mismatch": {"oneOf": [{"type": "null"}, _VERSIONS]},
        "xen_build": {"oneOf": [{"type": "null"}, {
            "type": "object",
            "properties": {key: _OPT_TEXT for key in (
                "build", "changeset", "commit", "config", "kind", "source", "tools_version", "tree",
                "version")}
            | {"mismatch": {"oneOf": [{"type": "null"}, _VERSIONS]},
               "config_fragments": {"type": "array", "items": _TEXT},
               "patches": {"type": "array", "items": _TEXT}}}]},
        "stage_marks": {"type": "object", "additionalProperties": {"type": "number"}},
        "doctor": {"type": "array", "items": {"type": "string"}},  # its findings before power-on
        "bisection": {"type": "object", "required": ["id", "commit"],  # a bisection's probe
                      "properties": {"id": _TEXT, "commit": _TEXT, "probe": {"type": "integer"}}},
    },
}

RECORD = {
    "type": "object",
    "required": ["schema", "target", "run_id", "arch", "host", "start", "verdict"],
    "properties": {
        "schema": {"enum": list(READABLE_SCHEMAS)},
        "target": {"type": "string", "pattern": NAME_PATTERN},
        "profile": _OPT_TEXT,
        "arch": _TEXT,
        "tester": _OPT_TEXT,
        "host": _TEXT,
        "run_id": {"type": "string", "pattern": NAME_PATTERN},
        "start": _TIME,
        "end": {"oneOf": [{"type": "null"}, _TIME]},
        "info": {"oneOf": [{"type": "null"}, INFO]},
        "steps": {"type": "array", "items": STEP},
        "verdict": _STATUS,
        "verdict_reason": _TEXT,
        "classification": _OPT_TEXT,
        "harness_pid": {"type": ["integer", "null"], "minimum": 1, "maximum": 4194304},  # Linux pid_max
    },
}


def check_record(data, where: str) -> dict:
    """`data` as a schema-2 dict, or one XenlabError line naming `where`, the key and the value.

    A schema-1 record said "board" for the target and kept the profile in info.
    """
    if not isinstance(data, dict):
        validate(data, RECORD, where)  # says "is not a mapping"
    schema = data.get("schema")
    if schema not in READABLE_SCHEMAS:
        validate({"schema": schema}, {"properties": RECORD["properties"]}, where)
    if schema == 1:
        data = dict(data)
        data.setdefault("target", data.get("board"))
        info = data.get("info")
        data["profile"] = info.get("board_profile") if isinstance(info, dict) else None
    validate(data, RECORD, where)
    return data
