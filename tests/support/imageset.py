"""An offline image set: real arm64 Image headers and a manifest, nothing downloaded or built."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

MiB = 1 << 20


def arm64_image(path: Path, size: int) -> Path:
    """An arm64 Image header (ARM\\x64 at 0x38, flags: 4K pages, placeable anywhere) and padding."""
    head = bytearray(64)
    struct.pack_into("<QQQ", head, 8, 0, size, 0b1010)
    head[0x38:0x3c] = b"ARM\x64"
    path.write_bytes(bytes(head) + bytes(size - 64))
    return path


def write_image_set(directory: Path, *, domu: bool = False, xen_config: str | None = None) -> Path:
    """`domu`: DomU files too (a variant's domains, an XTF test's); `xen_config`: the Xen's
    .config text."""
    directory.mkdir(parents=True)
    files = {"xen": arm64_image(directory / "xen", MiB + 40),
             "dom0-kernel": arm64_image(directory / "dom0-kernel", 3 * MiB),
             "dom0-rootfs.cpio.gz": directory / "dom0-rootfs.cpio.gz"}
    files["dom0-rootfs.cpio.gz"].write_bytes(os.urandom(4096))
    if domu:
        files["domU-kernel"] = arm64_image(directory / "domU-kernel", 3 * MiB)
        files["domU-rootfs.cpio.gz"] = directory / "domU-rootfs.cpio.gz"
        files["domU-rootfs.cpio.gz"].write_bytes(os.urandom(2048))
        files["xtf-hyp-xen-version"] = arm64_image(directory / "xtf-hyp-xen-version", 40 * 1024)
    if xen_config is not None:
        files["xen.config"] = directory / "xen.config"
        files["xen.config"].write_text(xen_config)
    artifacts = [{"name": name, "size": p.stat().st_size, "sha256":
                  hashlib.sha256(p.read_bytes()).hexdigest(), "source": "test", "path": ""}
                 for name, p in files.items()]
    (directory / "manifest.json").write_text(json.dumps({
        "arch": "arm64", "artifacts": artifacts, "image_format": "arm64-image",
        "dom0_ready_marker": "XENLAB-DOM0-READY", "domU_ready_marker": "XENLAB-DOMU-READY",
        "xen_version": "4.17.5", "toolstack_mismatch": None}))
    return directory
