"""The Xen under test is a build: real cross-builds and real boots, and every bad input in one line.

- Debian's 4.17.5 source package built for arm64 with the `debug` fragment passes the whole
  smoke test on qemu-arm64, and its record names the build's config and changeset.
- Debian trixie's prebuilt Xen 4.20 (its own toolstack, trixie's userspace and kernel) passes it.
- A `--xen` hypervisor of another Xen line than the set's tools is refused; allowed anyway,
  the board run ends as `toolstack-mismatch`.
- A xen.git-like tree: a one-file change rebuilds in the same work directory; a broken file
  fails with its log's tail; the seed's PSR_MODE_EL3h redefinition is recognised and fixed
  only with --apply-fix psr-mode.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xenlab.images.cache import cache_root
from xenlab.images.imageset import ImageSet
from xenlab.images.manifest import manifest_path

REPO = Path(__file__).resolve().parent.parent
XENLAB = [sys.executable, "-m", "xenlab.cli"]


def xenlab(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*XENLAB, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=kw.pop("timeout", 1800), **kw)


def built_set(proc: subprocess.CompletedProcess) -> ImageSet:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("image set "))
    return ImageSet.open(Path(line.split(" ", 2)[2]))


def smoke(image_set: ImageSet, results: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, XENLAB_IMAGE_SET=str(image_set.dir))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                           str(REPO / "testcases"), "--xenlab-target", "qemu-arm64",
                           "--xenlab-results", str(results), "-p", "no:cacheprovider", "-q"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    (run_json,) = results.glob("qemu-arm64/*/run.json")
    return proc, json.loads(run_json.read_text())


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one `xenlab:` line naming what is wrong, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    errors = [l for l in proc.stderr.splitlines() if l.startswith("xenlab:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def variant(tmp_path: Path, old: str, new: str) -> str:
    """The arm64 manifest with one text replaced, as a file to pass to --manifest."""
    text = manifest_path("arm64").read_text()
    assert old in text
    manifest = tmp_path / "arm64.yaml"
    manifest.write_text(text.replace(old, new))
    return str(manifest)


def cache_entries() -> set[str]:
    root = cache_root()
    return {f"{d}/{p.name}" for d in ("sets", "xen-builds", "xen-tools") if (root / d).is_dir()
            for p in (root / d).iterdir()}


def nothing_partial() -> None:
    for d in ("sets", "xen-builds", "xen-tools", "xen-src"):
        base = cache_root() / d
        if base.is_dir():
            assert not [p for p in base.iterdir() if p.name.startswith(".tmp-")], d


# --------------------------------------------------------------------------- released Xens

def test_debian_source_debug_build_passes_the_smoke_test(tmp_path):
    proc = xenlab("images", "build", "--arch", "arm64", "--xen-source", "debian",
                  "--xen-config", "debug")
    image_set = built_set(proc)
    xen = image_set.xen
    assert (xen["version"], xen["config"], xen["kind"]) == ("4.17.5", "debug", "debian")
    assert xen["changeset"].startswith("xen_4.17.5+72-g01140da4e8.orig.tar.xz sha256:")
    config = (image_set.dir / "xen.config").read_text()
    assert "CONFIG_DEBUG=y" in config  # the fragment took, and the .config is kept
    # Hypervisor and toolstack are one build: xl is the one built, not Debian's.
    assert not any(p["name"] == "xen-utils-4.17" for p in image_set.info["packages"])

    again = xenlab("images", "build", "--arch", "arm64", "--xen-source", "debian",
                   "--xen-config", "debug")
    assert "cached" in again.stderr and built_set(again).dir == image_set.dir  # nothing rebuilt

    proc, record = smoke(image_set, tmp_path / "results")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert record["verdict"] == "PASS" and len(record["steps"]) == 9
    build = record["info"]["xen_build"]
    assert (build["config"], build["changeset"]) == ("debug", xen["changeset"])
    assert record["info"]["xen_version"] == "4.17.5"
    shown = xenlab("results", "show", "--results", str(tmp_path / "results"))
    assert "Xen 4.17.5 debug (xen_4.17.5+72-g01140da4e8.orig.tar.xz" in shown.stdout


def test_trixie_xen_4_20_passes_the_smoke_test(tmp_path):
    image_set = built_set(xenlab("images", "build", "--arch", "arm64", "--manifest",
                                 "arm64-trixie"))
    assert image_set.xen_version.startswith("4.20.")  # from the binary: 4.20.5-pre
    assert any(p["name"] == "xen-utils-4.20" for p in image_set.info["packages"])
    proc, record = smoke(image_set, tmp_path / "results")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert record["verdict"] == "PASS" and len(record["steps"]) == 9
    assert record["info"]["xen_version"] == image_set.xen_version
    assert record["info"]["dom0_kernel"].startswith("6.12.")
    # The foreign suite's apt lives under the cache, never in the host's sources.
    assert (cache_root() / "apt" / "trixie-arm64" / "etc" / "sources.list").is_file()
    host = "\n".join(p.read_text() for p in Path("/etc/apt").rglob("*")
                     if p.is_file() and p.suffix in (".list", ".sources"))
    assert "trixie" not in host


def _start_smoke(image_set: ImageSet, results: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, XENLAB_IMAGE_SET=str(image_set.dir))
    return subprocess.Popen([sys.executable, "-m", "pytest", "--lg-env", str(REPO / "farm.yaml"),
                             str(REPO / "testcases"), "--xenlab-target", "qemu-arm64", "-k",
                             "uboot or xen_boots or dom0_boots", "--xenlab-results", str(results),
                             "-p", "no:cacheprovider", "-q", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_runs_on_one_board_take_turns_each_booting_its_own_xen(tmp_path):
    """Issue 28: two runs started 3 s apart on qemu-arm64, the first with Debian's 4.17 set
    and the second with trixie's 4.20: the second waits for the board (a lock in the
    target's state directory) and each console shows its own Xen, never the other's."""
    sets = {"first": built_set(xenlab("images", "build", "--arch", "arm64")),
            "second": built_set(xenlab("images", "build", "--arch", "arm64", "--manifest",
                                       "arm64-trixie"))}
    procs = {}
    for name, image_set in sets.items():
        procs[name] = _start_smoke(image_set, tmp_path / name, "--xenlab-place-wait", "600")
        time.sleep(3)
    outs = {name: proc.communicate(timeout=900)[0] for name, proc in procs.items()}
    records = {}
    for name, image_set in sets.items():
        assert procs[name].returncode == 0, outs[name][-3000:]
        (run,) = (tmp_path / name / "qemu-arm64").iterdir()
        records[name] = json.loads((run / "run.json").read_text())
        assert records[name]["verdict"] == "PASS", records[name]
        console = (run / "console.log").read_text(errors="replace")
        other = sets["second" if name == "first" else "first"]
        assert f"Xen version {image_set.xen_version} " in console
        assert f"Xen version {other.xen_version} " not in console
        # Its files came from its own directory of the TFTP root, named by its run id.
        loads = re.findall(r"tftpb 0x[0-9a-f]+ (\S+)/(\S+);", console)
        assert loads and {d for d, _ in loads} == {run.name}, loads
    first, second = records["first"], records["second"]
    # The TFTP root keeps the last run's directory only: the first's was cleared by the second.
    staged = sorted(p.name for p in (REPO / "build" / "tftp" / "qemu-arm64").iterdir()
                    if (p / ".xenlab-staging").is_file())
    assert staged == [second["run_id"]], staged
    assert first["info"]["board_lock"]["waited_s"] < 3
    # The second waited for the whole of the first run, and booted after it ended.
    assert second["info"]["board_lock"]["waited_s"] > 1, second["info"]["board_lock"]
    assert second["steps"][0]["started"] >= first["end"], (first["end"], second["steps"][0])
    assert first["info"]["board_lock"]["freed"] is None


def test_a_busy_board_is_one_line_naming_its_holder(tmp_path):
    """With --xenlab-place-wait 0, a board another run holds is the lab's ERROR board-busy,
    naming the holder's run, pid and start; nothing is staged or powered."""
    from xenlab.lab.boardlock import BoardLock
    holder = BoardLock.acquire("qemu-arm64", 0, run_id="20261207T000000Z-holder")
    try:
        proc = _start_smoke(built_set(xenlab("images", "build", "--arch", "arm64")),
                            tmp_path, "--xenlab-place-wait", "0")
        out = proc.communicate(timeout=120)[0]
    finally:
        holder.release()
    assert proc.returncode != 0
    (run,) = (tmp_path / "qemu-arm64").iterdir()
    record = json.loads((run / "run.json").read_text())
    assert (record["verdict"], record["classification"]) == ("ERROR", "board-busy"), record
    (step,) = record["steps"]
    assert step["name"] == "place" and "\n" not in step["message"]
    assert re.match(rf"target qemu-arm64 is busy: run 20261207T000000Z-holder \(pid "
                    rf"{os.getpid()}, since \d{{4}}-\d\d-\d\dT[\d:]+Z\) holds it; waited 0 s",
                    step["message"]), step["message"]
    assert "Traceback" not in out and "INTERNALERROR" not in out


