"""Dom0less: Xen creates the DomUs itself at boot, from the /chosen nodes U-Boot wrote.

One test per step, in the order Xen CI's dom0less jobs check them
(xen.git automation/scripts/qemu-smoke-dom0less-arm64.sh).  The board variant
(`--xenlab-variant`, boards/variants/) says which steps apply: a step marked
`xenlab_needs` runs only on variants that have what it needs.  A DomU's own
checks run in its init (xenlab.checks= on its command line) and print
"XENLAB-CHECK <name> PASS|FAIL" on its console, which is Xen's UART.
"""

import re

import pytest

from xenlab.errors import StageFailure
from xenlab.lab.xenuart import XenUart, domu_line, wait_line

pytestmark = pytest.mark.xenlab_mode("dom0less")


def _up(board):
    """The board as far as the variant boots: Dom0's shell, or Xen when there is no Dom0.

    Dom0's stages wait for its markers in the console stream; a DomU line is
    looked for only after them, in the recorded console (wait_line).
    """
    return board.boot("shell" if board.variant.dom0 else "xen")


def _domains(board):
    return [(board.variant.domid(d.name), d) for d in board.variant.domains]


def _wait_domu(board, domid: int, pattern: str, what: str, since: int = 0):
    timeout = board.profile.timeout("domu")
    m = wait_line(board.strategy, domu_line(domid, pattern), timeout, since)
    assert m, f"DOM{domid} printed no {what} on Xen's UART within {timeout:.0f} s"
    return m


def _check(board, domid: int, name: str) -> str:
    m = _wait_domu(board, domid, rf"XENLAB-CHECK {name} (PASS|FAIL) ?([^\r\n]*)", f"'{name}' check result")
    assert m.group(1) == "PASS", f"DOM{domid} check {name}: {m.group(2)}"
    return m.group(2)


def _every_check_passes(board, name: str) -> None:
    """Each DomU that runs check `name` prints its PASS line."""
    _up(board)
    for domid, d in _domains(board):
        if name in d.checks:
            _check(board, domid, name)


def test_xen_creates_every_domu(board):
    """Xen loads each DomU of the variant ("LOADING DOMU cpus= memory="), then hands the console over."""
    strategy = board.boot("xen")
    assert strategy.facts["xen_version"] == board.images.xen_version
    for d in strategy.plan.domus:
        assert f"domu-loading:{d.name}" in strategy.marks, f"Xen did not load {d.name}"
    assert "xen-handover" in strategy.marks
    assert ("dom0-loading" in strategy.marks) == board.variant.dom0


@pytest.mark.xenlab_needs("linux-domus")
def test_every_domu_boots_to_its_init(board):
    """Each DomU's Linux reaches its init, whose ready marker comes out on Xen's UART as DOMn."""
    _up(board)
    for domid, _ in _domains(board):
        _wait_domu(board, domid, re.escape(board.images.domU_ready_marker), "ready marker")


@pytest.mark.xenlab_needs("dom0")
def test_dom0_boots_beside_the_domus(board):
    """Dom0 reaches its shell, and `xl list` shows every DomU Xen created, by id."""
    board.boot("shell")
    out, _, status = board.shell.run("xl list")
    assert status == 0, out
    ids = {int(l.split()[1]) for l in out[1:] if len(l.split()) > 2 and l.split()[1].isdigit()}
    assert ids == {0} | {domid for domid, _ in _domains(board)}, out


@pytest.mark.xenlab_needs("enhanced")
def test_init_dom0less_gives_the_domus_xenstore(board):
    """init-dom0less writes each xen,enhanced DomU's xenstore nodes and introduces it."""
    board.boot("shell")
    out, _, status = board.shell.run(". /etc/xenlab/env && \"$XEN_BIN/init-dom0less\"", timeout=60)
    assert status == 0, out
    out, _, _ = board.shell.run("xl list")
    names = {l.split()[1]: l.split()[0] for l in out[1:] if len(l.split()) > 2}
    for domid, d in _domains(board):
        if d.enhanced:
            assert names.get(str(domid)) == f"dom0less-{domid}", out


@pytest.mark.xenlab_needs("linux-domus")
def test_domu_console_is_reached(board):
    """A command typed to each DomU's console runs there.

    With a Dom0, `xl console` to the DomU's PV console, which Xen 4.17 has only
    with hypervisor/patches/dom0less-console.patch (unpatched, its vpl011 back
    end is Xen and xenstore has no console/tty); otherwise, and without a Dom0,
    through Xen's console switch on its UART, as Xen CI reads it.
    """
    _up(board)
    uart = XenUart(board.strategy.console, max_domid=len(board.variant.domains))
    reached = {}
    for domid, d in _domains(board) if board.variant.dom0 else ():
        # xl console attaches to the tty xenconsoled wrote under console/tty.
        out, _, status = board.shell.run(f"xenstore-read /local/domain/{domid}/console/tty")
        if status == 0 and out and out[0].startswith("/dev/"):
            board.shell.enter_guest(str(domid))
            out, _, status = board.shell.run("hostname")
            board.shell.leave_guest()
            assert (out, status) == (["domU"], 0)
            reached[d.name] = "xl console"
    for domid, d in _domains(board):
        if d.name in reached:
            continue
        uart.switch_to(domid)  # Dom0's shell is not read from here until the switch back
        typed = len(board.strategy.recorder.text())  # the answer comes after: not another DomU's
        uart.type_line("echo XENLAB-ECHO-$((6*7))-$(hostname)")
        _wait_domu(board, domid, r"XENLAB-ECHO-42-domU", "answer to the typed command", since=typed)
        reached[d.name] = "Xen UART" + (" (no console/tty in xenstore for xl console)"
                                         if board.variant.dom0 else "")
    if board.variant.dom0 and any(v.startswith("Xen UART") for v in reached.values()):
        uart.switch_to(0)  # the UART's input back to Dom0's shell
        out, _, status = board.shell.run("echo back")
        assert (out, status) == (["back"], 0)
    board.record.set_info(domu_console=reached)


