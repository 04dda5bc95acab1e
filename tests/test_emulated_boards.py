"""Issue 25: real boards, emulated: their own U-Boot from Debian, their card, their facts.

The boots themselves are in tests/test_testday.py (`xenlab testday --targets
nanopi-neo,orangepi-pc,rpi4,zcu102`); this file checks what a boot relies on:
what the boards' U-Boot binaries prove, the cards xenlab writes for them, the
doctor on their profiles, and the plan rendered for QEMU's loader.
"""

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from xenlab.errors import Severity, XenlabError
from xenlab.images.imageset import build_image_set
from xenlab.plan.doctor import doctor
from xenlab.plan.firmware import UBootBinary, source_dtb, uboot_binary
from xenlab.plan.prepare import prepare
from xenlab.plan.profile import boards_dir, load_profile
from xenlab.plan.sdcard import PARTITION_START, write_card
from xenlab.run.steps import verdict_label

REAL = ["nanopi-neo", "orangepi-pc", "rpi4", "zcu102"]


def variant(tmp_path: Path, base: str, change, name: str = "variant"):
    data = copy.deepcopy(yaml.safe_load((boards_dir() / f"{base}.yaml").read_text()))
    change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- what U-Boot proves

def test_the_sunxi_uboot_adds_psci_and_enters_hyp_the_pi_one_does_not():
    neo = uboot_binary(load_profile("nanopi-neo"))
    assert neo.version == "2023.01+dfsg-2+deb12u3"
    assert neo.adds_psci and neo.nonsec
    pi = uboot_binary(load_profile("rpi4"))
    assert pi.version == "2023.01+dfsg-2+deb12u3" and not pi.adds_psci


def test_a_psci_client_is_not_a_psci_provider():
    """QEMU's U-Boot knows PSCI as a client (drivers/firmware/psci.c): it adds no /psci."""
    client = UBootBinary.read(Path("/usr/lib/u-boot/qemu_arm/u-boot.bin"))
    assert b"arm,psci" in client.path.read_bytes()
    assert not client.adds_psci


def test_a_psci_claim_the_binary_contradicts_is_an_error(tmp_path):
    """firmware.psci: uboot with the Pi's U-Boot (no PSCI code): the doctor says so."""
    def wrong(d):
        d["firmware"]["uboot"] = yaml.safe_load((boards_dir() / "rpi4.yaml").read_text())[
            "firmware"]["uboot"]
    found = {f.code: f for f in doctor(load_profile(variant(tmp_path, "nanopi-neo", wrong)))}
    err = found["firmware-psci-unproven"]
    assert err.severity is Severity.ERROR and "u-boot-rpi" in err.message
    assert "key 'firmware.psci'" in err.message and "CONFIG_ARMV7_PSCI" in err.hint


@pytest.mark.parametrize("name", ["nanopi-neo", "orangepi-pc"])
def test_doctor_trusts_the_psci_the_firmware_adds(name):
    found = {f.code: f for f in doctor(load_profile(name))}
    assert found["psci-from-firmware"].severity is Severity.INFO
    assert "psci-missing" not in found
    assert "adds /psci at boot" in found["firmware"].message


def test_without_firmware_facts_a_missing_psci_is_still_flagged(tmp_path):
    path = variant(tmp_path, "nanopi-neo", lambda d: [d.pop(k) for k in ("firmware", "sdcard")])
    found = {f.code: f for f in doctor(load_profile(path))}
    assert found["psci-missing"].severity is Severity.WARN
    path = variant(tmp_path, "nanopi-neo", lambda d: d["firmware"].update(psci="none"), "none")
    found = {f.code: f for f in doctor(load_profile(path))}
    assert found["psci-missing"].severity is Severity.ERROR  # the profile says nobody adds it


@pytest.mark.parametrize("name", REAL)
def test_doctor_gives_no_error_on_the_emulated_boards_with_their_xen(name):
    proc = subprocess.run([str(Path(__file__).resolve().parent.parent / ".venv/bin/xenlab"),
                           "doctor", name], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"^0 error\(s\)", proc.stdout, re.M)
    assert "info  plan: images fit" in proc.stdout  # the bundled set was checked too


# --------------------------------------------------------------------------- the cards

@pytest.fixture(scope="module")
def arm32_set():
    return build_image_set("arm32")


