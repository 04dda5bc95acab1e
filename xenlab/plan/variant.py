"""Board variants: ``boards/variants/<name>.yaml``, the boot modes Xen on Arm ships, as data.

A variant says which boards it applies to, the dom0less domains Xen must
create at boot (booting.txt, "xen,domain"), whether a Dom0 boots beside them,
the Xen command line it adds, the checks that prove it worked, and the Kconfig
fragments (hypervisor/configs/) its Xen must be built with.  The set mirrors
Xen CI's Arm jobs (xen.git automation/gitlab-ci/test.yaml).  Like a board
profile it is validated on load; an error is one line naming file, key, value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attr

from .. import schema
from ..errors import Finding, Severity, XenlabError
from ..images import kconfig
from ..images.cache import gzipped
from ..images.patches import FIXES
from .chosen import CpupoolSpec, DomUSpec, SharedMem
from .domains import DOMAIN_NAME_RE, SHM_ID_RE
from .profile import BOARDS_DIR, NAME_RE, check_cmdline, display_path

VARIANTS_DIR = BOARDS_DIR / "variants"
MiB = 1 << 20

# What a domain's own checks print on its console (rootfs/domU/sbin/xenlab-checks),
# and what Dom0 or the console shows for the rest.
DOMU_CHECKS = ("ping", "iomem", "shm")
VARIANT_CHECKS = ("cpupool", "earlyprintk", "console", "heap", "xtf")
# A domain kernel "xtf" is the variant's XTF test, the image set's xtf-<test> (images/xtf.py);
# `NAME:TEST` (--xenlab-variant xtf:example) names another test than the variant's own.
XTF_KERNEL = "xtf"
XTF_TEST_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"

_INT = {"type": "integer", "minimum": 0}
_TEXT = {"type": "string", "minLength": 1}
_ROLE = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"}  # an image-set artifact


def _obj(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "required": list(properties) if required is None else required}


SCHEMA = _obj({
    "description": _TEXT,
    "boards": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": NAME_RE.pattern}},
    "xen_configs": {"type": "array", "items": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]*$"}},
    "xen_patches": {"type": "array", "items": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]*$"}},
    "xen_cmdline": {"type": "string"},
    "dom0": {"type": "boolean"},
    "domains": {"type": "array", "minItems": 1, "items": _obj({
        "name": {"type": "string", "pattern": DOMAIN_NAME_RE.pattern},
        "kernel": _ROLE,
        "compress": {"enum": ["gzip"]},  # the kernel as a gzip'd module: Xen decompresses it
        "ramdisk": _ROLE,
        "memory_mb": {"type": "integer", "minimum": 1},
        "vcpus": {"type": "integer", "minimum": 1, "maximum": 128},
        "cmdline": {"type": "string"},
        "vpl011": {"type": "boolean"},
        "enhanced": {"type": "boolean"},
        "static_mem": {"type": "array", "items": _obj({"start": _INT, "size": _INT})},
        "direct_map": {"type": "boolean"},
        "shared_mem": {"type": "array", "items": _obj({
            "id": {"type": "string", "pattern": SHM_ID_RE.pattern},
            "host": _INT, "guest": _INT, "size": _INT,
            "role": {"enum": ["owner", "borrower"]}}, required=["id", "host", "guest", "size"])},
        "cpupool": {"type": "integer", "minimum": 1},
        "checks": {"type": "array", "items": {"enum": list(DOMU_CHECKS)}},
    }, required=["name", "kernel", "memory_mb"])},
    "cpupools": {"type": "array", "items": _obj({
        "id": {"type": "integer", "minimum": 1, "maximum": 64},
        "cpus": {"type": "array", "minItems": 1, "items": _INT},
        "sched": {"type": "string", "pattern": r"^[a-z0-9_]{1,16}$"}}, required=["id", "cpus"])},
    "checks": {"type": "array", "items": {"enum": list(VARIANT_CHECKS)}},
    # /chosen xen,static-heap: the RAM Xen takes every domain's memory from
    "static_heap": {"type": "array", "items": _obj({"start": _INT, "size": _INT})},
    # false: Dom0 leaves the DomUs running at the end (a teardown Xen is known to hang in)
    "destroy": {"type": "boolean"},
    # The XTF test a domain kernel "xtf" boots (tests/<name> of the set's XTF source)
    "xtf_test": {"type": "string", "pattern": XTF_TEST_RE},
}, required=["description", "boards", "dom0", "domains"])


@attr.s(frozen=True, auto_attribs=True)
class DomainSpec:
    """A domain as the variant names it: image-set roles, not paths yet."""

    name: str
    kernel: str
    ramdisk: str | None
    memory_mb: int
    vcpus: int
    cmdline: str
    vpl011: bool
    enhanced: bool
    static_mem: tuple[tuple[int, int], ...]
    direct_map: bool
    shared_mem: tuple[SharedMem, ...]
    cpupool: int | None
    checks: tuple[str, ...]
    compress: str = ""  # "gzip": the kernel loads gzip'd

    def check_args(self) -> str:
        """The domain's checks as its init reads them: xenlab.checks=NAME[:ARG...],..."""
        out = []
        for check in self.checks:
            if check == "iomem":
                out += [f"iomem:{a:#x}:{s:#x}" for a, s in self.static_mem]
            elif check == "shm":
                out += [f"shm:{m.shm_id}:{m.guest:#x}" for m in self.shared_mem]
            else:
                out.append(check)
        return ",".join(out)