def test_a_lock_left_by_a_killed_run_is_freed_and_said(tmp_path):
    """The kernel drops a killed run's flock; the holder it wrote is found dead, and the
    next holder says it freed it."""
    from xenlab.lab.boardlock import BoardLock
    from xenlab.lab.places import FarmError
    gone = subprocess.Popen([sys.executable, "-c", """
import sys, time
from xenlab.lab.boardlock import BoardLock
BoardLock.acquire("stale-test-board", 0, run_id="killed-run")
print("held", flush=True)
time.sleep(60)
"""], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert gone.stdout.readline().strip() == "held"
        with pytest.raises(FarmError, match=r"is busy: run killed-run \(pid \d+"):
            BoardLock.acquire("stale-test-board", 0.5)
        gone.kill()  # SIGKILL: no teardown, the lock file still names it
        gone.wait()
        lock = BoardLock.acquire("stale-test-board", 5)
        try:
            assert lock.freed and lock.freed["run_id"] == "killed-run"
            assert lock.freed["pid"] == gone.pid and lock.waited < 1
        finally:
            lock.release()
        again = BoardLock.acquire("stale-test-board", 0)
        assert again.freed is None  # a lock released in order leaves no holder behind
        again.release()
    finally:
        if gone.poll() is None:
            gone.kill()


def test_a_hypervisor_without_its_tools_is_refused_and_diagnosed(tmp_path):
    trixie = built_set(xenlab("images", "build", "--arch", "arm64", "--manifest",
                              "arm64-trixie"))
    before = cache_entries()
    refused = xenlab("images", "build", "--arch", "arm64", "--xen", str(trixie.path("xen")))
    line = one_error_line(refused, "--xen", trixie.xen_version, "4.17.5", "--xen-source")
    assert "toolstack" in line
    assert cache_entries() == before

    allowed = built_set(xenlab("images", "build", "--arch", "arm64", "--xen",
                               str(trixie.path("xen")), "--allow-tools-mismatch"))
    assert allowed.toolstack_mismatch == {"hypervisor": trixie.xen_version, "tools": "4.17.5"}
    proc, record = smoke(allowed, tmp_path / "results")
    assert proc.returncode != 0
    assert record["info"]["toolstack_mismatch"]["tools"] == "4.17.5"
    assert (record["verdict"], record["classification"]) == ("FAIL", "toolstack-mismatch"), record
    bad = next(s for s in record["steps"] if s["status"] == "FAIL")
    assert "--xen-source" in bad["message"] and "4.17.5" in bad["message"]


# --------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("case", ["not-a-tree", "not-a-tarball", "unknown-fragment",
                                  "unknown-symbol", "missing-cross-compiler", "missing-dev-package",
                                  "config-needs-source", "unknown-fix"])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, case):
    args = ["images", "build", "--arch", "arm64"]
    if case == "not-a-tree":
        (tmp_path / "empty").mkdir()
        args += ["--xen-source", str(tmp_path / "empty")]
        needles = ["is not a Xen tree", "xen/Makefile"]
    elif case == "not-a-tarball":
        (tmp_path / "xen.tar.gz").write_bytes(os.urandom(4096))
        args += ["--xen-source", str(tmp_path / "xen.tar.gz")]
        needles = ["is not a tarball"]
    elif case == "unknown-fragment":
        args += ["--xen-source", "debian", "--xen-config", "no-such-fragment"]
        needles = ["unknown Kconfig fragment 'no-such-fragment'", "debug"]
    elif case == "unknown-symbol":
        fragment = tmp_path / "bad.config"
        fragment.write_text("CONFIG_DEBUG=y\nCONFIG_XENLAB_NO_SUCH_OPTION=y\n")
        args += ["--xen-source", "debian", "--xen-config", str(fragment)]
        needles = ["unknown Kconfig symbol CONFIG_XENLAB_NO_SUCH_OPTION", f"{fragment}:2"]
    elif case == "missing-cross-compiler":
        args += ["--manifest", variant(tmp_path, "triplet: aarch64-linux-gnu",
                                       "triplet: nowhere-linux-gnu"), "--xen-source", "debian"]
        needles = ["nowhere-linux-gnu-gcc not found", "gcc-nowhere-linux-gnu"]
    elif case == "missing-dev-package":
        args += ["--manifest", variant(tmp_path, '"libbz2-dev:arm64"]',
                                       '"libbz2-dev:arm64", "libxenlab-nope-dev:arm64"]'),
                 "--xen-source", "debian"]
        needles = ["missing build packages: libxenlab-nope-dev:arm64", "apt-get install"]
    elif case == "config-needs-source":
        args += ["--xen-config", "debug"]
        needles = ["--xen-source"]
    else:
        args += ["--xen-source", "debian", "--apply-fix", "no-such-fix"]
        needles = ["unknown fix 'no-such-fix'", "psr-mode"]
    before = cache_entries()
    one_error_line(xenlab(*args), *needles)
    assert cache_entries() == before
    nothing_partial()


