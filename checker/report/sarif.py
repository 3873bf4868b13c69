"""The report as SARIF 2.1.0: one run per trace or fuzzed target; rules are the requirements (and
the implied rules that have findings), results point at the trace file and line, related
locations at the spec's file and line in the public virtio-spec repository."""

from __future__ import annotations

import json
import os
from urllib.parse import quote

from .build import spec_url

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {"definite": "error", "possible": "warning"}
SPEC_BASE = "VIRTIOSPEC"


def render(doc: dict) -> str:
    rules, index = _rules(doc)
    base = spec_url(doc["spec"]["version"], "", 0)
    runs = []
    for c in doc["columns"]:
        results = []
        for sec in doc["sections"]:
            for item, rid in [(r, r["id"]) for r in sec["requirements"]] + [
                (r, f"implied/{r['id']}") for r in sec["rules"]
            ]:
                for f in item["findings"]:
                    if f["column"] == c["id"]:
                        results.append(_result(f, rid, index[rid], item))
        runs.append(
            {
                "tool": {
                    "driver": {
                        "name": "virtgpu-conform",
                        "version": doc["tool"],
                        "informationUri": "https://github.com/oasis-tcs/virtio-spec",
                        "rules": rules,
                    }
                },
                "automationDetails": {"id": f"virtgpu-conform/{c['kind']}/{c['label']}/"},
                "originalUriBaseIds": {
                    SPEC_BASE: {"uri": base, "description": {"text": f"virtio spec {doc['spec']['version']}"}}
                },
                "properties": {
                    "column": c["id"],
                    "label": c["label"],
                    "kind": c["kind"],
                    "profile": c["profile"],
                    "source": c["source"],
                    "stats": c["stats"],
                    "notes": c["notes"],
                },
                "results": results,
            }
        )
    return json.dumps({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": runs}, indent=1) + "\n"


def _rules(doc: dict) -> tuple[list[dict], dict[str, int]]:
    rules: list[dict] = []
    index: dict[str, int] = {}
    for sec in doc["sections"]:
        for r in sec["requirements"]:
            index[r["id"]] = len(rules)
            rules.append(
                {
                    "id": r["id"],
                    "name": _name(r["id"]),
                    "shortDescription": {"text": r["summary"]},
                    "helpUri": r["url"],
                    "defaultConfiguration": {"level": "error" if r["level"].upper().startswith("MUST") else "warning"},
                    "properties": {
                        "level": r["level"],
                        "basis": r["basis"],
                        "binds": r["binds"],
                        "section": sec["id"],
                        "checkable": r["checkable"],
                        "tags": [r["basis"]],
                    },
                }
            )
        for r in sec["rules"]:
            rid = f"implied/{r['id']}"
            index[rid] = len(rules)
            rule = {
                "id": rid,
                "name": _name(rid),
                "shortDescription": {"text": r["summary"] or r["check"]},
                "defaultConfiguration": {"level": "warning"},
                "properties": {"basis": r["basis"] or "none", "section": sec["id"], "tags": ["implied"]},
            }
            if sec.get("url"):
                rule["helpUri"] = sec["url"]
            rules.append(rule)
    return rules, index


def _name(rid: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in rid.replace("VIRTIO_GPU_CMD_", "").replace("/", "-").split("-"))


def _result(f: dict, rid: str, index: int, item: dict) -> dict:
    loc = {"artifactLocation": {"uri": _uri(f["file"])}} if f.get("file") else None
    if loc and f.get("line"):
        loc["region"] = {"startLine": f["line"]}
    res = {
        "ruleId": rid,
        "ruleIndex": index,
        "level": LEVEL[f["severity"]],
        "kind": "fail",
        "message": {"text": f["message"] + (f" (possible: {f['reason']})" if f.get("reason") else "")},
        "partialFingerprints": {"virtgpuConformFinding/v1": f["fingerprint"]},
        "properties": {
            "severity": f["severity"],
            "findingKind": f["kind"],
            "side": f["side"],
            "basis": f["basis"],
            "command": f["command"],
            "check": f["check"],
            "event": f["event"],
            "hits": f["hits"],
            "reproducer": f["reproducer"],
            "related": f["related"],
        },
    }
    if loc:
        res["locations"] = [{"physicalLocation": loc}]
    if "loc" in item:
        res["relatedLocations"] = [
            {
                "id": 1,
                "message": {"text": f"{item['id']} ({item['level']}, {item['basis']})"},
                "physicalLocation": {
                    "artifactLocation": {"uri": _spec_path(item["url"]), "uriBaseId": SPEC_BASE},
                    "region": {"startLine": item["loc"]["line"]},
                },
            }
        ]
    return res


def _spec_path(url: str) -> str:
    """The spec file's path in the repository, from its link (…/blob/REF/PATH#Ln)."""
    return url.split("/blob/", 1)[1].split("/", 1)[1].split("#", 1)[0]


def _uri(path: str) -> str:
    if os.path.isabs(path):
        return "file://" + quote(path)
    return quote(path.replace(os.sep, "/"))
