"""Issue 13: the doctor and the boot plan on real boards' DTBs (Debian's arm64 kernel
package) against the real Xen under test (the bundled 4.17.5 sets' binaries and
xen.config), and a Dom0 rootfs the tester brings."""

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from xenlab.errors import Severity, XenlabError
from xenlab.images.imageset import build_image_set
from xenlab.images.manifest import manifest_path
from xenlab.images.readiness import DOM0_ROOT_PROMPT, dom0_readiness, ready_pattern
from xenlab.images.xenfeatures import xen_under_test
from xenlab.plan.bootplan import BootPlan
from xenlab.plan.doctor import doctor
from xenlab.plan.dtb import resolve_dtb
from xenlab.plan.prepare import boot_files
from xenlab.plan.profile import boards_dir, load_profile

KERNEL_DTBS = "usr/lib/linux-image-6.1.0-50-arm64/"


def board(tmp_path, name: str, dtb: str, memory: tuple[int, int], **changes):
    """A profile for a real board: rpi4's Debian kernel package, another DTB in it."""
    data = copy.deepcopy(yaml.safe_load((boards_dir() / "rpi4.yaml").read_text()))
    data["dtb"]["debian"]["path"] = KERNEL_DTBS + dtb
    data["memory"] = {"start": memory[0], "end": memory[1]}
    data.pop("dtuart")  # from /chosen/stdout-path
    for key in ("firmware", "sdcard"):  # the Pi's own: U-Boot, card layout
        data.pop(key)
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_profile(path)


@pytest.fixture(scope="module")
def arm64_set():
    return build_image_set("arm64")


def codes(findings):
    return {f.code: f for f in findings}


def check(profile, images):
    return codes(doctor(profile, boot_files(images), xen=xen_under_test(images)))


def test_rockpro64_dtuart_and_speed_come_from_stdout_path(tmp_path, arm64_set):
    """stdout-path 'serial2:1500000n8': dtuart serial2 (options stripped and shown), the console
    at 1500000 baud; no /memory (U-Boot adds it); A72+A53 without hmp-unsafe."""
    profile = board(tmp_path, "rockpro64", "rockchip/rk3399-rockpro64.dtb", (0x200000, 0x7e000000))
    found = check(profile, arm64_set)
    console = found["console"].message
    assert "dtuart serial2 (from stdout-path)" in console
    assert "stdout-path's options ':1500000n8' are not part of dtuart" in console
    assert "console 1500000 baud (from stdout-path)" in console
    missing = found["memory-node-missing"]
    assert missing.severity is Severity.WARN and "profile's memory 0x200000-0x7e000000" in missing.message
    assert "U-Boot or the firmware must fill in /memory" in missing.hint
    hmp = found["cpus-heterogeneous"]
    assert "arm,cortex-a53, arm,cortex-a72" in hmp.message and "hmp-unsafe=true" in hmp.hint
    assert not [f for f in found.values() if f.severity is Severity.ERROR], found
    # The plan writes what the doctor derived, and libfdt reads it back.
    plan = BootPlan.build(profile, boot_files(arm64_set), resolve_dtb(profile))
    assert " dtuart=serial2 " in plan.xen_bootargs and plan.console.baudrate == 1500000
    out = tmp_path / "c.dtb"
    plan.offline_dtb(out)
    bootargs = subprocess.run(["fdtget", "-t", "s", str(out), "/chosen", "xen,xen-bootargs"],
                              capture_output=True, text=True, check=True).stdout
    assert "dtuart=serial2 " in bootargs
    # With hmp-unsafe, Xen brings up every core: no warning.
    unsafe = board(tmp_path, "rockpro64-hmp", "rockchip/rk3399-rockpro64.dtb", (0x200000, 0x7e000000),
                   xen={"cmdline": "hmp-unsafe=true"})
    assert "cpus-heterogeneous" not in check(unsafe, arm64_set)


def test_a_uart_this_xen_cannot_drive_is_an_error_naming_its_compatible(tmp_path, arm64_set):
    """i.MX8MQ's fsl,imx8mq-uart: Xen 4.17.5 has no driver, so Xen would print nothing."""
    profile = board(tmp_path, "imx8mq-evk", "freescale/imx8mq-evk.dtb", (0x40000000, 0x100000000))
    f = check(profile, arm64_set)["uart-no-driver"]
    assert f.severity is Severity.ERROR
    assert "fsl,imx8mq-uart, fsl,imx6q-uart" in f.message and "Xen 4.17.5 has no driver" in f.message
    # xen.git gained imx-uart in August 2026; no Xen binary xenlab has (4.17, trixie's 4.20) has it.
    assert f.hint.startswith("fsl,imx6q-uart is driven by imx-uart (CONFIG_HAS_IMX_UART) in "
                             "xen.git master at c447b7308b13 (2026-08-20), and by no Xen binary "
                             "xenlab has"), f.hint
    # Without images the doctor cannot know the Xen: the board alone passes.
    assert "uart-no-driver" not in codes(doctor(profile))


