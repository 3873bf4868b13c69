"""The report document: every requirement of the SpecIR in spec order, grouped by section, with
its verdict per column (trace session or fuzzed target) and the findings under it; the rules
the spec only implies; answers the spec leaves open; totals per basis.

This JSON is the primary form (schema `virtgpu-conform/report`); every other format is
rendered from it and from nothing else.
"""

from __future__ import annotations

import hashlib
import re
from typing import Optional

from virtgpu_conform.checker.check.findings import VERDICTS
from virtgpu_conform.model.coverage import NOT_CHECKABLE
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.spec.ir import SpecIR
from virtgpu_conform.spec.load import LAYOUTS

from .results import Column

SCHEMA, VERSION = "virtgpu-conform/report", 1
SPEC_REPO = "https://github.com/oasis-tcs/virtio-spec"
BASES = ("normative", "spec-text", "informal", "implementation")
ACROSS = "across-commands"  # the group of rules not tied to one command

# Checks the checker itself makes (not written in a rule): our one-line summaries.
ENGINE_CHECKS = {
    "response-type": "the answer's type is one the request allows",
    "no-response": "every request is answered",
    "malformed-accepted": "a request too short or malformed to read is refused, not executed",
    "malformed-response": "an answer is a well-formed response of its type",
    "malformed-request": "a request is a well-formed command of its type",
    "response-length": "an answer is as long as its type's layout",
    "response-buffer-size": "the driver gives room for the whole answer",
    "preferred-answer": "which error a device picks where the spec allows several",
    "ring-timeline-completion": "every fenced command on a ring timeline completes",
    "device-died": "the device process survives any input",
    "pixels": "after a transfer and a flush, the scanout shows the pixels transferred (the pixel oracle)",
}


def spec_url(version: str, file: str, line: int, end: int = 0) -> str:
    """Where a spec file:line stands in the public virtio-spec repository."""
    path = file
    for role, name in LAYOUTS[-1].items():  # the flat copies' names, as in ../shared/spec-sources
        if name == file and role in LAYOUTS[0]:
            path = LAYOUTS[0][role]
    if re.fullmatch(r"v\d+\.\d+-\w+", version or ""):
        ref = version  # a tag, as a checkout's REVISION names it
    elif re.fullmatch(r"v\d+\.\d+", version or ""):
        ref = f"{version}-cs01"
    else:
        ref = "master"
    frag = f"#L{line}" + (f"-L{end}" if end > line else "") if line else ""
    return f"{SPEC_REPO}/blob/{ref}/{path}{frag}"


def build(
    columns: list[Column],
    ir: SpecIR,
    protocol: Protocol,
    inputs: list[str],
    tool: str,
    quotes: Optional[dict[str, str]] = None,
    quoted_from: Optional[str] = None,
) -> dict:
    ids = _column_ids(columns)
    col_by_id = dict(zip(ids, columns))
    notes_by_rule = _rule_notes(protocol)
    sec_of_cmd = {c.name: c.section for c in ir.commands}
    sections = {s.id: s for s in ir.sections}

    reqs_out: dict[str, dict] = {}
    for req in ir.requirements:
        verdicts = {}
        for cid, col in col_by_id.items():
            v = col.requirements.get(req.id)
            if v is not None:
                verdicts[cid] = {
                    k: v.get(k) for k in ("verdict", "events", "passed", "failed", "inconclusive", "reason")
                }
        exercised = {v["verdict"] for v in verdicts.values() if v["verdict"] in ("pass", "fail", "inconclusive")}
        reqs_out[req.id] = {
            "id": req.id,
            "level": req.level,
            "basis": req.basis,
            "binds": req.binds,
            "summary": req.summary,
            "section": req.section,
            "loc": {"file": req.loc.file, "line": req.loc.line},
            "url": spec_url(ir.version, req.loc.file, req.loc.line),
            "quote": (quotes or {}).get(req.id),
            "checkable": req.id not in NOT_CHECKABLE,
            "why_not": NOT_CHECKABLE.get(req.id),
            "verdicts": verdicts,
            "divergent": len(exercised) > 1,
            "findings": [],
        }

    rules: dict[str, dict] = {}
    for cid, col in col_by_id.items():
        for f in col.findings:
            f = {**f, "column": cid, "fingerprint": _fingerprint(col, f)}
            cited = [r for r in f["requirements"] if r in reqs_out]
            for rid in cited:
                reqs_out[rid]["findings"].append(f)
            if not cited:
                key = f"{_short(f['command']) or 'any'}/{f['check']}"
                rule = rules.get(key)
                if rule is None:
                    rule = rules[key] = {
                        "id": key,
                        "command": f["command"],
                        "check": f["check"],
                        "basis": f["basis"],
                        "summary": notes_by_rule.get((f["command"], f["check"]))
                        or notes_by_rule.get(("", f["check"]))
                        or _engine_summary(f["check"]),
                        "section": sec_of_cmd.get(f["command"]) or ACROSS,
                        "verdicts": {},
                        "findings": [],
                    }
                rule["findings"].append(f)
                worst = "fail" if f["severity"] == "definite" else "inconclusive"
                if rule["verdicts"].get(cid) != "fail":
                    rule["verdicts"][cid] = worst

    out_sections = []
    for sec in ir.sections:
        rq = [r for r in reqs_out.values() if r["section"] == sec.id]
        ru = [r for r in rules.values() if r["section"] == sec.id]
        if rq or ru:
            out_sections.append(_section(ir, sec, rq, ru))
    across = [r for r in rules.values() if r["section"] not in sections]
    if across:
        out_sections.append(
            {
                "id": ACROSS,
                "title": "Across commands",
                "path": ["Across commands"],
                "loc": None,
                "url": None,
                "requirements": [],
                "rules": sorted(across, key=lambda r: r["id"]),
            }
        )

    return {
        "schema": SCHEMA,
        "version": VERSION,
        "tool": tool,
        "spec": {"version": ir.version, "repository": SPEC_REPO, "quoted_from": quoted_from},
        "inputs": inputs,
        "columns": [_column(cid, col) for cid, col in col_by_id.items()],
        "sections": out_sections,
        "divergences": _divergences(col_by_id),
        "differential": [
            {"column": cid, "rows": col.differential} for cid, col in col_by_id.items() if col.differential
        ],
        "exercised": [{"column": cid, **col.exercised} for cid, col in col_by_id.items() if col.exercised],
        "totals": _totals(reqs_out, rules, col_by_id),
    }


