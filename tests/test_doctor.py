"""`xenlab doctor` on every shipped board's real DTB, and on broken variants."""

from __future__ import annotations

import copy
import gzip
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from xenlab.images import debs
from xenlab.plan.profile import boards_dir, load_profile
from xenlab.plan.doctor import doctor
from xenlab.plan.dtb import resolve_dtb
from xenlab.errors import Finding, Severity
from xenlab.images.imageformat import image_format, image_info

MiB = 1 << 20
SHIPPED = ["qemu-virt-arm64", "qemu-virt-arm32", "rpi4", "zcu102", "juno-r2", "cubieboard2",
           "nanopi-neo", "orangepi-pc"]


# --------------------------------------------------------------------------- helpers

def fdtget(dtb: Path, *args: str) -> str | None:
    proc = subprocess.run(["fdtget", str(dtb), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def subnodes(dtb: Path, path: str) -> list[str]:
    out = fdtget(dtb, "-l", path)
    return out.split() if out else []


def node_exists(dtb: Path, path: str) -> bool:
    return subprocess.run(["fdtget", "-p", str(dtb), path], capture_output=True).returncode == 0


def resolve(dtb: Path, name: str) -> str | None:
    path = name if name.startswith("/") else fdtget(dtb, "-t", "s", "/aliases", name)
    return path if path and node_exists(dtb, path) else None


def expected_codes(profile, dtb: Path) -> set[str]:
    """The findings the seed's rules predict, worked out with libfdt's fdtget instead of pyfdt."""
    codes = set()
    fw = profile.firmware
    if fw is not None and fw.uboot is not None:
        codes.add("firmware")  # what its U-Boot build proves
    elif not profile.emulated:
        codes.add("nonsecure-hyp")
    root = subnodes(dtb, "/")
    memory = [n for n in root if n == "memory" or n.startswith("memory@")]
    filled = fw is not None and fw.memory == "firmware"
    if not memory:
        codes.add("memory-from-firmware" if filled else "memory-node-missing")
    elif all(int(w, 16) == 0 for n in memory for w in (fdtget(dtb, "-t", "x", f"/{n}", "reg") or "0").split()):
        codes.add("memory-from-firmware" if filled else "memory-node-empty")
    codes.add("console")  # where dtuart and the baud rate come from, always said
    stdout = fdtget(dtb, "-t", "s", "/chosen", "stdout-path")
    dtuart = profile.dtuart or stdout.split(":")[0]
    target = resolve(dtb, dtuart)
    if target is None:
        codes.add("dtuart-path-missing" if dtuart.startswith("/") else "dtuart-alias-missing")
    if stdout and target and resolve(dtb, stdout.split(":")[0]) != target:
        codes.add("dtuart-stdout-mismatch")
    cpus = [n for n in subnodes(dtb, "/cpus") if n.startswith("cpu@")]
    cores = {fdtget(dtb, "-t", "s", f"/cpus/{c}", "compatible") for c in cpus}
    if len(cores) > 1 and "hmp-unsafe" not in profile.xen_cmdline:
        codes.add("cpus-heterogeneous")
    if len(cpus) > 1:
        default = fdtget(dtb, "-t", "s", "/cpus", "enable-method")
        methods = [fdtget(dtb, "-t", "s", f"/cpus/{c}", "enable-method") or default for c in cpus[1:]]
        has_psci = "psci" in root
        if not has_psci and fw is not None and fw.psci in ("uboot", "tf-a"):
            codes.add("psci-from-firmware")  # the firmware's PSCI: nothing else to say
        else:
            if profile.arch == "arm32" and not has_psci:
                codes.add("psci-missing")
            if profile.arch == "arm64" and "psci" in methods and not has_psci:
                codes.add("psci-missing")
            if profile.arch == "arm64" and "spin-table" in methods:
                codes.add("cpu-spin-table")
    cells = fdtget(dtb, "-t", "x", "/chosen", "#address-cells")
    if cells is not None and int(cells, 16) != 2:
        codes.add("chosen-cells")
    return codes


def variant(tmp_path: Path, base: str, change, name: str = "variant"):
    data = copy.deepcopy(yaml.safe_load((boards_dir() / f"{base}.yaml").read_text()))
    change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_profile(path)


def by_code(findings: list[Finding]) -> dict[str, Finding]:
    return {f.code: f for f in findings}


def arm64_image(path: Path, size: int = MiB, flags: int = 0b1010) -> Path:
    head = bytearray(64)
    struct.pack_into("<QQQ", head, 8, 0, size, flags)
    head[0x38:0x3C] = b"ARM\x64"
    path.write_bytes(bytes(head) + b"\x01" * (size - 64))
    return path


def zimage(path: Path, size: int = MiB) -> Path:
    head = bytearray(64)
    struct.pack_into("<III", head, 0x24, 0x016F2818, 0, size)
    path.write_bytes(bytes(head) + b"\x02" * (size - 64))
    return path


# --------------------------------------------------------------------------- shipped boards

@pytest.mark.parametrize("name", SHIPPED)
def test_doctor_on_shipped_board_matches_its_dtb(name):
    profile = load_profile(name)
    dtb = resolve_dtb(profile)  # QEMU dumps made here; Debian DTBs fetched into the cache
    findings = doctor(profile)
    assert {f.code for f in findings} == expected_codes(profile, dtb)
    assert not [f for f in findings if f.severity is Severity.ERROR]
    for f in findings:
        assert f.hint and "§" in f.hint  # explained in the seed's terms


def test_raspberry_pi_findings_name_what_firmware_must_fill(tmp_path):
    found = by_code(doctor(load_profile("rpi4")))
    # The profile says the Pi's firmware writes /memory: information, not a warning.
    filled = found["memory-from-firmware"]
    assert filled.severity is Severity.INFO and "/memory is empty" in filled.message
    assert "firmware.memory" in filled.message and "memory-node-empty" not in found
    unsaid = variant(tmp_path, "rpi4", lambda d: [d.pop(k) for k in ("firmware", "sdcard")])
    found = by_code(doctor(unsaid))
    assert found["memory-node-empty"].severity is Severity.WARN
    assert "/memory@0" in found["memory-node-empty"].message
    spin = found["cpu-spin-table"]
    assert spin.severity is Severity.WARN and "cpu@1" in spin.message and "cpu@0" not in spin.message


# --------------------------------------------------------------------------- console (seed §8.6)

# QEMU's virt DTB has had /aliases since 9.0; before (7.2, Debian bookworm's), none.
NO_ALIASES = {"remove": "/aliases", "why": "the virt DTB as QEMU 7.2 made it"}


def alias_dtuart(d):
    d.update(dtuart="serial0")
    d.setdefault("dtb_fixups", []).append(NO_ALIASES)


def test_alias_dtuart_on_qemu_virt_loses_the_console(tmp_path):
    profile = variant(tmp_path, "qemu-virt-arm64", alias_dtuart)
    f = by_code(doctor(profile))["dtuart-alias-missing"]
    assert f.severity is Severity.ERROR and "no /aliases" in f.message and "variant.yaml" in f.message
    assert "§8.6" in f.hint and "dtuart=/pl011@9000000" in f.hint


def test_missing_dtuart_path(tmp_path):
    profile = variant(tmp_path, "qemu-virt-arm64", lambda d: d.update(dtuart="/pl011@9999000"))
    f = by_code(doctor(profile))["dtuart-path-missing"]
    assert f.severity is Severity.ERROR and "/pl011@9999000" in f.message


def test_dtuart_disagreeing_with_stdout_path(tmp_path):
    profile = variant(tmp_path, "rpi4", lambda d: d.update(dtuart="serial0"))
    dtb = resolve_dtb(profile)
    f = by_code(doctor(profile))["dtuart-stdout-mismatch"]
    assert f.severity is Severity.WARN
    assert resolve(dtb, "serial0") in f.message and resolve(dtb, "serial1") in f.message


def test_stdout_path_as_plain_alias_and_disabled_uart(tmp_path):
    base = resolve_dtb(load_profile("qemu-virt-arm64"))
    dtb = tmp_path / "aliased.dtb"
    dtb.write_bytes(base.read_bytes())
    subprocess.run(["fdtput", "-p", "-t", "s", str(dtb), "/aliases", "uart0", "/pl011@9000000"],
                   check=True)
    subprocess.run(["fdtput", "-t", "s", str(dtb), "/chosen", "stdout-path", "uart0"], check=True)
    profile = load_profile("qemu-virt-arm64")
    assert not {"dtuart-stdout-mismatch", "stdout-path-unresolved"} & {
        f.code for f in doctor(profile, dtb_path=dtb)}
    subprocess.run(["fdtput", "-t", "s", str(dtb), "/pl011@9000000", "status", "disabled"], check=True)
    assert "dtuart-disabled" in by_code(doctor(profile, dtb_path=dtb))


# --------------------------------------------------------------------------- CPUs (seed §6.3)

def test_psci_missing_on_emulated_board_is_an_error(tmp_path):
    dtb = tmp_path / "nopsci.dtb"
    dtb.write_bytes(resolve_dtb(load_profile("qemu-virt-arm64")).read_bytes())
    subprocess.run(["fdtput", "-r", str(dtb), "/psci"], check=True)
    f = by_code(doctor(load_profile("qemu-virt-arm64"), dtb_path=dtb))["psci-missing"]
    assert f.severity is Severity.ERROR and "cpu@1" in f.message and "§6.3" in f.hint


def test_spin_table_without_release_address(tmp_path):
    dtb = tmp_path / "spin.dtb"
    dtb.write_bytes(resolve_dtb(load_profile("qemu-virt-arm64")).read_bytes())
    subprocess.run(["fdtput", "-t", "s", str(dtb), "/cpus/cpu@1", "enable-method", "spin-table"], check=True)
    found = by_code(doctor(load_profile("qemu-virt-arm64"), dtb_path=dtb))
    assert found["cpu-release-addr-missing"].severity is Severity.ERROR
    subprocess.run(["fdtput", "-t", "s", str(dtb), "/cpus/cpu@1", "enable-method", "acme,smp"], check=True)
    assert "acme,smp" in by_code(doctor(load_profile("qemu-virt-arm64"), dtb_path=dtb))["cpu-enable-method"].message


# --------------------------------------------------------------------------- DTB and profile problems

def test_corrupt_dtb_is_one_error(tmp_path):
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(b"\xd0\x0d\xfe\xed" + b"\x00" * 100)
    findings = doctor(load_profile("qemu-virt-arm64"), dtb_path=bad,
                      extra_findings=[Finding(Severity.INFO, "extra", "x")])
    assert [f.code for f in findings] == ["dtb-corrupt", "extra"]
    assert "bad.dtb" in findings[0].message and "\n" not in findings[0].message


def test_unavailable_dtb(tmp_path):
    profile = variant(tmp_path, "qemu-virt-arm64", lambda d: d.update(dtb={"file": "gone.dtb"}))
    (f,) = [f for f in doctor(profile) if f.severity is Severity.ERROR]
    assert f.code == "dtb-unavailable" and "key 'dtb.file'" in f.message


def test_qemu_without_el2(tmp_path):
    profile = variant(tmp_path, "qemu-virt-arm64", lambda d: d["dtb"]["qemu"]["args"].__setitem__(
        1, "virt,gic-version=2"))
    assert by_code(doctor(profile))["qemu-no-el2"].severity is Severity.ERROR


def test_profile_memory_outside_dtb_ram(tmp_path):
    profile = variant(tmp_path, "qemu-virt-arm64", lambda d: (
        d["memory"].update(end=0xd0000000), d["memory"].update(reserved=[])))
    f = by_code(doctor(profile))["memory-outside-dtb"]
    assert f.severity is Severity.ERROR and "0x40000000-0xc0000000" in f.message


# --------------------------------------------------------------------------- images

def test_matching_images_fit(tmp_path):
    files = {"xen": arm64_image(tmp_path / "xen"), "dom0-kernel": arm64_image(tmp_path / "Image", 4 * MiB)}
    found = by_code(doctor(load_profile("qemu-virt-arm64"), files))
    assert set(found) == {"console", "plan"} and found["plan"].severity is Severity.INFO


def test_boot_command_must_match_image_format(tmp_path):
    arm64 = {"xen": zimage(tmp_path / "xen"), "dom0-kernel": arm64_image(tmp_path / "Image")}
    f = by_code(doctor(load_profile("qemu-virt-arm64"), arm64))["boot-format-mismatch"]
    assert f.severity is Severity.ERROR and "zimage" in f.message and "booti" in f.message
    arm32 = {"xen": arm64_image(tmp_path / "xen32"), "dom0-kernel": zimage(tmp_path / "zImage")}
    f = by_code(doctor(load_profile("qemu-virt-arm32"), arm32))["boot-format-mismatch"]
    assert "arm64-image" in f.message and "bootz" in f.message


def test_image_warnings_and_plan_errors(tmp_path):
    ramdisk = tmp_path / "rootfs.cpio.gz"
    ramdisk.write_bytes(gzip.compress(b"x"))
    files = {"xen": arm64_image(tmp_path / "xen", flags=0b0010),
             "dom0-kernel": ramdisk, "dom0-ramdisk": ramdisk}
    found = by_code(doctor(load_profile("qemu-virt-arm64"), files))
    assert found["xen-image-moves"].severity is Severity.WARN
    assert "gzip" in found["dom0-kernel-format"].message
    assert found["plan"].severity is Severity.ERROR and "share the load name" in found["plan"].message
    small = variant(tmp_path, "qemu-virt-arm64", lambda d: d.update(
        memory={"start": 0x40000000, "end": 0x40800000}))
    files = {"xen": arm64_image(tmp_path / "xen2"), "dom0-kernel": arm64_image(tmp_path / "Image", 6 * MiB)}
    f = by_code(doctor(small, files))["plan"]
    assert f.severity is Severity.ERROR and "not enough memory" in f.message


def test_image_format_of_debian_kernels():
    arm64 = load_profile("rpi4").dtb.deb()
    armhf = load_profile("cubieboard2").dtb.deb()
    debs.fetch([arm64, armhf])
    image = next((debs.extract(arm64) / "boot").glob("vmlinuz-*"))
    zimg = next((debs.extract(armhf) / "boot").glob("vmlinuz-*"))
    assert image_format(image) == "arm64-image" and image_format(zimg) == "zimage"
    info = image_info(image)
    head = image.read_bytes()[:64]
    assert info.effective_size == max(image.stat().st_size, struct.unpack_from("<Q", head, 16)[0])
    assert info.anywhere == bool(struct.unpack_from("<Q", head, 24)[0] & 8)
    assert image_format(Path(__file__)) == "unknown"


@pytest.mark.parametrize("name", ["qemu-virt-arm64", "rpi4", "cubieboard2"])
def test_dtb_summary_agrees_with_fdtget(name):
    from xenlab.plan.dtb import DtbInfo
    dtb = resolve_dtb(load_profile(name))
    lines = DtbInfo.load(dtb).summary()
    stdout = fdtget(dtb, "-t", "s", "/chosen", "stdout-path")
    assert f"stdout-path: {stdout.split(':')[0]} -> {resolve(dtb, stdout.split(':')[0])}" in lines
    cpus = [n for n in subnodes(dtb, "/cpus") if n.startswith("cpu@")]
    assert any(line.startswith(f"CPUs: {len(cpus)} ") for line in lines)
    assert ("PSCI: none" in lines) == ("psci" not in subnodes(dtb, "/"))
    assert ("serial aliases: no /aliases node" in lines) == ("aliases" not in subnodes(dtb, "/"))


def test_doctor_names_init_commands_that_are_not_set_up_commands(tmp_path):
    data = yaml.safe_load((boards_dir() / "qemu-virt-arm64.yaml").read_text())
    data["uboot"]["init_commands"] = ["dhcp", {"command": "setenv a 1; reset", "raw": True},
                                      "mw.l 0x40000000 0 1"]
    path = tmp_path / "chained.yaml"
    path.write_text(yaml.safe_dump(data))
    found = [f for f in doctor(load_profile(path)) if f.code == "uboot-init-command"]
    assert len(found) == 2 and "runs reset," in found[0].message and "runs mw.l," in found[1].message
    assert "uboot.init_commands[1]" in found[0].message and "uboot.init_commands[2]" in found[1].message


def test_doctor_refuses_a_dom0_larger_than_the_free_ram(tmp_path):
    data = yaml.safe_load((boards_dir() / "qemu-virt-arm64.yaml").read_text())
    data["dom0"]["memory_mb"] = 2048  # all of -m 2048, with U-Boot's relocation reserved
    path = tmp_path / "big-dom0.yaml"
    path.write_text(yaml.safe_dump(data))
    (found,) = [f for f in doctor(load_profile(path)) if f.code == "dom0-memory-over-ram"]
    assert found.severity.value == "error" and "key 'dom0.memory_mb': 2048 MiB" in found.message


def test_a_silent_xen_is_explained_by_the_doctors_console_checks(tmp_path):
    """Issue 13: the hint for a Xen silent after "Starting kernel" comes from the board's DTB."""
    from types import SimpleNamespace
    from xenlab.lab.diagnose import EARLY_PRINTK, silent_xen

    data = Path(__file__).resolve().parent / "data"
    silent = (data / "qemu-arm64-dtuart-alias-missing.log").read_text(errors="replace")
    good = load_profile("qemu-virt-arm64")
    broken = variant(tmp_path, "qemu-virt-arm64", alias_dtuart)
    board = lambda p: SimpleNamespace(profile=p, dtb=resolve_dtb(p))  # noqa: E731

    assert silent_xen(board(good), (data / "qemu-arm64-console.log").read_text(errors="replace")) is None
    hint = silent_xen(board(broken), silent)
    assert hint.startswith("Xen printed nothing after 'Starting kernel ...': ")
    assert "'serial0' does not resolve: the DTB has no /aliases node" in hint
    assert "use dtuart=/pl011@9000000" in hint
    # The path resolves, and Xen is still silent: no alias to blame, early printk to look further.
    assert silent_xen(board(good), silent).endswith(EARLY_PRINTK)
