"""The address planner: every module's place in RAM, worked out once as data.

ImageBuilder's uboot-script-gen lays files out from the start of RAM on 2 MiB
boundaries, skipping what is reserved; so does this.  Before anything is placed
the board's memory budget is checked, so a layout that cannot boot is refused
here, with its numbers, instead of minutes later as a silent board.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import XenlabError
from .dtb import DtbInfo
from .profile import BoardProfile, Region

MiB = 1 << 20
ALIGN = 2 * MiB  # arm64 Images must sit at a 2 MiB boundary; ImageBuilder aligns every file so
SCRIPT_SLOT = 1 * MiB  # room kept for boot.scr at script_addr


def align(value: int, to: int = ALIGN) -> int:
    return (value + to - 1) // to * to


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def check_memory(profile: BoardProfile, info: DtbInfo, busy: list[Region], xen_span: int,
                  domus, dom0: bool = True, heap: list[Region] = ()) -> None:
    """Refuse what cannot boot, with the numbers: RAM the DTB doesn't have, guests over RAM.

    A DomU on static banks takes no heap: its banks are in `busy` already.  With
    a static heap (`heap`), Xen gives the guests memory from it alone.
    """
    mem = profile.memory
    banks = info.memory_banks()
    if banks and not any(a <= mem.start and mem.end <= b for a, b in banks):
        shown = ", ".join(f"{a:#x}-{b:#x}" for a, b in banks)
        raise XenlabError(f"key 'memory': {mem.start:#x}-{mem.end:#x} is not inside one RAM bank "
                          f"of the DTB ({shown}): files loaded there would be lost", where=profile.where)
    reserved = sum(min(r.end, mem.end) - max(r.start, mem.start) for r in merged(busy))
    free = mem.end - mem.start - reserved - xen_span
    on_heap = [d for d in domus if not d.static_mem]
    domu_mb = sum(d.memory_kb for d in on_heap) // 1024
    guests = (profile.dom0.memory_mb * MiB if dom0 else 0) + sum(d.memory_kb * 1024 for d in on_heap)
    asked = " + ".join(([f"Dom0 {profile.dom0.memory_mb} MiB"] if dom0 else []) +
                       ([f"DomUs {domu_mb} MiB"] if on_heap else []))
    key = "dom0.memory_mb" if dom0 and not on_heap else "domains.memory_mb"
    if heap:  # the guests' memory comes from it alone, wherever the files load
        if guests > sum(r.end - r.start for r in heap):
            shown = ", ".join(f"{r.start:#x}-{r.end:#x}" for r in heap)
            raise XenlabError(f"key '{key}': {asked} does not fit in Xen's static heap ({shown}, "
                              f"{human(sum(r.end - r.start for r in heap))})", where=profile.where)
    elif guests > free:
        raise XenlabError(
            f"key '{key}': {asked} does not fit in RAM: {human(mem.end - mem.start)} at "
            f"{mem.start:#x}, of which {human(reserved)} reserved and {human(xen_span)} Xen leave "
            f"{human(max(free, 0))}", where=profile.where)


def merged(regions: list[Region]) -> list[Region]:
    """Regions without overlaps, so a byte reserved twice is counted once."""
    out: list[Region] = []
    for r in sorted(regions, key=lambda r: r.start):
        if out and r.start <= out[-1].end:
            out[-1] = Region(out[-1].start, max(out[-1].end, r.end), out[-1].why)
        else:
            out.append(r)
    return out


def place_script(profile: BoardProfile, busy: list[Region], script_addr: int | None) -> int:
    mem = profile.memory
    if script_addr is not None:
        end = script_addr + SCRIPT_SLOT
        if script_addr < mem.start or end > mem.end:
            raise XenlabError(f"boot plan: script address {script_addr:#x} lies outside memory "
                              f"{mem.start:#x}-{mem.end:#x}", where=profile.where)
        for r in busy:
            if r.overlaps(script_addr, end):
                raise XenlabError(f"boot plan: script address {script_addr:#x} overlaps reserved "
                                  f"{r.start:#x}-{r.end:#x} ({r.why})", where=profile.where)
        return script_addr
    # ImageBuilder's choice: 2 MiB into RAM, past anything reserved there.
    return _first_fit(mem.start + ALIGN, SCRIPT_SLOT, busy)


def _first_fit(addr: int, span: int, busy) -> int:
    addr = align(addr)
    moved = True
    while moved:
        moved = False
        for r in busy:
            if r.overlaps(addr, addr + span):
                addr, moved = align(r.end), True
    return addr


def _describe(role: str, path: Path) -> str:
    return f"{role} '{path.name}'"


def layout(profile: BoardProfile, wanted, spans, busy: list[Region], fixed: Mapping[str, int],
            cursor: int) -> dict[str, int]:
    mem = profile.memory
    roles = {role: path for role, path in wanted}
    placed: dict[str, int] = {}
    taken: list[tuple[Region, str]] = [(r, f"reserved {r.start:#x}-{r.end:#x} ({r.why})") for r in busy]

    for role, addr in sorted(fixed.items(), key=lambda kv: kv[1]):
        if role not in roles:
            raise XenlabError(f"boot plan: fixed address for unknown role '{role}'")
        what = _describe(role, roles[role])
        end = addr + spans[role]
        if addr % ALIGN:
            raise XenlabError(f"boot plan: fixed address {addr:#x} for {what} is not 2 MiB aligned")
        if addr < mem.start or end > mem.end:
            raise XenlabError(f"boot plan: fixed address {addr:#x}-{end:#x} for {what} lies outside "
                              f"memory {mem.start:#x}-{mem.end:#x}", where=profile.where)
        for r, other in taken:
            if r.overlaps(addr, end):
                raise XenlabError(f"boot plan: fixed address {addr:#x}-{end:#x} for {what} overlaps {other}")
        placed[role] = addr
        taken.append((Region(addr, end, role), f"{what} at {addr:#x}-{end:#x}"))

    regions = [r for r, _ in taken]
    for i, (role, path) in enumerate(wanted):
        if role in placed:
            continue
        addr = _first_fit(cursor, spans[role], regions)
        if addr + spans[role] > mem.end:
            left = [f"{_describe(r, p)} ({human(spans[r])})" for r, p in wanted[i:] if r not in placed]
            have = ", ".join(f"{r} {placed[r]:#x}-{placed[r] + spans[r]:#x}" for r in placed) or "nothing"
            rsv = ", ".join(f"{r.start:#x}-{r.end:#x}" for r in busy) or "none"
            raise XenlabError(f"not enough memory for {', '.join(left)}: RAM {mem.start:#x}-{mem.end:#x}, "
                              f"reserved {rsv}, already placed {have}", where=profile.where)
        placed[role] = addr
        regions.append(Region(addr, addr + spans[role], role))
        cursor = addr + spans[role]
    return placed
