"""`xenlab stage`: a board's boot files under their load names, and boot.scr, on an SD card.

The card is a tmp directory; the board is rpi4's profile (`fatload mmc 0:1`)
with a compiled DTB in place of the Debian one, and the image set is written
offline (tests/support/imageset.py): nothing is downloaded or booted.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from support.imageset import write_image_set
from xenlab.cli import arguments, main
from xenlab.plan.prepare import prepare
from xenlab.plan.profile import boards_dir, list_boards

SD_DTS = """/dts-v1/;
/memreserve/ 0x0 0x1000;
/ {
    #address-cells = <2>;
    #size-cells = <1>;
    compatible = "raspberrypi,4-model-b", "brcm,bcm2711";
    aliases { serial1 = "/soc/serial@7e215040"; };
    chosen { stdout-path = "serial1:115200n8"; };
    memory@0 { device_type = "memory"; reg = <0x0 0x0 0x3b400000>; };
    cpus {
        #address-cells = <1>;
        #size-cells = <0>;
        enable-method = "spin-table";
        cpu@0 { device_type = "cpu"; compatible = "arm,cortex-a72"; reg = <0>;
                cpu-release-addr = <0x0 0xd8>; };
    };
    soc {
        #address-cells = <1>;
        #size-cells = <1>;
        serial@7e215040 { compatible = "brcm,bcm2835-aux-uart"; reg = <0x7e215040 0x40>; };
    };
};
"""
HASH_NAME = re.compile(r"[0-9a-f]{32,}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def card_state(card: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (sha256(p) if p.is_file() else "dir", p.stat().st_ino)
            for p in sorted(card.iterdir())}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    (root / "sd.dts").write_text(SD_DTS)
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(root / "sd.dtb"),
                    str(root / "sd.dts")], check=True)

    def profile(name: str, **change) -> Path:
        data = yaml.safe_load((boards_dir() / "rpi4.yaml").read_text())
        data.update(dtb={"file": str(root / "sd.dtb")}, **change)
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return {"root": root, "board": profile("sdcard-board"), "images": write_image_set(root / "set"),
            "tftp-board": profile("tftp-board", load_command="tftpb",
                                  uboot={**yaml.safe_load((boards_dir() / "rpi4.yaml").read_text())["uboot"],
                                         "init_commands": ["setenv autoload no", "dhcp"]})}


@pytest.fixture
def env(lab, monkeypatch, tmp_path):
    monkeypatch.setenv("XENLAB_CACHE", str(lab["root"] / "cache"))
    card = tmp_path / "card"
    card.mkdir()
    return {**lab, "card": card, "plan": prepare(lab["board"], lab["images"]).plan}


def stage(capsys, env, *extra, board="board") -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = main(["stage", str(env[board]), "--to", str(env["card"]), "--images", str(env["images"]),
                 *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines(), err


def refused(capsys, env, *extra, needles=(), board="board") -> None:
    before = card_state(env["card"])
    code, _, err = stage(capsys, env, *extra, board=board)
    lines = [line for line in err.splitlines() if line.startswith("xenlab: error: ")]
    assert code == 2 and len(lines) == 1 and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert card_state(env["card"]) == before, "a refused stage wrote to the card"


# --------------------------------------------------------------------------- load names

@pytest.mark.parametrize("name", list_boards())
def test_every_file_a_plan_loads_has_a_readable_name(name):
    """No cache name reaches the board: the DTB loads as <board>.dtb, the images as themselves."""
    plan = prepare(name).plan
    names = list(plan.files())
    assert plan.placement("dtb").filename == f"{name}.dtb"
    assert all(len(n) <= 40 and not HASH_NAME.search(n) for n in names), names
    assert sorted(names) == sorted([f"{name}.dtb", "xen", "dom0-kernel", "dom0-rootfs.cpio.gz"])
    # Every rendering uses the same names: the load commands and the table.
    loads = [c.split()[-1] for c in plan.uboot_commands() if c.startswith(plan.profile.load_command)]
    assert loads == [p.filename for p in plan.placements] and set(loads) == set(names)
    assert all(n in plan.table() for n in names)


# --------------------------------------------------------------------------- staging

def test_stage_copies_exactly_the_plans_files_under_their_load_names(capsys, env):
    code, out, err = stage(capsys, env)
    assert code == 0, err
    plan, card = env["plan"], env["card"]
    files = plan.files()
    assert sorted(os.listdir(card)) == sorted([*files, "boot.scr"])
    for name, path in files.items():
        assert sha256(card / name) == sha256(path), name
    assert files["sdcard-board.dtb"].name != "sdcard-board.dtb"  # the cache keeps its own name
    rows = {line.split()[0]: line.split() for line in out[1:-2]}
    assert sorted(rows) == sorted(os.listdir(card))
    for name, row in rows.items():
        assert row[-2] == sha256(card / name)[:16] and row[-1] == "new", row
    assert out[-2] == "at the U-Boot prompt:"
    assert out[-1] == "; ".join(plan.script_commands())
    assert re.fullmatch(r"fatload mmc 0:1 (0x[0-9a-f]+) boot\.scr; source \1", out[-1])


def test_the_staged_boot_script_loads_exactly_the_staged_files(capsys, env):
    assert stage(capsys, env)[0] == 0
    plan, scr = env["plan"], env["card"] / "boot.scr"
    listing = subprocess.run(["mkimage", "-l", str(scr)], check=True, capture_output=True,
                             text=True).stdout
    assert re.search(r"Image Type:\s+AArch64 Linux Script \(uncompressed\)", listing)
    # A script image: 64-byte header, a table of lengths ending in 0, then the script.
    data = scr.read_bytes()
    length, terminator = struct.unpack_from(">II", data, 64)
    assert terminator == 0
    script = data[72:72 + length].decode().splitlines()
    assert script == plan.uboot_commands()
    loads = [line.split() for line in script if line.startswith("fatload mmc 0:1 ")]
    assert [(int(a, 16), n) for *_, a, n in loads] == [(p.addr, p.filename) for p in plan.placements]
    assert sorted(n for *_, n in loads) == sorted(set(os.listdir(env["card"])) - {"boot.scr"})


def test_restaging_changes_nothing(capsys, env):
    assert stage(capsys, env)[0] == 0
    before = card_state(env["card"])
    code, out, _ = stage(capsys, env)
    assert code == 0 and card_state(env["card"]) == before  # same content, same inodes
    assert all(line.endswith(" unchanged") for line in out[1:-2]) and len(out) == len(before) + 3


def test_a_different_file_of_the_same_name_is_refused_without_force(capsys, env):
    assert stage(capsys, env)[0] == 0
    (env["card"] / "xen").write_bytes(b"someone else's Xen")
    refused(capsys, env, needles=(str(env["card"] / "xen"), "--force"))
    code, out, _ = stage(capsys, env, "--force")
    assert code == 0 and sha256(env["card"] / "xen") == env["plan"].placement("xen").sha256
    assert [line.split()[-1] for line in out[1:-2] if line.startswith("xen ")] == ["replaced"]


def test_a_conflict_is_found_before_anything_is_written(capsys, env):
    (env["card"] / "sdcard-board.dtb").write_bytes(b"the firmware's own DTB")
    refused(capsys, env, needles=("sdcard-board.dtb",))
    assert os.listdir(env["card"]) == ["sdcard-board.dtb"]
    assert not [p for p in env["card"].iterdir() if p.name.startswith(".")]  # no temp left


def test_a_tftp_board_stages_into_its_tftp_root(capsys, env):
    code, out, err = stage(capsys, env, board="tftp-board")
    assert code == 0, err
    plan = prepare(env["tftp-board"], env["images"]).plan
    assert sorted(os.listdir(env["card"])) == sorted([*plan.files(), "boot.scr"])
    assert "tftp-board.dtb" in plan.files()
    assert out[-1] == "setenv autoload no; dhcp; " + "; ".join(plan.script_commands())
    assert out[-1].endswith(f"tftpb {plan.script_addr:#x} boot.scr; source {plan.script_addr:#x}")


# --------------------------------------------------------------------------- refusals

def test_a_directory_in_the_way_is_refused(capsys, env):
    (env["card"] / "xen").mkdir()
    refused(capsys, env, "--force", needles=(str(env["card"] / "xen"), "directory"))


def test_a_card_that_cannot_be_written_is_refused(capsys, env, monkeypatch):
    env["card"].chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: let the check see what a user would
        real = os.access
        monkeypatch.setattr(arguments.os, "access", lambda p, mode: False if Path(p) == env["card"]
                            and mode & os.W_OK else real(p, mode))
    try:
        refused(capsys, env, needles=("argument --to", str(env["card"]), "cannot be written"))
    finally:
        env["card"].chmod(0o755)


def test_an_image_set_for_another_arch_is_refused(capsys, env, tmp_path):
    capsys.readouterr()
    code = main(["stage", "qemu-virt-arm32", "--to", str(env["card"]), "--images", str(env["images"])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(env["images"]) in err and "arm32" in err
    assert not os.listdir(env["card"])
