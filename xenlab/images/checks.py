"""Checks of a built image set: image headers, hashes, and the seed's kernel-config pitfalls.

An appended DTB in Dom0 (seed §9) and CONFIG_DEBUG_LL in a DomU (seed §10.1)
both boot into silence; they are found here, before a board is powered.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import Finding, Severity
from .cache import sha256_file
from .imageformat import image_format
from .imageset import KERNEL_ARTIFACTS, ImageSet


SEED_APPENDED_DTB = ("seed §9: with ARM_APPENDED_DTB an appended DTB replaces the one Xen "
                     "provides, and unless its memory matches what Xen gives Dom0 the kernel "
                     "crashes; do not append a DTB to the Dom0 kernel (or disable the option)")
SEED_DEBUG_LL = ("seed §10.1: CONFIG_DEBUG_LL makes the guest poke the host UART it cannot "
                 "see; the DomU console stays silent and `xenctx` shows PC 0x0000000c "
                 "(an early trap). Build the DomU kernel without it")


def kernel_config(path: Path) -> dict[str, str]:
    config = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            config[key] = value
    return config


def check_kernel_config(config: dict[str, str], role: str, where: str) -> list[Finding]:
    findings = []
    if role == "dom0":
        for key in ("CONFIG_XEN", "CONFIG_XEN_DOM0"):
            if config.get(key) != "y":
                findings.append(Finding(Severity.ERROR, f"dom0-config-{key[7:].lower()}",
                                        f"{where}: {key} is not set",
                                        "seed §6.1.5/§9: a Dom0 kernel needs Xen support "
                                        "(CONFIG_XEN and CONFIG_XEN_DOM0)"))
        if config.get("CONFIG_ARM_APPENDED_DTB") == "y":
            findings.append(Finding(Severity.WARN, "dom0-appended-dtb",
                                    f"{where}: CONFIG_ARM_APPENDED_DTB=y", SEED_APPENDED_DTB))
    if role == "domU":
        if config.get("CONFIG_XEN") != "y":
            findings.append(Finding(Severity.ERROR, "domU-config-xen",
                                    f"{where}: CONFIG_XEN is not set",
                                    "seed §6.1.7: a DomU kernel needs Xen guest support"))
        if config.get("CONFIG_DEBUG_LL") == "y":
            findings.append(Finding(Severity.WARN, "domU-debug-ll",
                                    f"{where}: CONFIG_DEBUG_LL=y", SEED_DEBUG_LL))
    return findings


def check_image_set(image_set: ImageSet) -> list[Finding]:
    """Headers of the three kernel images and the seed's kernel-config pitfalls."""
    findings = []
    want = image_set.info["image_format"]
    arts = image_set.artifacts
    for name in KERNEL_ARTIFACTS:
        fmt = image_format(image_set.dir / name)
        if fmt != want:
            findings.append(Finding(Severity.ERROR, f"{name}-format",
                                    f"{name}: expected {want} header, found {fmt}",
                                    "booti needs an arm64 Image, bootz a zImage (seed §8.2)"))
        else:
            findings.append(Finding(Severity.INFO, f"{name}-format", f"{name}: {fmt} header"))
    for name, actual in ((a.name, sha256_file(image_set.dir / a.name)) for a in arts.values()):
        if actual != arts[name].sha256:
            findings.append(Finding(Severity.ERROR, "artifact-changed",
                                    f"{name}: sha256 {actual} does not match manifest.json"))
    return findings + kernel_config_findings(image_set, unknown=True)


def kernel_config_findings(image_set: ImageSet, unknown: bool = False) -> list[Finding]:
    """The seed's pitfalls in the Dom0 and DomU kernels' .config (`unknown`: say when one is missing)."""
    findings = []
    for role in ("dom0", "domU"):
        cfg = image_set.dir / f"{role}-kernel.config"
        if cfg.exists():
            findings += check_kernel_config(kernel_config(cfg), role, cfg.name)
        elif unknown:
            findings.append(Finding(Severity.INFO, f"{role}-config-unknown",
                                    f"{role}-kernel is an override without a .config; "
                                    "its Xen options could not be checked"))
    return findings
