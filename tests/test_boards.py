"""Board profiles: the shipped ones load, bad ones fail with one line naming file and key."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from xenlab.plan.profile import NATIVE_MIN_S, STAGES, boards_dir, list_boards, load_profile
from xenlab.plan.dtb import CorruptDtb, DtbInfo, resolve_dtb
from xenlab.errors import XenlabError

SHIPPED = ["qemu-virt-arm64", "qemu-virt-arm32", "rpi4", "zcu102", "juno-r2", "cubieboard2"]


def raw(name: str) -> dict:
    return yaml.safe_load((boards_dir() / f"{name}.yaml").read_text())


def write_variant(tmp_path: Path, base: str, change, name: str = "variant") -> Path:
    """A copy of a shipped profile with `change(data)` applied, as tmp_path/<name>.yaml."""
    data = copy.deepcopy(raw(base))
    change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(XenlabError) as exc:
        load_profile(path)
    message = str(exc.value)
    assert "\n" not in message
    assert str(path.name) in message
    return message


def dts(path: Path) -> str:
    return subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(path)],
                          check=True, capture_output=True, text=True).stdout


# --------------------------------------------------------------------------- shipped profiles

def test_every_issue_board_is_shipped():
    assert set(SHIPPED) <= set(list_boards())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_with_its_yaml_values(name):
    p = load_profile(name)
    data = raw(name)
    assert p.name == name and p.path == (boards_dir() / f"{name}.yaml").resolve()
    assert (p.memory.start, p.memory.end) == (data["memory"]["start"], data["memory"]["end"])
    for r in p.memory.reserved:
        assert p.memory.start <= r.start < r.end <= p.memory.end and r.why
    # booti is for arm64 Images, bootz for arm32 zImages
    assert p.boot_command == {"arm64": "booti", "arm32": "bootz"}[p.arch]
    assert p.mkimage_arch == {"arm64": "arm64", "arm32": "arm"}[p.arch]
    for stage in STAGES:
        assert p.timeout(stage) == pytest.approx(data["timeouts"][stage] * data["timeout_multiplier"])
    assert p.emulated == name.startswith("qemu-")


def test_only_profiles_are_listed(tmp_path, monkeypatch):
    for name in SHIPPED[:2]:
        (tmp_path / f"{name}.yaml").write_text((boards_dir() / f"{name}.yaml").read_text())
    (tmp_path / "known-issues.yaml").write_text("- id: x\n  regex: y\n")
    (tmp_path / "README.md").write_text("not yaml")
    monkeypatch.setenv("XENLAB_BOARDS", str(tmp_path))
    assert list_boards() == sorted(SHIPPED[:2])
    assert load_profile(SHIPPED[0]).path == (tmp_path / f"{SHIPPED[0]}.yaml").resolve()


def test_profile_by_path_equals_profile_by_name():
    name = "qemu-virt-arm64"
    assert load_profile(boards_dir() / f"{name}.yaml") == load_profile(name)


def test_native_timeout_is_the_profiles_else_dom0s_with_a_floor(tmp_path):
    rpi4 = load_profile("rpi4")  # no timeouts.native: Dom0's, at least NATIVE_MIN_S
    assert rpi4.native_timeout() == max(rpi4.timeout("dom0"), NATIVE_MIN_S)
    slow = load_profile(write_variant(tmp_path, "qemu-virt-arm64",
                                      lambda d: d["timeouts"].update(dom0=400)))
    assert slow.native_timeout() == 400 * slow.timeout_multiplier
    own = load_profile(write_variant(tmp_path, "qemu-virt-arm64",
                                     lambda d: d["timeouts"].update(native=7)))
    assert own.native_timeout() == 7 * own.timeout_multiplier
    assert "key 'timeouts.native': 0 is too small" in load_error(
        write_variant(tmp_path, "qemu-virt-arm64", lambda d: d["timeouts"].update(native=0)))


def test_unknown_stage_timeout_is_an_error():
    with pytest.raises(XenlabError, match="no timeout for stage 'boot'"):
        load_profile("rpi4").timeout("boot")


# --------------------------------------------------------------------------- DTB resolution

def test_qemu_dump_is_reproducible_and_fixed_up():
    p = load_profile("qemu-virt-arm64")
    first, second = resolve_dtb(p), resolve_dtb(p)
    assert first == second  # same content, same cache name
    text = dts(first)
    assert "rng-seed" not in text and "kaslr-seed" not in text
    for fixup in p.dtb_fixups:
        status = subprocess.run(["fdtget", "-t", "s", str(first), fixup.disable, "status"],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert status == "disabled"


@pytest.mark.parametrize("name", ["rpi4", "cubieboard2"])
def test_debian_dtb_is_the_packaged_one(name):
    from xenlab.images import debs
    p = load_profile(name)
    assert not p.dtb_fixups
    resolved = resolve_dtb(p)  # fetches the package into the cache
    packaged = debs.extract(p.dtb.deb()) / p.dtb.path
    assert dts(resolved) == dts(packaged)


# --------------------------------------------------------------------------- bad input

def test_unknown_board():
    with pytest.raises(XenlabError) as exc:
        load_profile("no-such-board")
    assert str(exc.value).startswith("unknown board 'no-such-board' (known: ")
    assert "qemu-virt-arm64" in str(exc.value)


@pytest.mark.parametrize("name", ["Rpi4", "-x", "a b", "..", "rpi4;reboot"])
def test_board_names_are_checked_before_use(name):
    with pytest.raises(XenlabError, match="must match"):
        load_profile(name)


def test_path_traversal_is_not_a_board_name():
    # Only a name matching the pattern, or an explicit .yaml path, is ever opened.
    with pytest.raises(XenlabError, match="must match"):
        load_profile("../../etc/passwd")
    with pytest.raises(XenlabError, match="not found"):
        load_profile("../nothere.yaml")


def test_wrong_type_names_file_key_and_value(tmp_path):
    path = write_variant(tmp_path, "qemu-virt-arm64", lambda d: d["memory"].update(start="abc"))
    assert load_error(path) == f"{path}: key 'memory.start': 'abc' is not an integer"


@pytest.mark.parametrize("change,key", [
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d["memory"].update(size=1), "memory.size"),
    (lambda d: d["memory"]["reserved"][0].update(owner="u-boot"), "memory.reserved[0].owner"),
    (lambda d: d["dtb"]["qemu"].update(extra=1), "dtb.qemu.extra"),
])
def test_unknown_keys_are_rejected(tmp_path, change, key):
    message = load_error(write_variant(tmp_path, "qemu-virt-arm64", change))
    assert f"key '{key}': unknown key" in message


@pytest.mark.parametrize("change,expect", [
    # stdout-path's spelling: the hint says what to drop and where the speed goes (issue 13)
    (lambda d: d.update(dtuart="serial2:1500000n8"),
     "key 'dtuart': 'serial2:1500000n8': drop ':1500000n8' (dtuart names the UART only; "
     "give the speed as console: {baudrate: 1500000})"),
    (lambda d: d.update(arch="x86"), "key 'arch': 'x86' is not one of arm64, arm32"),
    (lambda d: d.update(emulated="yes"), "key 'emulated': 'yes' is not true or false"),
    (lambda d: d["dom0"].update(memory_mb=0), "key 'dom0.memory_mb': 0 is too small"),
    (lambda d: d["timeouts"].update(dom0=-1), "key 'timeouts.dom0': -1 is too small"),
    (lambda d: d["dtb"]["qemu"]["args"].__setitem__(5, 2), "key 'dtb.qemu.args[5]': 2 is not a string"),
    (lambda d: d.update(boot_command="bootz"), "key 'boot_command': 'bootz' cannot start an arm64 Xen"),
    (lambda d: d.update(load_command="tftpb; reset"), "key 'load_command': 'tftpb; reset' is not allowed"),
    (lambda d: d.update(dtuart="serial0 x"), "key 'dtuart': 'serial0 x' is not allowed"),
    (lambda d: d["dtb"].update(file="x.dtb"), "key 'dtb': needs exactly one of debian, file, qemu"),
    (lambda d: d["memory"].update(end=0x40000000), "key 'memory.end': 0x40000000 is not above"),
    (lambda d: d["memory"]["reserved"][0].update(end=0xd0000000), "key 'memory.reserved[0]':"),
    (lambda d: d["xen"].update(cmdline='loglvl=all" ; reset'), "key 'xen.cmdline':"),
    (lambda d: d["dom0"].update(cmdline="root=$x"), "key 'dom0.cmdline':"),
    (lambda d: d["dtb"]["qemu"]["args"].append("dumpdtb=x"), "key 'dtb.qemu.args': must not contain dumpdtb"),
])
def test_bad_values_name_file_and_key(tmp_path, change, expect):
    assert expect in load_error(write_variant(tmp_path, "qemu-virt-arm64", change))


def test_not_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("arch: [arm64\n")
    assert "not valid YAML" in load_error(path)


def test_missing_dtb_file_names_key(tmp_path):
    path = write_variant(tmp_path, "qemu-virt-arm64", lambda d: d.update(dtb={"file": "nothere.dtb"}))
    p = load_profile(path)
    with pytest.raises(XenlabError) as exc:
        resolve_dtb(p)
    message = str(exc.value)
    assert "\n" not in message and "variant.yaml" in message and "key 'dtb.file'" in message
    assert "nothere.dtb not found" in message


def test_corrupt_dtb_is_one_line(tmp_path):
    good = resolve_dtb(load_profile("qemu-virt-arm64")).read_bytes()
    for i, data in enumerate([b"hello world" * 10, good[:200], good[:40] + b"\xff" * (len(good) - 40)]):
        (tmp_path / f"bad{i}.dtb").write_bytes(data)
        path = write_variant(tmp_path, "qemu-virt-arm64",
                             lambda d: d.update(dtb={"file": f"bad{i}.dtb"}), name=f"bad{i}")
        with pytest.raises(CorruptDtb) as exc:
            resolve_dtb(load_profile(path))
        assert "\n" not in str(exc.value) and f"bad{i}.dtb" in str(exc.value)


def test_fixup_of_missing_node_names_key(tmp_path):
    path = write_variant(tmp_path, "qemu-virt-arm64",
                         lambda d: d["dtb_fixups"].append({"disable": "/nope@0", "why": "test"}))
    with pytest.raises(XenlabError) as exc:
        resolve_dtb(load_profile(path))
    assert "key 'dtb_fixups[1].disable': no node /nope@0" in str(exc.value)
    assert "variant.yaml" in str(exc.value)


def test_debian_path_not_in_package_names_key(tmp_path):
    path = write_variant(tmp_path, "rpi4",
                         lambda d: d["dtb"]["debian"].update(path="broadcom/no-such-board.dtb"))
    with pytest.raises(XenlabError) as exc:
        resolve_dtb(load_profile(path))
    assert "key 'dtb.debian.path': broadcom/no-such-board.dtb is not in linux-image-" in str(exc.value)


def test_file_dtb_is_resolved_relative_to_profile(tmp_path):
    src = resolve_dtb(load_profile("qemu-virt-arm64"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "board.dtb").write_bytes(src.read_bytes())
    path = write_variant(tmp_path, "qemu-virt-arm64", lambda d: (d.update(dtb={"file": "sub/board.dtb"}),
                                                                d.update(dtb_fixups=[])))
    out = resolve_dtb(load_profile(path))
    assert DtbInfo.load(out).node("/pl011@9000000") is not None
    assert dts(out) == dts(src)
