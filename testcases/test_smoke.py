"""The Xen ARM manual smoke test, one test per step, in the wiki's order.

Every step runs on the `board` fixture: a labgrid target booted once per
session by the XenStrategy and shared by the steps. A step that needs a
feature the target lacks (labgrid `lg_feature`) is skipped with the reason.
"""

import re
import time

import pytest

pytestmark = pytest.mark.xenlab_mode("dom0")  # with --xenlab-variant, test_dom0less.py runs instead

GUEST = "guest"
GUEST_CFG = "/root/guest.cfg"


def test_uboot(board):
    """U-Boot answers and loads Xen, the DTB, the Dom0 kernel and initramfs, each whole."""
    strategy = board.boot("uboot")
    if strategy.uboot is None:
        pytest.skip("no U-Boot on this target: QEMU's loader placed the files, standing in "
                    "for firmware it cannot run")
    # By load name: over TFTP each run loads from a directory of its own (RUN-ID/xen).
    replies = {cmd.split()[-1].rpartition("/")[2]: "\n".join(out)
               for cmd, out in strategy.uboot_replies
               if cmd.startswith(strategy.profile.load_command + " ")}
    for placed in strategy.plan.placements:
        assert placed.filename in replies, f"{placed.filename} was never loaded"
        # tftpb says "Bytes transferred = N (hex)", a filesystem load "N bytes read".
        assert re.search(rf"Bytes transferred = {placed.size}\b|^{placed.size} bytes read",
                         replies[placed.filename], re.M), \
            f"{placed.role} {placed.filename}: U-Boot did not load its {placed.size} bytes: " \
            f"{replies[placed.filename][-300:]}"


def test_xen_boots(board):
    """Xen prints its banner, its version is the image set's, and it builds Dom0."""
    strategy = board.boot("xen")
    assert strategy.facts["xen_version"] == board.images.xen_version
    assert "dom0-loading" in strategy.marks and "xen-handover" in strategy.marks


def test_dom0_boots(board):
    """Dom0 Linux finds Xen, reaches the image set's ready marker and a root shell."""
    strategy = board.boot("shell")
    console = strategy.recorder.text()
    assert re.search(r"Xen \d+\.\d+ support found", console), "Dom0 did not report Xen support"
    out, _, status = board.shell.run("id -u")
    assert (out, status) == (["0"], 0)


def test_xl_info(board):
    board.boot("shell")
    out, _, status = board.shell.run("xl info")
    assert status == 0, out
    info = dict(re.split(r"\s*:\s*", line, maxsplit=1) for line in out if ":" in line)
    assert info["xen_version"] == board.images.xen_version
    assert int(info["nr_cpus"]) >= 1
    # Debian's Xen prints no changeset on the UART; xl info has it, and the build-id.
    board.record.set_info(xen_changeset=info.get("xen_changeset", ""),
                          xen_build_id=info.get("build_id", ""),
                          xen_commandline=info.get("xen_commandline", ""),
                          nr_cpus=int(info["nr_cpus"]))


def test_xl_list(board):
    board.boot("shell")
    out, _, status = board.shell.run("xl list")
    assert status == 0, out
    assert out[0].split()[:2] == ["Name", "ID"], out
    assert any(re.match(r"Domain-0\s+0\s+\d+\s+\d+", l) for l in out), out


def test_domu_create_console(board):
    """`xl create` of the seed-style guest, `xl console` reaches its shell, Ctrl-] returns."""
    board.boot("shell")
    board.guest = GUEST
    out, _, status = board.shell.run(f"xl create {GUEST_CFG}", timeout=120)
    assert status == 0, out
    board.domu_up = True
    board.shell.enter_guest(GUEST, marker=board.images.domU_ready_marker,
                            timeout=int(board.profile.timeout("domu")))
    out, _, status = board.shell.run("hostname")
    board.shell.leave_guest()
    assert (out, status) == (["domU"], 0)
    out, _, _ = board.shell.run("xl list")
    rows = {l.split()[0]: l.split() for l in out[1:] if l.strip()}
    assert GUEST in rows, out
    state = rows[GUEST][4]  # Name ID Mem VCPUs State Time(s)
    # Running or blocked (waiting for input), never paused, shut down, crashed or dying.
    assert re.fullmatch(r"[r-][b-]----", state) and state != "------", out


def _need_guest(board):
    board.boot("shell")
    if not board.domu_up:
        pytest.skip("no DomU: the create step did not pass")


@pytest.mark.lg_feature("pv-block")
def test_pv_block(board):
    """The DomU reads the marker from its PV disk (xvda) and writes one Dom0 then sees."""
    _need_guest(board)
    token = f"domU-wrote-{int(time.time())}"
    board.shell.enter_guest(GUEST)
    try:
        out, _, status = board.shell.run("mount /dev/xvda /mnt && cat /mnt/marker")
        assert status == 0, out
        assert out == [board.images.info["disk_marker"]], out
        _, _, status = board.shell.run(f"echo {token} > /mnt/from-domU && umount /mnt && sync")
        assert status == 0
    finally:
        board.shell.leave_guest()
    out, _, status = board.shell.run("mount -o ro /dev/loop0 /mnt && cat /mnt/from-domU"
                                     " && umount /mnt")
    assert status == 0, out
    assert out == [token]


@pytest.mark.lg_feature("network")
def test_pv_network(board):
    """Bridge xenbr0 in Dom0, the guest's vif on it, pings both ways."""
    _need_guest(board)
    for cmd in ("brctl addbr xenbr0", "ip addr add 192.168.100.1/24 dev xenbr0",
                "ip link set xenbr0 up", f"xl network-attach {GUEST} bridge=xenbr0"):
        out, _, status = board.shell.run(cmd, timeout=60)
        assert status == 0, f"{cmd}: {out}"
    out, _, _ = board.shell.run("brctl show xenbr0 2>/dev/null || ls /sys/class/net/xenbr0/brif")
    assert any(l.strip().startswith("vif") for l in out), out
    board.shell.enter_guest(GUEST)
    try:
        out, _, status = board.shell.run(
            "i=0; until [ -e /sys/class/net/eth0 ] || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done;"
            " ip addr add 192.168.100.2/24 dev eth0 && ip link set eth0 up"
            " && ping -c 3 -W 2 192.168.100.1", timeout=60)
        assert status == 0, out
    finally:
        board.shell.leave_guest()
    out, _, status = board.shell.run("ping -c 3 -W 2 192.168.100.2", timeout=60)
    assert status == 0, out


def test_domu_shutdown_destroy(board):
    """`xl shutdown` stops the guest cleanly; `xl destroy` removes another; only Domain-0 stays."""
    _need_guest(board)
    out, _, status = board.shell.run(f"xl shutdown -w {GUEST}", timeout=90)
    assert status == 0, out
    board.domu_up = False
    out, _, status = board.shell.run(f"xl create {GUEST_CFG} 'name=\"doomed\"' 'disk=[]'",
                                     timeout=120)
    assert status == 0, out
    out, _, status = board.shell.run("xl destroy doomed")
    assert status == 0, out
    out, _, _ = board.shell.run("xl list")
    domains = [l.split()[0] for l in out[1:] if l.strip()]
    assert domains == ["Domain-0"], out
