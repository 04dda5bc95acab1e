"""The boot plan: layout arithmetic, refusals, and its two renderings agreeing."""

from __future__ import annotations

import copy
import hashlib
import re
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from xenlab.plan.profile import boards_dir, list_boards, load_profile
from xenlab.plan.bootplan import ALIGN, SCRIPT_SLOT, BootPlan, DomUSpec
from xenlab.plan.dtb import resolve_dtb
from xenlab.errors import XenlabError

MiB = 1 << 20


def align(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


# --------------------------------------------------------------------------- helpers

def arm64_image(path: Path, size: int, image_size: int = 0, flags: int = 0b1010) -> Path:
    """A file with a real arm64 Image header (magic at 0x38, image_size at 16, flags at 24)."""
    head = bytearray(64)
    struct.pack_into("<QQQ", head, 8, 0, image_size, flags)
    head[0x38:0x3C] = b"ARM\x64"
    return _write(path, bytes(head), size)


def zimage(path: Path, size: int, end: int = 0) -> Path:
    head = bytearray(64)
    struct.pack_into("<III", head, 0x24, 0x016F2818, 0, end or size)
    return _write(path, bytes(head), size)


def blob(path: Path, size: int) -> Path:
    return _write(path, path.name.encode() * 4, size)


def _write(path: Path, head: bytes, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    filler = hashlib.sha256(path.name.encode()).digest()
    body = head + filler * ((size - len(head)) // len(filler) + 1)
    path.write_bytes(body[:size])
    return path


def images(tmp_path: Path, kernel=3 * MiB + 123, ramdisk=5 * MiB + 7, xen=MiB + 40, xen_bss=0) -> dict:
    files = {"xen": arm64_image(tmp_path / "xen", xen, image_size=xen_bss),
             "dom0-kernel": arm64_image(tmp_path / "Image", kernel)}
    if ramdisk:
        files["dom0-ramdisk"] = blob(tmp_path / "rootfs.cpio.gz", ramdisk)
    return files


def variant(tmp_path: Path, base: str, change, name: str = "variant") -> Path:
    data = copy.deepcopy(yaml.safe_load((boards_dir() / f"{base}.yaml").read_text()))
    change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def compile_dts(tmp_path: Path, text: str, name: str = "board") -> Path:
    src, out = tmp_path / f"{name}.dts", tmp_path / f"{name}.dtb"
    src.write_text(text)
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(out), str(src)], check=True)
    return out


BOARD_DTS = """/dts-v1/;
/memreserve/ 0x40c00000 0x1000;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    %(chosen)s
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    reserved-memory {
        #address-cells = <2>;
        #size-cells = <2>;
        ranges;
        buf@40400000 { reg = <0x0 0x40400000 0x0 0x100000>; no-map; };
        pool { size = <0x0 0x1000000>; reusable; };
    };
    pl011@9000000 { compatible = "arm,pl011"; reg = <0x0 0x9000000 0x0 0x1000>; };
};
"""


@pytest.fixture(scope="module")
def qemu64():
    return load_profile("qemu-virt-arm64")


@pytest.fixture(scope="module")
def dtb64(qemu64):
    return resolve_dtb(qemu64)


def no_overlaps(plan):
    spans = [(plan.script_addr, plan.script_addr + SCRIPT_SLOT, "script")]
    spans += [(p.addr, p.end, p.role) for p in plan.placements]
    spans.sort()
    for (a0, a1, r), (b0, b1, s) in zip(spans, spans[1:]):
        assert a1 <= b0, f"{r} overlaps {s}"
    for p in plan.placements:
        for r in plan.profile.memory.reserved:
            assert not r.overlaps(p.addr, p.end), f"{p.role} overlaps reserved {r}"


# --------------------------------------------------------------------------- layout

def test_layout_follows_imagebuilder(tmp_path, qemu64, dtb64):
    files = images(tmp_path)
    plan = BootPlan.build(qemu64, files, dtb64)
    mem = qemu64.memory
    assert plan.script_addr == mem.start + ALIGN  # ImageBuilder: 2 MiB into RAM
    order = [p.role for p in sorted(plan.placements, key=lambda p: p.addr)]
    assert order == ["dom0-kernel", "dom0-ramdisk", "xen", "dtb"]
    cursor = plan.script_addr + SCRIPT_SLOT
    for p in sorted(plan.placements, key=lambda p: p.addr):
        # Each file at the next 2 MiB boundary after the previous one's end.
        assert p.addr == align(cursor) and p.addr % ALIGN == 0
        assert mem.start <= p.addr and p.end <= mem.end
        assert p.size == p.path.stat().st_size
        assert p.sha256 == hashlib.sha256(p.path.read_bytes()).hexdigest()
        assert p.filename == ("qemu-virt-arm64.dtb" if p.role == "dtb" else p.path.name)
        cursor = p.end
    no_overlaps(plan)


def test_xen_bss_is_kept_free(tmp_path, qemu64, dtb64):
    files = images(tmp_path, xen=MiB + 8, xen_bss=MiB * 5 // 2)  # image_size 2.5 MiB > file
    plan = BootPlan.build(qemu64, files, dtb64)
    xen, dtb = plan.placement("xen"), plan.placement("dtb")
    assert xen.size == MiB + 8 and xen.span == MiB * 5 // 2
    assert dtb.addr == align(xen.addr + MiB * 5 // 2)


def test_dtb_span_covers_resize_and_boot_growth(tmp_path, qemu64, dtb64):
    plan = BootPlan.build(qemu64, images(tmp_path), dtb64)
    dtb = plan.placement("dtb")
    # fdt resize (content + 5 memreserve slots + headroom, page-aligned), then booti's 0x3000 pad
    assert dtb.span >= dtb.size + plan.dtb_headroom + 0x3000


def test_profile_reserved_region_is_skipped(tmp_path, dtb64):
    # Reserve 1 MiB where the ramdisk would go (right after a 3 MiB kernel).
    natural = align(0x40000000 + ALIGN + SCRIPT_SLOT) + 4 * MiB
    path = variant(tmp_path, "qemu-virt-arm64", lambda d: d["memory"]["reserved"].append(
        {"start": natural + MiB, "end": natural + 2 * MiB, "why": "test"}))
    profile = load_profile(path)
    plan = BootPlan.build(profile, images(tmp_path), dtb64)
    assert plan.placement("dom0-ramdisk").addr == align(natural + 2 * MiB)
    no_overlaps(plan)


def test_dtb_reserved_memory_and_memreserve_are_skipped(tmp_path):
    dtb = compile_dts(tmp_path, BOARD_DTS % {"chosen": 'chosen { stdout-path = "/pl011@9000000"; };'})
    path = variant(tmp_path, "qemu-virt-arm64", lambda d: (d.update(dtb={"file": str(dtb)}),
                                                          d.update(dtb_fixups=[])))
    plan = BootPlan.build(load_profile(path), images(tmp_path, kernel=3 * MiB), dtb)
    taken = [(0x40400000, 0x40500000), (0x40c00000, 0x40c01000)]  # from the DTB above
    for p in plan.placements:
        for a, b in taken:
            assert not (p.addr < b and a < p.end), f"{p.role} overlaps DTB-reserved {a:#x}"
    # The kernel would have gone to 0x40400000: it moved past the no-map region.
    assert plan.placement("dom0-kernel").addr == align(0x40500000)
    # The dynamic pool (size, no reg) reserves nothing fixed.
    assert plan.placement("dom0-ramdisk").addr < 0x41000000 + 16 * MiB


def test_overflow_names_the_files_that_do_not_fit(tmp_path, dtb64):
    path = variant(tmp_path, "qemu-virt-arm64", lambda d: d.update(
        memory={"start": 0x40000000, "end": 0x40000000 + 16 * MiB}))
    with pytest.raises(XenlabError) as exc:
        BootPlan.build(load_profile(path), images(tmp_path, kernel=6 * MiB, ramdisk=7 * MiB), dtb64)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: not enough memory for ")
    assert "dom0-ramdisk 'rootfs.cpio.gz'" in message and "xen 'xen'" in message
    assert "dom0-kernel 0x40400000-" in message  # what did fit is listed as placed


def test_fixed_addresses_are_honoured(tmp_path, qemu64, dtb64):
    # The addresses that worked by hand (shared/notes/qemu-xen.md).
    plan = BootPlan.build(qemu64, images(tmp_path), dtb64, fixed={"xen": 0x42000000, "dtb": 0x44000000})
    assert plan.placement("xen").addr == 0x42000000 and plan.placement("dtb").addr == 0x44000000
    no_overlaps(plan)


@pytest.mark.parametrize("fixed,expect", [
    ({"xen": 0x42000000, "dom0-kernel": 0x42000000}, "overlaps"),
    ({"xen": 0x42100000}, "is not 2 MiB aligned"),
    ({"xen": 0x20000000}, "lies outside memory"),
    ({"xen": 0xbde00000}, "overlaps reserved 0xbddb2000-0xc0000000"),
    ({"xen": 0x40200000}, "overlaps reserved 0x40200000-0x40300000 (boot script slot)"),
    ({"kernel": 0x42000000}, "unknown role 'kernel'"),
])
def test_bad_fixed_addresses(tmp_path, qemu64, dtb64, fixed, expect):
    with pytest.raises(XenlabError) as exc:
        BootPlan.build(qemu64, images(tmp_path), dtb64, fixed=fixed)
    assert expect in str(exc.value) and "\n" not in str(exc.value)
    if "dom0-kernel" in fixed:
        assert "xen 'xen'" in str(exc.value) and "dom0-kernel 'Image'" in str(exc.value)


def test_script_address(tmp_path, qemu64, dtb64):
    plan = BootPlan.build(qemu64, images(tmp_path), dtb64, script_addr=0x48000000)
    assert plan.script_addr == 0x48000000
    assert plan.script_commands() == ["tftpb 0x48000000 boot.scr", "source 0x48000000"]
    no_overlaps(plan)
    with pytest.raises(XenlabError, match="script address 0xbe000000 overlaps reserved"):
        BootPlan.build(qemu64, images(tmp_path), dtb64, script_addr=0xbe000000)


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("name", ["my kernel", "a;reset", "x$y", 'q"x', "q'x", "h#x", "back\\slash",
                                  "tab\tx", "bell\x07", "new\nline"])
def test_bad_file_names_are_refused(tmp_path, qemu64, dtb64, name):
    files = images(tmp_path)
    files["dom0-kernel"] = arm64_image(tmp_path / name, MiB)
    with pytest.raises(XenlabError) as exc:
        BootPlan.build(qemu64, files, dtb64)
    message = str(exc.value)
    assert "\n" not in message and "dom0-kernel file" in message and repr(name) in message


@pytest.mark.parametrize("value", ['a"b', "a;b", "a$b", "a\\b", "a\nb", "a\x1bb"])
def test_bad_command_line_values_are_refused(tmp_path, qemu64, dtb64, value):
    domu = DomUSpec("guest", blob(tmp_path / "domu-Image", MiB), cmdline=value)
    with pytest.raises(XenlabError) as exc:
        BootPlan.build(qemu64, images(tmp_path), dtb64, domus=[domu])
    assert "dom0less domain 'guest': command line" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("domus,expect", [
    ([DomUSpec("bad name", Path("x"))], "must match"),
    ([DomUSpec("chosen", Path("x"))], "must match"),
    ([DomUSpec("g", Path("x")), DomUSpec("g", Path("y"))], "used twice"),
    ([DomUSpec("g", Path("x"), memory_kb=0)], "memory_kb 0"),
    ([DomUSpec("g", Path("x"), cpus=0)], "cpus 0"),
])
def test_bad_domus(tmp_path, qemu64, dtb64, domus, expect):
    with pytest.raises(XenlabError, match=expect):
        BootPlan.build(qemu64, images(tmp_path), dtb64, domus=domus)


def test_file_problems(tmp_path, qemu64, dtb64):
    files = images(tmp_path)
    with pytest.raises(XenlabError, match="no xen file given"):
        BootPlan.build(qemu64, {k: v for k, v in files.items() if k != "xen"}, dtb64)
    with pytest.raises(XenlabError, match="unknown file role 'initrd'"):
        BootPlan.build(qemu64, {**files, "initrd": files["dom0-ramdisk"]}, dtb64)
    with pytest.raises(XenlabError, match=r"dom0-ramdisk file .*nothere not found"):
        BootPlan.build(qemu64, {**files, "dom0-ramdisk": tmp_path / "nothere"}, dtb64)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(XenlabError, match="is empty"):
        BootPlan.build(qemu64, {**files, "dom0-ramdisk": tmp_path / "empty"}, dtb64)
    other = arm64_image(tmp_path / "other" / "Image", MiB)
    with pytest.raises(XenlabError, match="share the load name 'Image'"):
        BootPlan.build(qemu64, files, dtb64, domus=[DomUSpec("guest", other)])


# --------------------------------------------------------------------------- renderings

def parse_value(text: str | None) -> tuple:
    if not text:
        return ()
    if text.startswith("<"):
        return tuple(int(w, 0) for w in text.strip("<>").split())
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    return tuple(s for part in strings for s in part.split("\\0"))


def model_from_commands(cmds: list[str]) -> tuple[list[str], dict]:
    """The nodes and properties U-Boot's `fdt` commands would create."""
    created, props = [], {}
    for c in cmds:
        if c.startswith("fdt mknode "):
            _, _, parent, name = c.split(" ")
            path = f"{parent.rstrip('/')}/{name}"
            created.append(path)
            props.setdefault(path, {})
        elif c.startswith("fdt set "):
            node, prop, value = re.match(r"fdt set (\S+) (\S+)(?: (.*))?$", c).groups()
            assert not prop.startswith("#"), f"unescaped # in {c!r}"
            props.setdefault(node, {})[prop.replace("\\#", "#")] = parse_value(value)
    return created, props


def dts_tree(dtb: Path) -> dict:
    """node path -> {property: value} from `dtc -I dtb -O dts`."""
    text = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(dtb)], check=True,
                          capture_output=True, text=True).stdout
    tree, stack = {}, []
    for line in text.splitlines():
        s = line.strip()
        if s.endswith("{"):
            stack.append(s[:-1].strip().split(": ")[-1])
            tree["/" + "/".join(stack[1:])] = {}
        elif s == "};":
            stack.pop()
        elif s.endswith(";") and stack:
            key, _, value = s[:-1].partition(" = ")
            tree["/" + "/".join(stack[1:])][key] = parse_value(value)
    return tree


def assert_renderings_agree(plan, tmp_path):
    cmds = plan.uboot_commands()
    created, props = model_from_commands(cmds)
    before = dts_tree(plan.placement("dtb").path)
    out = plan.offline_dtb(tmp_path / "offline.dtb")
    after = dts_tree(out)

    assert sorted(set(after) - set(before)) == sorted(created)
    for node in created:
        assert after[node] == props[node], node
    for node, values in props.items():
        for prop, value in values.items():
            assert after[node][prop] == value, (node, prop)
    for node in before:  # nothing else changed
        untouched = {k: v for k, v in before[node].items() if k not in props.get(node, {})}
        assert {k: v for k, v in after[node].items() if k not in props.get(node, {})} == untouched

    # The commands load exactly the placements, and the modules' reg is the exact file size.
    loads = [c.split() for c in cmds if c.startswith(plan.profile.load_command + " ")]
    assert [(int(a, 16), f) for *_, a, f in loads] == [(p.addr, p.filename) for p in plan.placements]
    for p in plan.placements:
        node = next((n for n in created if n.endswith(f"/module@{p.addr:x}")), None)
        if p.role not in ("xen", "dtb"):
            hi_lo = after[node]["reg"]
            assert (hi_lo[0] << 32 | hi_lo[1], hi_lo[2] << 32 | hi_lo[3]) == (p.addr, p.path.stat().st_size)
    xen, dtb = plan.placement("xen"), plan.placement("dtb")
    assert cmds[-1] == f"{plan.profile.boot_command} {xen.addr:#x} - {dtb.addr:#x}"
    # `fdt resize` (hex) leaves room for everything the edits add.
    resize = next(c for c in cmds if c.startswith("fdt resize "))
    assert int(resize.split()[2], 16) == plan.dtb_headroom
    assert out.stat().st_size - dtb.size <= plan.dtb_headroom
    return cmds, created, after


def test_uboot_commands_and_offline_dtb_agree(tmp_path, qemu64, dtb64):
    domus = [DomUSpec("domU0", arm64_image(tmp_path / "domu-Image", 2 * MiB + 5),
                      blob(tmp_path / "domu.cpio.gz", MiB + 3), memory_kb=131072, cpus=1,
                      vpl011=True, cmdline="console=ttyAMA0 rdinit=/init"),
             DomUSpec("domU1", arm64_image(tmp_path / "domu1-Image", MiB), None, 262144, 2, False, "")]
    plan = BootPlan.build(qemu64, images(tmp_path), dtb64, domus=domus)
    cmds, created, after = assert_renderings_agree(plan, tmp_path)
    chosen = after["/chosen"]
    assert chosen["xen,xen-bootargs"] == (plan.xen_bootargs,)
    assert plan.xen_bootargs.startswith(f"console=dtuart dtuart={qemu64.dtuart} dom0_mem=512M "
                                        "dom0_max_vcpus=1")
    assert after["/chosen/domU0"]["memory"] == (0, 131072) and "vpl011" in after["/chosen/domU0"]
    assert "vpl011" not in after["/chosen/domU1"] and after["/chosen/domU1"]["cpus"] == (2,)
    assert after["/chosen/domU0"]["compatible"] == ("xen,domain",)
    kinds = sorted(after[n]["compatible"] for n in created if "/module@" in n)
    assert kinds.count(("multiboot,kernel", "multiboot,module")) == 3
    assert kinds.count(("multiboot,ramdisk", "multiboot,module")) == 2
    assert cmds[-2] == "setenv fdt_high 0xffffffffffffffff"


def test_renderings_agree_without_chosen(tmp_path):
    dtb = compile_dts(tmp_path, BOARD_DTS % {"chosen": ""})
    path = variant(tmp_path, "qemu-virt-arm64", lambda d: (d.update(dtb={"file": str(dtb)}),
                                                          d.update(dtb_fixups=[])))
    plan = BootPlan.build(load_profile(path), images(tmp_path, ramdisk=0), dtb)
    cmds, created, _ = assert_renderings_agree(plan, tmp_path)
    assert "fdt mknode / chosen" in cmds and "/chosen" in created


def test_arm32_plan_uses_bootz(tmp_path):
    profile = load_profile("qemu-virt-arm32")
    files = {"xen": zimage(tmp_path / "xen", MiB, end=MiB + MiB // 2),
             "dom0-kernel": zimage(tmp_path / "zImage", 4 * MiB)}
    plan = BootPlan.build(profile, files, resolve_dtb(profile))
    assert plan.placement("xen").span == MiB + MiB // 2  # the zImage header's end, bss included
    cmds, _, _ = assert_renderings_agree(plan, tmp_path)
    assert cmds[-2] == "setenv fdt_high 0xffffffff" and cmds[-1].startswith("bootz ")


def test_hash_is_escaped_and_prelude_is_separate(tmp_path, qemu64, dtb64):
    plan = BootPlan.build(qemu64, images(tmp_path), dtb64)
    cmds = plan.uboot_commands()
    assert all(not re.search(r"(?<!\\)#", c) for c in cmds)
    assert sum("\\#address-cells" in c for c in cmds) == 1
    assert plan.uboot_prelude() == list(qemu64.uboot.init_commands)
    assert not set(plan.uboot_prelude()) & set(cmds)


def test_offline_mode_leaves_out_fdt_commands(tmp_path, qemu64, dtb64):
    plan = BootPlan.build(qemu64, images(tmp_path), dtb64)
    cmds = plan.uboot_commands(edit_dtb=False)
    assert not [c for c in cmds if c.startswith("fdt ")]
    assert cmds[-1] == plan.uboot_commands()[-1]
    assert plan.offline_dtb(tmp_path / "o.dtb").stat().st_size <= plan.placement("dtb").span


@pytest.mark.parametrize("board_name,arch", [("qemu-virt-arm64", "AArch64"), ("qemu-virt-arm32", "ARM")])
def test_boot_script_is_a_valid_mkimage_script(tmp_path, board_name, arch):
    profile = load_profile(board_name)
    mk = arm64_image if profile.arch == "arm64" else zimage
    plan = BootPlan.build(profile, {"xen": mk(tmp_path / "xen", MiB),
                                    "dom0-kernel": mk(tmp_path / "kernel", 2 * MiB)}, resolve_dtb(profile))
    scr = plan.boot_script(tmp_path / "boot.scr")
    listing = subprocess.run(["mkimage", "-l", str(scr)], check=True, capture_output=True, text=True).stdout
    assert re.search(rf"Image Type:\s+{arch} Linux Script \(uncompressed\)", listing)
    text = (tmp_path / "boot.cmd").read_text()
    assert text == "\n".join(plan.uboot_commands()) + "\n"
    # A script image: 64-byte header, then a table of lengths ending in 0, then the script.
    data = scr.read_bytes()
    length, terminator = struct.unpack_from(">II", data, 64)
    assert terminator == 0 and data[72:72 + length].decode() == text


def test_table_lists_every_placement(tmp_path, qemu64, dtb64):
    plan = BootPlan.build(qemu64, images(tmp_path), dtb64)
    lines = plan.table().splitlines()
    assert lines[0].split() == ["role", "file", "start", "end", "size", "sha256"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == [p.role for p in plan.placements]
    for row, p in zip(rows, plan.placements):
        assert row[1:4] == [p.filename, f"{p.addr:#x}", f"{p.end:#x}"] and row[-1] == p.sha256[:12]


@pytest.mark.parametrize("name", list_boards())
def test_every_profiles_offline_dtb_reads_back_with_libfdt(tmp_path, name):
    """Every DTB xenlab writes is read back by libfdt (fdtget), as U-Boot and Xen read it.

    Real boards' /chosen often has children already (cubieboard2's framebuffers): the new
    properties must come before them, or libfdt never finds them.
    """
    from xenlab.plan.prepare import prepare

    prepared = prepare(name)
    out = prepared.plan.offline_dtb(tmp_path / f"{name}.dtb")

    def fdtget(*args):
        proc = subprocess.run(["fdtget", *args], capture_output=True, text=True)
        assert proc.returncode == 0, (name, args, proc.stderr)
        return proc.stdout.strip()

    assert fdtget(str(out), "/chosen", "xen,xen-bootargs") == prepared.plan.xen_bootargs
    assert fdtget(str(out), "/chosen", "xen,dom0-bootargs") == prepared.plan.dom0_bootargs
    assert fdtget("-t", "x", str(out), "/chosen", "#address-cells") == "2"
    for role in ("dom0-kernel", "dom0-ramdisk"):
        placed = prepared.plan.placement(role)
        node = f"/chosen/module@{placed.addr:x}"
        reg = [int(w, 16) for w in fdtget("-t", "x", str(out), node, "reg").split()]
        assert reg == [placed.addr >> 32, placed.addr & 0xFFFFFFFF, 0, placed.size]
        assert "multiboot,module" in fdtget(str(out), node, "compatible")


@pytest.mark.parametrize("cmdline", ["<0x1 0x2> console=hvc0", "[00 11] console=hvc0"])
def test_a_command_line_starting_with_cells_or_bytes_syntax_stays_a_string(tmp_path, qemu64,
                                                                           dtb64, cmdline):
    """U-Boot's `fdt set` reads a value starting with `<` as cells and `[` as bytes, quoted or not.

    Both renderings carry the same string with a leading blank, so U-Boot and
    the offline DTB store a string, and libfdt reads it back as one.
    """
    path = variant(tmp_path, "qemu-virt-arm64", lambda d: d["dom0"].update(cmdline=cmdline))
    plan = BootPlan.build(load_profile(path), images(tmp_path), dtb64)
    sets = [c for c in plan.uboot_commands() if "xen,dom0-bootargs" in c or " bootargs " in c]
    assert sets and all(f'" {cmdline}"' in c for c in sets), sets
    out = plan.offline_dtb(tmp_path / "out.dtb")
    got = subprocess.run(["fdtget", "-t", "s", str(out), "/chosen", "xen,dom0-bootargs"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert got == cmdline
    raw = subprocess.run(["fdtget", "-t", "bi", str(out), "/chosen", "xen,dom0-bootargs"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert raw[-1] == "0" and raw[0] == str(ord(" "))  # NUL-terminated text, not cells


def test_the_native_plan_boots_dom0s_kernel_without_xen(capsys):
    """`xenlab plan BOARD --native` (seed §7): Dom0's files 64 MiB into RAM, its command line
    without the Xen console, booti with the initramfs and the DTB."""
    from xenlab.cli import main
    assert main(["plan", "qemu-virt-arm64", "--native"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "natively: Dom0's kernel without Xen, command line 'rdinit=/init earlycon'" in out[0]
    kernel = next(l for l in out if l.startswith("dom0-kernel")).split()
    assert int(kernel[2], 16) >= 0x40000000 + (64 << 20)
    assert 'fdt set /chosen bootargs "rdinit=/init earlycon"' in out
    boot = out[-1].split()
    assert boot[0] == "booti" and ":" in boot[2] and "xen" not in " ".join(out).split("image set")[1]
