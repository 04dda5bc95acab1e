"""Dom0less domains against the board: names, memory, static banks and cpupools, checked.

What Xen would refuse at boot, or silently get wrong, is refused here first,
in one line with both ranges: a static bank over reserved RAM or outside it,
two banks that overlap, a static heap that isn't RAM or overlaps either, a cpupool naming a CPU the DTB lacks (or CPU 0, which
boots Xen and stays in pool 0), a domain whose memory differs from its banks.
"""

from __future__ import annotations

import re

import attr

from ..errors import XenlabError
from .chosen import CpupoolSpec, DomUSpec
from .dtb import DtbInfo
from .layout import ALIGN
from .profile import BoardProfile, Region, check_cmdline

DOMAIN_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")
SHM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,14}$")  # xen,shm-id: at most 15 characters, a node name


def check_domus(domus: tuple[DomUSpec, ...], cpupools: tuple[CpupoolSpec, ...]) -> None:
    seen = set()
    pools = {p.id for p in cpupools}
    for d in domus:
        if not DOMAIN_NAME_RE.match(d.name) or d.name == "chosen" or d.name.startswith("cpupool_"):
            raise XenlabError(f"dom0less domain name {d.name!r} must match {DOMAIN_NAME_RE.pattern}")
        if d.name in seen:
            raise XenlabError(f"dom0less domain name '{d.name}' is used twice")
        seen.add(d.name)
        if not isinstance(d.memory_kb, int) or d.memory_kb <= 0:
            raise XenlabError(f"dom0less domain '{d.name}': memory_kb {d.memory_kb!r} must be a positive integer")
        if not isinstance(d.cpus, int) or not 1 <= d.cpus <= 128:
            raise XenlabError(f"dom0less domain '{d.name}': cpus {d.cpus!r} must be 1..128")
        why = check_cmdline(d.cmdline)
        if why:
            raise XenlabError(f"dom0less domain '{d.name}': command line {d.cmdline!r} {why}")
        if d.static_mem and sum(size for _, size in d.static_mem) != d.memory_kb * 1024:
            total = sum(size for _, size in d.static_mem) // 1024
            raise XenlabError(f"dom0less domain '{d.name}': memory {d.memory_kb} KiB differs from its "
                              f"static banks' {total} KiB (Xen refuses the domain)")
        if d.direct_map and not d.static_mem:
            raise XenlabError(f"dom0less domain '{d.name}': direct_map needs static_mem banks")
        if d.cpupool is not None and d.cpupool not in pools:
            raise XenlabError(f"dom0less domain '{d.name}': cpupool {d.cpupool} is not one of the "
                              f"boot-time cpupools ({', '.join(map(str, sorted(pools))) or 'none'})")
        for shm in d.shared_mem:
            if not SHM_ID_RE.match(shm.shm_id):
                raise XenlabError(f"dom0less domain '{d.name}': shared memory id {shm.shm_id!r} must "
                                  f"match {SHM_ID_RE.pattern}")
            if shm.role not in ("", "owner", "borrower"):
                raise XenlabError(f"dom0less domain '{d.name}': shared memory role {shm.role!r} "
                                  "must be owner or borrower")


def _claim(profile: BoardProfile, info: DtbInfo, taken: list[Region], ranges, align: int,
           align_shown: str) -> list[Region]:
    """(label, address, size, why) ranges as regions, each refused in one line with both
    ranges if misaligned, outside RAM, or over a region `taken` or claimed before it."""
    mem = profile.memory
    banks = info.memory_banks() or [(mem.start, mem.end)]
    out: list[Region] = []
    for label, addr, size, why in ranges:
        end = addr + size
        label = f"{label} {addr:#x}-{end:#x}"
        if addr % align or size % align or size <= 0:
            raise XenlabError(f"{label} must start and end on a {align_shown} boundary", where=profile.where)
        if not any(a <= addr and end <= b for a, b in banks):
            shown = ", ".join(f"{a:#x}-{b:#x}" for a, b in banks)
            raise XenlabError(f"{label} lies outside RAM ({shown})", where=profile.where)
        for r in taken + out:
            if r.overlaps(addr, end):
                raise XenlabError(f"{label} overlaps {r.why} {r.start:#x}-{r.end:#x}", where=profile.where)
        out.append(Region(addr, end, why))
    return out


def static_banks(profile: BoardProfile, busy: list[Region], domus, info: DtbInfo) -> list[Region]:
    """The DomUs' static banks as regions no module may use, each checked against RAM.

    Xen takes a static bank out of its heap before it looks at the modules: a
    bank over reserved RAM or another bank is refused here, with both ranges.
    """
    ranges = []
    for d in domus:
        named = [("static bank", a, s) for a, s in d.static_mem]
        named += [(f"shared memory '{m.shm_id}'", m.host, m.size) for m in d.shared_mem if m.role != "borrower"]
        ranges += [(f"dom0less domain '{d.name}': {what}", addr, size, f"domain '{d.name}' {what}")
                   for what, addr, size in named]
    return _claim(profile, info, busy, ranges, ALIGN, "2 MiB")


HEAP_ALIGN = 64 * 1024  # booting.txt: "at least a 64KB alignment is required"


def static_heap_banks(profile: BoardProfile, busy: list[Region], heap, info: DtbInfo) -> list[Region]:
    """Xen's static heap (booting.txt, /chosen "xen,static-heap") as regions no module may use.

    Xen reserves it before it looks at the modules and takes every domain's
    memory from it (arm64: all of its heap), so it must be RAM, free of what is
    reserved and of the static banks, and apart from where the files load.
    """
    return _claim(profile, info, busy, [("static heap", a, n, "Xen's static heap") for a, n in heap],
                  HEAP_ALIGN, "64 KiB")


def resolve_cpupools(profile: BoardProfile, info: DtbInfo, cpupools) -> tuple[CpupoolSpec, ...]:
    """Each pool's CPUs as the host DTB's phandles, and a new phandle for the pool's node."""
    cpus = {c.reg: c for c in info.cpus()}
    next_phandle = max(info.phandles(), default=0) + 1
    out, claimed = [], {}
    for pool in cpupools:
        if not isinstance(pool.id, int) or not 1 <= pool.id <= 64 or any(p.id == pool.id for p in out):
            raise XenlabError(f"cpupool id {pool.id!r} must be 1..64 and used once (pool 0 is Xen's)")
        handles = []
        for n in pool.cpus:
            cpu = cpus.get(n)
            if cpu is None or cpu.phandle is None:
                why = "is not in the DTB" if cpu is None else f"({cpu.path}) has no phandle to point at"
                raise XenlabError(f"cpupool {pool.id}: CPU {n} {why} (CPUs: "
                                  f"{', '.join(str(k) for k in sorted(cpus)) or 'none'})", where=profile.where)
            if n == 0 or n in claimed:
                why = f"is in cpupool {claimed[n]} already" if n else "boots Xen and stays in pool 0"
                raise XenlabError(f"cpupool {pool.id}: CPU {n} {why}", where=profile.where)
            claimed[n] = pool.id
            handles.append(cpu.phandle)
        if pool.sched and not re.fullmatch(r"[a-z0-9_]{1,16}", pool.sched):
            raise XenlabError(f"cpupool {pool.id}: scheduler {pool.sched!r} is not a scheduler name")
        out.append(attr.evolve(pool, cpu_phandles=tuple(handles), phandle=next_phandle))
        next_phandle += 1
    return tuple(out)
