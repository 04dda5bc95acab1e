"""Board variants as data, and the dom0less boot plan they make (booting.txt's bindings).

- Every variant in boards/variants/ loads and plans on each board it names.
- The U-Boot `fdt` commands and the offline DTB say the same thing: the commands,
  applied to the board's DTB by dtc's fdtput, decompile (dtc) to the offline DTB.
- What cannot boot is refused before power-on in one line: a static bank over
  U-Boot's RAM or outside RAM, a DomU larger than free RAM, a variant needing
  CONFIG_STATIC_MEMORY on Debian's build.
"""

from __future__ import annotations

import gzip
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from xenlab.errors import Severity, XenlabError
from xenlab.images.imageset import ImageSet
from xenlab.plan.bootplan import BootPlan
from xenlab.plan.dtb import DtbInfo, resolve_dtb
from xenlab.plan.prepare import boot_files
from xenlab.plan.profile import load_profile
from xenlab.plan.variant import list_variants, load_variant, variant_findings
from xenlab.run.variantplugin import traits

from support.imageset import write_image_set

REPO = Path(__file__).resolve().parent.parent
XENLAB = [sys.executable, "-m", "xenlab.cli"]
DEBIAN_XEN_CONFIG = "CONFIG_ARM_64=y\nCONFIG_GICV3=y\n# CONFIG_STATIC_MEMORY is not set\n" \
                    "# CONFIG_BOOT_TIME_CPUPOOLS is not set\n"
BUILT_XEN_CONFIG = "CONFIG_ARM_64=y\nCONFIG_UNSUPPORTED=y\nCONFIG_STATIC_MEMORY=y\nCONFIG_STATIC_SHM=y\n" \
                   "CONFIG_BOOT_TIME_CPUPOOLS=y\nCONFIG_DEBUG=y\nCONFIG_EARLY_UART_CHOICE_PL011=y\n" \
                   "CONFIG_EARLY_UART_BASE_ADDRESS=0x09000000\n"


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    return ImageSet.open(write_image_set(tmp_path_factory.mktemp("v") / "set", domu=True,
                                         xen_config=BUILT_XEN_CONFIG))


def plan_for(variant, board, images):
    profile = load_profile(board)
    return BootPlan.build(profile, boot_files(images, variant), resolve_dtb(profile),
                          **variant.plan_args(images))


def variant_file(tmp_path: Path, base: str, old: str, new: str) -> Path:
    text = (REPO / "boards" / "variants" / f"{base}.yaml").read_text()
    assert old in text, old
    path = tmp_path / f"{base}-edited.yaml"
    path.write_text(text.replace(old, new))
    return path


# --------------------------------------------------------------------------- the set

def test_the_variants_mirror_xen_ci_arm_jobs():
    assert {"dom0less", "without-dom0", "gicv3", "staticmem", "static-shared-mem",
            "boot-cpupools", "earlyprintk", "staticheap", "gzip"} <= set(list_variants())
    arm32 = {n for n in list_variants() if "qemu-virt-arm32" in load_variant(n).boards}
    assert {"dom0less", "staticmem", "gzip", "without-dom0", "earlyprintk"} <= arm32


@pytest.mark.parametrize("name", list_variants())
def test_every_variant_plans_on_each_of_its_boards(name, image_set):
    variant = load_variant(name)
    for board in variant.boards:
        plan = plan_for(variant, board, image_set)
        assert plan.has_dom0 == variant.dom0
        assert [d.name for d in plan.domus] == [d.name for d in variant.domains]
        roles = {p.role for p in plan.placements}
        assert ("dom0-kernel" in roles) == variant.dom0
        if not variant.dom0:
            assert "dom0_mem" not in plan.xen_bootargs
            assert not any(e.prop == "xen,dom0-bootargs" for e in plan.edits)
        for d in variant.domains:
            node = f"/chosen/{d.name}"
            props = {e.prop: e.value for e in plan.edits if e.node == node and e.prop}
            assert props["compatible"] == ("xen,domain",)
            assert props["memory"] == (0, d.memory_mb * 1024)
            assert ("xen,enhanced" in props) == d.enhanced
            if d.static_mem:
                assert props["xen,static-mem"] == tuple(w for a, s in d.static_mem
                                                        for w in (a >> 32, a & 0xffffffff, s >> 32, s & 0xffffffff))
            bootargs = [e.value[0] for e in plan.edits if e.node.startswith(node + "/module@")
                        and e.prop == "bootargs"]
            if d.cmdline or d.checks:  # an XTF kernel takes no command line: none is set
                assert bootargs and ("xenlab.checks=" in bootargs[0]) == bool(d.checks)
            else:
                assert not bootargs
        chosen = {e.prop: e.value for e in plan.edits if e.node == "/chosen" and e.prop}
        assert chosen.get("xen,static-heap", ()) == tuple(
            w for a, n in variant.static_heap for w in (a >> 32, a & 0xffffffff, n >> 32, n & 0xffffffff))
        assert not any(a <= p.addr < a + n for a, n in variant.static_heap for p in plan.placements)


