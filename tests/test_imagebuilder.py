"""`xenlab plan --imagebuilder CONFIG`: an ImageBuilder config read as data into the boot plan.

The config below is the shape of Xen CI's qemu-smoke-dom0less-arm64.sh one, and
XEN_CI_CONFIG that script's own, unchanged.  A key xenlab does not know, one it does
not support yet (said so, by name), or anything a shell would expand is refused with
its name and line; the file is never sourced.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xenlab.errors import XenlabError
from xenlab.plan.dtb import resolve_dtb
from xenlab.plan.imagebuilder import plan_from, read_config
from xenlab.plan.profile import load_profile

from support.imageset import arm64_image

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20

CONFIG = """\
# as in xen.git automation/scripts/qemu-smoke-dom0less-arm64.sh
MEMORY_START="0x40000000"
MEMORY_END="0x80000000"

DEVICE_TREE="virt-gicv2.dtb"
XEN="xen"
XEN_CMD="console=dtuart dtuart=/pl011@9000000 dom0_mem=256M bootscrub=0"

DOM0_KERNEL="Image"
DOM0_RAMDISK="initrd"
DOM0_MEM=256

NUM_CPUPOOLS=1
CPUPOOL[0]="cpu@1 credit2"

NUM_DOMUS=2
DOMU_KERNEL[0]="Image"
DOMU_RAMDISK[0]="initrd"
DOMU_MEM[0]="256"
DOMU_CMD[0]="console=ttyAMA0 rdinit=/init"
DOMU_CPUPOOL[0]=0
DOMU_KERNEL[1]="Image"
DOMU_STATIC_MEM[1]="0x50000000 0x10000000"
DOMU_VCPUS[1]=1

