"""What /chosen must say for Xen: module nodes, command lines and dom0less domains, as edits.

The bindings are xen.git's docs/misc/arm/device-tree/booting.txt (seed §8.4):
each module a `/chosen` node with "multiboot,module" and "multiboot,kernel" or
"multiboot,ramdisk", `reg` the exact address and size; a dom0less domain a
"xen,domain" node with its own modules.  The edits are data (`DtEdit`), so the
boot plan renders the same list as U-Boot `fdt` commands and as an offline DTB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import attr



def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


@attr.s(frozen=True, auto_attribs=True)
class SharedMem:
    """A statically shared region (booting.txt, "xen,domain-shared-memory-v1")."""

    shm_id: str  # xen,shm-id: the same id in every domain that shares it
    host: int  # host physical address
    guest: int  # where the domain sees it
    size: int
    role: str = ""  # "owner" or "borrower"; empty: Xen owns it


@attr.s(frozen=True, auto_attribs=True)
class DomUSpec:
    """A dom0less domain started by Xen at boot (booting.txt, "xen,domain")."""

    name: str
    kernel: Path
    ramdisk: Path | None = None
    memory_kb: int = 131072
    cpus: int = 1
    vpl011: bool = True  # an emulated PL011 the guest's console can use
    cmdline: str = "console=ttyAMA0"
    enhanced: bool = False  # xen,enhanced: xenstore and PV drivers, once Dom0 runs init-dom0less
    static_mem: tuple[tuple[int, int], ...] = ()  # (address, size) banks: xen,static-mem
    direct_map: bool = False  # guest RAM at the banks' host addresses (needs static_mem)
    shared_mem: tuple[SharedMem, ...] = ()
    cpupool: int | None = None  # the id of a boot-time CpupoolSpec


@attr.s(frozen=True, auto_attribs=True)
class CpupoolSpec:
    """A boot-time cpupool (booting.txt / cpupools.txt, "xen,cpupool")."""

    id: int  # 1, 2 ...: pool 0 is Xen's own, with every CPU no pool names
    cpus: tuple[int, ...]  # CPU numbers: the `reg` of the host DTB's /cpus/cpu@N
    sched: str = ""  # cpupool-sched; empty: Xen's default scheduler
    # Filled in by the boot plan from the host DTB:
    cpu_phandles: tuple[int, ...] = ()
    phandle: int = 0  # one the host DTB does not use


@attr.s(frozen=True, auto_attribs=True)
class DtEdit:
    """One change to the DTB: create `node` (prop None), or set one property on it."""

    node: str
    prop: str | None = None
    kind: str = ""  # "words", "strings" or "empty"
    value: tuple = ()


def command_line(value: str) -> str:
    """A command line as a DT string that U-Boot's `fdt set` keeps a string.

    `fdt set` reads a value starting with `<` as cells and one starting with
    `[` as bytes, quotes or not (seen on Debian's U-Boot 2023.01).  A leading
    space makes it a string; Xen and Linux skip leading blanks.  Both
    renderings, U-Boot's and the offline DTB, get the same bytes.
    """
    return " " + value if value[:1] in ("<", "[") else value


def _cells64(value: int) -> tuple[int, int]:
    return (value >> 32, value & 0xFFFFFFFF)


def _module(parent: str, p, compatible: tuple[str, ...], bootargs: str | None) -> list[DtEdit]:
    node = f"{parent}/module@{p.addr:x}"
    edits = [DtEdit(node),
             DtEdit(node, "compatible", "strings", compatible),
             # The exact file size, not ${filesize}: the plan knows it (booting.txt wants it exact).
             DtEdit(node, "reg", "words", (*_cells64(p.addr), *_cells64(p.size)))]
    if bootargs:
        edits.append(DtEdit(node, "bootargs", "strings", (bootargs,)))
    return edits


def _cells(value: int, n: int) -> tuple[int, ...]:
    return _cells64(value) if n == 2 else (value,)


def chosen_edits(by_role: Mapping, has_chosen: bool, xen_bootargs: str,
                  dom0_bootargs: str, domus: tuple[DomUSpec, ...],
                  cpupools: tuple[CpupoolSpec, ...] = (), static_heap: tuple = (),
                  root_cells: tuple[int, int] = (2, 2)) -> list[DtEdit]:
    kernel = ("multiboot,kernel", "multiboot,module")
    ramdisk = ("multiboot,ramdisk", "multiboot,module")
    xen_bootargs, dom0_bootargs = command_line(xen_bootargs), command_line(dom0_bootargs)
    edits = [] if has_chosen else [DtEdit("/chosen")]
    # Two cells each, as ImageBuilder sets: any module address and size fits.
    edits += [DtEdit("/chosen", "#address-cells", "words", (2,)),
              DtEdit("/chosen", "#size-cells", "words", (2,)),
              DtEdit("/chosen", "xen,xen-bootargs", "strings", (xen_bootargs,))]
    if static_heap:  # in the root node's cells, unlike the modules' (booting.txt)
        edits.append(DtEdit("/chosen", "xen,static-heap", "words", tuple(
            w for a, s in static_heap for w in (*_cells(a, root_cells[0]), *_cells(s, root_cells[1])))))
    if "dom0-kernel" in by_role:  # dom0less without a Dom0: no module for it
        if dom0_bootargs:
            edits.append(DtEdit("/chosen", "xen,dom0-bootargs", "strings", (dom0_bootargs,)))
        edits += _module("/chosen", by_role["dom0-kernel"], kernel, dom0_bootargs)
    if "dom0-ramdisk" in by_role:
        edits += _module("/chosen", by_role["dom0-ramdisk"], ramdisk, None)
    pools = {}
    for pool in cpupools:
        node = f"/chosen/cpupool_{pool.id}"
        pools[pool.id] = pool.phandle
        edits += [DtEdit(node), DtEdit(node, "compatible", "strings", ("xen,cpupool",)),
                  DtEdit(node, "cpupool-cpus", "words", pool.cpu_phandles),
                  DtEdit(node, "phandle", "words", (pool.phandle,))]
        if pool.sched:
            edits.append(DtEdit(node, "cpupool-sched", "strings", (pool.sched,)))
    for d in domus:
        node = f"/chosen/{d.name}"
        edits += [DtEdit(node),
                  DtEdit(node, "compatible", "strings", ("xen,domain",)),
                  DtEdit(node, "#address-cells", "words", (2,)),
                  DtEdit(node, "#size-cells", "words", (2,)),
                  DtEdit(node, "memory", "words", _cells64(d.memory_kb)),  # KiB, 64-bit
                  DtEdit(node, "cpus", "words", (d.cpus,))]
        if d.vpl011:
            edits.append(DtEdit(node, "vpl011", "empty"))
        if d.enhanced:
            edits.append(DtEdit(node, "xen,enhanced", "strings", ("enabled",)))
        if d.static_mem:
            edits += [DtEdit(node, "#xen,static-mem-address-cells", "words", (2,)),
                      DtEdit(node, "#xen,static-mem-size-cells", "words", (2,)),
                      DtEdit(node, "xen,static-mem", "words",
                             tuple(w for a, s in d.static_mem for w in (*_cells64(a), *_cells64(s))))]
        if d.direct_map:
            edits.append(DtEdit(node, "direct-map", "empty"))
        if d.cpupool is not None:
            edits.append(DtEdit(node, "domain-cpupool", "words", (pools[d.cpupool],)))
        for shm in d.shared_mem:
            sub = f"{node}/{shm.shm_id}@{shm.host:x}"
            edits += [DtEdit(sub), DtEdit(sub, "compatible", "strings", ("xen,domain-shared-memory-v1",)),
                      DtEdit(sub, "xen,shm-id", "strings", (shm.shm_id,)),
                      DtEdit(sub, "xen,shared-mem", "words",
                             (*_cells64(shm.host), *_cells64(shm.guest), *_cells64(shm.size)))]
            if shm.role:
                edits.append(DtEdit(sub, "role", "strings", (shm.role,)))
        edits += _module(node, by_role[f"domu:{d.name}:kernel"], kernel, command_line(d.cmdline))
        if f"domu:{d.name}:ramdisk" in by_role:
            edits += _module(node, by_role[f"domu:{d.name}:ramdisk"], ramdisk, None)
    return edits


def edit_bytes(edits) -> int:
    """Upper bound of the bytes the edits add to a blob's structure and strings blocks."""
    total = 0
    for e in edits:
        if e.prop is None:
            name = e.node.rsplit("/", 1)[1]
            total += 8 + _align(len(name) + 1, 4)  # BEGIN_NODE + name, END_NODE
        else:
            if e.kind == "words":
                size = 4 * len(e.value)
            elif e.kind == "strings":
                size = sum(len(s) + 1 for s in e.value)
            else:
                size = 0
            total += 12 + _align(size, 4) + len(e.prop) + 1  # PROP header, value, name string
    return total


def _uboot_value(e: DtEdit) -> str:
    if e.kind == "words":
        return " <" + " ".join(f"{w:#x}" for w in e.value) + ">"
    if e.kind == "strings":
        return " " + " ".join(f'"{s}"' for s in e.value)
    return ""


def uboot_edit(e: DtEdit) -> str:
    if e.prop is None:
        parent, _, name = e.node.rpartition("/")
        return f"fdt mknode {parent or '/'} {name}"
    # `#` starts a comment in U-Boot's shell, also inside boot.scr.
    prop = "\\" + e.prop if e.prop.startswith("#") else e.prop
    return f"fdt set {e.node} {prop}{_uboot_value(e)}"
