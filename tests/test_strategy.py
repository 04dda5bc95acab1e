"""XenStrategy's transitions, in this process, on a replayed console (tests/support/fakeboard.py).

The board is a real QEMU transcript served over TCP and powered by
ExternalPowerDriver; labgrid's own SerialDriver, UBootDriver and our
XenShellDriver drive it, exactly as on a bench board.  No pytest child: the
strategy's state, marks and failures are asserted directly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from labgrid import Environment
from labgrid.strategy.common import StrategyError

from support.fakeboard import FakeBoard, env_file
from xenlab.lab.failures import stage_failure
from xenlab.lab.monitors import STAGE_MARKERS
from xenlab.lab.strategy import BELOW, BoardState


@pytest.fixture
def replayed(tmp_path):
    """(strategy, board) for a scenario; powered off and closed afterwards."""
    made = []

    def make(scenario: str):
        board = FakeBoard(scenario)
        env = Environment(str(env_file(tmp_path, board)))
        target = env.get_target("fake-arm64")
        strategy = target.get_driver("XenStrategy")
        strategy.record_to(tmp_path / f"{scenario}.log")
        made.append((target, strategy, board))
        return strategy, board

    yield make
    for target, strategy, board in made:
        try:
            strategy.cut_power()
        finally:
            strategy.recorder.close()
            target.cleanup()
            board.close()


def test_the_state_graph_is_a_chain_from_off():
    """Each state is entered from the one below it, down to off: the graph in one table."""
    chain, state = [], BoardState.shell
    while state in BELOW:
        chain.append(state)
        state = BELOW[state]
    assert chain + [state] == [BoardState.shell, BoardState.dom0, BoardState.xen,
                               BoardState.uboot, BoardState.off]
    assert set(BELOW) | {BoardState.off, BoardState.unknown} == set(BoardState)


def test_walks_to_the_shell_in_order_and_reentry_is_a_no_op(replayed):
    strategy, _ = replayed("clean")
    strategy.transition("shell")
    assert strategy.status is BoardState.shell
    marks = strategy.marks
    order = ["uboot", "xen-banner", "dom0-loading", "xen-handover", "dom0-linux", "dom0-ready",
             "dom0-prompt"]
    assert [m for m in marks if m in order] == order
    assert [marks[m] for m in order] == sorted(marks[m] for m in order)
    assert strategy.facts["xen_version"] == "4.17.5"
    assert strategy.shell.get_status() == 1
    out, _, status = strategy.shell.run("id -u")
    assert (out, status) == (["0"], 0)
    # U-Boot's replies are kept: every file of the plan was loaded whole.
    loaded = [cmd.split()[-1] for cmd, out in strategy.uboot_replies if cmd.startswith("tftpb ")]
    # ... each from the run's own directory of the TFTP root (the run's directory's name)
    run_dir = strategy.recorder.path.parent.name
    assert {name.removeprefix(f"{run_dir}/") for name in loaded} == set(strategy.plan.files())
    assert all(name.startswith(f"{run_dir}/") for name in loaded), loaded

    before = dict(marks)
    strategy.transition("shell")  # already there: nothing is powered or typed again
    assert strategy.marks == before and strategy.status is BoardState.shell


def test_going_down_to_uboot_power_cycles_and_walks_up_again(replayed):
    strategy, board = replayed("clean")
    strategy.transition("shell")
    first_boot = strategy.marks["dom0-ready"]
    strategy.transition("uboot")  # below the shell: off, then on again
    assert strategy.status is BoardState.uboot
    assert strategy.shell.get_status() == 0  # the shell driver was deactivated with the power
    assert set(strategy.marks) == {"uboot-autoboot", "uboot-prompt", "uboot"}
    strategy.transition("shell")
    assert strategy.status is BoardState.shell and strategy.marks["dom0-ready"] > 0
    assert first_boot > 0
    strategy.transition("off")
    assert strategy.status is BoardState.off


def test_a_failed_transition_names_its_stage_and_breaks_the_strategy(replayed):
    strategy, _ = replayed("xen-dom0-construction-panic")
    with pytest.raises(StrategyError) as err:
        strategy.transition("shell")
    failure = stage_failure(err.value, "shell")
    assert (failure.stage, failure.status, failure.classification) == ("xen", "FAIL", "xen-panic")
    # The message quotes the console line itself, not the monitor's regex.
    assert "Panic on CPU 0" in failure.message and "\\d" not in failure.message
    assert any("Failed to allocate requested dom0 memory" in line for line in failure.evidence)
    assert strategy.status is BoardState.uboot  # it got as far as U-Boot
    # labgrid's never_retry: a broken strategy refuses further transitions...
    with pytest.raises(StrategyError, match="broken"):
        strategy.transition("shell")
    # ...but the power can still be cut, so the board never stays on.
    strategy.cut_power()
    assert strategy.status is BoardState.off


def test_unknown_state_is_refused(replayed):
    strategy, _ = replayed("clean")
    with pytest.raises(StrategyError) as err:
        strategy.transition("unknown")
    assert "can not transition to BoardState.unknown" in str(err.value.__cause__)
    assert strategy.status is BoardState.unknown  # nothing was powered


def test_dom0s_first_marker_is_found_when_xen_splits_its_line():
    """A recorded dom0less boot (tests/data/README.md) where Xen's vGICD message for the
    DomU landed inside Dom0's "Booting Linux" line: the stage still sees Linux start, and
    before Dom0's ready marker."""
    console = (Path(__file__).parent / "data" / "qemu-arm64-dom0less-interleaved.log").read_text(
        errors="replace")
    assert "Booting Linux on physical CPU" not in console  # the split line, as recorded
    (_, linux), (_, ready) = STAGE_MARKERS["dom0"]
    found = re.search(linux, console)
    assert found and found.start() < console.index("XENLAB-DOM0-READY")
