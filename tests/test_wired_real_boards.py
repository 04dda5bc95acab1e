"""Issue 25: the emulated real boards wired as real boards are in a lab, each on a bench
of its own (bench-<board>.yaml): the board's UART through Debian's ser2net (QEMU's
UART a TCP server behind it), its power an ExternalPowerDriver script
(scripts/bench-qemu), its card written by SDCardImageDriver, its files from atftpd
or its card, or, for the ZCU102 whose firmware QEMU cannot run, QEMU's loader list
in a file the power script reads. The strategy and the smoke test are farm.yaml's.

Two benches boot the four boards two at a time (make test has 2 cores).
"""

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.farmlab import REPO, STEPS, Bench, explain, record, timed_smoke
from xenlab.errors import XenlabError
from xenlab.lab.loaderfile import check_loader_args
from xenlab.lab.places import FarmError

BENCH_QEMU = str(REPO / "scripts" / "bench-qemu")
# Per bench, the boards it boots in turn: the slowest two (rpi4's card reads at
# ~0.6 MB/s; the H3's four Cortex-A7s) on different benches.
QUEUES = [["rpi4", "zcu102"], ["orangepi-pc", "nanopi-neo"]]


@pytest.fixture(scope="module")
def wired(tmp_path_factory):
    """Each board's (process, results, seconds, bench) from its smoke run."""
    benches = []
    try:
        for i in range(len(QUEUES)):
            benches.append(Bench(tmp_path_factory.mktemp(f"bench{i}")))
    except FarmError as exc:  # no ser2net or atftpd: the bench cannot exist, a failure
        pytest.fail(f"bench lab: {exc}", pytrace=False)

    def boot_in_turn(bench, boards):
        out = {}
        for board in boards:
            results = tmp_path_factory.mktemp(f"results-{board}")
            out[board] = (*timed_smoke(f"bench-{board}.yaml", results, bench.env()), bench)
        return out

    runs = {}
    try:
        with ThreadPoolExecutor(len(QUEUES)) as pool:
            for done in pool.map(boot_in_turn, benches, QUEUES):
                runs.update(done)
        yield runs
    finally:
        for b in benches:
            b.close()


def _passed(wired, board):
    proc, results, seconds, bench = wired[board]
    assert proc.returncode == 0, explain(proc)
    rec, run_dir = record(results, f"bench-{board}")
    assert rec["verdict"] == "PASS", rec
    assert [s["name"] for s in rec["steps"]] == STEPS
    assert rec["profile"] == board
    print(f"{board} wired smoke: {seconds:.1f} s")
    console = (run_dir / "console.log").read_text(errors="replace")
    # The console came through ser2net: its trace of the UART has the same boot.
    trace = (bench.dir / "uart.trace").read_text(errors="replace")
    assert "Xen version 4.17" in trace
    return rec, run_dir, console, bench


def test_nanopi_neo_boots_over_atftpd_and_its_own_ethernet(wired):
    """The H3 on its SoC's machine, its U-Boot on the card SDCardImageDriver writes,
    its files from atftpd over the board's own EMAC."""
    rec, run_dir, console, bench = _passed(wired, "nanopi-neo")
    assert rec["arch"] == "arm32"
    assert rec["info"]["boot_medium"] == "TFTP" and rec["info"]["firmware"].startswith("U-Boot")
    assert "U-Boot SPL" in console  # the boot ROM ran the card's SPL: nothing lost before ser2net
    assert f"TFTP from server {bench.addr}" in console
    assert "ethernet@1c30000" in console  # the H3's EMAC, not a virtio NIC
    served = (bench.dir / "atftpd.log").read_text()
    assert re.search(rf"Serving {run_dir.name}/xen to 127\.0\.0\.1", served), served[-2000:]
    assert "U-Boot SPL" in (bench.dir / "uart.trace").read_text(errors="replace")


def test_orangepi_pc_boots_from_its_card(wired):
    rec, run_dir, console, bench = _passed(wired, "orangepi-pc")
    assert rec["arch"] == "arm32" and rec["info"]["boot_medium"] == "SD card"
    assert "u-boot-sunxi orangepi_plus" in rec["info"]["firmware"]
    assert re.search(r"fatload mmc 0:1 0x[0-9a-f]+ xen;", console)
    assert "U-Boot SPL" in console and "Allwinner Technology" in console
    assert "TFTP from server" not in console


def test_rpi4_boots_from_its_card_on_the_mini_uart(wired):
    rec, run_dir, console, bench = _passed(wired, "rpi4")
    assert rec["arch"] == "arm64" and rec["info"]["boot_medium"] == "SD card"
    assert "u-boot-rpi rpi_4" in rec["info"]["firmware"]
    assert re.search(r"fatload mmc 0:1 0x[0-9a-f]+ dom0-kernel;", console)
    # The bench's UART is the second -serial, the mini UART stdout-path names.
    assert "-serial null" in (REPO / "bench-rpi4.yaml").read_text()
    assert "U-Boot> " in console


def test_zcu102_is_loaded_by_the_loader_file_the_power_script_reads(wired):
    rec, run_dir, console, bench = _passed(wired, "zcu102")
    assert rec["info"]["boot_medium"] == "QEMU loader"
    uboot = rec["steps"][0]
    assert uboot["status"] == "SKIP" and "QEMU's loader placed the files" in uboot["reason"]
    assert [s["status"] for s in rec["steps"]].count("SKIP") == 1, rec
    args = (bench.dir / "loader.args").read_text().splitlines()
    check_loader_args(args, "loader.args")  # what the script took is what xenlab writes
    assert args[0] == "-kernel" and args[1].endswith("/xen")
    assert sum(a.startswith("loader,file=") for a in args) == 2  # Dom0's kernel and initramfs
    # The target's DTB fix-up reached Xen: all four CPUs up (farm.yaml's zcu102 says why).
    assert "(XEN) " in console and re.search(r"\] Brought up 4 CPUs", console), console[-3000:]
    qemu_cmd = (bench.dir / "qemu.log").read_text()
    assert "rom: requested regions overlap" not in qemu_cmd


@pytest.mark.parametrize("line, why", [
    (["-append", "init=/bin/sh"], "'-append' is not a loader option"),
    (["-kernel", "xen"], "is not what xenlab writes"),
    (["-device", "loader,file=/x,addr=0x1,force-raw=on,data=1"], "is not what xenlab writes"),
    (["-kernel"], "an option without its value"),
])
def test_loader_list_refuses_what_xenlab_does_not_write(line, why):
    with pytest.raises(XenlabError, match=re.escape(why)):
        check_loader_args(line, "loader.args")


@pytest.mark.parametrize("lines", [["-append", "init=/bin/sh"],
                                   ["-kernel", "/tmp/x", "-device", "virtio-net,netdev=u"]])
def test_bench_qemu_refuses_a_loader_file_line_it_does_not_know(tmp_path, lines):
    loader = tmp_path / "loader.args"
    loader.write_text("".join(f"{a}\n" for a in lines))
    proc = subprocess.run([BENCH_QEMU, "on", "--state", str(tmp_path), "--serial", "127.0.0.1:1",
                           "--loader-file", str(loader), "--", "qemu-system-aarch64", "-M",
                           "xlnx-zcu102"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert re.match(rf"bench-qemu: loader file {re.escape(str(loader))}: line \d+: "
                    r".* is not a loader argument", proc.stderr), proc.stderr
    assert not (tmp_path / "qemu.pid").exists()
