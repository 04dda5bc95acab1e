"""Bad input, as a careless user or a failing disk makes it: one line, the right exit code, nothing written.

Every case runs the real `xenlab` command (in process, through `main`) or
pytest with the plugin (in a subprocess), on a workspace of real files: a
board profile with a compiled DTB, an image set with a manifest, farm files
and run records written by `RunRecord`.  Each case then asserts:

- the exit code: 2 for a usage or input error, or the documented one;
- exactly one `xenlab:` error line on stderr, naming the file, key or value;
- no traceback;
- nothing new under the results directory, the cache or the staging directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.imageset import write_image_set
from xenlab.cli import main
from xenlab.plan.profile import boards_dir
from xenlab.run.record import RunRecord

REPO = Path(__file__).resolve().parent.parent

DTS = """/dts-v1/;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    compatible = "linux,dummy-virt";
    chosen { stdout-path = "/pl011@9000000"; };
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    psci { compatible = "arm,psci-1.0", "arm,psci-0.2", "arm,psci"; method = "hvc"; };
    cpus {
        #address-cells = <1>;
        #size-cells = <0>;
        cpu@0 { device_type = "cpu"; compatible = "arm,cortex-a57"; reg = <0>; enable-method = "psci"; };
    };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; reg = <0x0 0x9000000 0x0 0x1000>; };
};
"""


class Workspace:
    """Real files for every case; `root` is the test's cwd, and results and cache live in it."""

    def __init__(self, root: Path):
        self.root = root
        self.results = root / "results"
        self.cache = root / "cache"
        self.card = root / "card"  # what `xenlab stage --to` writes into
        self.results.mkdir()
        self.cache.mkdir()
        self.card.mkdir()
        dts = root / "board.dts"
        dts.write_text(DTS)
        self.dtb = root / "board.dtb"
        subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(self.dtb), str(dts)],
                       check=True)
        self.base = yaml.safe_load((boards_dir() / "qemu-virt-arm64.yaml").read_text())
        self.base.update(dtb={"file": str(self.dtb)}, dtb_fixups=[])
        self.board = self.profile("board")
        self.images = write_image_set(root / "set")
        self.good_farm = self.farm("good", {"qemu-arm64": {"xenlab_board": "qemu-virt-arm64"}})
        self.run_dir = self.record()

    def profile(self, name: str, change=lambda d: None) -> Path:
        data = json.loads(json.dumps(self.base))
        change(data)
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def farm(self, name: str, targets: dict) -> Path:
        doc = {"targets": {t: {"options": opts, "drivers": {"XenStrategy": {}}}
                           for t, opts in targets.items()},
               "imports": ["xenlab.lab.strategy"]}
        path = self.root / f"{name}-farm.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def record(self, target: str = "qemu-arm64") -> Path:
        record = RunRecord.start(self.results, target, profile="qemu-virt-arm64", arch="arm64")
        record.step_started("uboot")
        record.step_finished("uboot", "PASS", 1.5)
        record.finish()
        return record.path

    def corrupt(self, name: str, text: str | bytes) -> Path:
        """A copy of the good run whose run.json says `text`."""
        good = json.loads((self.run_dir / "run.json").read_text())
        run_dir = self.results / "qemu-arm64" / f"20250101T000000Z-{name}"
        run_dir.mkdir()
        data = text if isinstance(text, bytes) else text.replace("GOOD", json.dumps(good))
        (run_dir / "run.json").write_bytes(data if isinstance(data, bytes) else data.encode())
        return run_dir

    def snapshot(self) -> dict:
        out = {}
        for top in (self.results, self.cache, self.card):
            for p in top.rglob("*"):
                out[str(p)] = p.stat().st_size if p.is_file() else -1
        return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("bad-inputs"))


@pytest.fixture
def env(ws, monkeypatch):
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("XENLAB_CACHE", str(ws.cache))
    monkeypatch.setenv("XENLAB_RESULTS", str(ws.results))
    # Warm what a good plan caches (the fixed-up DTB, keyed by content): a bad
    # case must add nothing beyond it.
    assert main(["plan", str(ws.board), "--images", str(ws.images)]) == 0
    return ws


