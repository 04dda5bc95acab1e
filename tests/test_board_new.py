"""Issue 29: a new board in one command, from its DTB and its U-Boot binary.

`xenlab board new` writes each emulated real board's profile from the files
Debian ships for it (the kernel package's DTB, the u-boot-* build), and:
each generated profile boots the smoke test on its board's farm target with
no hand edit; every generated profile agrees with the
shipped one on the values that matter, each difference explained; the doctor
finds no error on a profile generated from any DTB in boards/ or a QEMU virt
dump; bad inputs are one line each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from support.cli import one_error_line, xenlab

from xenlab.plan.dtb import resolve_dtb
from xenlab.plan.firmware import source_dtb, uboot_binary
from xenlab.plan.profile import load_profile

REPO = Path(__file__).resolve().parent.parent
ARMHF_DTBS = "linux-image-6.1.0-50-armmp-lpae=6.1.176-1:usr/lib/linux-image-6.1.0-50-armmp-lpae/"
ARM64_DTBS = "linux-image-6.1.0-50-arm64=6.1.176-1:usr/lib/linux-image-6.1.0-50-arm64/"
SUNXI = "u-boot-sunxi=2023.01+dfsg-2+deb12u3:usr/lib/u-boot/"
# Each emulated real board from Debian's files, as its tester would type it.
BOARDS = {
    "nanopi-neo": ["--debian-dtb", ARMHF_DTBS + "sun8i-h3-nanopi-neo.dtb", "--debian-uboot",
                   SUNXI + "nanopi_neo/u-boot-sunxi-with-spl.bin", "--ram", "512M@0x40000000"],
    "orangepi-pc": ["--debian-dtb", ARMHF_DTBS + "sun8i-h3-orangepi-pc.dtb", "--debian-uboot",
                    SUNXI + "orangepi_plus/u-boot-sunxi-with-spl.bin", "--ram", "1G@0x40000000",
                    "--load-command", "fatload mmc 0:1"],
    "rpi4": ["--debian-dtb", ARM64_DTBS + "broadcom/bcm2711-rpi-4-b.dtb", "--debian-uboot",
             "u-boot-rpi=2023.01+dfsg-2+deb12u3:usr/lib/u-boot/rpi_4/u-boot.bin", "--ram", "2G",
             "--load-command", "fatload mmc 0:1"],
    "zcu102": ["--debian-dtb", ARM64_DTBS + "xilinx/zynqmp-zcu102-rev1.0.dtb"],  # Debian builds no ZynqMP U-Boot
}
# The values that matter for a boot, as dotted keys.
KEYS = ["arch", "memory.start", "memory.end", "uboot.prompt", "uboot.autoboot", "uboot.interrupt",
        "uboot.init_commands", "load_command", "boot_command", "dtb", "dtuart", "firmware.psci",
        "firmware.memory", "firmware.entry", "firmware.uboot", "sdcard.bootloader_offset",
        "sdcard.boot_partition", "xen.cmdline", "dom0.cmdline", "dom0.memory_mb", "dom0.vcpus"]
# Where a generated profile differs from the shipped one, and why that is right.
EXPLAINED = {
    ("nanopi-neo", "xen.cmdline"): "bootscrub=0 in the shipped one only saves time under TCG",
    ("orangepi-pc", "xen.cmdline"): "as nanopi-neo's",
    ("rpi4", "memory.end"): "shipped: the first bank as the Pi's firmware reports it under QEMU "
                            "(0x3b400000); --ram 2G names all of the RAM, and the plan loads from 0",
    ("rpi4", "dtuart"): "shipped names serial1; generated leaves Xen to stdout-path, which is serial1",
    ("zcu102", "dtuart"): "shipped names serial0; generated leaves Xen to stdout-path, which is serial0",
    ("zcu102", "uboot.prompt"): "no ZynqMP U-Boot binary in Debian to read it from: U-Boot's "
                                "default (the farm's zcu102 boots through QEMU's loader, no U-Boot)",
    ("zcu102", "dom0.memory_mb"): "shipped: Xen CI's 1024 on this board; generated: a quarter of the 2 GiB bank",
    ("zcu102", "firmware.psci"): "the shipped profile has no firmware: section; the DTB's /psci says it",
    ("zcu102", "firmware.memory"): "as firmware.psci",
    ("zcu102", "firmware.entry"): "as firmware.psci",
}


def get(data: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    out = {}
    tmp = tmp_path_factory.mktemp("boards")
    for name, args in BOARDS.items():
        proc = xenlab("board", "new", name, *args, "--out", str(tmp / f"{name}.yaml"))
        assert proc.returncode == 0, proc.stderr
        out[name] = tmp / f"{name}.yaml"
    return out


@pytest.mark.parametrize("name", list(BOARDS))
def test_generated_and_shipped_profiles_agree_where_it_matters(generated, name):
    made = yaml.safe_load(generated[name].read_text())
    shipped = yaml.safe_load((REPO / "boards" / f"{name}.yaml").read_text())
    differ = {key for key in KEYS if get(made, key) != get(shipped, key)}
    assert differ == {key for board, key in EXPLAINED if board == name}, \
        {key: (get(made, key), get(shipped, key)) for key in differ}
    load_profile(generated[name])  # valid


def test_every_value_says_where_it_came_from(generated):
    text = generated["nanopi-neo"].read_text()
    for line in ("arch: arm32                  # U-Boot's environment: cpu=armv7",
                 '  prompt: "=> "          # U-Boot\'s default: the binary sets no other',
                 "  autoboot: \"Hit any key to stop autoboot:\"   # the binary's autoboot line",
                 "  start: 0x40000000      # --ram; the firmware fills /memory",
                 "  psci: uboot", "  bootloader_offset: 8192"):
        assert line in text.splitlines(), line
    assert "MEASURE: U-Boot relocates itself to the top of RAM (bdinfo: relocaddr" in text
    assert "kernel_addr_r=0x42000000" in text  # U-Boot's addresses, said, not used
    pi = generated["rpi4"].read_text()
    assert '  prompt: "U-Boot> "          # the binary\'s own CONFIG_SYS_PROMPT' in pi
    assert "# dtuart: none; Xen takes stdout-path \"serial1:115200n8\" -> /soc/serial@7e215040" in pi


def _farm(tmp: Path, target: str, profile: Path) -> Path:
    text = (REPO / "farm.yaml").read_text().replace("$BASE/build/", str(REPO / "build") + "/")
    old = f"xenlab_board: {target}\n"
    assert old in text
    farm = tmp / f"farm-{target}.yaml"
    farm.write_text(text.replace(old, f"xenlab_board: {profile}\n", 1))
    return farm


@pytest.mark.parametrize("target", list(BOARDS))
def test_a_generated_profile_boots_the_smoke_test_unedited(generated, boots, target):
    record, proc = boots[target]
    assert record["verdict"] == "PASS", (proc.stdout[-3000:], record["verdict"])
    # The farm's zcu102 boots through QEMU's loader (no ZynqMP firmware upstream): no U-Boot step.
    expected = ["SKIP" if target == "zcu102" and s["name"] == "uboot" else "PASS" for s in record["steps"]]
    assert [s["status"] for s in record["steps"]] == expected, record["steps"]
    assert record["profile"] == generated[target].stem


@pytest.fixture(scope="module")
def boots(generated, tmp_path_factory) -> dict:
    """Each generated profile on its board's farm target, two at a time (a core each)."""
    out = {}

    def one(target):
        tmp = tmp_path_factory.mktemp(f"boot-{target}")
        results = tmp / "results"
        proc = subprocess.run([sys.executable, "-m", "pytest", "--lg-env",
                               str(_farm(tmp, target, generated[target])), str(REPO / "testcases"),
                               "--xenlab-target", target, "--xenlab-results", str(results),
                               "-p", "no:cacheprovider", "-q"],
                              cwd=REPO, capture_output=True, text=True, timeout=1500)
        runs = list(results.glob(f"{target}/*/run.json"))
        assert runs, proc.stdout[-3000:]
        out[target] = (json.loads(runs[0].read_text()), proc)

    for pair in (["nanopi-neo", "rpi4"], ["orangepi-pc", "zcu102"]):
        threads = [threading.Thread(target=one, args=(t,)) for t in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return out


# --------------------------------------------------------------------------- the doctor

def _doctor_inputs():
    """(board, board new arguments) for each DTB in boards/ and the QEMU virt dumps."""
    def pinned(name):
        p = load_profile(name)
        args = ["--dtb", str(source_dtb(p))]
        if p.firmware is not None and p.firmware.uboot is not None:
            args += ["--uboot", str(uboot_binary(p).path)]
        return args
    rams = {"nanopi-neo": "512M@0x40000000", "orangepi-pc": "1G@0x40000000", "rpi4": "2G",
            "cubieboard2": "1G@0x40000000"}
    out = []
    for name in ("nanopi-neo", "orangepi-pc", "rpi4", "zcu102", "cubieboard2", "juno-r2"):
        out.append((name, pinned(name) + (["--ram", rams[name]] if name in rams else [])))
    for name, uboot in (("qemu-virt-arm64", "qemu_arm64"), ("qemu-virt-arm32", "qemu_arm"),
                        ("qemu-virt-arm64-gicv3", "qemu_arm64")):
        out.append((name, ["--dtb", str(resolve_dtb(load_profile(name))),
                           "--uboot", f"/usr/lib/u-boot/{uboot}/u-boot.bin"]))
    return out


def test_doctor_finds_no_avoidable_error_on_any_generated_profile(tmp_path):
    for name, args in _doctor_inputs():
        out = tmp_path / f"{name}.yaml"
        made = xenlab("board", "new", name, *args, "--out", str(out))
        assert made.returncode == 0, (name, made.stderr)
        doc = xenlab("doctor", str(out))
        errors = [l for l in doc.stdout.splitlines() if l.startswith("error ")]
        assert not errors and doc.returncode == 0, (name, doc.stdout[-3000:])
        assert "0 error(s)" in doc.stdout


def test_the_farm_target_printed_is_one_labgrid_builds(tmp_path):
    out = tmp_path / "nanopi-neo.yaml"
    proc = xenlab("board", "new", "nanopi-neo", *BOARDS["nanopi-neo"], "--out", str(out),
                  "--farm-target")
    assert proc.returncode == 0, proc.stderr
    target = yaml.safe_load(proc.stdout.split("\n", 1)[1])["targets"]["nanopi-neo"]
    assert target["options"]["xenlab_board"].endswith("nanopi-neo.yaml")
    assert target["drivers"]["UBootDriver"] == {"prompt": "=> ",
                                                "autoboot": "Hit any key to stop autoboot:"}
    assert "TFTPProvider" in target["resources"] and target["drivers"]["XenStrategy"]["tftp_server"] == "EDIT"
    from labgrid import Environment
    env_file = tmp_path / "env.yaml"
    target["resources"]["USBSerialPort"]["match"]["ID_SERIAL_SHORT"] = "A1"
    target["resources"]["NetworkPowerPort"].update(model="gude8031", host="pdu")
    env_file.write_text(yaml.safe_dump({"imports": ["xenlab.lab.strategy"],
                                        "targets": {"nanopi-neo": target}}))
    built = Environment(str(env_file)).get_target("nanopi-neo")
    assert built is not None and built.get_driver("XenStrategy", activate=False) is not None


# --------------------------------------------------------------------------- bad inputs

@pytest.fixture
def existing(tmp_path):
    out = tmp_path / "taken.yaml"
    out.write_text("arch: arm64\n")
    return out


def test_bad_inputs_are_one_line_each(tmp_path, existing):
    neo = BOARDS["nanopi-neo"]
    not_dtb = tmp_path / "not.dtb"
    not_dtb.write_text("this is not a device tree\n")
    no_env = tmp_path / "u-boot.bin"
    no_env.write_bytes(b"\x00" * 4096 + b"U-Boot 2023.01\x00")
    cases = [
        (["nanopi-neo", "--dtb", str(not_dtb), "--out", str(tmp_path / "a.yaml")], ["not.dtb"]),
        (["nanopi-neo", *neo[:2], "--uboot", str(no_env), "--ram", "512M@0x40000000",
          "--out", str(tmp_path / "b.yaml")], ["--uboot", "no U-Boot default environment"]),
        (["taken", *neo, "--out", str(existing)], ["taken.yaml exists", "--force"]),
        (["../etc/passwd", *neo], ["board name '../etc/passwd' must match"]),
        (["Bad Name", *neo], ["board name 'Bad Name' must match"]),
        (["x", "--debian-dtb", "linux-image-xenlab-nope-arm64:usr/lib/x.dtb"],
         ["--debian-dtb 'linux-image-xenlab-nope-arm64:usr/lib/x.dtb'", "apt-cache show", "No packages found"]),
        (["x", "--debian-dtb", ARMHF_DTBS + "sun8i-h3-nanopi-nope.dtb", "--out", str(tmp_path / "c.yaml")],
         ["is not in linux-image-6.1.0-50-armmp-lpae 6.1.176-1"]),
        (["nanopi-neo", *neo[:4], "--out", str(tmp_path / "d.yaml")],
         ["/memory is missing", "--ram SIZE[@START]"]),
        (["x", "--dtb", str(not_dtb), "--debian-dtb", neo[1]], ["give the board's DTB"]),
        (["nanopi-neo", *neo[:4], "--ram", "lots", "--out", str(tmp_path / "f.yaml")], ["--ram 'lots'"]),
        (["nanopi-neo", *neo, "--load-command", "run evil; reset", "--out", str(tmp_path / "e.yaml")],
         ["load_command"]),
    ]
    for args, needles in cases:
        one_error_line(xenlab("board", "new", *args), *needles)
    assert existing.read_text() == "arch: arm64\n"  # never overwritten
    assert not list(tmp_path.glob("[a-f].yaml")) and not list(tmp_path.glob(".*.yaml.*"))
