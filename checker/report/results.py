"""Reading saved results (`check --json`, `fuzz --out`) into report columns: one column per
checked trace session or per fuzzed target, each with its verdicts and findings in one shape.

A result file that cannot be used (missing, not JSON, another tool's, a newer schema) raises
ResultError naming the file (and line, for JSON syntax) and what to do; nothing is guessed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from virtgpu_conform.checker.check.findings import RESULT_SCHEMA as CHECK_SCHEMA
from virtgpu_conform.checker.check.findings import RESULT_VERSION as CHECK_VERSION
from virtgpu_conform.spec.errors import Error

FUZZ_SCHEMA, FUZZ_VERSION = "virtgpu-conform/fuzz-result", 1


class ResultError(Error):
    pass


@dataclass
class Column:
    """One implementation or trace: the unit a report gives a verdict for."""

    label: str
    kind: str  # trace | fuzz
    source: str  # the result file it came from
    profile: str
    spec_version: str
    requirements: dict[str, dict]  # requirement id -> verdict record
    findings: list[dict] = field(default_factory=list)  # normalised, see _trace_finding / _fuzz_finding
    divergences: list[dict] = field(default_factory=list)  # answers the spec leaves open
    differential: Optional[list[dict]] = None
    exercised: Optional[dict] = None  # a fuzz result's: which rule checks the device's answers judged
    stats: dict = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)  # trace files, or the device command line
    timeline: Optional[dict] = None
    notes: list[str] = field(default_factory=list)  # skipped input, interruptions: read before trusting it


def load(path: str) -> list[Column]:
    """The columns a result file (or a `fuzz --out` directory) holds."""
    file = os.path.join(path, "fuzz-result.json") if os.path.isdir(path) else path
    try:
        with open(file, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        hint = " (a `fuzz --out` directory holds fuzz-result.json)" if os.path.isdir(path) else ""
        raise ResultError(f"{file}: no such file{hint}") from None
    except OSError as exc:
        raise ResultError(f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ResultError(f"{file}: not a text file; give a file written by `check --json` or `fuzz --out`") from None
    except json.JSONDecodeError as exc:
        raise ResultError(
            f"{file}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); "
            "give a file written by `check --json` or `fuzz --out`"
        ) from None
    return columns_of(file, doc)


def columns_of(file: str, doc) -> list[Column]:
    """The columns of a result document already in memory (`check --report`)."""
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == CHECK_SCHEMA:
        _version(file, doc, CHECK_VERSION)
        return [_trace_column(file, doc, s) for s in _list(file, doc, "sessions")]
    if schema == FUZZ_SCHEMA:
        _version(file, doc, FUZZ_VERSION)
        return [_fuzz_column(file, doc)]
    raise ResultError(
        f"{file}: not a virtgpu-conform result (schema {schema!r}); "
        "give a file written by `check --json` or a `fuzz --out` directory"
    )


def _version(file: str, doc: dict, known: int) -> None:
    v = doc.get("version")
    if not isinstance(v, int) or v > known:
        raise ResultError(
            f"{file}: {doc['schema']} version {v!r}, this tool reads up to {known}; "
            "upgrade virtgpu-conform or re-run the check with this version"
        )


def _list(file: str, doc: dict, key: str) -> list:
    v = doc.get(key)
    if not isinstance(v, list):
        raise ResultError(f"{file}: '{key}' is missing or not a list; the file is damaged, re-run to rewrite it")
    return v


def _need(file: str, rec: dict, key: str, kind: type):
    v = rec.get(key) if isinstance(rec, dict) else None
    if not isinstance(v, kind):
        raise ResultError(
            f"{file}: '{key}' is missing or not a {kind.__name__}; the file is damaged, re-run to rewrite it"
        )
    return v


def _trace_column(file: str, doc: dict, s: dict) -> Column:
    reqs = _need(file, s, "requirements", dict)
    col = Column(
        label=str(_need(file, s, "target", str)),
        kind="trace",
        source=file,
        profile=str(doc.get("profile", "")),
        spec_version=str(doc.get("spec_version", "")),
        requirements=reqs,
        inputs=[str(x.get("file")) for x in s.get("sources", []) if isinstance(x, dict)],
        timeline=s.get("timeline"),
    )
    col.findings = [_trace_finding(f) for f in _need(file, s, "findings", list)]
    col.divergences = [
        {
            "command": d.get("command", ""),
            "check": d.get("check", ""),
            "count": d.get("count", 0),
            "message": d.get("detail") or "",
        }
        for d in s.get("divergences", [])
    ]
    col.stats = {
        "exchanges": s.get("exchanges", 0),
        "commands": s.get("commands", {}),
        "definite": sum(f["severity"] == "definite" for f in col.findings),
        "possible": sum(f["severity"] == "possible" for f in col.findings),
        "diagnostics": sum((s.get("diagnostics") or {}).get("counts", {}).values()),
    }
    col.notes = [f"skipped: {x}" for x in s.get("skipped_files", [])]
    if s.get("interrupted"):
        col.notes.append(f"incomplete: {s['interrupted']}")
    col.notes += [
        f"left unknown by the trace, so findings that read it are at most possible: {x}" for x in s.get("uncertain", [])
    ]
    # what a source lacks (no answers) or where it starts (late): read before trusting its verdicts
    col.notes += [
        f"{os.path.basename(str(x.get('file')))}: {note}"
        for x in s.get("sources", [])
        if isinstance(x, dict)
        for note in x.get("notes", [])
    ]
    return col


def _trace_finding(f: dict) -> dict:
    return {
        "severity": "definite" if f.get("definite") else "possible",
        "kind": "violation",
        "side": f.get("side", ""),
        "command": f.get("command", ""),
        "check": f.get("check", ""),
        "basis": f.get("basis"),
        "requirements": list(f.get("requirements", [])),
        "message": f.get("message", ""),
        "reason": f.get("reason"),
        "file": f.get("file", ""),
        "line": f.get("line", 0),
        "event": f.get("event", 0),
        "reproducer": None,
        "hits": 1,
        "related": [r.get("at", "") + ": " + r.get("what", "") for r in f.get("related", [])],
        "spec": f.get("spec", []),
    }


def _fuzz_column(file: str, doc: dict) -> Column:
    target = str(doc.get("target", "?"))
    reqs = doc.get("requirements")
    col = Column(
        label=f"fuzz: {target}",
        kind="fuzz",
        source=file,
        profile=str(doc.get("profile", "")),
        spec_version=str(doc.get("spec_version", "")),
        requirements=reqs if isinstance(reqs, dict) else {},
        inputs=[str(doc.get("device", target))],
        differential=doc.get("differential"),
        exercised=doc.get("exercised") if isinstance(doc.get("exercised"), dict) else None,
    )
    if not col.requirements:
        col.notes.append("written by an older fuzz without per-requirement verdicts: only its findings are shown")
    for f in _need(file, doc, "findings", list):
        n = _fuzz_finding(f)
        (col.divergences if n["kind"] == "divergence" else col.findings).append(n)
    col.stats = {
        "commands": doc.get("commands", 0),
        "cases": doc.get("cases", 0),
        "seconds": doc.get("seconds", 0),
        "seed": doc.get("seed"),
        "definite": len(col.findings),
        "possible": 0,
        "divergences": len(col.divergences),
    }
    if doc.get("stopped") not in (None, "time", "examples"):
        col.notes.append(f"campaign stopped early: {doc['stopped']}")
    return col


def _fuzz_finding(f: dict) -> dict:
    """A fuzz finding is definite: the device answered so on a request the fuzzer itself wrote."""
    kind = f.get("kind", "violation")
    return {
        "severity": "definite",
        "kind": kind,
        "side": "device",
        "command": f.get("command", ""),
        "check": f.get("check", ""),
        "basis": f.get("basis"),
        "requirements": list(f.get("requirements", [])),
        "message": f.get("message", ""),
        "reason": None,
        "file": f.get("reproducer") or "",
        "line": f.get("reproducer_line") or 0,
        "event": 0,
        "reproducer": f.get("reproducer"),
        "hits": f.get("hits", 1),
        "related": [],
        "spec": [],
        "shrunk": f.get("shrunk"),
        "reproduced": f.get("reproduced"),
        "count": f.get("hits", 1),
    }
