"""Mutation fuzzing of xenlab's parsers of untrusted input, for tests/test_fuzz.py
and bench/fuzz.py.

Each target takes real seeds (a QEMU console transcript, the shipped boards'
DTBs, run records written by RunRecord, the repository's farm files), mutates
them with a fixed seed, and feeds every mutant to the parser and to what reads
its result.  A parser may refuse an input with a XenlabError (one line, no
newline); any other exception is a crash, named by its innermost xenlab frame,
and an input that runs past `hang_s` is a hang.  Test support only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
import random
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import attr
import yaml

from xenlab.errors import XenlabError

REPO = Path(__file__).resolve().parents[2]
TRANSCRIPT = REPO / "tests" / "data" / "qemu-arm64-console.log"


@attr.s(auto_attribs=True)
class Crash:
    site: str  # "ValueError at xenlab/plan/dtb.py:231"
    sample: bytes  # the first input that reached it


@attr.s(auto_attribs=True)
class FuzzResult:
    target: str
    inputs: int = 0
    refused: int = 0  # a XenlabError: the clear line the standards ask for
    crashes: dict = attr.ib(factory=dict)  # site -> Crash
    crash_count: int = 0
    hangs: int = 0
    slowest_s: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.target}: {self.inputs} inputs, {self.refused} refused with one line, "
                f"{self.crash_count} crashes at {len(self.crashes)} sites, {self.hangs} hangs, "
                f"slowest input {self.slowest_s * 1000:.0f} ms, {self.seconds:.1f} s")


class _Hang(BaseException):  # not an Exception: a parser's `except Exception` must not eat it
    pass


def _site(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/xenlab/" in f.filename]
    where = frames[-1] if frames else traceback.extract_tb(exc.__traceback__)[-1]
    path = where.filename.split("/xenlab/", 1)[-1] if frames else where.filename
    return f"{type(exc).__name__} at xenlab/{path}:{where.lineno}" if frames else \
        f"{type(exc).__name__} at {path}:{where.lineno}"


# --------------------------------------------------------------------------- mutations

def mutate_bytes(rng: random.Random, data: bytes, tokens: list[bytes]) -> bytes:
    """A few byte-level edits: flips, inserts, deletes, copies, tokens, truncation."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        n = len(buf)
        op = rng.randrange(7)
        at = rng.randrange(n + 1) if n else 0
        if op == 0 and n:  # flip bits
            buf[min(at, n - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:  # random bytes
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 2 and n:  # delete a run
            del buf[at:at + rng.randrange(1, 64)]
        elif op == 3 and n:  # copy a run elsewhere
            src = rng.randrange(n)
            piece = buf[src:src + rng.randrange(1, 256)]
            buf[at:at] = piece * rng.choice((1, 1, 2, 50))
        elif op == 4 and tokens:  # a token the parser cares about
            buf[at:at] = rng.choice(tokens) * rng.choice((1, 1, 3, 200))
        elif op == 5 and n:  # set a 32-bit word to an edge value (DTB headers, lengths)
            word = rng.choice((0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, n, n + 1))
            at = min(at, max(0, n - 4)) & ~3
            buf[at:at + 4] = word.to_bytes(4, "big")
        elif op == 6 and n:  # truncate
            del buf[rng.randrange(n):]
    return bytes(buf)


ODD_VALUES = [None, True, False, 0, -1, 2 ** 31, 2 ** 63, 1e308, -0.0, "", " ", "../../x",
              "/etc/passwd", "a" * 300, "\x1b[2J<script>", "{{x}}", "${HOME}", "; reset", [], {},
              [None], {"": None}, "PASS", "FAIL", "RUNNING", "2025-13-45T99:99:99.000Z"]


def mutate_tree(rng: random.Random, tree):
    """A structural edit of parsed JSON/YAML: a value of another type, a key gone or added."""
    tree = copy.deepcopy(tree)
    for _ in range(rng.choice((1, 1, 2, 4))):
        nodes = []

        def walk(node, depth=0):
            if isinstance(node, dict):
                nodes.append(node)
                for v in node.values():
                    walk(v, depth + 1)
            elif isinstance(node, list):
                nodes.append(node)
                for v in node:
                    walk(v, depth + 1)
        walk(tree)
        if not nodes:
            return rng.choice(ODD_VALUES)
        node = rng.choice(nodes)
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        op = rng.randrange(4)
        if keys and op in (0, 1):
            node[rng.choice(keys)] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif keys and op == 2:
            del node[rng.choice(keys)]
        elif isinstance(node, dict):
            node[rng.choice(["schema", "extra", "info", "steps", "drivers", "options", "x"])] = \
                copy.deepcopy(rng.choice(ODD_VALUES))
        else:
            node.append(copy.deepcopy(rng.choice(ODD_VALUES)))
    return tree


# --------------------------------------------------------------------------- running

@attr.s(auto_attribs=True)
class Target:
    name: str
    seeds: list[bytes]
    mutate: Callable[[random.Random, bytes], bytes]
    run: Callable[[bytes], None]  # raises XenlabError to refuse


def fuzz(target: Target, inputs: int, seed: int = 16, hang_s: float = 2.0) -> FuzzResult:
    rng = random.Random(f"{target.name}:{seed}")
    result = FuzzResult(target.name)

    def alarm(signum, frame):
        raise _Hang()
    old = signal.signal(signal.SIGALRM, alarm)
    t0 = time.monotonic()
    try:
        for _ in range(inputs):
            data = target.mutate(rng, rng.choice(target.seeds))
            result.inputs += 1
            start = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, hang_s)
            try:
                target.run(data)
            except _Hang:
                result.hangs += 1
            except XenlabError as exc:
                if "\n" in str(exc):  # a refusal is one line
                    result.crash_count += 1
                    result.crashes.setdefault(f"multi-line XenlabError at {_site(exc)}",
                                              Crash(_site(exc), data))
                else:
                    result.refused += 1
            except Exception as exc:  # noqa: BLE001 - every other exception is a finding
                result.crash_count += 1
                site = _site(exc)
                result.crashes.setdefault(site, Crash(site, data))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            result.slowest_s = max(result.slowest_s, time.monotonic() - start)
    finally:
        signal.signal(signal.SIGALRM, old)
    result.seconds = time.monotonic() - t0
    return result


# --------------------------------------------------------------------------- targets

CONSOLE_TOKENS = [b"\x1b[", b"\x9b", b"\x1b", b"\r", b"\n", b"\r\r\r\n", b"(XEN) ", b"(d1) ",
                  b"DOM1: ", b"[    1.234567] ", b"Panic on CPU 0", b"Xen BUG at ",
                  b"Assertion '", b"' failed", b"Kernel panic - not syncing", b"U-Boot 2023.01 ",
                  b"TFTP error: 'File not found'", b"Xen version ", b"Linux version ",
                  b"Latest ChangeSet: ", b"build-id: ", b"xl create ", b"xl -v console ",
                  b"Starting kernel", b"Loading: #", b"Retry count exceeded",
                  b"libxl: error: ", b"xc_dom: ", b"Permission denied", b"\xc2\x9b", b"\xff\xfe"]


def console_target() -> Target:
    from xenlab import console_text
    from xenlab.lab import diagnose, monitors

    text = TRANSCRIPT.read_bytes()
    lines = text.split(b"\n")
    seeds = [b"\n".join(lines[i:i + 60]) for i in range(0, len(lines), 60)]

    def run(data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        console_text.clean_lines(text)
        for stage in ("uboot", "xen", "dom0", "domu"):
            monitors.classify(text, stage)
        monitors.parse_console_facts(text)
        monitors.uboot_reply_failure("tftpb 0x40000000 xen", text, 1, "10.0.2.2")
        diagnose.toolstack_mismatch("4.17.5", None, text)
        diagnose.EARLY_TRAP.search(text)
        with tempfile.NamedTemporaryFile(suffix=".log") as f:
            f.write(data)
            f.flush()
            console_text.excerpt(f.name, text[len(text) // 2:][:80])
    return Target("console", seeds, lambda rng, d: mutate_bytes(rng, d, CONSOLE_TOKENS), run)


def dtb_target(boards: list[tuple[Path, object]]) -> Target:
    """The shipped boards' DTBs, byte-mutated and structure-mutated, read as the doctor
    reads them for their profile: `boards` is [(dtb, BoardProfile)]."""
    from pyfdt.pyfdt import FdtPropertyWords, FdtPropertyStrings, FdtProperty
    from xenlab.plan.doctor import dtb_findings
    from xenlab.plan.dtb import DtbInfo, parse_dtb, read_dtb

    seeds = [dtb.read_bytes() for dtb, _ in boards]
    profiles = {data: profile for data, (_, profile) in zip(seeds, boards)}
    # A parsed tree to edit, copied by pickle: three times faster than parsing again.
    trees = {data: pickle.dumps(read_dtb(dtb)) for data, (dtb, _) in zip(seeds, boards)}
    seed_of = {}  # mutant -> the board it came from, for the doctor's profile

    def structural(rng: random.Random, data: bytes) -> bytes:
        fdt = pickle.loads(trees[data])
        items = [(path, item) for path, item in fdt.get_rootnode().walk()]
        for _ in range(rng.choice((1, 2, 4))):
            path, item = rng.choice(items)
            parent = fdt.resolve_path(path.rsplit("/", 1)[0] or "/")
            if parent is None or not hasattr(parent, "subdata"):
                continue
            op = rng.randrange(3)
            name = item.get_name()
            if op == 0:  # gone
                with contextlib.suppress(Exception):
                    parent.remove(name)
            elif op == 1 and isinstance(item, FdtProperty):  # another type or size
                new = rng.choice([FdtPropertyWords(name, [rng.choice((0, 1, 2, 0xFFFFFFFF))
                                                         for _ in range(rng.randrange(1, 7))]),
                                  FdtPropertyStrings(name, [rng.choice(
                                      ["", "/", "serial0", "/nonexistent", "arm,psci", "hvc",
                                       "/pl011@9000000:115200", "a" * 200])]),
                                  FdtProperty(name)])
                with contextlib.suppress(Exception):
                    parent.subdata[parent.subdata.index(item)] = new
            elif isinstance(item, FdtProperty):  # the same value on another node
                with contextlib.suppress(Exception):
                    rng.choice([n for _, n in items if hasattr(n, "subdata")]).append(
                        copy.copy(item))
        return fdt.to_dtb()

    def mutate(rng: random.Random, data: bytes) -> bytes:
        out = None
        if rng.random() < 0.5:
            with contextlib.suppress(Exception):  # an edit pyfdt cannot write: mutate bytes instead
                out = structural(rng, data)
        if out is None:
            out = mutate_bytes(rng, data, [b"\xd0\x0d\xfe\xed", b"\x00\x00\x00\x01",
                                           b"\x00\x00\x00\x03", b"\x00\x00\x00\x09"])
        seed_of.clear()
        seed_of[out] = profiles[data]
        return out

    def run(data: bytes) -> None:  # what `xenlab doctor` does with a board's DTB
        info = DtbInfo(parse_dtb(data, "fuzz.dtb"))
        info.summary()
        dtb_findings(seed_of[data], info)
    return Target("dtb", seeds, mutate, run)


def record_target(run_dirs: list[Path]) -> Target:
    """run.json files RunRecord wrote, mutated, read by RunRecord.load and every report's reader."""
    from xenlab.reports import testday
    from xenlab.run import compare, junit
    from xenlab.run.record import RunRecord

    seeds = [(d / "run.json").read_bytes() for d in run_dirs]
    tmp = Path(tempfile.mkdtemp(prefix="xenlab-fuzz-record-"))
    run_dir = tmp / "board-00" / "20250101T000000Z-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "console.log").write_bytes(TRANSCRIPT.read_bytes()[:4000])

    def mutate(rng: random.Random, data: bytes) -> bytes:
        if rng.random() < 0.7:
            with contextlib.suppress(ValueError):
                return json.dumps(mutate_tree(rng, json.loads(data))).encode()
        return mutate_bytes(rng, data, [b'"', b"{", b"[", b"null", b"NaN", b"1e999", b"-",
                                        b'"../', b"\\u0000"])

    def run(data: bytes) -> None:
        (run_dir / "run.json").write_bytes(data)
        record = RunRecord.load(run_dir)
        testday.table_rows([record], tmp)
        junit.junit_report(record)
        junit.format_run(record)
        compare.change_between(record, record)
        compare.night(record)
    return Target("run-record", seeds, mutate, run)


def farm_target(farms: list[Path]) -> Target:
    """The repository's farm files, mutated as YAML trees and as text, read by load_farm."""
    from xenlab.run.farmfile import load_farm

    seeds = [p.read_bytes() for p in farms]
    tmp = Path(tempfile.mkdtemp(prefix="xenlab-fuzz-farm-"))

    def mutate(rng: random.Random, data: bytes) -> bytes:
        if rng.random() < 0.6:
            with contextlib.suppress(yaml.YAMLError):
                tree = yaml.safe_load(data)
                if tree is not None:
                    return yaml.safe_dump(mutate_tree(rng, tree), sort_keys=False).encode()
        return mutate_bytes(rng, data, [b": ", b"\n", b"  ", b"- ", b"{", b"[", b"!!python/name:x",
                                        b"&a ", b"*a", b"xenlab_board: ", b"XenStrategy", b"\t"])

    def run(data: bytes) -> None:
        path = tmp / "farm.yaml"
        path.write_bytes(data)
        farm = load_farm(path)
        for target in farm.select():  # what the runner reads first
            assert target.name and target.profile, target
    return Target("farm-file", seeds, mutate, run)


def imagebuilder_target(config_text: str, files: Path) -> Target:
    """An ImageBuilder config (the text of tests/test_imagebuilder.py's), byte-mutated with
    shell and key tokens, read by read_config and laid out by plan_from in `files`' directory."""
    from xenlab.plan.imagebuilder import plan_from, read_config
    from xenlab.plan.profile import load_profile

    profile = load_profile("qemu-virt-arm64")
    path = files / "fuzzed.config"

    def mutate(rng: random.Random, data: bytes) -> bytes:
        return mutate_bytes(rng, data, [b"=", b"[0]", b"[1]", b'"', b"'", b"$(", b"`", b";", b"\\",
                                        b"\n", b" ", b"#", b"0x", b"NUM_DOMUS=", b"DOMU_MEM[0]=",
                                        b"DOMU_STATIC_MEM[0]=", b"CPUPOOL[0]=", b"cpu@", b"99999999999"])

    def run(data: bytes) -> None:
        path.write_bytes(data)
        plan = plan_from(read_config(path), profile)
        assert plan.placements
    return Target("imagebuilder", [config_text.encode()], mutate, run)