def check(capsys, ws, argv, code, *needles, before=None):
    capsys.readouterr()
    before = ws.snapshot() if before is None else before
    got = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("xenlab:")]
    assert got == code, f"exit {got}, not {code}: {err or out}"
    assert "Traceback" not in out + err
    if code == 2:
        assert len(lines) == 1, err
        for needle in needles:
            assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert ws.snapshot() == before, "a bad input wrote to the results or the cache"
    return lines[0] if lines else ""


# --------------------------------------------------------------------------- run records

GOOD_EDITS = {
    # name: (run.json text, key or value the line names); GOOD is the valid record
    "empty-object": ("{}", "schema"),
    "list": ("[]", "not a mapping"),
    "null": ("null", "not a mapping"),
    "string": ('"run"', "not a mapping"),
    "empty-file": ("", "not a valid run record"),
    "truncated": (None, "not a valid run record"),
    "garbage": (b"\x00\xff\xfe garbage", "not a valid run record"),
    "deep": ("[" * 100000 + "]" * 100000, "run.json"),
    "deeper": ("[" * 200000 + "]" * 200000, "not a valid run record"),
    # Issue 28: a FIFO would block a reader for ever; a file larger than any record is refused
    "fifo": ("FIFO", "cannot read run record: not a regular file"),
    "huge": ("HUGE", "cannot read run record: larger than 16 MiB"),
    "schema-99": (("schema", 99), "schema"),
    "schema-string": (("schema", "2"), "schema"),
    "steps-dict": (("steps", {"uboot": "PASS"}), "steps"),
    "steps-string": (("steps", "PASS"), "steps"),
    "step-bogus-status": (("steps.0.status", "BOGUS"), "steps[0].status"),
    "step-no-name": (("steps.0.name", None), "steps[0].name"),
    "step-duration-string": (("steps.0.duration_s", "1.5"), "steps[0].duration_s"),
    "step-duration-negative": (("steps.0.duration_s", -3), "steps[0].duration_s"),
    "step-evidence-string": (("steps.0.evidence", "a line"), "steps[0].evidence"),
    "step-known-string": (("steps.0.known", "yes"), "steps[0].known"),
    "step-known-no-label": (("steps.0.known", {"id": "x"}), "steps[0].known"),
    "step-original-bogus": (("steps.0.original_status", "PASS"), "steps[0].original_status"),
    "step-extra-key": (("steps.0.colour", "red"), "steps[0]"),
    "step-message-number": (("steps.0.message", 7), "steps[0].message"),
    "step-started-not-time": (("steps.0.started", "yesterday"), "steps[0].started"),
    "info-list": (("info", ["xen_version", "4.17"]), "info"),
    "info-stage-marks-string": (("info.stage_marks", "fast"), "info.stage_marks"),
    "info-stage-mark-string": (("info.stage_marks", {"uboot": "1s"}), "info.stage_marks"),
    "info-xen-build-list": (("info.xen_build", ["debian"]), "info.xen_build"),
    "info-mismatch-string": (("info.toolstack_mismatch", "4.17/4.20"), "info.toolstack_mismatch"),
    "info-xen-version-number": (("info.xen_version", 4.17), "info.xen_version"),
    "info-nr-cpus-string": (("info.nr_cpus", "2"), "info.nr_cpus"),
    "verdict-bogus": (("verdict", "BOGUS"), "verdict"),
    "verdict-missing": (("verdict", None), "verdict"),
    "harness-pid-string": (("harness_pid", "1234"), "harness_pid"),
    "harness-pid-zero": (("harness_pid", 0), "harness_pid"),
    "start-absolute": (("start", "/some/dir/PW-01T00:00:00.000Z"), "start"),
    "start-dotdot": (("start", "../../x-01T00:00:00.000Z"), "start"),
    "start-number": (("start", 20250101), "start"),
    "end-number": (("end", 5), "end"),
    "target-dotdot": (("target", "../../x"), "target"),
    "run-id-slash": (("run_id", "a/b"), "run_id"),
    "tester-list": (("tester", ["a"]), "tester"),
    "classification-number": (("classification", 3), "classification"),
    "host-missing": (("host", None), "host"),
}