def test_xenlab_doctor_checks_the_bundled_xen_without_being_asked(tmp_path, arm64_set):
    """`xenlab doctor imx8mq-evk`, no option: the bundled 4.17.5 cannot drive its UART, one error;
    `--no-images` checks the profile and DTB alone."""
    profile = board(tmp_path, "imx8mq-evk", "freescale/imx8mq-evk.dtb", (0x40000000, 0x100000000))
    xenlab = [str(Path(__file__).resolve().parent.parent / ".venv/bin/xenlab"), "doctor"]
    proc = subprocess.run([*xenlab, str(profile.path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^1 error\(s\)", proc.stdout, re.M), proc.stdout
    assert re.search(r"^error uart-no-driver: .*Xen 4\.17\.5 has no driver", proc.stdout, re.M)
    alone = subprocess.run([*xenlab, str(profile.path), "--no-images"], capture_output=True,
                           text=True, timeout=600)
    assert alone.returncode == 0 and re.search(r"^0 error\(s\)", alone.stdout, re.M), alone.stdout


def test_a_uart_a_later_xen_drives_names_that_xen_from_its_binary(tmp_path, arm64_set):
    """AM654's ti,am654-uart: Debian trixie's real Xen 4.20 binary drives it (omap-uart,
    CONFIG_HAS_OMAP) and 4.17.5 does not; the hint says so from the binaries, and the
    doctor with the trixie set finds no UART error."""
    trixie = build_image_set("arm64", manifest=manifest_path("arm64", "arm64-trixie"))
    assert xen_under_test(trixie).matches("ti,am654-uart")
    assert not xen_under_test(arm64_set).matches("ti,am654-uart")
    profile = board(tmp_path, "am654", "ti/k3-am654-base-board.dtb", (0x80000000, 0x100000000))
    f = check(profile, arm64_set)["uart-no-driver"]
    assert "ti,am654-uart" in f.message
    assert f.hint.startswith(f"ti,am654-uart is driven by omap-uart (CONFIG_HAS_OMAP) in Xen "
                             f"{trixie.xen_version}, whose binary xenlab has; this is Xen 4.17.5: "
                             "test that Xen"), f.hint
    assert "uart-no-driver" not in check(profile, trixie)
    assert "console 115200 baud (from stdout-path)" in check(profile, arm64_set)["console"].message


def test_a_gic_this_xen_lacks_is_an_error(tmp_path):
    """QEMU's arm32 virt board with gic-version=3: Debian's arm32 Xen 4.17 has only GICv2."""
    data = yaml.safe_load((boards_dir() / "qemu-virt-arm32.yaml").read_text())
    args = data["dtb"]["qemu"]["args"]
    machine = args.index("-machine") + 1
    args[machine] = args[machine].replace("gic-version=2", "gic-version=3")
    path = tmp_path / "virt32-gicv3.yaml"
    path.write_text(yaml.safe_dump(data))
    profile, images = load_profile(path), build_image_set("arm32")
    f = check(profile, images)["gic-unsupported"]
    assert "arm,gic-v3" in f.message and "Xen 4.17.5 has no driver" in f.message
    # 4.17's arm32 Kconfig has no GICV3 at all; master offers it on arm32 (not by default).
    assert "in xen.git master at c447b7308b13" in f.hint
    assert "this Xen's Kconfig has no CONFIG_GICV3: build a Xen that has it" in f.hint, f.hint
    assert "gic-unsupported" not in check(load_profile("qemu-virt-arm32"), images)


def test_dtuart_with_options_is_refused_with_the_fix(tmp_path):
    data = yaml.safe_load((boards_dir() / "qemu-virt-arm64.yaml").read_text())
    data["dtuart"] = "serial2:1500000n8"
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(XenlabError) as exc:
        load_profile(path)
    assert "drop ':1500000n8'" in str(exc.value) and "console: {baudrate: 1500000}" in str(exc.value)


def test_a_tester_rootfs_is_ready_at_its_prompt():
    assert dom0_readiness({})["dom0_ready_marker"] == "XENLAB-DOM0-READY"
    theirs = dom0_readiness({"dom0-rootfs.cpio.gz": ("r", "d")})
    assert theirs == {"dom0_ready_marker": None, "dom0_ready_prompt": DOM0_ROOT_PROMPT}
    import re
    prompt = re.compile(ready_pattern(theirs))
    for seen in ("\r\n~ # ", "\r\nroot@debian:~# ", "\r\n\x1b[?2004hroot@box:/# "):
        assert prompt.search(seen), seen
    for not_yet in ("\r\n[    1.2] #0 CPU online\r\n", "\r\nlogin: ", "\r\n$ "):
        assert not prompt.search(not_yet), not_yet
    marked = dom0_readiness({"dom0-rootfs.cpio.gz": ("r", "d")}, marker="BOOTED")
    assert ready_pattern(marked) == "BOOTED" and marked["dom0_ready_prompt"] == DOM0_ROOT_PROMPT
    for kw, why in (({"prompt": "("}, "is not a regular expression"),
                    ({"prompt": "x*"}, "matches an empty console"),
                    # 4.2 s on 24 'a's and a 'b' in Python's re (#28): refused after a 2 s trial
                    ({"prompt": "(a+)+$"}, "backtracks catastrophically"),
                    ({"prompt": r"(\w+\s?)+# $"}, "backtracks catastrophically")):
        with pytest.raises(XenlabError, match=why):
            dom0_readiness({"dom0-rootfs.cpio.gz": ("r", "d")}, **kw)
    with pytest.raises(XenlabError, match="add --dom0-rootfs.cpio.gz"):
        dom0_readiness({}, prompt="# $")