LOAD_CMD="tftpb"
BOOT_CMD="booti"
UBOOT_SCRIPT="boot.scr"
"""


@pytest.fixture
def config(tmp_path) -> Path:
    arm64_image(tmp_path / "xen", MiB + 40)
    arm64_image(tmp_path / "Image", 3 * MiB)
    (tmp_path / "initrd").write_bytes(b"\x1f\x8b" + bytes(4000))
    (tmp_path / "virt-gicv2.dtb").write_bytes(resolve_dtb(load_profile("qemu-virt-arm64")).read_bytes())
    path = tmp_path / "config"
    path.write_text(CONFIG)
    return path


def edited(config: Path, old: str, new: str) -> Path:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))
    return config


def test_a_xen_ci_config_becomes_the_boot_plan(config):
    plan = plan_from(read_config(config), load_profile("qemu-virt-arm64"))
    assert plan.xen_bootargs == "console=dtuart dtuart=/pl011@9000000 dom0_mem=256M bootscrub=0"
    assert [d.name for d in plan.domus] == ["domU0", "domU1"]
    # One Image for Dom0 and both DomUs: loaded once, every module node points at it.
    images = [p for p in plan.placements if p.filename == "Image"]
    assert len(images) == 1
    kernel_regs = {e.value for e in plan.edits if e.prop == "reg" and e.node.rsplit("@", 1)[-1]
                   == f"{images[0].addr:x}"}
    assert len(kernel_regs) == 1
    domu1 = {e.prop: e.value for e in plan.edits if e.node == "/chosen/domU1" and e.prop}
    assert domu1["xen,static-mem"] == (0, 0x50000000, 0, 0x10000000) and "direct-map" in domu1
    domu0 = {e.prop: e.value for e in plan.edits if e.node == "/chosen/domU0" and e.prop}
    assert domu0["xen,enhanced"] == ("enabled",) and domu0["memory"] == (0, 256 * 1024)
    assert domu0["domain-cpupool"] == (plan.cpupools[0].phandle,)
    assert all(p.end <= 0x80000000 for p in plan.placements)  # MEMORY_END


def test_the_cli_prints_the_plan_and_writes_uboot_script(config):
    proc = subprocess.run([sys.executable, "-m", "xenlab.cli", "plan", "qemu-virt-arm64",
                           "--imagebuilder", str(config)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "fdt mknode /chosen domU0" in proc.stdout and "booti " in proc.stdout
    assert (config.parent / "boot.scr").stat().st_size > 64


@pytest.mark.parametrize("line,expect", [
    ("DOMU_FOO[0]=1", "line 29: unknown key DOMU_FOO[0]"),
    ("FIT=y", "line 29: key FIT (a FIT image) is not supported by xenlab yet"),
    ("DOMU_PASSTHROUGH_DTB[0]=\"pt.dtb\"",
     "line 29: key DOMU_PASSTHROUGH_DTB (device passthrough) is not supported by xenlab yet"),
    ("DOMU_ENHANCED[0]=maybe", "line 29: DOMU_ENHANCED[0]: 'maybe' is not a yes or no"),
    ("XEN_STATIC_HEAP=\"0x60000000\"", "line 29: XEN_STATIC_HEAP: '0x60000000': wants groups of 2"),
    ("DOMU_KERNEL=Image", "line 29: unknown key DOMU_KERNEL (it takes an index"),
    ("XEN=$(touch pwned)", "line 29: XEN value '$(touch pwned)' has '$'"),
    ("XEN=`touch pwned`", "has '`'"),
    ("XEN=xen; touch pwned", "has ';'"),
    ("DOM0_CMD=console=hvc0 rdinit=/init", "is several words: quote it"),
    ("source other.cfg", "line 29: 'source other.cfg' is not KEY=value"),
    # Set again, the later value holds, as in the shell (Xen CI appends NUM_DOMUS=2 so):
    ("NUM_DOMUS=3", "DOMU_KERNEL[2]: missing"),
])
def test_bad_lines_are_refused_by_name_and_line(config, line, expect):
    config.write_text(config.read_text() + line + "\n")
    with pytest.raises(XenlabError) as err:
        plan_from(read_config(config), load_profile("qemu-virt-arm64"))
    assert expect in str(err.value) and "\n" not in str(err.value), err.value
    assert not (config.parent / "pwned").exists()  # parsed, never run


def test_a_static_heap_is_xens_and_no_file_loads_in_it(config):
    # Xen CI's static-heap job: MEMORY_END below the heap, the guests' memory from it.
    config = edited(config, 'MEMORY_END="0x80000000"', 'MEMORY_END="0x50000000"')
    config.write_text(config.read_text() + 'XEN_STATIC_HEAP="0x60000000 0x20000000"\n')
    plan = plan_from(read_config(config), load_profile("qemu-virt-arm64"))
    chosen = {e.prop: e.value for e in plan.edits if e.node == "/chosen" and e.prop}
    assert chosen["xen,static-heap"] == (0, 0x60000000, 0, 0x20000000)  # the root's 2+2 cells
    assert plan.static_heap == ((0x60000000, 0x20000000),)
    assert all(p.end <= 0x50000000 for p in plan.placements)
    assert "static-heap" in plan.table()


@pytest.mark.parametrize("heap,expect", [
    ("0x44000000 0x10000000", "static heap 0x44000000-0x54000000 overlaps domain 'domU1' static bank"),
    ("0x60000000 0x8000000", "Dom0 256 MiB + DomUs 256 MiB does not fit in Xen's static heap "
                             "(0x60000000-0x68000000, 128.0 MiB)"),
    ("0xc0000000 0x400000", "static heap 0xc0000000-0xc0400000 lies outside RAM (0x40000000-0xc0000000)"),
    ("0x60001000 0x10000000", "must start and end on a 64 KiB boundary"),
])
def test_a_static_heap_that_cannot_work_is_one_line(config, heap, expect):
    config.write_text(config.read_text() + f'XEN_STATIC_HEAP="{heap}"\n')
    with pytest.raises(XenlabError) as err:
        plan_from(read_config(config), load_profile("qemu-virt-arm64"))
    assert expect in str(err.value) and "\n" not in str(err.value), err.value


@pytest.mark.parametrize("old,new,expect", [
    ('DOMU_MEM[0]="256"', 'DOMU_MEM[0]="4096"', "does not fit in RAM"),
    ('DOMU_STATIC_MEM[1]="0x50000000 0x10000000"', 'DOMU_STATIC_MEM[1]="0xbfe00000 0x400000"',
     "static bank 0xbfe00000-0xc0200000 lies outside RAM"),
    ('CPUPOOL[0]="cpu@1 credit2"', 'CPUPOOL[0]="cpu@7 credit2"', "cpupool 1: CPU 7 is not in the DTB"),
    ('DOMU_KERNEL[1]="Image"', 'DOMU_KERNEL[1]="missing-Image"', "line 22: DOMU_KERNEL[1]: 'missing-Image': no such file"),
    ('LOAD_CMD="tftpb"', 'LOAD_CMD="fatload mmc 0:1"', "LOAD_CMD: 'fatload mmc 0:1', but board qemu-virt-arm64 uses 'tftpb'"),
])
def test_what_cannot_boot_is_one_line(config, old, new, expect):
    with pytest.raises(XenlabError) as err:
        plan_from(read_config(edited(config, old, new)), load_profile("qemu-virt-arm64"))
    assert expect in str(err.value) and "\n" not in str(err.value), err.value


# Xen CI's own config, as automation/scripts/qemu-smoke-dom0less-arm64.sh writes it (xen.git
# c447b7308b13, 2026-08-18), unchanged: UBOOT_SOURCE, and a 256 MiB MEMORY_START/END window
# on a 2 GiB machine, which is where the files load, not the board's RAM.
XEN_CI_CONFIG = """\
MEMORY_START="0x40000000"
MEMORY_END="0x50000000"