@attr.s(frozen=True, auto_attribs=True)
class Variant:
    name: str
    path: Path
    description: str
    boards: tuple[str, ...]
    xen_configs: tuple[str, ...]
    xen_cmdline: str
    dom0: bool
    domains: tuple[DomainSpec, ...]
    cpupools: tuple[CpupoolSpec, ...]
    checks: tuple[str, ...]
    destroy: bool = True
    xen_patches: tuple[str, ...] = ()  # hypervisor/patches/ applied to the Xen it builds
    static_heap: tuple[tuple[int, int], ...] = ()  # (address, size) banks
    xtf_test: str = ""  # what a domain kernel "xtf" boots: the set's xtf-<xtf_test>

    @property
    def builds_xen(self) -> bool:
        """Whether the variant runs on a Xen built here (fragments or patches)."""
        return bool(self.xen_configs or self.xen_patches)

    @property
    def where(self) -> str:
        return display_path(self.path)

    @property
    def all_checks(self) -> tuple[str, ...]:
        """Every check this variant runs: its own, then each domain's (once each)."""
        seen = list(self.checks)
        for d in self.domains:
            seen += [c for c in d.checks if c not in seen]
        return tuple(seen)

    def domus(self, images) -> tuple[DomUSpec, ...]:
        """The domains with the image set's files (ImageSet.path raises for a missing one)."""
        out = []
        for d in self.domains:
            cmdline = " ".join(filter(None, [d.cmdline, f"xenlab.checks={d.check_args()}"
                                             if d.checks else ""]))
            role = f"xtf-{self.xtf_test}" if d.kernel == XTF_KERNEL else d.kernel
            kernel = _artifact(images, role, self, d.name, "kernel")
            out.append(DomUSpec(d.name, gzipped(kernel) if d.compress == "gzip" else kernel,
                                _artifact(images, d.ramdisk, self, d.name, "ramdisk") if d.ramdisk else None,
                                d.memory_mb * 1024, d.vcpus, d.vpl011, cmdline, d.enhanced,
                                d.static_mem, d.direct_map, d.shared_mem, d.cpupool))
        return tuple(out)

    def plan_args(self, images) -> dict:
        """What BootPlan.build takes from the variant beside the board's files."""
        return {"domus": self.domus(images), "cpupools": self.cpupools, "xen_cmdline": self.xen_cmdline,
                "static_heap": self.static_heap}

    def domid(self, name: str) -> int:
        """Xen numbers dom0less domains 1, 2 ... in /chosen order."""
        return 1 + [d.name for d in self.domains].index(name)

    def applies_to(self, board: str) -> bool:
        return board in self.boards

    def require_board(self, board: str) -> None:
        if not self.applies_to(board):
            raise XenlabError(f"variant {self.name} is not for board {board} (key 'boards': "
                              f"{', '.join(self.boards)})", where=self.where)


def _artifact(images, role: str, variant: Variant, domain: str, key: str) -> Path:
    if role not in images.artifacts:
        hint = (f"; build it: xenlab images build --xtf-source DIR|TARBALL --xtf-test "
                f"{variant.xtf_test}" if role.startswith("xtf-") else "")
        raise XenlabError(f"key 'domains.{domain}.{key}': image set {images.dir} has no "
                          f"{role!r} (it has: {', '.join(sorted(images.artifacts))}){hint}",
                          where=variant.where)
    return images.path(role)


