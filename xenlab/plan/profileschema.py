"""The board profile's schema: every key a `boards/<name>.yaml` may hold, and its shape.

Kept apart from the reader (plan/profile.py) so the vocabulary reads as one
list; jsonschema checks a profile against it and `schema.validate` words the
first error as one line naming the key.
"""

from __future__ import annotations

STAGES = ("uboot", "xen", "dom0", "shell", "domu")

_INT = {"type": "integer", "minimum": 0}
_TEXT = {"type": "string", "minLength": 1}
_CMDLINE = {"type": "string"}
_SECONDS = {"type": "number", "exclusiveMinimum": 0}
_INIT_COMMAND = {"type": "string", "minLength": 1, "pattern": r"^[^\n\r]+$"}


def _obj(properties: dict, required: list[str] | None = None, **extra) -> dict:
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "required": list(properties) if required is None else required, **extra}


# A file inside a pinned Debian package: a DTB, a U-Boot build (cached by the .deb's sha256).
_DEBIAN_FILE = _obj({
    "package": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9.+-]*$"},
    "version": {"type": "string", "pattern": r"^[0-9A-Za-z.+~:-]+$"},
    "sha256": {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
    "arch": {"enum": ["arm64", "armhf", "armel", "all"]},
    "path": {"type": "string", "pattern": r"^[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$"},
})
# A change to the DTB before anything else reads it: a node disabled, or its reg replaced
# (an emulator's layout where it differs from the board's, e.g. QEMU's ZynqMP GIC).
_NODE = {"type": "string", "pattern": r"^/[^\s\"'$;\\#]+$"}
FIXUP_SCHEMA = {"oneOf": [
    _obj({"disable": _NODE, "why": _TEXT}),
    _obj({"remove": _NODE, "why": _TEXT}),
    _obj({"node": _NODE, "reg": {"type": "array", "minItems": 1,
                                 "items": {**_INT, "maximum": 0xffffffff}},  # 32-bit cells
          "why": _TEXT}),
]}
# A file on a card's boot partition: a plain name, as the board's ROM firmware looks it up.
_CARD_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"}


SCHEMA = _obj({
    "description": _TEXT,
    "notes": {"type": "string"},
    "arch": {"enum": ["arm64", "arm32"]},
    "emulated": {"type": "boolean"},
    "memory": _obj({
        "start": _INT,
        "end": _INT,
        "reserved": {"type": "array", "items": _obj({"start": _INT, "end": _INT, "why": _TEXT})},
    }, required=["start", "end"]),
    "uboot": _obj({
        "prompt": _TEXT,
        "autoboot": _TEXT,
        "interrupt": _TEXT,
        "init_commands": {"type": "array", "items": {"oneOf": [_INIT_COMMAND, {
            "type": "object", "additionalProperties": False, "required": ["command", "raw"],
            "properties": {"command": _INIT_COMMAND, "raw": {"type": "boolean"}}}]}},
        # The longest command line U-Boot reads (its CONFIG_SYS_CBSIZE; default 2048)
        "max_command": {"type": "integer", "minimum": 256, "maximum": 65536},
    }, required=["prompt", "autoboot", "interrupt"]),
    # tftpb / tftpboot, or a filesystem load: `load mmc 0:1`, `fatload usb 0:1`, `ext4load scsi 0:2`
    "load_command": {"type": "string", "pattern":
                     r"^(tftpb|tftpboot|(load|fatload|ext2load|ext4load) [a-z]+ [0-9]+(:[0-9a-f]+)?)$"},
    "boot_command": {"enum": ["booti", "bootz"]},
    "boot_command_why": _TEXT,
    "dtb": {"type": "object", "minProperties": 1, "maxProperties": 1,
            "additionalProperties": False, "properties": {
                "file": _TEXT,
                "debian": {**_DEBIAN_FILE, "properties": {
                    **_DEBIAN_FILE["properties"],
                    "path": {"type": "string", "pattern": r"^[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*\.dtb$"}}},
                "qemu": _obj({
                    "binary": {"type": "string", "pattern": r"^qemu-system-[a-z0-9_]+$"},
                    "args": {"type": "array", "items": {"type": "string"}},
                }),
            }},
    "dtb_fixups": {"type": "array", "items": FIXUP_SCHEMA},
    # An alias from /aliases or a full node path (seed §8.6); without it, stdout-path's
    "dtuart": {"type": "string", "pattern": r"^([a-z][a-z0-9_-]*|/[^\s\"'$;\\#:]*)$"},
    # The console's speed; without it, stdout-path's options, else 115200
    "console": _obj({"baudrate": {"type": "integer", "minimum": 50, "maximum": 20000000}}),
    "xen": _obj({"cmdline": _CMDLINE}),
    "dom0": _obj({"cmdline": _CMDLINE, "memory_mb": {"type": "integer", "minimum": 1},
                  "vcpus": {"type": "integer", "minimum": 1}}),
    # `native`: the Dom0 kernel booted without Xen to its ready marker (seed §7); optional,
    # since alone it brings up every CPU, which under TCG is slower than Dom0's one vCPU
    "timeouts": _obj({**{stage: _SECONDS for stage in STAGES}, "native": _SECONDS},
                     required=list(STAGES)),
    "timeout_multiplier": _SECONDS,
    # What the firmware does at boot, before Xen sees the DTB (the doctor reads it):
    "firmware": _obj({
        # Who gives the CPUs PSCI: the DTB's own /psci node, or the firmware that adds it
        # (U-Boot's CONFIG_ARMV7_PSCI, TF-A), or nobody (spin-table, or one CPU)
        "psci": {"enum": ["dtb", "uboot", "tf-a", "none"]},
        # Who writes /memory: the DTB, or the firmware from the DRAM it found
        "memory": {"enum": ["dtb", "firmware"]},
        # The mode the OS is entered in: Xen needs non-secure EL2 (arm64) or HYP (arm32)
        "entry": {"enum": ["el2", "hyp"]},
        "why": _TEXT,
        # The board's own U-Boot: the one an emulated board's card carries, and the
        # binary whose strings prove what it adds (psci) where Debian builds it
        "uboot": _obj({"debian": _DEBIAN_FILE}),
    }, required=["why"]),
    # The board's SD card, for a farm that writes it (an emulated board, an SD mux).
    "sdcard": _obj({
        "size_mb": {"type": "integer", "minimum": 8, "maximum": 65536},
        # The boot ROM reads the bootloader raw at this byte offset (Allwinner: 8 KiB)
        "bootloader_offset": {"type": "integer", "minimum": 512},
        # A FAT boot partition from 1 MiB: the plan's files and boot.scr (when load_command
        # reads mmc), and what the ROM firmware reads from it by name
        "boot_partition": _obj({
            "firmware_files": {"type": "object", "additionalProperties": {"enum": ["uboot", "dtb"]},
                               "propertyNames": _CARD_NAME},
        }, required=[]),
        "why": _TEXT,
    }, required=["size_mb", "why"]),
}, required=["description", "arch", "emulated", "memory", "uboot", "load_command",
             "boot_command", "boot_command_why", "dtb", "xen", "dom0",
             "timeouts", "timeout_multiplier"])