DEVICE_TREE="virt.dtb"
XEN="xen"
DOM0_KERNEL="Image"
DOM0_RAMDISK="dom0-rootfs.cpio.gz"
XEN_CMD="console=dtuart dom0_mem=512M console_timestamps=boot"

NUM_DOMUS=1
DOMU_KERNEL[0]="Image"
DOMU_RAMDISK[0]="initrd"
DOMU_MEM[0]="256"
DOMU_KERNEL[1]="Image"
DOMU_RAMDISK[1]="initrd"
DOMU_MEM[1]="256"

LOAD_CMD="tftpb"
UBOOT_SOURCE="boot.source"
UBOOT_SCRIPT="boot.scr"
"""


@pytest.fixture
def xen_ci_config(config) -> Path:
    d = config.parent
    (d / "virt.dtb").write_bytes((d / "virt-gicv2.dtb").read_bytes())
    (d / "dom0-rootfs.cpio.gz").write_bytes(b"\x1f\x8b" + bytes(8000))
    config.write_text(XEN_CI_CONFIG)
    return config


def test_xen_cis_own_config_plans_unchanged_in_its_window(xen_ci_config):
    plan = plan_from(read_config(xen_ci_config), load_profile("qemu-virt-arm64"))
    assert plan.xen_bootargs == "console=dtuart dom0_mem=512M console_timestamps=boot"
    assert [d.name for d in plan.domus] == ["domU0"]  # NUM_DOMUS=1: DOMU_*[1] is not booted
    # Every file inside MEMORY_START/END; Dom0's 512 MiB and the DomU's 256 MiB from the RAM.
    assert all(0x40000000 <= p.addr and p.end <= 0x50000000 for p in plan.placements)
    assert plan.profile.memory.end == 0xc0000000 and plan.profile.dom0.memory_mb == 512


def test_the_cli_writes_uboot_source_beside_the_script(xen_ci_config):
    proc = subprocess.run([sys.executable, "-m", "xenlab.cli", "plan", "qemu-virt-arm64",
                           "--imagebuilder", str(xen_ci_config)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    source = (xen_ci_config.parent / "boot.source").read_text()
    assert "fdt mknode /chosen domU0" in source and source.splitlines()[-1].startswith("booti 0x")
    assert (xen_ci_config.parent / "boot.scr").stat().st_size > 64
    assert not (xen_ci_config.parent / "boot.cmd").exists()


def test_domu_flags_are_honoured(config):
    config.write_text(config.read_text() + 'DOMU_ENHANCED[0]="0"\nDOMU_DIRECTMAP[1]="n"\nDOM0_VCPUS=2\n')
    plan = plan_from(read_config(config), load_profile("qemu-virt-arm64"))
    domu0 = {e.prop for e in plan.edits if e.node == "/chosen/domU0" and e.prop}
    domu1 = {e.prop for e in plan.edits if e.node == "/chosen/domU1" and e.prop}
    assert "xen,enhanced" not in domu0 and "direct-map" not in domu1 and "xen,static-mem" in domu1
    assert plan.profile.dom0.vcpus == 2
    config.write_text(config.read_text() + 'DOMU_NOBOOT[1]="y"\n')
    plan = plan_from(read_config(config), load_profile("qemu-virt-arm64"))
    assert [d.name for d in plan.domus] == ["domU0"]  # ImageBuilder writes no node for it


def test_a_window_outside_the_boards_ram_is_one_line(config):
    config = edited(config, 'MEMORY_END="0x80000000"', 'MEMORY_END="0x100000000"')
    with pytest.raises(XenlabError) as err:
        plan_from(read_config(config), load_profile("qemu-virt-arm64"))
    assert "MEMORY_END: the window 0x40000000-0x100000000 is not inside board qemu-virt-arm64's RAM " \
           "(0x40000000-0xc0000000)" in str(err.value)


# --------------------------------------------------------------------------- booted

@pytest.fixture(scope="module")
def xen_ci_binaries(tmp_path_factory) -> Path:
    """Xen CI's binaries/ directory, from the bundled arm64 set: its config, unchanged."""
    import shutil

    from xenlab.images.imageset import build_image_set

    images = build_image_set("arm64")
    d = tmp_path_factory.mktemp("binaries")
    for role, name in (("xen", "xen"), ("dom0-kernel", "Image"), ("dom0-rootfs.cpio.gz", "dom0-rootfs.cpio.gz"),
                       ("domU-rootfs.cpio.gz", "initrd")):
        shutil.copyfile(images.path(role), d / name)
    shutil.copyfile(resolve_dtb(load_profile("qemu-virt-arm64")), d / "virt.dtb")
    (d / "config").write_text(XEN_CI_CONFIG)
    return d