def list_variants() -> list[str]:
    return sorted(p.stem for p in VARIANTS_DIR.glob("*.yaml"))


def load_variant(name_or_path: str | os.PathLike) -> Variant:
    """A variant by name (boards/variants/<name>.yaml) or by file path; `NAME:TEST` an XTF
    variant booting another of the set's XTF tests."""
    text = str(name_or_path)
    if ":" in text and not text.endswith((".yaml", ".yml")):
        text, test = text.split(":", 1)
        variant = load_variant(text)
        if not variant.xtf_test:
            raise XenlabError(f"variant {variant.name} boots no XTF test: drop ':{test}'", where=variant.where)
        if not re.match(XTF_TEST_RE, test):
            raise XenlabError(f"XTF test name {test!r} must match {XTF_TEST_RE}", where=variant.where)
        return attr.evolve(variant, xtf_test=test)
    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise XenlabError(f"variant file {text} not found")
    else:
        if not NAME_RE.match(text):
            raise XenlabError(f"variant name {text!r} must match {NAME_RE.pattern}")
        path = VARIANTS_DIR / f"{text}.yaml"
        if not path.is_file():
            raise XenlabError(f"unknown variant '{text}' (known: {', '.join(list_variants()) or 'none'})")
    return _parse(path)


def _parse(path: Path) -> Variant:
    where = display_path(path)
    data = schema.read_yaml(path, "variant", where)
    if not isinstance(data, dict):
        raise XenlabError("a variant is a mapping of keys", where=where)
    schema.validate(data, SCHEMA, where)

    def fail(key: str, message: str):
        raise XenlabError(f"key '{key}': {message}", where=where)

    known = set(kconfig.available())
    for i, name in enumerate(data.get("xen_configs", [])):
        if name not in known:
            fail(f"xen_configs[{i}]", f"{name!r} is not a fragment in hypervisor/configs/ "
                 f"(known: {', '.join(sorted(known))})")
    for i, name in enumerate(data.get("xen_patches", [])):
        if name not in FIXES:
            fail(f"xen_patches[{i}]", f"{name!r} is not a patch in hypervisor/patches/ "
                 f"(known: {', '.join(sorted(FIXES))})")
    why = check_cmdline(data.get("xen_cmdline", ""))
    if why:
        fail("xen_cmdline", f"{schema.show(data['xen_cmdline'])} {why}")
    pools = tuple(CpupoolSpec(p["id"], tuple(p["cpus"]), p.get("sched", ""))
                  for p in data.get("cpupools", []))
    domains = []
    for i, d in enumerate(data["domains"]):
        key = f"domains[{i}]"
        cmdline = d.get("cmdline", "console=ttyAMA0")
        why = check_cmdline(cmdline)
        if why:
            fail(f"{key}.cmdline", f"{schema.show(cmdline)} {why}")
        banks = tuple((b["start"], b["size"]) for b in d.get("static_mem", []))
        if banks and sum(s for _, s in banks) != d["memory_mb"] * MiB:
            fail(f"{key}.memory_mb", f"{d['memory_mb']} MiB, but its static_mem banks hold "
                 f"{sum(s for _, s in banks) // MiB} MiB (Xen refuses a domain whose memory differs)")
        if "iomem" in d.get("checks", []) and not banks:
            fail(f"{key}.checks", "'iomem' checks the static_mem banks: the domain has none")
        if "shm" in d.get("checks", []) and not d.get("shared_mem"):
            fail(f"{key}.checks", "'shm' checks shared_mem: the domain has none")
        if d.get("enhanced") and not data["dom0"]:
            fail(f"{key}.enhanced", "xen,enhanced needs a Dom0 to run init-dom0less (dom0: true)")
        if "ping" in d.get("checks", []) and not (data["dom0"] and d.get("enhanced")):
            fail(f"{key}.checks", "'ping' needs a Dom0 and enhanced: true (a vif from Dom0)")
        domains.append(DomainSpec(
            d["name"], d["kernel"], d.get("ramdisk"), d["memory_mb"], d.get("vcpus", 1), cmdline,
            d.get("vpl011", True), d.get("enhanced", False), banks, d.get("direct_map", False),
            tuple(SharedMem(m["id"], m["host"], m["guest"], m["size"], m.get("role", ""))
                  for m in d.get("shared_mem", [])),
            d.get("cpupool"), tuple(d.get("checks", [])), d.get("compress", "")))
    checks = tuple(data.get("checks", []))
    xtf_kernels = [d["kernel"] == XTF_KERNEL for d in data["domains"]]
    if any(xtf_kernels) != bool(data.get("xtf_test")):
        fail("xtf_test", "a domain kernel 'xtf' boots the variant's xtf_test: give both or neither")
    if ("xtf" in checks) != (all(xtf_kernels) and not data["dom0"]):
        fail("checks", "'xtf' reads each XTF test's result on Xen's UART: every domain's kernel "
             "must be 'xtf', with dom0: false (as Xen CI's XTF jobs)")
    heap = tuple((b["start"], b["size"]) for b in data.get("static_heap", []))
    if "cpupool" in checks and not (pools and data["dom0"]):
        fail("checks", "'cpupool' is read by Dom0's `xl list -c`: it needs dom0: true and cpupools")
    if "heap" in checks and not (heap and data["dom0"]):
        fail("checks", "'heap' reads Dom0's /proc/iomem against static_heap: it needs dom0: true "
             "and static_heap")
    return Variant(path.stem, path.resolve(), data["description"], tuple(data["boards"]),
                   tuple(data.get("xen_configs", [])), data.get("xen_cmdline", "").strip(),
                   data["dom0"], tuple(domains), pools, checks, data.get("destroy", True),
                   tuple(data.get("xen_patches", [])), heap, data.get("xtf_test", ""))


