"""The bundled image set: built from the pinned manifests, complete, reproducible,
cached, overridable, and every bad input one clear error with nothing left behind."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.smalldisk import small_tmpfs
from xenlab.images import debs
from xenlab.images.cache import cache_root, sha256_file
from xenlab.errors import XenlabError
from xenlab.images.checks import check_image_set, check_kernel_config
from xenlab.images.imageset import build_image_set
from xenlab.images.manifest import load_manifest, manifest_path
from xenlab.images.cpio import read_cpio_gz

REPO = Path(__file__).resolve().parent.parent
XENLAB = [sys.executable, "-m", "xenlab.cli"]


@pytest.fixture(scope="module", params=["arm64", "arm32"])
def image_set(request):
    return build_image_set(request.param)


def test_every_artifact_matches_manifest_json(image_set):
    arts = image_set.artifacts
    assert set(arts) == {"xen", "xen.config", "dom0-kernel", "dom0-kernel.config",
                         "dom0-rootfs.cpio.gz", "domU-kernel", "domU-kernel.config",
                         "domU-rootfs.cpio.gz", "domU-disk.img"}
    for name, art in arts.items():
        path = image_set.dir / name
        assert path.stat().st_size == art.size, name
        assert sha256_file(path) == art.sha256, name
    pinned = {p.name: p.version for p in load_manifest(manifest_path(image_set.arch)).packages}
    xen_pkg = f"xen-hypervisor-4.17-{'arm64' if image_set.arch == 'arm64' else 'armhf'}"
    assert arts["xen"].source == f"{xen_pkg} {pinned[xen_pkg]}"
    assert image_set.xen_version.startswith("4.17.")


def test_dom0_archive_holds_the_toolstack_modules_and_init(image_set):
    entries = read_cpio_gz(image_set.dir / "dom0-rootfs.cpio.gz")
    for path in ("/init", "/bin/busybox", "/usr/sbin/xl", "/usr/lib/xen-4.17/bin/xl",
                 "/usr/lib/xen-4.17/bin/xenstored", "/usr/lib/xen-4.17/bin/xenconsoled",
                 "/usr/lib/xen-4.17/bin/xenctx", "/root/Image", "/root/guest.cfg",
                 "/root/domU-rootfs.cpio.gz", "/root/domU-disk.img", "/dev/console",
                 "/etc/xen/scripts/block", "/etc/xen/scripts/vif-bridge"):
        assert path in entries, path
    modules = entries["/etc/xenlab/modules"].data.decode().split()
    names = [Path(m).stem for m in modules]
    for wanted in ("xen-evtchn", "xen-gntdev", "xen-privcmd", "xenfs", "xen-blkback",
                   "xen-netback", "bridge", "loop"):
        assert wanted in names, wanted
    # modules.dep order: a module's dependencies load before it.
    assert names.index("stp") < names.index("bridge") and names.index("llc") < names.index("stp")
    for m in modules:
        assert m in entries, m
    # The DomU's kernel inside Dom0 is the set's DomU kernel, byte for byte.
    assert entries["/root/Image"].data == (image_set.dir / "domU-kernel").read_bytes()
    # Every shared library the toolstack asks for is in the archive.
    libs = {Path(p).name for p in entries if ".so" in p}
    for needed in ("libxenlight.so.4.17", "libxenctrl.so.4.17", "libyajl.so.2", "libc.so.6"):
        assert needed in libs, needed
    init = entries["/init"].data.decode()
    assert "mount -t xenfs xenfs /proc/xen" in init and image_set.info["dom0_ready_marker"] in init


def test_guest_config_follows_the_seed(image_set):
    cfg = read_cpio_gz(image_set.dir / "dom0-rootfs.cpio.gz")["/root/guest.cfg"].data.decode()
    for line in ('kernel = "/root/Image"', "memory = 128", 'name = "guest"', "vcpus = 1",
                 "disk = [", 'extra = "console=hvc0'):
        assert line in cfg, line


def test_second_build_is_a_cache_hit_and_a_rebuild_is_byte_identical(image_set):
    before = debs.Downloads.count
    again = build_image_set(image_set.arch)
    assert again.dir == image_set.dir and debs.Downloads.count == before
    manifest_bytes = (image_set.dir / "manifest.json").read_bytes()
    # Rebuild from scratch (packages stay cached): the same bytes come out.
    moved = image_set.dir.with_name(image_set.dir.name + ".old")
    shutil.rmtree(moved, ignore_errors=True)
    os.rename(image_set.dir, moved)
    try:
        rebuilt = build_image_set(image_set.arch)
        assert debs.Downloads.count == before  # nothing downloaded
        assert (rebuilt.dir / "manifest.json").read_bytes() == manifest_bytes
        for name in ("dom0-rootfs.cpio.gz", "domU-rootfs.cpio.gz", "domU-disk.img"):
            assert sha256_file(rebuilt.dir / name) == sha256_file(moved / name), name
    finally:
        shutil.rmtree(moved, ignore_errors=True)


def test_image_check_reads_headers_and_configs(image_set):
    findings = check_image_set(image_set)
    assert not [f for f in findings if f.severity.value == "error"], findings
    fmt = "arm64-image" if image_set.arch == "arm64" else "zimage"
    assert {f.message for f in findings if f.code.endswith("-format")} == {
        f"{n}: {fmt} header" for n in ("xen", "dom0-kernel", "domU-kernel")}
    codes = {f.code for f in findings}
    # Debian's armmp-lpae kernel has ARM_APPENDED_DTB=y (seed §9: warn); arm64 has no such option.
    assert ("dom0-appended-dtb" in codes) == (image_set.arch == "arm32")


def test_kernel_config_pitfalls_explained_in_the_seeds_terms():
    f = check_kernel_config({"CONFIG_XEN": "y", "CONFIG_DEBUG_LL": "y"}, "domU", "k.config")
    assert [x.code for x in f] == ["domU-debug-ll"] and "0x0000000c" in f[0].hint
    f = check_kernel_config({"CONFIG_XEN": "y"}, "dom0", "k.config")
    assert [x.code for x in f] == ["dom0-config-xen_dom0"]


def test_override_is_recorded_with_its_hash(tmp_path):
    base = build_image_set("arm64")
    xen = tmp_path / "xen-rc"
    xen.write_bytes((base.dir / "xen").read_bytes() + b"\0" * 16)  # a "release candidate"
    s = build_image_set("arm64", {"xen": xen})
    assert s.dir != base.dir
    art = s.artifacts["xen"]
    # Keyed by content: the same bytes from another path are the same set.
    assert (art.source, Path(art.path).name, art.sha256) == ("override", "xen-rc",
                                                             sha256_file(xen))
    assert s.overrides == {"xen": sha256_file(xen)}
    assert s.artifacts["dom0-kernel"].source == base.artifacts["dom0-kernel"].source


# ---------------------------------------------------------------- bad input


def _cli(*args, env=None):
    return subprocess.run([*XENLAB, *args], capture_output=True, text=True, cwd=REPO,
                          env=env or os.environ.copy())


def _one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("xenlab: error:")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_unknown_arch():
    _one_line_error(_cli("images", "build", "--arch", "riscv"), "--arch", "riscv")


def test_override_that_is_not_a_kernel(tmp_path):
    bogus = tmp_path / "notakernel"
    bogus.write_text("hello")
    _one_line_error(_cli("images", "build", "--xen", str(bogus)), "--xen", str(bogus),
                    "not a arm64 kernel image")


def _isolated(tmp_path) -> dict:
    env = os.environ.copy()
    env["XENLAB_CACHE"] = str(tmp_path / "cache")
    return env


def _nothing_partial(cache: Path):
    for p in cache.rglob("*"):
        assert not p.name.startswith(".tmp-"), p
        assert not p.name.startswith(".dl-"), p
    assert not (cache / "sets").exists() or not any((cache / "sets").iterdir())


def _manifest_variant(tmp_path, edit) -> Path:
    data = yaml.safe_load(manifest_path("arm64").read_text())
    edit(data)
    out = tmp_path / "arm64.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def test_version_the_archive_does_not_have(tmp_path, monkeypatch):
    monkeypatch.setenv("XENLAB_CACHE", str(tmp_path / "cache"))
    m = _manifest_variant(tmp_path, lambda d: d["packages"][0].update(version="0.0.0-xenlab"))
    with pytest.raises(XenlabError) as err:
        build_image_set("arm64", manifest=m)
    assert str(m) in str(err.value) and "0.0.0-xenlab" in str(err.value)
    _nothing_partial(tmp_path / "cache")


def test_checksum_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("XENLAB_CACHE", str(tmp_path / "cache"))
    pkg = next(p for p in load_manifest(manifest_path("arm64")).packages if p.name == "libfdt1")
    wrong = debs.DebPackage(pkg.name, pkg.version, "0" * 64, pkg.arch)
    with pytest.raises(XenlabError) as err:
        debs.fetch([wrong], where="hypervisor/arm64.yaml")
    msg = str(err.value)
    assert "checksum mismatch for libfdt1" in msg and "0" * 64 in msg and pkg.sha256 in msg
    assert not wrong.deb_path().exists()
    _nothing_partial(tmp_path / "cache")


def test_manifest_unknown_key_and_bad_sha(tmp_path):
    m = _manifest_variant(tmp_path, lambda d: d.update(colour="blue"))
    with pytest.raises(XenlabError, match="key 'colour': unknown key"):
        load_manifest(m)
    m = _manifest_variant(tmp_path, lambda d: d["packages"][1].update(sha256="abc"))
    with pytest.raises(XenlabError, match=r"packages\[1\].sha256"):
        load_manifest(m)


def test_full_disk_leaves_nothing_partial(tmp_path, monkeypatch):
    with small_tmpfs(tmp_path / "small", "48M") as small:
        monkeypatch.setenv("XENLAB_CACHE", str(small))
        m = load_manifest(manifest_path("arm64"))
        (small / "debs").mkdir()
        for pkg in m.packages:  # the packages fit; unpacking them does not
            shutil.copy(_real_cache_deb(pkg), small / "debs")
        with pytest.raises(XenlabError, match="disk full"):
            build_image_set("arm64")
        for p in small.rglob("*"):
            assert not p.name.startswith(".tmp-"), p
        assert not (small / "sets").exists() or not any((small / "sets").iterdir())


def _real_cache_deb(pkg) -> Path:
    saved = os.environ["XENLAB_CACHE"]
    os.environ["XENLAB_CACHE"] = _REAL_CACHE
    try:
        return pkg.deb_path()
    finally:
        os.environ["XENLAB_CACHE"] = saved


_REAL_CACHE = str(cache_root())


def test_images_build_prints_the_artifact_table():
    proc = _cli("images", "build", "--arch", "arm64")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(l for l in lines if l.startswith("artifact"))
    assert header.split() == ["artifact", "size", "sha256", "source"]
    s = build_image_set("arm64")
    for art in s.artifacts.values():
        row = next(l for l in lines if l.startswith(art.name + " "))
        assert art.sha256[:16] in row and art.source.split()[0] in row


def test_pin_rewrites_versions_in_place_keeping_comments_and_layout(tmp_path):
    """`images pin` edits the manifest with ruamel.yaml: only the pinned values change."""
    from xenlab.images.manifest import pin_manifest

    copy = tmp_path / "arm64.yaml"
    original = manifest_path("arm64").read_text()
    copy.write_text(original)
    new_sha = "f" * 64

    def query(name, arch, suite):
        pkg = next(p for p in load_manifest(copy).packages if p.name == name)
        assert arch == "arm64"
        return ("99.0-xenlab", new_sha) if name == "libfdt1" else (pkg.version, pkg.sha256)

    changed = pin_manifest(copy, query)
    assert changed == ["libfdt1: 1.6.1-4+b1 -> 99.0-xenlab"]
    before, after = original.splitlines(), copy.read_text().splitlines()
    diff = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(diff) == 1 and "libfdt1" in diff[0][1]
    assert diff[0][1] == f'  - {{name: libfdt1, version: "99.0-xenlab", sha256: {new_sha}}}'
    assert load_manifest(copy).package("libfdt1").version == "99.0-xenlab"


def test_elf_needed_libraries_match_readelf():
    """The library closure reads ELF headers with pyelftools; it agrees with binutils."""
    import re as _re

    from xenlab.images import rootfs

    m = load_manifest(manifest_path("arm64"))
    utils = m.package("xen-utils-4.17")
    debs.fetch([utils])
    xl = debs.extract(utils) / "usr/lib/xen-4.17/bin/xl"
    proc = subprocess.run(["readelf", "-d", "-W", str(xl)], capture_output=True, text=True,
                          check=True)
    assert rootfs.elf_needed(xl) == _re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                                                proc.stdout)
    assert "libxenlight.so.4.17" in rootfs.elf_needed(xl)
    assert rootfs.elf_interpreter(xl) == "/lib/ld-linux-aarch64.so.1"
    assert rootfs.elf_needed(manifest_path("arm64")) == []  # not an ELF file: nothing


# ------------------------------------------------------------- a cache that checks what it serves

@pytest.fixture
def private_set(tmp_path, monkeypatch):
    """The cached arm64 set copied into a private cache that shares the real one's packages
    and extracts (read, never written), so a test may break the copy and rebuild it."""
    real = build_image_set("arm64")
    private = tmp_path / "cache"
    (private / "sets").mkdir(parents=True)
    for entry in Path(_REAL_CACHE).iterdir():
        if entry.name != "sets":
            (private / entry.name).symlink_to(entry)
    shutil.copytree(real.dir, private / "sets" / real.dir.name)
    monkeypatch.setenv("XENLAB_CACHE", str(private))
    return private / "sets" / real.dir.name, real


def test_a_changed_cached_kernel_is_one_line_then_rebuilt(private_set, capsys):
    """Issue 28: one byte of a cached Dom0 kernel changed ("Linux version" -> "Xinux
    version") is found before anything boots it: refused with --no-rebuild, else rebuilt."""
    from xenlab.cli import main
    from xenlab.images.imageset import CorruptSet
    set_dir, real = private_set
    kernel = set_dir / "dom0-kernel"
    data = bytearray(kernel.read_bytes())
    data[data.index(b"Linux version")] = ord("X")
    kernel.write_bytes(bytes(data))
    with pytest.raises(CorruptSet, match=r"dom0-kernel: sha256 [0-9a-f]{16}… does not match "
                                         r"the set's manifest \([0-9a-f]{16}…\)$"):
        build_image_set("arm64", rebuild=False)
    assert main(["images", "build", "--arch", "arm64", "--no-rebuild"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dom0-kernel: sha256" in err[0], err
    lines = []
    again = build_image_set("arm64", log=lines.append)
    assert any(line.endswith("does not match the set's manifest "
                             f"({real.artifacts['dom0-kernel'].sha256[:16]}…): rebuilding the set")
               for line in lines), lines
    assert again.dir == set_dir and b"Xinux version" not in again.path("dom0-kernel").read_bytes()
    assert again.verify()["dom0-kernel"] == sha256_file(again.path("dom0-kernel"))
    assert not [p for p in set_dir.parent.iterdir() if p.name.startswith(".tmp-")]


def test_a_set_named_by_path_is_checked_before_a_run_uses_it(private_set):
    """A truncated `xen` in a set given as a directory is the set's one line, not a UART
    diagnosis after the boot."""
    from xenlab.images.imageset import CorruptSet
    from xenlab.plan.prepare import image_set_for
    from xenlab.plan.profile import load_profile
    set_dir, real = private_set
    xen = set_dir / "xen"
    xen.write_bytes(xen.read_bytes()[:4096])
    with pytest.raises(CorruptSet, match=rf"xen: 4096 bytes, the set's manifest says "
                                         rf"{real.artifacts['xen'].size}$"):
        image_set_for(load_profile("qemu-virt-arm64"), set_dir)


def test_a_set_without_its_manifest_is_rebuilt_in_place(private_set):
    set_dir, real = private_set
    (set_dir / "manifest.json").unlink()
    lines = []
    again = build_image_set("arm64", log=lines.append)
    assert again.dir == set_dir and (set_dir / "manifest.json").is_file()
    assert any("not an image set" in line and line.endswith("rebuilding the set")
               for line in lines), lines
    assert set(again.verify()) == set(real.artifacts)


def test_a_warm_check_hashes_nothing_it_checked_before(private_set, monkeypatch):
    from xenlab.images import imageset, integrity
    set_dir, real = private_set
    opened = imageset.ImageSet.open(set_dir)
    hashed = []
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    assert opened.verify() == {n: a.sha256 for n, a in real.artifacts.items()}
    assert len(hashed) == len(real.artifacts)  # the copy is new to the check: all of it
    hashed.clear()
    assert opened.verify() == {n: a.sha256 for n, a in real.artifacts.items()}
    assert hashed == []  # unchanged size, mtime and inode: nothing hashed again
    (set_dir / "xen.config").write_text((set_dir / "xen.config").read_text())  # same bytes, new mtime
    opened.verify()
    assert [p.name for p in hashed] == ["xen.config"]


def test_a_changed_cached_deb_is_downloaded_again(tmp_path, monkeypatch):
    """A cached .deb that no longer matches its pinned sha256 is fetched again, and the
    new copy is checked too."""
    pkg = next(p for p in load_manifest(manifest_path("arm64")).packages
               if p.name.startswith("xen-hypervisor"))
    private = tmp_path / "cache"
    (private / "debs").mkdir(parents=True)
    good = pkg.deb_path()  # in the real cache: the bundled set was built from it
    monkeypatch.setenv("XENLAB_CACHE", str(private))
    bad = pkg.deb_path()
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    before = debs.Downloads.count
    paths = debs.fetch([pkg])
    assert debs.Downloads.count == before + 1
    assert sha256_file(paths[pkg]) == pkg.sha256