def _boot(config: Path, results: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                           str(REPO / "testcases"), "--xenlab-target", "qemu-arm64",
                           "--xenlab-imagebuilder", str(config), "--xenlab-results", str(results),
                           "-p", "no:cacheprovider", "-q", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900)


def test_xen_cis_own_config_boots_the_dom0less_steps_it_describes(xen_ci_binaries, tmp_path):
    import hashlib
    import json

    proc = _boot(xen_ci_binaries / "config", tmp_path)
    (run_json,) = tmp_path.glob("qemu-arm64/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["verdict"] == "PASS", proc.stdout[-3000:]
    # A Dom0 and one xen,enhanced DomU on Xen's UART: every dom0less step that applies.
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        (name, "PASS") for name in ("xen_creates_every_domu", "every_domu_boots_to_its_init",
                                    "dom0_boots_beside_the_domus", "init_dom0less_gives_the_domus_xenstore",
                                    "domu_console_is_reached", "domus_are_destroyed")]
    config = xen_ci_binaries / "config"
    assert record["info"]["imagebuilder"] == {"config": str(config.resolve()),
                                              "sha256": hashlib.sha256(config.read_bytes()).hexdigest()}
    console = next(tmp_path.glob("qemu-arm64/*/console.log")).read_text()
    assert "dom0_mem=512M console_timestamps=boot" in console  # XEN_CMD, as the config has it


@pytest.mark.parametrize("extra,expect", [
    (["--xenlab-variant", "dom0less"], "names its own domains: drop --xenlab-variant"),
    (["--xenlab-target", "qemu-arm32"], "boots one board: give one --xenlab-target"),
])
def test_an_imagebuilder_run_that_cannot_be_is_one_line(xen_ci_binaries, tmp_path, extra, expect):
    proc = _boot(xen_ci_binaries / "config", tmp_path, *extra)
    assert proc.returncode == 2 and "xenlab: error: --xenlab-imagebuilder: " in proc.stderr, proc.stderr
    assert expect in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    fit = tmp_path / "fit.config"
    fit.write_text(XEN_CI_CONFIG + "FIT=y\n")
    proc = _boot(fit, tmp_path)
    assert proc.returncode == 2 and "key FIT (a FIT image) is not supported by xenlab yet" in proc.stderr


# --------------------------------------------------------------------------- every Xen CI config

XEN_CI_ARM32_CONFIG = """\
MEMORY_START="0x40000000"
MEMORY_END="0xC0000000"

DEVICE_TREE="virt.dtb"
XEN="xen"
XEN_CMD="console=dtuart dom0_mem=512M bootscrub=0 console_timestamps=boot"

DOM0_KERNEL="vmlinuz"
DOM0_RAMDISK="initrd.gz"
DOM0_CMD="console=hvc0 earlyprintk clk_ignore_unused root=/dev/ram0 rdinit=/bin/sh"

DOMU_KERNEL[0]="vmlinuz"
DOMU_RAMDISK[0]="initrd.gz"
DOMU_MEM[0]="512"
NUM_DOMUS=1

LOAD_CMD="tftpb"
BOOT_CMD="bootz"
UBOOT_SOURCE="boot.source"
UBOOT_SCRIPT="boot.scr"
"""
# What xen.git's automation/scripts/qemu-smoke-dom0less-arm{64,32}.sh do to their config per
# variant (c447b7308b13): text appended, or a sed of theirs as (old line prefix, new line).
XEN_CI_VARIANTS = {
    ("arm64", ""): (), ("arm64", "earlyprintk"): (),
    ("arm64", "static-mem"): ('\nDOMU_STATIC_MEM[0]="0x50000000 0x10000000"\n',),
    ("arm64", "static-shared-mem"): ('\nNUM_DOMUS=2\n'
                                     'DOMU_SHARED_MEM[0]="my-shared-mem-0 0x50000000 0x4000000 0x10000000"\n'
                                     'DOMU_SHARED_MEM[1]="my-shared-mem-0 0x50000000 0x4000000 0x10000000"\n',),
    ("arm64", "static-heap"): ('\nXEN_STATIC_HEAP="0x50000000 0x30000000"\n'
                               '# The size of static heap should be greater than the guest memory\n'
                               'DOMU_MEM[0]="128"\n',),
    ("arm64", "boot-cpupools"): ('\nCPUPOOL[0]="cpu@1 null"\nDOMU_CPUPOOL[0]=0\nNUM_CPUPOOLS=1\n',),
    ("arm32", ""): (),
    ("arm32", "static-mem"): ('\nDOMU_STATIC_MEM[0]="0x50000000 0x20000000"\n',),
    ("arm32", "gzip"): (("DOMU_KERNEL[0]=", 'DOMU_KERNEL[0]="vmlinuz.gz"'),),
    ("arm32", "without-dom0"): (("DOM0", None),),
}