def bad_record(ws: Workspace, name: str) -> Path:
    text, _ = GOOD_EDITS[name]
    if text in ("FIFO", "HUGE"):
        run_dir = ws.corrupt(name, "")
        (run_dir / "run.json").unlink()
        if text == "FIFO":
            os.mkfifo(run_dir / "run.json")
        else:
            with (run_dir / "run.json").open("wb") as f:
                f.truncate(17 << 20)  # sparse: no disk used
        return run_dir
    if text is None:
        text = (ws.run_dir / "run.json").read_text()[:200]
    if isinstance(text, tuple):
        key, value = text
        data = json.loads((ws.run_dir / "run.json").read_text())
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        last = int(last) if last.isdigit() else last
        if value is None:
            del node[last]
        else:
            node[last] = value
        text = json.dumps(data)
    return ws.corrupt(name, text)


@pytest.fixture(scope="module")
def bad_runs(ws):
    return {name: bad_record(ws, name) for name in GOOD_EDITS}


@pytest.mark.parametrize("name", list(GOOD_EDITS))
def test_results_show_names_the_file_and_key_of_a_bad_record(capsys, env, bad_runs, name):
    run_dir = bad_runs[name]
    line = check(capsys, env, ["results", "show", str(run_dir)], 2,
                 str(run_dir / "run.json"), GOOD_EDITS[name][1])
    assert len(line) < 400


def test_results_list_reports_every_unreadable_record_and_exits_1(capsys, env, bad_runs):
    capsys.readouterr()
    assert main(["results", "list", "--results", str(env.results)]) == 1
    out, err = capsys.readouterr()
    assert env.run_dir.name in out  # the readable run is still listed
    unreadable = [line for line in err.splitlines() if line.startswith("could not read:")]
    assert len(unreadable) == len(bad_runs)
    assert "Traceback" not in err


def test_results_show_without_a_run_picks_the_newest_readable(capsys, env, bad_runs):
    capsys.readouterr()
    assert main(["results", "show", "--results", str(env.results)]) == 0
    assert env.run_dir.name in capsys.readouterr().out


def test_the_dashboard_builds_despite_every_bad_record(capsys, env, bad_runs, tmp_path):
    out = tmp_path / "site"
    capsys.readouterr()
    assert main(["dashboard", "--results", str(env.results), "--out", str(out)]) == 0
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    index = (out / "index.html").read_text()
    assert env.run_dir.name in (out / "boards" / "qemu-arm64.html").read_text() or \
        env.run_dir.name in index
    for name, run_dir in bad_runs.items():
        assert run_dir.name in index, f"{name}: not listed as unreadable on the dashboard"
    # Nothing was written outside the site (the absolute and ../ start values above).
    assert not (Path("/some/dir") / "PW.html").exists()
    assert not list(tmp_path.glob("*.html")) and not list(env.root.glob("x*.html"))


# --------------------------------------------------------------------------- image sets, paths

def _manifest(ws: Workspace, name: str, text: str) -> Path:
    directory = ws.root / f"set-{name}"
    if not directory.exists():
        directory.mkdir()
        for f in ws.images.iterdir():
            if f.name != "manifest.json":
                (directory / f.name).symlink_to(f)
    good = json.loads((ws.images / "manifest.json").read_text())
    if text.startswith("edit:"):
        key, value = text[5:].split("=", 1)
        good[key] = json.loads(value)
        text = json.dumps(good)
    elif text == "delete":
        (directory / "manifest.json").unlink(missing_ok=True)
        return directory
    (directory / "manifest.json").write_text(text)
    return directory


MANIFESTS = {
    "empty-object": ("{}", "key 'arch': missing"),
    "list": ("[]", "not a mapping"),
    "truncated": ('{"arch": "arm64", "artif', "not valid JSON"),
    "missing": ("delete", "manifest.json"),
    "arch-bogus": ('edit:arch="sparc"', "key 'arch'"),
    "artifacts-dict": ('edit:artifacts={"xen": 1}', "key 'artifacts'"),
    "artifacts-empty": ("edit:artifacts=[]", "key 'artifacts'"),
    "artifact-bad-sha": ('edit:artifacts=[{"name": "xen", "size": 1, "sha256": "zz", "source": "x"}]',
                         "key 'artifacts[0].sha256'"),
    "artifact-slash-name": ('edit:artifacts=[{"name": "../xen", "size": 1, "sha256": "' + "0" * 64
                            + '", "source": "x"}]', "key 'artifacts[0].name'"),
    "marker-empty": ('edit:dom0_ready_marker=""', "key 'dom0_ready_marker'"),
}