def _engine_summary(check: str) -> str:
    base, _, cause = check.partition("-to-")  # the fuzzer's grouped form: no-response-to-short-buffer
    text = ENGINE_CHECKS.get(check) or ENGINE_CHECKS.get(base, "")
    return (
        f"{text} (here: to a {cause.replace('-', ' ')} request)"
        if text and cause and check not in ENGINE_CHECKS
        else text
    )


def _column_ids(columns: list[Column]) -> list[str]:
    """Short stable ids; labels made unique by the result they came from when two share one."""
    seen: dict[str, int] = {}
    for c in columns:
        seen[c.label] = seen.get(c.label, 0) + 1
    for c in columns:
        if seen[c.label] > 1:
            c.label = f"{c.label} ({c.source})"
    return [f"c{i + 1}" for i in range(len(columns))]


def _column(cid: str, col: Column) -> dict:
    counts = {v: 0 for v in VERDICTS}
    for r in col.requirements.values():
        if r.get("verdict") in counts:
            counts[r["verdict"]] += 1
    return {
        "id": cid,
        "label": col.label,
        "kind": col.kind,
        "source": col.source,
        "profile": col.profile,
        "spec_version": col.spec_version,
        "inputs": col.inputs,
        "stats": col.stats,
        "notes": col.notes,
        "verdict_counts": counts,
        "timeline": col.timeline,
    }


def _section(ir: SpecIR, sec, rq: list[dict], ru: list[dict]) -> dict:
    return {
        "id": sec.id,
        "title": sec.title,
        "path": list(sec.path),
        "loc": {"file": sec.loc.file, "line": sec.loc.line},
        "url": spec_url(ir.version, sec.loc.file, sec.loc.line, sec.end_line),
        "requirements": rq,
        "rules": sorted(ru, key=lambda r: r["id"]),
    }


def _rule_notes(protocol: Protocol) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for rule in protocol.rules.values():
        for item in rule.checks + rule.obligations:
            if item.note:
                out.setdefault((rule.command, item.id), item.note)
                out.setdefault(("", item.id), item.note)
    return out


def _divergences(cols: dict[str, Column]) -> list[dict]:
    """Answers the spec leaves open, command by command, with each column's count."""
    rows: dict[tuple, dict] = {}
    for cid, col in cols.items():
        for d in col.divergences:
            key = (d["command"], d["check"])
            row = rows.setdefault(key, {"command": d["command"], "check": d["check"], "counts": {}, "examples": {}})
            row["counts"][cid] = row["counts"].get(cid, 0) + d["count"]
            row["examples"].setdefault(cid, {"message": d["message"], "reproducer": d.get("reproducer")})
    return [rows[k] for k in sorted(rows)]


def _totals(reqs: dict[str, dict], rules: dict[str, dict], cols: dict[str, Column]) -> dict:
    by_basis: dict[str, dict] = {}
    for r in reqs.values():
        b = by_basis.setdefault(r["basis"], {"requirements": 0, "checkable": 0, "columns": {}})
        b["requirements"] += 1
        b["checkable"] += r["checkable"]
        for cid, v in r["verdicts"].items():
            c = b["columns"].setdefault(cid, {v: 0 for v in VERDICTS})
            c[v["verdict"]] = c.get(v["verdict"], 0) + 1
    findings = {}
    for cid, col in cols.items():
        findings[cid] = {
            "definite": sum(f["severity"] == "definite" for f in col.findings),
            "possible": sum(f["severity"] == "possible" for f in col.findings),
            "divergences": sum(d["count"] for d in col.divergences),
        }
    return {
        "requirements": len(reqs),
        "implied_rules_with_findings": len(rules),
        "by_basis": {b: by_basis[b] for b in sorted(by_basis, key=_basis_order)},
        "findings": findings,
    }


def _basis_order(b: str) -> int:
    return BASES.index(b) if b in BASES else len(BASES)


def _fingerprint(col: Column, f: dict) -> str:
    """Stable across runs of the same input: what was broken, by whom, where in the trace (by
    the trace's file name and the event, not absolute paths or wording)."""
    where = f"{_basename(f['file'])}#{f['event'] or f['line']}" if col.kind == "trace" else ""
    key = "|".join(
        (
            col.kind,
            col.label if col.kind == "fuzz" else "",
            f["kind"],
            f["side"],
            f["command"],
            f["check"],
            ",".join(f["requirements"]),
            where,
        )
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _short(name: str) -> str:
    return (name or "").removeprefix("VIRTIO_GPU_CMD_")