def test_a_gzip_variant_loads_its_domu_kernel_gzipd_and_the_same_bytes_each_time(image_set):
    plan = plan_for(load_variant("gzip"), "qemu-virt-arm64", image_set)
    kernel = plan.placement("domu:domU1:kernel")
    assert kernel.filename == "domU-kernel.gz"
    assert gzip.decompress(kernel.path.read_bytes()) == image_set.path("domU-kernel").read_bytes()
    again = plan_for(load_variant("gzip"), "qemu-virt-arm64", image_set).placement("domu:domU1:kernel")
    assert (again.path, again.sha256) == (kernel.path, kernel.sha256)


def test_domus_booting_one_kernel_share_its_one_copy(image_set):
    plan = plan_for(load_variant("static-shared-mem"), "qemu-virt-arm64", image_set)
    kernels = [p for p in plan.placements if p.filename == "domU-kernel"]
    assert len(kernels) == 1
    regs = {e.node: e.value for e in plan.edits if e.prop == "reg" and "/domU" in e.node}
    assert len(set(regs.values())) == 2 and len(regs) == 4  # kernel and ramdisk, twice each


def test_cpupool_nodes_point_at_the_dtb_cpus(image_set):
    variant = load_variant("boot-cpupools")
    plan = plan_for(variant, "qemu-virt-arm64-smp4", image_set)
    info = DtbInfo.load(plan.placement("dtb").path)
    by_reg = {c.reg: c.phandle for c in info.cpus()}
    pool = plan.cpupools[0]
    assert pool.cpu_phandles == (by_reg[2], by_reg[3])
    assert pool.phandle not in info.phandles()
    props = {e.prop: e.value for e in plan.edits if e.node == "/chosen/domU1" and e.prop}
    assert props["domain-cpupool"] == (pool.phandle,)


# --------------------------------------------------------------------------- the two renderings

def _fdtput(dtb: Path, cmd: str) -> None:
    """Apply one U-Boot `fdt` command with dtc's fdtput, reading U-Boot's syntax."""
    words = shlex.split(cmd.replace("\\#", "#"))
    assert words[0] == "fdt", cmd
    if words[1] == "mknode":
        parent = words[2].rstrip("/")
        subprocess.run(["fdtput", "-c", str(dtb), f"{parent}/{words[3]}"], check=True)
        return
    assert words[1] == "set", cmd
    node, prop, values = words[2], words[3], words[4:]
    if not values:
        args = ["-t", "s", str(dtb), node, prop, ""]  # an empty property: fdtput -t s "" writes one NUL
        subprocess.run(["fdtput", *args], check=True)
        subprocess.run(["fdtput", "-d", str(dtb), node, prop], check=True)
        subprocess.run(["fdtput", "-t", "bx", str(dtb), node, prop], check=True)
    elif values[0].startswith("<"):
        cells = " ".join(values).strip("<>").split()
        subprocess.run(["fdtput", "-t", "x", str(dtb), node, prop, *cells], check=True)
    else:
        subprocess.run(["fdtput", "-t", "s", str(dtb), node, prop, *values], check=True)


def _chosen_dts(dtb: Path) -> str:
    dts = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", "-s", str(dtb)],
                         check=True, capture_output=True, text=True).stdout
    start = dts.index("\tchosen {")
    return dts[start:dts.index("\n\t};", start)]


@pytest.mark.parametrize("name,board_name", [("dom0less", "qemu-virt-arm64"), ("without-dom0", "qemu-virt-arm32"),
                                        ("staticmem", "qemu-virt-arm64"),
                                        ("boot-cpupools", "qemu-virt-arm64-smp4"),
                                        ("static-shared-mem", "qemu-virt-arm64"),
                                        ("staticheap", "qemu-virt-arm64")])