@pytest.mark.parametrize("name", list(MANIFESTS))
@pytest.mark.parametrize("command", ["plan", "images-check", "doctor", "stage"])
def test_a_bad_image_set_is_one_line(capsys, env, name, command):
    text, needle = MANIFESTS[name]
    directory = _manifest(env, name, text)
    argv = {"plan": ["plan", str(env.board), "--images", str(directory)],
            "images-check": ["images", "check", str(directory)],
            "doctor": ["doctor", str(env.board), "--images", str(directory)],
            "stage": ["stage", str(env.board), "--to", str(env.card), "--images", str(directory)]}[command]
    check(capsys, env, argv, 2, str(directory), needle)


PATHS = {
    "plan --dtb DIR": (lambda ws: ["plan", str(ws.board), "--images", str(ws.images), "--dtb",
                                   str(ws.root)], "argument --dtb", "is a directory"),
    "plan --dtb in a missing directory": (lambda ws: ["plan", str(ws.board), "--images", str(ws.images),
                                                      "--dtb", str(ws.root / "no" / "x.dtb")],
                                          "argument --dtb", "does not exist"),
    "plan --script DIR": (lambda ws: ["plan", str(ws.board), "--images", str(ws.images), "--script",
                                      str(ws.root)], "argument --script", "is a directory"),
    "plan --script in a missing directory": (lambda ws: ["plan", str(ws.board), "--script",
                                                         str(ws.root / "no" / "boot.scr")],
                                             "argument --script", "does not exist"),
    "plan --script under a file": (lambda ws: ["plan", str(ws.board), "--script",
                                               str(ws.dtb / "boot.scr")], "argument --script"),
    "plan --images missing": (lambda ws: ["plan", str(ws.board), "--images", str(ws.root / "none")],
                              "argument --images", "no such directory"),
    "plan --images FILE": (lambda ws: ["plan", str(ws.board), "--images", str(ws.dtb)],
                           "argument --images", "not a directory"),
    "plan unknown board": (lambda ws: ["plan", "no-such-board"], "no-such-board"),
    "plan --native with --variant": (lambda ws: ["plan", str(ws.board), "--images", str(ws.images),
                                                 "--native", "--variant", "dom0less"],
                                     "--native boots the dom0 smoke test's kernel"),
    "doctor --images and --no-images": (lambda ws: ["doctor", str(ws.board), "--images",
                                                    str(ws.images), "--no-images"],
                                        "--images and --no-images contradict"),
    "plan board file not YAML": (lambda ws: ["plan", str(ws.dtb)], lambda ws: str(ws.dtb)),
    "stage without --to": (lambda ws: ["stage", str(ws.board)], "--to"),
    "stage --to missing": (lambda ws: ["stage", str(ws.board), "--to", str(ws.root / "none")],
                           "argument --to", "no such directory"),
    "stage --to FILE": (lambda ws: ["stage", str(ws.board), "--to", str(ws.dtb)],
                        "argument --to", "not a directory"),
    "stage --images FILE": (lambda ws: ["stage", str(ws.board), "--to", str(ws.card), "--images",
                                        str(ws.dtb)], "argument --images", "not a directory"),
    "stage unknown board": (lambda ws: ["stage", "no-such-board", "--to", str(ws.card)],
                            "no-such-board"),
    "stage arm32 board, arm64 set": (lambda ws: ["stage", "qemu-virt-arm32", "--to", str(ws.card),
                                                 "--images", str(ws.images)],
                                     lambda ws: str(ws.images), "qemu-virt-arm32 is arm32"),
    "doctor unknown board": (lambda ws: ["doctor", "no-such-board"], "no-such-board"),
    "doctor without a board": (lambda ws: ["doctor"], "--all"),
    "images check missing dir": (lambda ws: ["images", "check", str(ws.root / "none")],
                                 "argument dir", "no such directory"),
    "images build --xen missing": (lambda ws: ["images", "build", "--xen", str(ws.root / "none")],
                                   "argument --xen", "no such file"),
    "images build --xen DIR": (lambda ws: ["images", "build", "--xen", str(ws.root)],
                               "argument --xen", "not a file"),
    "images build --manifest missing": (lambda ws: ["images", "build", "--manifest",
                                                    str(ws.root / "none.yaml")], "none.yaml"),
    "dashboard --out FILE": (lambda ws: ["dashboard", "--results", str(ws.results), "--out",
                                         str(ws.dtb)], "argument --out", "is a file"),
    "dashboard --out under a file": (lambda ws: ["dashboard", "--results", str(ws.results), "--out",
                                                 str(ws.dtb / "site")], "argument --out"),
    "dashboard --results missing": (lambda ws: ["dashboard", "--results", str(ws.root / "none")],
                                    "argument --results", "no such directory"),
    "dashboard --port 70000": (lambda ws: ["dashboard", "--serve", "--port", "70000"],
                               "argument --port", "70000"),
    "dashboard --port abc": (lambda ws: ["dashboard", "--serve", "--port", "abc"],
                             "argument --port", "abc"),
    "dashboard --port without --serve": (lambda ws: ["dashboard", "--results", str(ws.results),
                                                     "--out", str(ws.root / "site"), "--port", "8"],
                                         "--port 8"),
    "dashboard --out is the results": (lambda ws: ["dashboard", "--results", str(ws.results),
                                                   "--out", str(ws.results)], "--out"),
    "results show --results missing": (lambda ws: ["results", "show", "--results",
                                                   str(ws.root / "none")], "argument --results"),
    "results show unknown run": (lambda ws: ["results", "show", "no-such-run", "--results",
                                             str(ws.results)], "no-such-run"),
    "results list --results FILE": (lambda ws: ["results", "list", "--results", str(ws.dtb)],
                                    "argument --results", "not a directory"),
    "health --place-wait abc": (lambda ws: ["health", "--farm", str(ws.good_farm), "--target", "x",
                                            "--place-wait", "abc"], "argument --place-wait", "abc"),
    "health --place-wait -1": (lambda ws: ["health", "--farm", str(ws.good_farm), "--target", "x",
                                           "--place-wait", "-1"], "argument --place-wait"),
    "health --run-id ../x": (lambda ws: ["health", "--farm", str(ws.good_farm), "--target", "x",
                                         "--run-id", "../x"], "argument --run-id", "../x"),
    "health --farm missing": (lambda ws: ["health", "--farm", str(ws.root / "none.yaml"), "--target",
                                          "x"], "argument --farm", "no such file"),
    "health unknown target": (lambda ws: ["health", "--farm", str(ws.good_farm), "--target",
                                          "nope"], "'nope'"),
    "testday --jobs 0": (lambda ws: ["testday", "--tester", "t", "--farm", str(ws.good_farm),
                                     "--jobs", "0"], "argument --jobs", "at least 1"),
    "testday --jobs abc": (lambda ws: ["testday", "--tester", "t", "--farm", str(ws.good_farm),
                                       "--jobs", "abc"], "argument --jobs"),
    "testday --tester blank": (lambda ws: ["testday", "--tester", " ", "--farm", str(ws.good_farm)],
                               "argument --tester"),
    "testday --farm missing": (lambda ws: ["testday", "--tester", "t", "--farm",
                                           str(ws.root / "none.yaml")], "argument --farm"),
    "testday --farm DIR": (lambda ws: ["testday", "--tester", "t", "--farm", str(ws.root)],
                           "argument --farm", "not a file"),
    "testday --targets a,,b": (lambda ws: ["testday", "--tester", "t", "--farm", str(ws.good_farm),
                                           "--targets", "a,,b"], "a,,b"),
    "testday unknown target": (lambda ws: ["testday", "--tester", "t", "--farm", str(ws.good_farm),
                                           "--targets", "nope"], "'nope'"),
    "testday --results FILE": (lambda ws: ["testday", "--tester", "t", "--farm", str(ws.good_farm),
                                           "--results", str(ws.dtb)], "argument --results", "is a file"),
    "nightly --results FILE": (lambda ws: ["nightly", "--farm", str(ws.good_farm), "--results",
                                           str(ws.dtb)], "argument --results", "is a file"),
    "nightly --no-run without runs": (lambda ws: ["nightly", "--no-run", "--skip-images",
                                                  "--results", str(ws.root / "empty")], "--no-run"),
    "bench up FILE": (lambda ws: ["bench", "up", str(ws.dtb)], "argument dir", "is a file"),
}