# --------------------------------------------------------------------------- a tree of your own

@pytest.fixture(scope="module")
def xen_git(tmp_path_factory):
    """A xen.git-like checkout: Debian's 4.17.5 source committed to a fresh repository."""
    src = built_set(xenlab("images", "build", "--arch", "arm64", "--xen-source", "debian",
                           "--xen-config", "debug"))
    orig = next((cache_root() / "xen-src").glob("debian/xen_4.17.5*/*.orig.tar.xz"))
    tree = tmp_path_factory.mktemp("xen") / "xen"
    tree.mkdir()
    subprocess.run(["tar", "xf", str(orig), "-C", str(tree), "--strip-components=1"],
                   check=True)
    git = ["git", "-C", str(tree), "-c", "user.name=xenlab", "-c", "user.email=ci@xenlab"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A", "-f"], check=True)  # as xen.git tracks them all
    subprocess.run([*git, "commit", "-q", "-m", "Xen 4.17.5 from Debian"], check=True)
    assert src.xen_version == "4.17.5"
    return tree, git


def test_a_tree_builds_then_rebuilds_one_changed_file_in_place(xen_git):
    tree, git = xen_git
    version_c = tree / "xen" / "common" / "version.c"
    original = version_c.read_text()

    def mark(tag: str) -> str:  # new content each run: this tree's work directory builds it
        marker = f"xenlab-{tag}-{secrets.token_hex(4)}"
        version_c.write_text(original + f'\nconst char xenlab_marker[] __used = "{marker}";\n')
        return marker

    mark("first")
    first = built_set(xenlab("images", "build", "--arch", "arm64", "--xen-source", str(tree)))
    assert first.xen["kind"] == "git" and first.xen["changeset"]  # git describe --always
    marker = mark("one-file-change")
    proc = xenlab("images", "build", "--arch", "arm64", "--xen-source", str(tree))
    second = built_set(proc)
    assert "1 file(s) changed" in proc.stderr  # the same work directory, one file synced
    assert second.xen["changeset"].endswith("-dirty") and second.dir != first.dir
    assert marker.encode() in second.path("xen").read_bytes()
    # A hypervisor-only change keeps the toolstack: no make dist-tools, the same tools.
    assert "make dist-tools" not in proc.stderr and "cached (no toolstack source changed)" in proc.stderr
    builds = [json.loads((cache_root() / "xen-builds" / f"arm64-{s.xen['build']}" / "build.json").read_text())
              for s in (first, second)]
    assert builds[0]["tools"] == builds[1]["tools"] and builds[1]["commit"] == builds[0]["commit"]

    version_c.write_text(original + "\nthis is not C;\n")
    before = cache_entries()
    broken = xenlab("images", "build", "--arch", "arm64", "--xen-source", str(tree))
    line = one_error_line(broken, "hypervisor build (make dist-xen) failed", "log: ")
    log = Path(line.rsplit("log: ", 1)[1])
    assert log.is_file() and "this is not C" in log.read_text()  # kept with the attempt
    assert "  | " in broken.stderr and "error" in broken.stderr  # the log's tail follows
    assert cache_entries() == before
    subprocess.run([*git, "checkout", "-q", "--", "xen/common/version.c"], check=True)


def test_psr_mode_redefinition_is_explained_and_fixed_only_on_request(xen_git):
    tree, git = xen_git
    # What an old glibc's <asm/ptrace.h> did (seed §14.1): its PSR_MODE_* come first.
    (tree / "xen" / "include" / "xen" / "glibc_ptrace.h").write_text(
        "/* As glibc's asm/ptrace.h before Linaro bug #1169164. */\n"
        "#ifndef GLIBC_PTRACE_H\n#define GLIBC_PTRACE_H\n"
        + "".join(f"#define PSR_MODE_{m} 0x{v:08x}\n" for m, v in
                  (("EL3h", 0xd), ("EL3t", 0xc), ("EL2h", 9), ("EL2t", 8), ("EL1h", 5),
                   ("EL1t", 4), ("EL0t", 0)))
        + "#endif\n")
    config_h = tree / "xen" / "include" / "xen" / "config.h"
    original = config_h.read_text()
    config_h.write_text('#include "glibc_ptrace.h"\n' + original)  # ahead of Xen's own
    try:
        before = cache_entries()
        failed = xenlab("images", "build", "--arch", "arm64", "--xen-source", str(tree))
        one_error_line(failed, '"PSR_MODE_EL3h" redefined', "§14.1", "--apply-fix psr-mode")
        assert cache_entries() == before
        fixed = built_set(xenlab("images", "build", "--arch", "arm64", "--xen-source", str(tree),
                                 "--apply-fix", "psr-mode"))
        assert fixed.xen["kind"] == "git" and fixed.xen_version == "4.17.5"
    finally:
        config_h.write_text(original)
        (tree / "xen" / "include" / "xen" / "glibc_ptrace.h").unlink()


@pytest.mark.parametrize("log, explained", [
    # Xen 4.17's own tools/configure messages, and what a missing cross compiler prints.
    ("checking for yajl_alloc in -lyajl... no\nconfigure: error: Could not find yajl\n",
     "configure: Could not find yajl (install Debian package libyajl-dev:arm64)"),
    ("configure: error: cannot find a valid uuid library\n",
     "configure: cannot find a valid uuid library (install Debian package uuid-dev:arm64)"),
    ("configure: error: Could not find libfdt\n",
     "configure: Could not find libfdt (install Debian package libfdt-dev:arm64)"),
    ("make[2]: aarch64-linux-gnu-gcc: No such file or directory\n",
     "the cross compiler aarch64-linux-gnu-gcc is missing: install Debian package "
     "gcc-aarch64-linux-gnu"),
    ("xenstored_core.c:40:10: fatal error: zlib.h: No such file or directory\n",
     "header zlib.h is missing: install Debian package zlib1g-dev:arm64"),
])
def test_known_build_failures_are_explained_with_their_fix(log, explained):
    from xenlab.images.buildlog import explain

    assert explain(log, "arm64") == explained


def compiling_in_session(sid: int) -> bool:
    """Whether a compiler runs in session `sid` (xenlab's make and its children stay in it)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[3]) == sid and comm in ("cc1", "as", "ld"):  # fields[3]: the session
            return True
    return False


def test_an_interrupted_build_leaves_nothing_in_the_cache(xen_git):
    tree, _ = xen_git
    # A header every file includes, changed: the whole hypervisor recompiles, so Ctrl-C lands
    # while make compiles (CI's faster CPU finished a one-option incremental build before it).
    config_h = tree / "xen" / "include" / "xen" / "config.h"
    original = config_h.read_text()
    config_h.write_text(original + f"\n/* xenlab-interrupted-{secrets.token_hex(4)} */\n")
    before = cache_entries()
    log_dir = cache_root() / "xen-logs"
    old_logs = set(log_dir.glob("arm64-*/build-*.log"))
    build = [*XENLAB, "images", "build", "--arch", "arm64", "--xen-source", str(tree),
             "--xen-config", "cpupools"]
    proc = subprocess.Popen(build, cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:  # until make dist-xen compiles
            new = set(log_dir.glob("arm64-*/build-*.log")) - old_logs
            if any("dist-xen" in log.read_text(errors="replace") for log in new) \
                    and compiling_in_session(proc.pid):
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the build ended before it compiled: {proc.communicate()[1][-2000:]}"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, to make and its children too
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "xenlab: interrupted" in err and "Traceback" not in err
        assert cache_entries() == before
        nothing_partial()
        # The work directory it left may hold half-built objects: the next build cleans first.
        again = xenlab(*build[len(XENLAB):])
        built_set(again)
        assert "was interrupted: make clean-xen first" in again.stderr, again.stderr[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        config_h.write_text(original)


def test_a_patch_applies_once_to_a_work_tree_that_already_has_it(tmp_path):
    """A work tree is reused across recipes: the dom0less-console patch is applied to the
    source's own files each time, never on top of itself (its context survives it)."""
    from xenlab.images import buildlog, patches, xenbuild
    from xenlab.images.manifest import load_manifest

    source = xenbuild.resolve_source("debian", load_manifest(manifest_path("arm64")))
    files = patches.patched_files(patches.PATCHES_DIR / "dom0less-console.patch")
    assert files == ["tools/helpers/init-dom0less.c", "xen/arch/arm/domain_build.c"]
    tree = tmp_path / "tree"
    for rel in files:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes((source.tree / rel).read_bytes())
    attempt = buildlog.Attempt(tmp_path / "logs")
    for _ in range(2):
        patches.apply_fix("dom0less-console", source.tree, tree, attempt)
        built = (tree / "xen/arch/arm/domain_build.c").read_text()
        assert built.count("static int __init alloc_console_ring(") == 1
        assert (tree / "tools/helpers/init-dom0less.c").read_text().count('"console/ring-ref"') == 1
