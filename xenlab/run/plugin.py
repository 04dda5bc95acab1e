"""xenlab's pytest plugin: one booted board per labgrid target, one run record per board.

Loaded by the `pytest11` entry point, so plain `pytest --lg-env farm.yaml
testcases/` records results. Tests ask for the `board` fixture; it is
parametrized over the env's targets that have a XenStrategy (or those named
with `--xenlab-target`), booted once per session and shared by every step.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

import pytest
from labgrid.strategy.common import StrategyError

from ..errors import StageFailure, XenlabError
from ..lab import delivery, places, signals
from ..lab.failures import stage_failure
from ..lab.preflight import doctor_verdict, preflight
from .farmfile import Farm, load_farm, read_config
from .junit import format_run
from .stepfailure import diagnose, failure_of
from .placeguard import check_place, hold_place, name_holder, place_lost
from . import variantplugin
from .variantplugin import imagebuilder_facts, step_of as step_name, target_names, variant_of
from .known_issues import RunContext, failure_text, load_known_issues, match as match_known_issue
from .record import RunRecord, default_results_dir
from .resultsdisk import ResultsDiskFull, is_full
from .teardown import blame_natively, close_board, interrupt_reason, interrupted_line

try:  # labgrid's plugin stashes the environment it loaded from --lg-env
    from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY
except ImportError:  # pragma: no cover - labgrid without its pytest plugin
    LABGRID_ENV_KEY = None

_BOARDS: dict[str, "Board"] = {}
_FINISHED: list[Path] = []  # run directories written this session, for the summary


def pytest_addoption(parser, pluginmanager):
    pluginmanager.register(variantplugin, "xenlab-variants")  # --xenlab-variant, the steps it picks
    group = parser.getgroup("xenlab")
    group.addoption("--xenlab-target", action="append", default=[],
                    help="run on this labgrid target (repeatable; default: every XenStrategy target)")
    group.addoption("--xenlab-results", default=None,
                    help="results directory (default: $XENLAB_RESULTS or ./results)")
    group.addoption("--xenlab-tester", default=os.environ.get("XENLAB_TESTER") or getpass.getuser(),
                    help="who ran the test (recorded in run.json)")
    group.addoption("--xenlab-known-issues", default=None,
                    help="known-issues file (default: boards/known-issues.yaml)")
    group.addoption("--xenlab-run-id", default=os.environ.get("XENLAB_RUN_ID"),
                    help="run id (default: time-based, unique)")
    group.addoption("--xenlab-doctor", choices=("on", "off"),
                    default=os.environ.get("XENLAB_DOCTOR") or "on",
                    help="doctor errors before power-on end the run as ERROR board-setup (default "
                         "on; off: boot anyway, e.g. when the firmware fixes the DTB at boot)")
    group.addoption("--xenlab-native", action="store_true",
                    default=bool(os.environ.get("XENLAB_NATIVE")),
                    help="after the run, boot the Dom0 kernel, initramfs and DTB without Xen and "
                         "record whether it boots (always done when dom0_boots fails; seed §7)")
    group.addoption("--xenlab-place-wait", type=_seconds,
                    default=os.environ.get("XENLAB_PLACE_WAIT") or "60",
                    help="seconds to wait for a board (place or lock) another run holds (default 60)")


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        # ArgumentTypeError: argparse prints this message, naming the option, not "invalid value".
        raise argparse.ArgumentTypeError(f"{value!r}: not a number of seconds")
    return number


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Check the farm file before labgrid loads it: one line and exit 2, not an INTERNALERROR."""
    lg_env = getattr(config.option, "lg_env", None) or os.environ.get("LG_ENV")
    if lg_env is None:
        return None
    try:
        load_farm(lg_env)  # with every target's profile
    except XenlabError as exc:
        print(f"xenlab: error: {exc}", file=sys.stderr)
        return 2
    return None


def _env(config):
    if LABGRID_ENV_KEY is None:
        return None
    return config.stash.get(LABGRID_ENV_KEY, None)


def farm_of(config) -> Farm:
    """The farm file labgrid loaded, read by xenlab's one reader (profiles load per target)."""
    farm = config.stash.get(_FARM_KEY, None)
    if farm is None:
        env = _env(config)
        farm = read_config(env.config, env.config_file, profiles=False)
        config.stash[_FARM_KEY] = farm
    return farm


_FARM_KEY = pytest.StashKey[Farm]()


def pytest_generate_tests(metafunc):
    if "board" not in metafunc.fixturenames:
        return
    env = _env(metafunc.config)
    if env is None:
        raise pytest.UsageError("xenlab's smoke test needs a labgrid env: pytest --lg-env farm.yaml")
    farm = farm_of(metafunc.config)
    given = metafunc.config.getoption("--xenlab-target")
    unknown = [n for n in given if n not in farm.targets]
    if unknown:
        raise pytest.UsageError(f"--xenlab-target {unknown[0]}: no XenStrategy target of that "
                                f"name in {env.config_file}")
    names = target_names(metafunc.config, farm, given)  # the variant's boards (variantplugin)
    metafunc.parametrize("board", names, indirect=True, scope="session")