@pytest.mark.parametrize("name", list(PATHS))
def test_a_bad_path_or_option_is_one_line(capsys, env, name):
    argv_of, *needles = PATHS[name]
    check(capsys, env, argv_of(env), 2, *(n(env) if callable(n) else n for n in needles))


# --------------------------------------------------------------------------- farm files

FARMS = {
    "yaml-error": ("targets:\n  x: [\n", "line 3, column 1"),
    "tab-indent": ("targets:\n\tx: {}\n", "line 2"),
    "empty": ("", "empty"),
    "targets-list": ("targets: [1, 2]\n", "key 'targets'"),
    "target-string": ("targets:\n  x: hello\n", "key 'targets.x'"),
    "drivers-string": ("targets:\n  x:\n    drivers: XenStrategy\n", "key 'targets.x.drivers'"),
    "features-string": ("targets:\n  x:\n    features: net\n    drivers: {XenStrategy: {}}\n",
                        "key 'targets.x.features'"),
    "no-xenlab-board": ("targets:\n  x:\n    drivers: {XenStrategy: {}}\n",
                        "key 'targets.x.options.xenlab_board': missing"),
    "unknown-profile": ("targets:\n  x:\n    options: {xenlab_board: nope}\n"
                        "    drivers: {XenStrategy: {}}\n", "'nope'"),
    "target-dotdot": ("targets:\n  ../../../../x:\n    options: {xenlab_board: qemu-virt-arm64}\n"
                      "    drivers: {XenStrategy: {}}\n", "../../../../x"),
    "target-dash": ("targets:\n  -x:\n    options: {xenlab_board: qemu-virt-arm64}\n"
                    "    drivers: {XenStrategy: {}}\n", "-x"),
    "no-xen-target": ("targets:\n  x:\n    drivers: {ShellDriver: {}}\n", "no target with a XenStrategy"),
    "unknown-template": ("targets:\n  x:\n    options: {xenlab_board: !template $LG_NOPE}\n"
                         "    drivers: {XenStrategy: {}}\n", "LG_NOPE"),
    "binary": (b"\xff\xfe\x00garbage", "farm"),
    # Found by tests/test_fuzz.py: labgrid raises TypeError on a top-level string, only warns
    # on a duplicate key (the second `options` wins), and a long board name was ENAMETOOLONG.
    "top-level-string": ("just a string\n", "the farm file is the value 'just a string', not a mapping"),
    "top-level-list": ("- a\n- b\n", "the farm file is a list, not a mapping"),
    "options-int": ("options: 0\ntargets: {}\n", "key 'options': the value '0', not a mapping (line 1)"),
    "options-empty": ("options:\ntargets: {}\n", "key 'options': the value '', not a mapping"),
    "imports-string": ("imports: xenlab.lab.strategy\ntargets: {}\n",
                       "key 'imports': the value 'xenlab.lab.strategy', not a list"),
    "long-profile-name": ("targets:\n  x:\n    options: {xenlab_board: " + "a" * 300 + "}\n"
                          "    drivers: {XenStrategy: {}}\n", "must match"),
    "duplicate-key": ("targets:\n  x:\n    options: {xenlab_board: qemu-virt-arm64}\n"
                      "    drivers: {XenStrategy: {}}\n    options: {xenlab_board: rpi4}\n",
                      "key 'options' given twice in one mapping (line 5, column 5)"),
}