def _partition_files(image: Path) -> dict[str, int]:
    out = subprocess.run(["mdir", "-b", "-i", f"{image}@@{PARTITION_START}", "::"],
                         capture_output=True, text=True, check=True).stdout
    files = {}
    for line in out.split():
        name = line.split("/")[-1]
        size = subprocess.run(["mtype", "-i", f"{image}@@{PARTITION_START}", f"::{name}"],
                              capture_output=True, check=True).stdout
        files[name] = len(size)
    return files


def test_the_orange_pi_card_carries_uboot_and_every_boot_file(tmp_path, arm32_set):
    board = prepare("orangepi-pc", arm32_set)
    card = write_card(board.profile, board.plan, tmp_path / "card.img")
    data = card.path.read_bytes()
    assert len(data) == 128 << 20
    spl = uboot_binary(board.profile).path.read_bytes()
    assert data[8192:8192 + len(spl)] == spl  # where the H3's boot ROM reads it
    table = subprocess.run(["sfdisk", "--dump", str(card.path)], capture_output=True, text=True,
                           check=True).stdout
    assert re.search(r"start=\s*2048,.*type=c", table)
    files = _partition_files(card.path)
    for p in board.plan.placements:
        assert files[p.filename] == p.size, p
    assert "boot.scr" in files and set(card.files) == set(files)


def test_the_pi_card_carries_what_its_firmware_reads(tmp_path):
    board = prepare("rpi4")
    card = write_card(board.profile, board.plan, tmp_path / "rpi4" / "card.img")
    uboot = uboot_binary(board.profile).path
    assert (card.boot_dir / "u-boot.bin").read_bytes() == uboot.read_bytes()
    assert (card.boot_dir / "bcm2711-rpi-4-b.dtb").read_bytes() == \
        source_dtb(board.profile).read_bytes()
    files = _partition_files(card.path)
    assert files["u-boot.bin"] == uboot.stat().st_size and "rpi4.dtb" in files
    assert card.bootloader is None  # the Pi's ROM reads files, not raw sectors


def test_the_neo_card_holds_only_uboot(tmp_path):
    profile = load_profile("nanopi-neo")
    card = write_card(profile, None, tmp_path / "card.img")
    assert card.files == () and card.path.stat().st_size == 64 << 20
    assert subprocess.run(["sfdisk", "--dump", str(card.path)], capture_output=True).returncode != 0


@pytest.mark.parametrize("change,message", [
    (lambda d: d["sdcard"].update(size_mb=100), "key 'sdcard.size_mb': 100 is not a power of two"),
    (lambda d: d["firmware"].pop("uboot"), "key 'sdcard': writes the board's U-Boot, but "
                                           "firmware.uboot does not say which build"),
    (lambda d: d["sdcard"].update(bootloader_offset=2 << 20),
     "key 'sdcard.bootloader_offset': 0x200000 is inside the boot partition"),
    (lambda d: d["sdcard"].update(extra=1), "key 'sdcard.extra': unknown key"),
    (lambda d: d["firmware"].update(psci="maybe"), "key 'firmware.psci': 'maybe' is not one of"),
])
def test_bad_card_and_firmware_data_is_one_line(tmp_path, arm32_set, change, message):
    path = variant(tmp_path, "orangepi-pc", change)
    with pytest.raises(XenlabError) as exc:
        board = prepare(str(path), arm32_set)
        write_card(board.profile, board.plan, tmp_path / "card.img")
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "card.img").exists()


# --------------------------------------------------------------------------- QEMU as the loader

def test_the_loader_rendering_places_every_file_at_the_plans_address(tmp_path):
    board = prepare("zcu102")
    dtb = board.plan.offline_dtb(tmp_path / "zcu102.dtb")
    args = board.plan.qemu_loader_args(dtb)
    assert args[:4] == ["-kernel", str(board.plan.placement("xen").path), "-dtb", str(dtb)]
    loads = [a for a in args if a.startswith("loader,")]
    for role in ("dom0-kernel", "dom0-ramdisk"):
        p = board.plan.placement(role)
        assert f"loader,file={p.path},addr={p.addr:#x},force-raw=on" in loads
    assert len(loads) == 2  # Xen and the DTB are QEMU's -kernel and -dtb


# --------------------------------------------------------------------------- verdicts

def test_a_pass_with_skipped_steps_says_so():
    assert verdict_label("PASS", ["PASS", "SKIP", "PASS", "SKIP"]) == "PASS (2 skipped)"
    assert verdict_label("PASS", ["PASS"]) == "PASS"
    assert verdict_label("FAIL", ["FAIL", "SKIP"]) == "FAIL"
