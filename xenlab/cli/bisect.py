"""`xenlab bisect`: start a bisection (a range, or `--from` a regression), or resume one.

Its output is the answer a Xen developer wants in a bug report: the first bad
commit (hash, subject, author date), the failing console, and every probe with
its verdict and why.  Exit 0 once an answer is found, 1 when it could not be,
130 when interrupted (the bisection stays resumable).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from ..errors import XenlabError
from ..run import bisect
from ..run.bisectstate import Bisection


def cmd_bisect(args, log=print) -> int:
    bisector = bisect.Bisector(args.farm, Path(args.results), args.tester, sys.stdout,
                               build_log=lambda m: None)
    if args.resume:
        _only(args, "--resume", ("xen_source", "good", "bad", "from_run", "step", "variant"))
        state = bisector.resume(args.resume)
    else:
        if args.from_run:
            _only(args, "--from", ("xen_source", "good", "bad", "step", "variant"))
            record, history = bisect.find_run(Path(args.results), args.from_run, args.target)
            req = bisect.from_regression(record, history)
        else:
            missing = [o for o, v in (("--xen-source", args.xen_source), ("--good", args.good),
                                      ("--bad", args.bad), ("--target", args.target)) if not v]
            if missing:
                raise XenlabError(f"bisect: give {', '.join(missing)} (or --from RUN-ID, or --resume ID)")
            req = bisect.request(args.farm, args.xen_source, args.good, args.bad, args.target,
                                 args.variant, args.step, args.xen_config)
        log(f"bisecting {req.tree}: good {req.good[:12]}, bad {req.bad[:12]}, on {req.target}"
            + (f" ({req.variant})" if req.variant else "")
            + (f", up to step {req.step}" if req.step else ", the --bad commit first (no --step)"))
        state = bisector.start(req, args.id)
    log("")
    log(report(state))
    return {"done": 0, "interrupted": 130}.get(state.data["status"], 1)


def _only(args, mode: str, others) -> None:
    given = [f"--{o.replace('_', '-')}" for o in others if getattr(args, o, None)]
    if given:
        raise XenlabError(f"bisect {mode} takes its range from its record: drop {', '.join(given)}")


def report(state: Bisection) -> str:
    """What the bisection found, then every probe: the text printed and kept beside it."""
    d = state.data
    out = [f"bisection {state.id} ({d['status']}): {d['target']}"
           + (f" {d['variant']}" if d.get("variant") else "")
           + f", step {d['step'] or '?'}" + (f" [{d['classification']}]" if d.get("classification") else "")]
    if d.get("first_bad"):
        fb = d["first_bad"]
        out += [f"first bad commit: {fb['commit']}", f"  subject:     {fb['subject']}",
                f"  author date: {fb['author_date']}"]
        if fb.get("excerpt"):
            out += [f"  failing console (run {fb.get('run_id')}):"]
            out += ["    | " + line for line in fb["excerpt"].splitlines()]
    elif d.get("candidates"):
        out.append("the first bad commit is one of these (skipped commits left git undecided):")
        out += [f"  {c['commit']} {c['subject']} ({c['author_date']})" for c in d["candidates"]]
    elif d.get("reason"):
        out.append(d["reason"])
    probes = state.probes
    out.append(f"probes: {len(probes)}")
    for p in probes:
        times = "  ".join(f"{k[:-2]} {p[k]:.0f} s" for k in ("build_s", "boot_s") if p.get(k) is not None)
        out.append(f"  {p['n']:>2}  {p['commit'][:12]}  {p['verdict']:<4}  {p.get('why', '')}"
                   + (f"  ({times})" if times else "")
                   + (f"  build log {state.dir / p['build_log']}" if p.get("build_log") else "")
                   + (f"  run {p['run_id']}" if p.get("run_id") else ""))
    spent = [p.get("build_s", 0) + (p.get("boot_s") or 0) for p in probes if p.get("build_s") is not None]
    if spent:
        out.append(f"probe time: median {statistics.median(spent):.0f} s, total {sum(spent):.0f} s")
    if d["status"] == "interrupted":
        out.append(d.get("reason", ""))
    return "\n".join(out)