def test_uboot_commands_and_offline_dtb_agree_through_dtc(name, board_name, image_set, tmp_path):
    if board_name == "qemu-virt-arm32":
        images = ImageSet.open(write_image_set(tmp_path / "set32", domu=True))
        images.info["arch"] = "arm32"
    else:
        images = image_set
    plan = plan_for(load_variant(name), board_name, images)
    by_uboot = tmp_path / "uboot.dtb"
    by_uboot.write_bytes(plan.placement("dtb").path.read_bytes())
    cmds = plan.uboot_commands()
    resize = next(c for c in cmds if c.startswith("fdt resize"))
    subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dtb", "-p", str(int(resize.split()[2], 16)),
                    "-o", str(by_uboot), str(by_uboot)], check=True)  # `fdt resize`
    edits = [c for c in cmds if c.startswith(("fdt mknode", "fdt set"))]
    assert edits
    for cmd in edits:
        _fdtput(by_uboot, cmd)
    offline = plan.offline_dtb(tmp_path / "offline.dtb")
    assert _chosen_dts(by_uboot) == _chosen_dts(offline)
    assert "xen,domain" in _chosen_dts(offline)


# --------------------------------------------------------------------------- refused before power-on

def test_a_static_bank_outside_ram_is_one_line(tmp_path, image_set):
    path = variant_file(tmp_path, "staticmem", "start: 0x50000000", "start: 0xbdc00000")
    with pytest.raises(XenlabError) as err:
        plan_for(load_variant(path), "qemu-virt-arm64", image_set)
    msg = str(err.value)
    assert "static bank 0xbdc00000-0xcdc00000 lies outside RAM (0x40000000-0xc0000000)" in msg
    assert "\n" not in msg


def test_a_static_bank_over_uboots_ram_names_it(tmp_path, image_set):
    path = variant_file(tmp_path, "staticmem", "{start: 0x50000000, size: 0x10000000}",
                        "{start: 0xbdc00000, size: 0x200000}")
    path.write_text(path.read_text().replace("memory_mb: 256", "memory_mb: 2"))
    with pytest.raises(XenlabError) as err:
        plan_for(load_variant(path), "qemu-virt-arm64", image_set)
    assert re.search(r"static bank 0xbdc00000-0xbde00000 overlaps U-Boot 2023\.01 .* 0xbddb2000-0xc0000000",
                     str(err.value)), err.value


def test_a_static_heap_over_uboots_ram_names_it(tmp_path, image_set):
    path = variant_file(tmp_path, "staticheap", "{start: 0x50000000, size: 0x30000000}",
                        "{start: 0x90000000, size: 0x2fe00000}")
    with pytest.raises(XenlabError) as err:
        plan_for(load_variant(path), "qemu-virt-arm64", image_set)
    assert re.search(r"static heap 0x90000000-0xbfe00000 overlaps U-Boot 2023\.01 .* 0xbddb2000-0xc0000000",
                     str(err.value)), err.value


def test_a_domu_larger_than_free_ram_is_one_line(tmp_path, image_set):
    path = variant_file(tmp_path, "dom0less", "memory_mb: 256", "memory_mb: 2048")
    with pytest.raises(XenlabError) as err:
        plan_for(load_variant(path), "qemu-virt-arm64", image_set)
    msg = str(err.value)
    assert "Dom0 512 MiB + DomUs 2048 MiB does not fit in RAM" in msg and "\n" not in msg


def test_a_variant_needing_static_memory_on_debians_xen_is_an_error(tmp_path):
    config = tmp_path / "xen.config"
    config.write_text(DEBIAN_XEN_CONFIG)
    findings = variant_findings(load_variant("staticmem"), config, "debian-set")
    assert [f.severity for f in findings] == [Severity.ERROR]
    assert "needs CONFIG_STATIC_MEMORY=y" in findings[0].message
    assert "hypervisor/configs/static-mem.config" in findings[0].hint
    config.write_text(BUILT_XEN_CONFIG)
    assert variant_findings(load_variant("staticmem"), config, "built") == []