class Board:
    """A target booted by its XenStrategy, with its run record."""

    def __init__(self, target, record, tester: str):
        self.target = target
        self.name = target.name
        self.strategy = target.get_driver("XenStrategy")
        self.record = record
        self.tester = tester
        self.failure: StageFailure | None = None
        self.failure_unreported = False  # set when preparing failed before any step ran
        self.domu_up = False
        self.guest: str | None = None  # the DomU a step is working with, for diagnosis
        self.known_issues: list = []

    @property
    def shell(self):
        return self.strategy.shell

    @property
    def images(self):
        return self.strategy.images

    @property
    def variant(self):
        return self.strategy.prepared.variant if self.strategy.prepared else None

    @property
    def profile(self):
        return self.strategy.profile

    def context(self) -> RunContext:
        """Where a failure happens, as a known issue's scope reads it."""
        info = self.record.info
        xen = self.strategy.facts.get("xen_version") or info.get("expected_xen_version")
        return RunContext(self.name, self.record.profile, self.record.arch,
                          self.variant.name if self.variant else None,
                          bool(info.get("emulation")) or bool(self.profile and self.profile.emulated),
                          xen)

    def boot(self, state: str = "shell"):
        """Bring the board to `state`; later steps skip once a stage has failed."""
        if self.failure is not None and self.failure_unreported:
            self.failure_unreported = False
            raise self.failure
        if self.failure is not None:
            f = self.failure
            if f.stage in ("prepare", "power", "uboot", "xen", "dom0", "shell"):
                pytest.skip(f"board did not boot: {f.stage} stage {f.status} [{f.classification}]")
            pytest.skip(f"board went down in an earlier step: {f.status} [{f.classification}]")
        try:
            self.strategy.transition(state)
        except StrategyError as exc:
            tail = self.strategy.recorder.tail(15) if self.strategy.recorder else []
            self.failure = stage_failure(exc, state, tail)
            # A harness bug keeps its traceback; a board's failure speaks for itself.
            raise self.failure from (exc if self.failure.classification == "harness-error"
                                     else None)
        return self.strategy


@pytest.fixture(scope="session")
def board(request):
    """The booted board for this target (shared by every step)."""
    env = _env(request.config)
    farm_target = farm_of(request.config).target(request.param)
    root = Path(request.config.getoption("--xenlab-results") or default_results_dir())
    lease = hold_place(request, env, root, farm_target, _FINISHED)  # RemotePlace: before labgrid looks
    target = env.get_target(request.param)
    strategy = target.get_driver("XenStrategy")
    variant = variant_of(request.config)
    try:
        record = RunRecord.start(root, target.name, profile=farm_target.profile, arch="?",
                                 tester=request.config.getoption("--xenlab-tester"),
                                 run_id=request.config.getoption("--xenlab-run-id"),
                                 info=run_info(variant))
    except ResultsDiskFull as exc:  # full before the board was touched
        pytest.exit(f"xenlab: {exc}", returncode=pytest.ExitCode.TESTS_FAILED)
    name_holder(lease, record.run_id)
    b = Board(target, record, request.config.getoption("--xenlab-tester"))
    b.native_wanted = request.config.getoption("--xenlab-native")  # at the end, as asked
    _BOARDS[target.name] = b
    b.lease = lease
    strategy.record_to(record.console_log)
    try:
        b.known_issues = load_known_issues(request.config.getoption("--xenlab-known-issues"))
        strategy.prepare()
        record.arch, record.profile = strategy.profile.arch, strategy.profile.name
        images = strategy.images
        # The doctor before power-on: its first error ends the run at once (lab/preflight.py).
        lines, failure = doctor_verdict(preflight(strategy.prepared, target), strategy.profile.name)
        record.set_info(image_set=str(images.dir), image_set_hash=images.hash,
                        image_set_verified=images.verify(),
                        image_set_overrides=images.overrides, expected_xen_version=images.xen_version,
                        # The Xen under test: version, config, changeset, source (and build).
                        xen_build=images.xen, toolstack_mismatch=images.toolstack_mismatch,
                        doctor=lines, **delivery.wiring(strategy))
        if failure and request.config.getoption("--xenlab-doctor") == "on":
            b.failure, b.failure_unreported = failure, True
    except XenlabError as exc:
        # The first step fails with it (a run that boots nothing must not pass).
        b.failure, b.failure_unreported = StageFailure("prepare", "ERROR", "harness-config", str(exc)), True
    yield b
    check_place(b, lease)
    _finish(b)