@pytest.mark.xenlab_needs("xtf")
def test_xtf_test_reports_success(board):
    """Each XTF test kernel runs its test and reports "Test result: SUCCESS" (Xen CI's pass
    line). FAILURE is FAIL and ERROR is ERROR, with the test's lines as evidence; SKIP skips."""
    _up(board)
    for domid, d in _domains(board):
        banner = _wait_domu(board, domid, r"--- Xen Test Framework ---", "XTF banner")
        m = _wait_domu(board, domid, r"Test result: (SUCCESS|FAILURE|ERROR|SKIP)([^\r\n]*)",
                       "XTF test result", since=banner.start())
        said = [line.split(f"DOM{domid}: ", 1)[1].strip() for line in
                board.strategy.recorder.text()[banner.start():m.end()].splitlines()
                if f"DOM{domid}: " in line]
        result, why = m.group(1), (said[-2] if len(said) > 1 else "")
        board.record.set_info(xtf={"test": board.variant.xtf_test, "result": result + m.group(2)})
        if result == "SKIP":
            pytest.skip(f"XTF {board.variant.xtf_test} (DOM{domid}) skipped: {why}")
        if result != "SUCCESS":
            raise StageFailure("xtf_test_reports_success", "FAIL" if result == "FAILURE" else "ERROR",
                               f"xtf-{result.lower()}", f"XTF {board.variant.xtf_test} (DOM{domid}): "
                               f"Test result: {result}: {why}", said[-12:])


@pytest.mark.xenlab_needs("ping")
def test_domu_pings_dom0_over_a_vif(board):
    """Dom0 bridges xenbr0 at 192.168.0.1 and attaches a vif; the DomU pings across it."""
    board.boot("shell")
    for cmd in ("brctl addbr xenbr0", "ip addr add 192.168.0.1/24 dev xenbr0", "ip link set xenbr0 up"):
        out, _, status = board.shell.run(cmd, timeout=60)
        assert status == 0, f"{cmd}: {out}"
    for domid, d in _domains(board):
        if "ping" in d.checks:
            out, _, status = board.shell.run(f"xl network-attach {domid} bridge=xenbr0", timeout=60)
            assert status == 0, out
            _check(board, domid, "ping")


@pytest.mark.xenlab_needs("iomem")
def test_domu_runs_on_its_static_bank(board):
    """The DomU's /proc/iomem shows its xen,static-mem bank as its System RAM."""
    _every_check_passes(board, "iomem")


@pytest.mark.xenlab_needs("shm")
def test_domus_see_the_shared_region(board):
    """Each DomU finds the statically shared region in its /reserved-memory, by its xen,shm-id."""
    _every_check_passes(board, "shm")


@pytest.mark.xenlab_needs("cpupool")
def test_domu_runs_in_its_boot_cpupool(board):
    """Dom0's `xl list -c` shows each DomU in the cpupool Xen made for it at boot."""
    board.boot("shell")
    for domid, d in _domains(board):
        if d.cpupool is None:
            continue
        out, _, status = board.shell.run(f"xl list -c {domid}")
        assert status == 0, out
        assert out[-1].split()[-1] == f"Pool-{d.cpupool}", out
        out, _, status = board.shell.run(f"xl cpupool-list -c Pool-{d.cpupool}")
        assert status == 0, out
        pool = next(p for p in board.variant.cpupools if p.id == d.cpupool)
        cpus = out[-1].split()[-1]
        assert cpus == ",".join(map(str, pool.cpus)), out


@pytest.mark.xenlab_needs("heap")
def test_dom0_memory_comes_from_the_static_heap(board):
    """Dom0 is mapped 1:1 on Arm: each System RAM range in its /proc/iomem lies in xen,static-heap."""
    board.boot("shell")
    out, _, status = board.shell.run("cat /proc/iomem")
    assert status == 0, out
    ram = [tuple(int(x, 16) for x in m.groups()) for m in
           (re.match(r"([0-9a-f]+)-([0-9a-f]+) : System RAM$", line) for line in out) if m]
    assert ram, f"no System RAM in Dom0's /proc/iomem: {out}"
    heap = board.variant.static_heap
    outside = [f"{a:#x}-{b:#x}" for a, b in ram if not any(h <= a and b < h + n for h, n in heap)]
    assert not outside, (f"Dom0 RAM {', '.join(outside)} lies outside the static heap "
                         f"{', '.join(f'{h:#x}-{h + n - 1:#x}' for h, n in heap)}")


@pytest.mark.xenlab_needs("earlyprintk")
def test_xen_prints_before_its_console_is_up(board):
    """Early printk: head.S prints "- Ready -" on the PL011 before Xen's banner."""
    board.boot("xen")
    console = board.strategy.recorder.text()
    ready, banner = console.find("- Ready -"), console.find("Xen version")
    assert 0 <= ready < banner, "no '- Ready -' before Xen's banner: early printk did not run"


@pytest.mark.xenlab_needs("destroy")
def test_domus_are_destroyed(board):
    """`xl destroy` removes every DomU Xen created; only Domain-0 stays."""
    board.boot("shell")
    for domid, _ in _domains(board):
        out, _, status = board.shell.run(f"xl destroy {domid}", timeout=60)
        assert status == 0, out
    out, _, _ = board.shell.run("xl list")
    assert [l.split()[0] for l in out[1:] if l.strip()] == ["Domain-0"], out
