#!/usr/bin/env python3
"""Fuzz xenlab's parsers of untrusted input longer than make test does.

    bench/fuzz.py [--inputs N] [--seed S] [--target console|dtb|run-record|farm-file ...]

Prints, per target: inputs, how many were refused with one line, crashes (and
their distinct sites, with the first input that reached each), hangs, the
slowest input.  Exit 1 when there was a crash or a hang.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support import fuzzing  # noqa: E402
from test_fuzz import targets  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=20000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", action="append", choices=["console", "dtb", "run-record",
                                                               "farm-file"])
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="xenlab-fuzz-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (make, _) in targets(Path(tmp)).items():
            if args.target and name not in args.target:
                continue
            result = fuzzing.fuzz(make(), args.inputs, seed=args.seed)
            print(result.line(), flush=True)
            for site, crash in result.crashes.items():
                print(f"    {site}: first input {crash.sample[:120]!r}")
            failed |= bool(result.crashes or result.hangs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