def run_info(variant) -> dict | None:
    """The record's first facts: the variant, and what the caller tags the run with
    (XENLAB_RUN_INFO, a JSON object: a bisection's id, commit and probe)."""
    info = {"variant": variant.name, **imagebuilder_facts()} if variant else {}
    tags = os.environ.get("XENLAB_RUN_INFO")
    if tags:
        try:
            extra = json.loads(tags)
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            raise pytest.UsageError(f"xenlab: XENLAB_RUN_INFO {tags[:80]!r} is not a JSON object")
        info.update(extra)
    return info or None


def _finish(b: Board, abort_reason: str | None = None) -> None:
    if _BOARDS.get(b.name) is not b:
        return
    del _BOARDS[b.name]
    try:
        if b.native_wanted and "native" not in b.record.info and not interrupt_reason():
            blame_natively(b)
        # Held, so an interrupt can't stop the power-off halfway (all of it is bounded).
        with signals.deferred():
            close_board(b, abort_reason or interrupt_reason())
    except ResultsDiskFull as exc:  # the board is off and the record ended all the same
        print(f"xenlab: {exc}", file=sys.stderr)
    finally:
        _FINISHED.append(b.record.path)


def _stop_on_full_disk(session, b: Board, exc: ResultsDiskFull):
    """The results disk filled: the record is ended (resultsdisk.py); power the board off,
    say what the console lost, and stop the session after this step, in one line."""
    recorder = b.strategy.recorder
    if recorder is not None and recorder.unwritten:
        b.record.set_info(console_unwritten_bytes=recorder.unwritten)
    # The steps left skip: nothing powers the board again once the run has ended.
    b.failure = StageFailure("results", "ERROR", "results-disk-full", str(exc))
    _finish(b)
    session.shouldstop = f"xenlab: {exc}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    b = _board_of(item)
    if b is None:
        return
    try:
        _record_step(b, item, call, outcome.get_result())
        failed = b.strategy.recorder.write_error if b.strategy.recorder else None
        if failed is not None and is_full(failed):  # the console log could not be written
            b.record.end_on_full_disk(failed)
    except ResultsDiskFull as exc:
        _stop_on_full_disk(item.session, b, exc)


def _record_step(b: Board, item, call, report) -> None:
    name = step_name(item)
    if report.when == "setup" and report.passed:
        b.record.step_started(name)
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            b.record.step_finished(name, "SKIP", report.duration, reason=reason.replace("Skipped: ", ""))
        elif report.passed:
            b.record.step_finished(name, "PASS", report.duration)
        else:
            status, classification, message, evidence = failure_of(name, call.excinfo, b)
            classification, message = place_lost(b, status, classification, message)
            classification, message = diagnose(b, name, call.excinfo, classification, message)
            known = match_known_issue(b.context(), name, failure_text(classification, message,
                                                                      evidence),
                                      issues=b.known_issues)
            b.record.step_finished(name, status, report.duration, classification=classification,
                                   message=message, evidence=evidence, known=known)
            if name == "dom0_boots" and status == "FAIL":
                blame_natively(b)  # seed §7: whose failure is it, Xen's or the kernel's?


def _board_of(item) -> Board | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "board" not in callspec.params:
        return None
    return _BOARDS.get(callspec.params["board"])


def pytest_runtest_setup(item):
    # Per-target features: labgrid's lg_feature looks at the union of all targets.
    b_name = getattr(getattr(item, "callspec", None), "params", {}).get("board")
    env = _env(item.config)
    if not b_name or env is None:
        return
    target_features = farm_of(item.config).target(b_name).features
    for marker in item.iter_markers("lg_feature"):
        wanted = {marker.args[0]} if isinstance(marker.args[0], str) else set(marker.args[0])
        missing = wanted - target_features - env.get_features()
        if missing:
            pytest.skip(f"target {b_name} lacks feature(s): {', '.join(sorted(missing))}")


def pytest_sessionstart(session):
    if _env(session.config) is None:  # no boards here: only SIGTERM unwinds like Ctrl-C
        signals.install_sigterm_as_interrupt()
        return
    # SIGINT and SIGTERM (a killed CI job) end the run in seconds: records say ABORTED.
    signals.install_interrupt_handler()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    signals.ending()  # from here on signals are ignored: raised here, one is a traceback
    # Fixture teardown is skipped on some interrupts: never leave a record RUNNING.
    for b in list(_BOARDS.values()):
        _finish(b, abort_reason=interrupt_reason() or
                f"pytest session ended ({exitstatus!s}) before the board's teardown")
    places.release_all()  # places whose teardown never came


def pytest_terminal_summary(terminalreporter):
    for path in _FINISHED:
        terminalreporter.write_line("")
        terminalreporter.write_line(format_run(RunRecord.load(path)))
    if signals.received() is not None:
        terminalreporter.write_line(interrupted_line(_FINISHED))