def _farm_file(ws: Workspace, name: str) -> Path:
    text, _ = FARMS[name]
    path = ws.root / f"farm-{name}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("name", list(FARMS))
def test_testday_refuses_a_bad_farm_file_in_one_line(capsys, env, name):
    path = _farm_file(env, name)
    check(capsys, env, ["testday", "--tester", "t", "--farm", str(path)], 2, str(path),
          FARMS[name][1])


def _pytest(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XENLAB_CACHE=str(ws.cache), XENLAB_RESULTS=str(ws.results))
    return subprocess.run([sys.executable, "-m", "pytest", *args, str(REPO / "testcases"),
                           "-p", "no:cacheprovider", "-q"], cwd=ws.root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["yaml-error", "no-xenlab-board", "unknown-profile",
                                  "target-dotdot", "empty", "missing"])
def test_pytest_refuses_a_bad_farm_file_before_labgrid_sees_it(env, name):
    path = env.root / "missing.yaml" if name == "missing" else _farm_file(env, name)
    before = env.snapshot()
    proc = _pytest(env, "--lg-env", str(path))
    lines = [line for line in proc.stderr.splitlines() if line.startswith("xenlab:")]
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr
    assert env.snapshot() == before


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_bad_place_wait_names_the_option(env, how):
    if how == "option":
        proc = _pytest(env, "--lg-env", str(env.good_farm), "--xenlab-place-wait", "abc")
    else:
        os.environ["XENLAB_PLACE_WAIT"] = "abc"
        try:
            proc = _pytest(env, "--lg-env", str(env.good_farm))
        finally:
            del os.environ["XENLAB_PLACE_WAIT"]
    assert proc.returncode == 4  # pytest's usage error
    assert "--xenlab-place-wait: 'abc': not a number of seconds" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- profiles that cannot boot

