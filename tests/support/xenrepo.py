"""A Xen git history to bisect: Debian's 4.17.5 source and 16 small commits on top of it.

Test and bench support (tests/test_bisect.py, bench/bisect.py).  Each commit is a
small hypervisor change, as most xen.git commits are; one injects a real fault
(Xen panics while it constructs Dom0, so `xen_boots` fails with xen-panic) and
one does not compile (the next one fixes it).  The history is the same every
time: git bisect probes the same commits, so a test can say how many.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from xenlab.images.manifest import load_manifest, manifest_path
from xenlab.images.xenbuild import resolve_source

COMMITS = 16
# git bisect from c0 to c16 probes c8 (good), c12 (skip: it does not build), c10 (bad),
# c9 (good): c10 in 4 probes.  (Hashes are fixed, so git chooses the same every time.)
FAULT_AT = 10
BROKEN_AT = 12
TOUCHED = ("xen/common/version.c", "xen/arch/arm/setup.c", "xen/common/kernel.c")
# The end of construct_dom0() in 4.17's xen/arch/arm/domain_build.c.
DOM0_END = ("        rc = prepare_acpi(d, &kinfo);\n\n    if ( rc < 0 )\n        return rc;\n\n"
            "    return construct_domain(d, &kinfo);\n")
FAULT = '    panic("xenlab: injected fault while constructing Dom0\\n");\n'
NOT_C = "this is not C;\n"


def _git(repo: Path, *args: str, date: str = "2026-11-01T12:00:00+00:00") -> str:
    # Fixed names and dates: the same commits, hashes and bisection every time.
    env = dict(os.environ, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=Xen Developer",
                           "-c", "user.email=dev@xen.example", *args],
                          check=True, capture_output=True, text=True, env=env).stdout.strip()


def make_history(dest: Path, fault_at: int = FAULT_AT, broken_at: int = BROKEN_AT,
                 salt: str = "") -> list[str]:
    """dest: a git repository of Debian's Xen 4.17.5 (c0) and COMMITS commits; their hashes, c0 first.

    `salt` makes every commit new to the build cache (a benchmark measures builds, not
    cache hits); git may then probe other commits, as it does on any other history.
    """
    source = resolve_source("debian", load_manifest(manifest_path("arm64")))
    shutil.copytree(source.tree, dest, symlinks=True)
    if salt:  # in a hypervisor-only file: the toolstack stays the cached one
        version_c = dest / TOUCHED[0]
        version_c.write_text(version_c.read_text() + f"/* {salt} */\n")
    _git(dest, "init", "-q")
    _git(dest, "add", "-A", "-f")  # as xen.git tracks every file of the tree
    _git(dest, "commit", "-q", "-m", "Xen 4.17.5 from Debian")
    shas = [_git(dest, "rev-parse", "HEAD")]
    for i in range(1, COMMITS + 1):
        path = dest / TOUCHED[i % len(TOUCHED)]
        text = path.read_text().replace(NOT_C, "")
        if i == fault_at:
            domain_build = dest / "xen" / "arch" / "arm" / "domain_build.c"
            code = domain_build.read_text()
            assert code.count(DOM0_END) == 1, "construct_dom0() is not as 4.17 wrote it"
            last = "    return construct_domain(d, &kinfo);\n"
            domain_build.write_text(code.replace(DOM0_END, DOM0_END.replace(last, FAULT + last)))
            subject = "xen/arm: construct Dom0 differently (the injected fault)"
        else:
            subject = f"xen: small change {i}" + (" (does not build)" if i == broken_at else "")
        path.write_text(text + f"/* xenlab bisect history, commit {i} */\n" + (NOT_C if i == broken_at else ""))
        # The broken commit's file is fixed by the next commit that touches any file: clean it.
        for other in TOUCHED:
            p = dest / other
            if i != broken_at and NOT_C in p.read_text():
                p.write_text(p.read_text().replace(NOT_C, ""))
        _git(dest, "commit", "-q", "-a", "-m", subject, date=f"2026-11-{i:02d}T12:00:00+00:00")
        shas.append(_git(dest, "rev-parse", "HEAD"))
    return shas