@pytest.fixture(scope="module")
def ci_files(tmp_path_factory) -> dict[str, Path]:
    """binaries/ for each arch, from the bundled sets, under the names the scripts give them."""
    import gzip
    import shutil

    from xenlab.images.imageset import build_image_set

    out = {}
    for arch, board, names in (("arm64", "qemu-virt-arm64", {"xen": "xen", "dom0-kernel": "Image",
                                                               "dom0-rootfs.cpio.gz": "dom0-rootfs.cpio.gz",
                                                               "domU-rootfs.cpio.gz": "initrd"}),
                               ("arm32", "qemu-virt-arm32", {"xen": "xen", "dom0-kernel": "vmlinuz",
                                                             "dom0-rootfs.cpio.gz": "initrd.gz"})):
        images = build_image_set(arch)
        d = tmp_path_factory.mktemp(arch)
        for role, name in names.items():
            shutil.copyfile(images.path(role), d / name)
        shutil.copyfile(resolve_dtb(load_profile(board)), d / "virt.dtb")
        if arch == "arm32":
            (d / "vmlinuz.gz").write_bytes(gzip.compress((d / "vmlinuz").read_bytes()))
        out[arch] = d
    return out


@pytest.mark.parametrize("arch,variant", list(XEN_CI_VARIANTS), ids=lambda v: v or "dom0less")
def test_every_xen_ci_qemu_arm_config_plans(ci_files, arch, variant):
    text = XEN_CI_CONFIG if arch == "arm64" else XEN_CI_ARM32_CONFIG
    for change in XEN_CI_VARIANTS[(arch, variant)]:
        if isinstance(change, str):
            text += change
        else:  # sed: replace (or, with None, delete) the lines starting with it
            old, new = change
            text = "".join(("" if new is None else new + "\n") if line.startswith(old) else line + "\n"
                           for line in text.splitlines())
    config = ci_files[arch] / f"config-{variant or 'dom0less'}"
    config.write_text(text)
    board = "qemu-virt-arm64-smp4" if variant == "boot-cpupools" else f"qemu-virt-{arch}"
    plan = plan_from(read_config(config), load_profile(board))
    start, end = (0x40000000, 0x50000000) if arch == "arm64" else (0x40000000, 0xC0000000)
    assert all(start <= p.addr and p.end <= end for p in plan.placements)
    assert plan.has_dom0 == (variant != "without-dom0")
    domus = {e.node: {} for e in plan.edits if e.node.startswith("/chosen/domU") and e.prop is None
             and e.node.count("/") == 2}
    for e in plan.edits:
        if e.node in domus and e.prop:
            domus[e.node][e.prop] = e.value
    assert sorted(domus) == (["/chosen/domU0", "/chosen/domU1"] if variant == "static-shared-mem"
                             else ["/chosen/domU0"])
    domu0 = domus["/chosen/domU0"]
    if variant == "static-mem":
        size = 0x10000000 if arch == "arm64" else 0x20000000
        assert domu0["xen,static-mem"] == (0, 0x50000000, 0, size)
    if variant == "static-heap":
        chosen = {e.prop: e.value for e in plan.edits if e.node == "/chosen" and e.prop}
        assert chosen["xen,static-heap"] == (0, 0x50000000, 0, 0x30000000)
    if variant == "boot-cpupools":
        assert domu0["domain-cpupool"] == (plan.cpupools[0].phandle,)
    if variant == "gzip":
        kernel = next(p for p in plan.placements if p.role.startswith("domu:domU0:kernel"))
        assert kernel.filename == "vmlinuz.gz"