# --------------------------------------------------------------------------- the Xen it needs

def needed_symbols(variant: Variant) -> list[tuple[str, str, str]]:
    """(symbol, value, fragment) each of the variant's fragments sets (=y, =0x..., not unset)."""
    config = kconfig.load_config(variant.xen_configs)
    return [(sym, value, Path(where.rsplit(":", 1)[0]).stem)
            for sym, value, where in config.wanted if value is not None]


def variant_findings(variant: Variant, xen_config: Path | None, image_set: str,
                     patches: tuple[str, ...] | None = None) -> list[Finding]:
    """The Kconfig the variant needs against the Xen under test's xen.config, and its patches
    against those the build applied (`patches`; None: not known, as for a prebuilt Xen)."""
    out = [Finding(Severity.WARN, "variant-xen-patch-missing",
                   f"variant {variant.name} wants Xen with hypervisor/patches/{p}.patch, which "
                   f"the Xen of image set {image_set} was not built with",
                   "what the patch adds is checked another way or not at all (dom0less-console: "
                   "the DomU's console is reached on Xen's UART, not with `xl console`); build "
                   f"it with `xenlab images build --xen-source SOURCE --apply-fix {p}`")
           for p in variant.xen_patches if p not in (patches or ())]
    needs = needed_symbols(variant)
    if not needs:
        return out
    if xen_config is None or not xen_config.is_file():
        return out + [Finding(Severity.WARN, "variant-xen-config-unknown",
                              f"variant {variant.name} needs {', '.join(f'{s}={v}' for s, v, _ in needs)}; "
                              f"image set {image_set} has no xen.config to check it against")]
    have = kconfig.read_config(xen_config)
    for fragment in variant.xen_configs:
        # The feature's own symbol first, CONFIG_UNSUPPORTED (what allows it) after.
        missing = sorted(((s, v) for s, v, f in needs if f == fragment and not kconfig.same_value(v, have.get(s))),
                         key=lambda sv: sv[0] in ("CONFIG_UNSUPPORTED", "CONFIG_EXPERT"))
        if not missing:
            continue
        shown = ", ".join(f"{s}={v}" for s, v in missing)
        out.append(Finding(
            Severity.ERROR, "variant-needs-kconfig",
            f"variant {variant.name} needs {shown}, which the Xen of image set {image_set} lacks "
            f"({xen_config.name}: {missing[0][0]}={have.get(missing[0][0], 'n')})",
            f"build that Xen with the fragment hypervisor/configs/{fragment}.config: `xenlab images "
            f"build --xen-source debian --xen-config {fragment}` (seed §11)"))
    return out
