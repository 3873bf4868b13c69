"""The report as JUnit XML: one testsuite per trace or fuzzed target, one testcase per requirement
(and per implied rule that has findings); a failure for a definite finding, skipped for
inconclusive, not-applicable and not-exercised."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .common import where

# XML 1.0 allows no other characters, escaped or not: they are spelled out instead.
_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text) -> str:
    return _ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text if text is not None else ""))


def render(doc: dict) -> str:
    root = ET.Element("testsuites", name="virtgpu-conform")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for c in doc["columns"]:
        suite = ET.SubElement(root, "testsuite", name=clean(c["label"]))
        props = ET.SubElement(suite, "properties")
        for k, v in (
            ("kind", c["kind"]),
            ("profile", c["profile"]),
            ("source", c["source"]),
            ("spec", doc["spec"]["version"]),
            *((f"note{i}", n) for i, n in enumerate(c["notes"])),
        ):
            ET.SubElement(props, "property", name=k, value=clean(v))
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for sec in doc["sections"]:
            for r in sec["requirements"]:
                v = r["verdicts"].get(c["id"])
                if v is not None:
                    _case(suite, counts, sec, r["id"], v["verdict"], v, _mine(r, c["id"]), r)
            for rule in sec["rules"]:
                verdict = rule["verdicts"].get(c["id"])
                if verdict:
                    _case(suite, counts, sec, f"implied/{rule['id']}", verdict, None, _mine(rule, c["id"]), rule)
        suite.set("tests", str(counts["tests"]))
        suite.set("failures", str(counts["failures"]))
        suite.set("skipped", str(counts["skipped"]))
        suite.set("errors", "0")
        for k in totals:
            totals[k] += counts[k]
    for k, n in totals.items():
        root.set(k, str(n))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _mine(item: dict, cid: str) -> list[dict]:
    return [f for f in item["findings"] if f["column"] == cid]


def _case(suite, counts: dict, sec: dict, name: str, verdict: str, v, findings: list[dict], item: dict) -> None:
    case = ET.SubElement(suite, "testcase", classname=clean(f"virtio-gpu.{sec['id']}"), name=clean(name))
    first = next((f for f in findings if f["severity"] == "definite"), None)
    if first is not None and first.get("file"):
        case.set("file", clean(first["file"]))
        if first.get("line"):
            case.set("line", str(first["line"]))
    counts["tests"] += 1
    if verdict == "fail":
        counts["failures"] += 1
        definite = [f for f in findings if f["severity"] == "definite"]
        msg = (
            definite[0]["message"]
            if definite
            else f"{v['failed']} exchanges broke it, first at {v.get('first_failure')}"
        )
        body = "\n".join(f"{where(f)}: {f['message']}" for f in definite[:50])
        if len(definite) > 50:
            body += f"\n... and {len(definite) - 50} more"
        el = ET.SubElement(case, "failure", message=clean(msg), type=clean(item.get("basis") or "finding"))
        el.text = clean(body or msg)
    elif verdict != "pass":
        counts["skipped"] += 1
        why = (v or {}).get("reason") or next((f.get("reason") for f in findings if f.get("reason")), "") or ""
        ET.SubElement(case, "skipped", message=clean(f"{verdict}" + (f": {why}" if why else "")))