PROFILES = {
    "dom0-memory-over-ram": (lambda d: d["dom0"].update(memory_mb=4096), "key 'dom0.memory_mb'",
                             "does not fit in RAM"),
    "dom0-memory-nearly-all-ram": (lambda d: d["dom0"].update(memory_mb=2040), "key 'dom0.memory_mb'"),
    "memory-beyond-dtb": (lambda d: d["memory"].update(end=0x140000000), "key 'memory'",
                          "not inside one RAM bank"),
    "memory-below-dtb": (lambda d: d["memory"].update(start=0x30000000), "key 'memory'"),
    "reserved-outside-ram": (lambda d: d["memory"]["reserved"].append(
        {"start": 0x20000000, "end": 0x20100000, "why": "x"}), "key 'memory.reserved[1]'", "outside"),
    "reserved-inverted": (lambda d: d["memory"]["reserved"].append(
        {"start": 0x50000000, "end": 0x40000000, "why": "x"}), "key 'memory.reserved[1].end'"),
    "reserved-all-ram": (lambda d: d["memory"].update(reserved=[
        {"start": 0x40000000, "end": 0xc0000000, "why": "everything"}]), "not enough memory"),
    "memory-inverted": (lambda d: d["memory"].update(end=0x40000000), "key 'memory.end'"),
    "memory-string": (lambda d: d["memory"].update(end="2G"), "key 'memory.end'", "'2G'"),
    "init-command-chain": (lambda d: d["uboot"].update(init_commands=["dhcp; reset"]),
                           "key 'uboot.init_commands[0]'", "raw: true"),
    "init-command-multiline": (lambda d: d["uboot"].update(init_commands=["dhcp\nreset"]),
                               "key 'uboot.init_commands[0]'"),
    "init-command-raw-string": (lambda d: d["uboot"].update(init_commands=[{"command": "dhcp",
                                                                            "raw": "yes"}]),
                                "key 'uboot.init_commands[0].raw'"),
    "dom0-cmdline-quote": (lambda d: d["dom0"].update(cmdline='root="/dev/x"'), "key 'dom0.cmdline'"),
    "dom0-cmdline-dollar": (lambda d: d["dom0"].update(cmdline="root=${x}"), "key 'dom0.cmdline'"),
    "xen-cmdline-semicolon": (lambda d: d["xen"].update(cmdline="a; reset"), "key 'xen.cmdline'"),
    "unknown-key": (lambda d: d.update(colour="red"), "key 'colour'"),
    "dtb-missing": (lambda d: d.update(dtb={"file": "/nonexistent.dtb"}), "key 'dtb.file'"),
    "boot-command-bogus": (lambda d: d.update(boot_command="bootm"), "key 'boot_command'"),
    "load-command-injection": (lambda d: d.update(load_command="tftpb; reset"), "key 'load_command'"),
    "timeout-zero": (lambda d: d["timeouts"].update(xen=0), "key 'timeouts.xen'"),
    # #28: U-Boot reads at most CONFIG_SYS_CBSIZE per line; a 10 MB command line was accepted
    "xen-cmdline-over-cbsize": (lambda d: d["xen"].update(cmdline="loglvl=all " * 300),
                                "key 'xen.cmdline'", "uboot.max_command 2048 (CONFIG_SYS_CBSIZE)"),
    "dom0-cmdline-over-cbsize": (lambda d: d["dom0"].update(cmdline="quiet " * 400),
                                 "key 'dom0.cmdline'", "a U-Boot command of 2"),
    "cbsize-of-a-small-uboot": (lambda d: (d["uboot"].update(max_command=256),
                                           d["xen"].update(cmdline="loglvl=all " * 12)),
                                "key 'xen.cmdline'", "uboot.max_command 256"),
    "cbsize-too-small": (lambda d: d["uboot"].update(max_command=16), "key 'uboot.max_command'"),
}


