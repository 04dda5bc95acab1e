"""What a run record renders to: junit.xml for CI, and the `results show` table.

Both are made from a `RunRecord` (or its run.json mapping) and nothing else.
"""

from __future__ import annotations

import junit_xml

from .. import console_text
from ..errors import Status
from .steps import verdict_label


def junit_report(record) -> str:
    """junit.xml of a RunRecord: one suite for the target, one case per step."""
    cases = []
    for step in record.steps:
        case = junit_xml.TestCase(step.name, classname=f"xenlab.{record.target}",
                                  elapsed_sec=step.duration_s or 0.0, timestamp=step.started)
        head = f"[{step.classification}] {step.message}" if step.classification else step.message
        if step.status in (Status.FAIL, Status.ERROR, Status.ABORTED):
            output = "\n".join(step.evidence)
            excerpt = console_text.excerpt(record.console_log, step.evidence[-1]) if step.evidence else ""
            if excerpt:
                output += f"\n--- console.log around the failure ---\n{excerpt}"
            if step.status is Status.FAIL:
                case.add_failure_info(head or "failed", output, step.classification)
            else:
                case.add_error_info(head or step.reason or step.status.value, output,
                                    step.classification or step.status.value.lower())
        elif step.status is Status.KNOWN:
            known = step.known or {}
            case.add_skipped_info(f"known issue: {known.get('label', '?')} ({known.get('link', '')})",
                                  f"{step.original_status}: {head}\n" + "\n".join(step.evidence))
        elif step.status is Status.SKIP:
            case.add_skipped_info(step.reason or "skipped")
        cases.append(case)
    props = {"run_id": record.run_id, "target": record.target, "profile": record.profile,
             "arch": record.arch,
             "tester": record.tester, "verdict": record.verdict.value,
             "image_set_hash": record.info.get("image_set_hash"),
             "xen_version": record.info.get("xen_version"), "xen": xen_label(record.info)}
    suite = junit_xml.TestSuite(record.target, cases, hostname=record.host, id=record.run_id,
                                timestamp=record.start_time,
                                properties={k: str(v) for k, v in props.items() if v is not None})
    return junit_xml.to_xml_report_string([suite], prettyprint=True, encoding="utf-8")


def format_run(record) -> str:
    """`xenlab results show`: the steps as a table, then the verdict."""
    d = record.to_dict() if hasattr(record, "to_dict") else record
    info = d.get("info") or {}
    image_set = info.get("image_set_hash") or "-"
    out = [f"target {d['target']}  profile {d.get('profile') or '?'}  run {d['run_id']}  "
           f"({d.get('arch', '?')}, {d.get('tester', '?')} on {d.get('host', '?')})",
           f"Xen {xen_label(info)}  image set {image_set[:16]}  "
           f"started {d.get('start')}  ended {d.get('end') or '-'}",
           "",
           f"{'step':<24} {'status':<8} {'seconds':>8}  classification"]
    for s in d.get("steps", []):
        secs = "" if s.get("duration_s") is None else f"{s['duration_s']:.1f}"
        cls = s.get("classification") or ""
        if s["status"] == "KNOWN" and s.get("known"):
            link = f" ({s['known']['link']})" if s["known"].get("link") else ""  # optional
            cls = f"{cls} — known: {s['known']['label']}{link}".lstrip(" —")
        elif s["status"] == "SKIP" and s.get("reason"):
            cls = s["reason"]
        out.append(f"{s['name']:<24} {s['status']:<8} {secs:>8}  {cls}".rstrip())
    cls = f" [{d['classification']}]" if d.get("classification") else ""
    why = f": {d['verdict_reason']}" if d.get("verdict_reason") else ""
    label = verdict_label(d["verdict"], [s.get("status") for s in d.get("steps", [])],
                          info.get("native"))
    out += ["", f"verdict: {label}{cls}{why}"]
    return "\n".join(out)


def xen_label(info: dict) -> str:
    """The Xen of a run in one phrase: "4.17.5 debug (xen_4.17.5...tar.xz sha256:5392..., debian)"."""
    build = info.get("xen_build") if isinstance(info.get("xen_build"), dict) else {}
    version = info.get("xen_version") or build.get("version") or "?"
    if not build:
        return str(version)
    what = [str(build.get(k)) for k in ("changeset", "source") if build.get(k)]
    label = f"{version} {build.get('config') or ''}".strip()
    if info.get("toolstack_mismatch"):
        m = info["toolstack_mismatch"]
        label += f" [tools {m.get('tools')}: MISMATCH]"
    return label + (f" ({', '.join(dict.fromkeys(what))})" if what else "")