def test_a_variant_wanting_a_patch_warns_on_a_xen_built_without_it(tmp_path):
    """dom0less wants the PV console patch: on Debian's prebuilt Xen (patches unknown) or a
    build without it, a warning says `xl console` gives way to Xen's UART; with it, nothing."""
    config = tmp_path / "xen.config"
    config.write_text(DEBIAN_XEN_CONFIG)
    variant = load_variant("dom0less")
    assert variant.xen_patches == ("dom0less-console",) and variant.builds_xen
    for patches in (None, ("psr-mode",)):
        (finding,) = variant_findings(variant, config, "set", patches)
        assert finding.severity is Severity.WARN and finding.code == "variant-xen-patch-missing"
        assert "hypervisor/patches/dom0less-console.patch" in finding.message
        assert "--apply-fix dom0less-console" in finding.hint
    assert variant_findings(variant, config, "set", ("dom0less-console",)) == []
    # Fragments and a patch, and no xen.config to read: both are said.
    both = tmp_path / "both.yaml"
    both.write_text((REPO / "boards/variants/staticmem.yaml").read_text() + "xen_patches: [dom0less-console]\n")
    codes = [f.code for f in variant_findings(load_variant(both), None, "set", None)]
    assert codes == ["variant-xen-patch-missing", "variant-xen-config-unknown"]


def test_an_unknown_patch_is_one_line(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text((REPO / "boards/variants/dom0less.yaml").read_text().replace(
        "xen_patches: [dom0less-console]", "xen_patches: [no-such-patch]"))
    with pytest.raises(XenlabError) as err:
        load_variant(path)
    assert "key 'xen_patches[0]': 'no-such-patch' is not a patch in hypervisor/patches/" in str(err.value)


@pytest.mark.parametrize("old,new,expect", [
    ("memory_mb: 256", "memory_mb: 257", "key 'domains[0].memory_mb': 257 MiB, but its static_mem banks hold 256"),
    ("xen_configs: [static-mem]", "xen_configs: [no-such]", "key 'xen_configs[0]': 'no-such' is not a fragment"),
    ("direct_map: true", "direct_map: true\n    colour: 3", "key 'domains[0].colour': unknown key"),
    ("checks: [iomem]", "checks: [ping]", "'ping' needs a Dom0 and enhanced: true"),
])
def test_bad_variant_files_are_one_line(tmp_path, old, new, expect):
    with pytest.raises(XenlabError) as err:
        load_variant(variant_file(tmp_path, "staticmem", old, new))
    assert expect in str(err.value) and "staticmem-edited.yaml" in str(err.value)


def test_doctor_with_a_variant_on_debians_xen_fails_before_any_boot(tmp_path):
    images = write_image_set(tmp_path / "set", domu=True, xen_config=DEBIAN_XEN_CONFIG)
    proc = subprocess.run([*XENLAB, "doctor", "qemu-virt-arm64", "--variant", "staticmem",
                           "--images", str(images)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("error variant-needs-kconfig"))
    assert "CONFIG_STATIC_MEMORY=y" in line
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- which steps run

def test_each_variant_selects_the_steps_it_can_run():
    assert traits(None) == {"dom0"}
    assert traits(load_variant("dom0less")) == {"dom0", "enhanced", "ping", "destroy", "linux-domus"}
    assert "destroy" not in traits(load_variant("static-shared-mem"))  # its teardown hangs on 4.17
    assert traits(load_variant("without-dom0")) == {"no-dom0", "console", "linux-domus"}
    assert traits(load_variant("xtf")) == {"no-dom0", "xtf"}  # no init to reach, no shell
    assert "cpupool" in traits(load_variant("boot-cpupools"))


def test_a_variant_run_is_no_baseline_for_the_dom0_smoke_test(tmp_path):
    """The nightly compares runs within one lane: target and variant."""
    from xenlab.run import compare
    from xenlab.run.record import RunRecord

    smoke = RunRecord.start(tmp_path, "qemu-arm64", run_id="20261201T010000Z-a")
    smoke.finish()
    variant = RunRecord.start(tmp_path, "qemu-arm64", run_id="20261201T020000Z-b",
                              info={"variant": "dom0less"})
    variant.finish()
    newest = compare.newest_night([RunRecord.load(smoke.path), RunRecord.load(variant.path)])
    assert sorted(newest) == ["qemu-arm64", "qemu-arm64 [dom0less]"]
    assert newest["qemu-arm64"].run_id == "20261201T010000Z-a"