@pytest.mark.parametrize("name", list(PROFILES))
def test_plan_refuses_a_profile_that_cannot_boot(capsys, env, name):
    change, *needles = PROFILES[name]
    path = env.profile(f"profile-{name}", change)
    # Profiles are named as the user would type them: relative to the current directory.
    check(capsys, env, ["plan", str(path), "--images", str(env.images)], 2, path.name, *needles)


def test_a_profile_with_a_yaml_error_gives_line_and_column(capsys, env):
    path = env.root / "broken.yaml"
    path.write_text("arch: arm64\nmemory: {start: 1\n")
    check(capsys, env, ["plan", str(path)], 2, path.name, "line 3")


def test_a_corrupt_dtb_is_one_line(capsys, env):
    bad = env.root / "corrupt.dtb"
    bad.write_bytes(env.dtb.read_bytes()[:100])
    path = env.profile("profile-corrupt-dtb", lambda d: d.update(dtb={"file": str(bad)}))
    check(capsys, env, ["plan", str(path), "--images", str(env.images)], 2, str(bad))


def test_a_dtb_with_an_empty_root_node_is_one_line(capsys, env):
    dts = env.root / "empty-root.dts"
    dts.write_text("/dts-v1/;\n/ { };\n")
    empty = env.root / "empty-root.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(empty), str(dts)], check=True)
    path = env.profile("profile-empty-root", lambda d: d.update(dtb={"file": str(empty)}))
    # doctor reads every part of the tree (PSCI, CPUs, memory, UART); it reports, not crashes.
    capsys.readouterr()
    code = main(["doctor", str(path)])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    assert "error" in out


def test_doctor_all_reports_every_profile_even_after_an_invalid_one(capsys, env, monkeypatch,
                                                                     tmp_path):
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "aaa-broken.yaml").write_text("arch: arm64\n")
    data = yaml.safe_load(env.board.read_text())
    (boards / "zzz-good.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setattr("xenlab.plan.profile.boards_dir", lambda: boards)
    capsys.readouterr()
    assert main(["doctor", "--all"]) == 1
    out = capsys.readouterr().out
    assert "== aaa-broken: invalid profile" in out and "== zzz-good" in out



CASES = 196  # the README says so: this test keeps the figure true


def test_the_suite_has_the_cases_the_readme_counts():
    """Issue 27: the bad-input suite's size is asserted, not claimed in prose."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", __file__], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    cases = [l for l in proc.stdout.splitlines() if l.startswith("tests/test_bad_inputs.py::")]
    assert len(cases) == CASES, (len(cases), proc.stdout[-500:])
    assert f"{CASES} cases, a\n  number its last test asserts" in (REPO / "README.md").read_text()
