"""The JSON documents the tool writes are what docs/schemas/ says: a check of real sessions and of
a case with findings, a differential campaign with findings, and the report over both."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

import virtgpu_conform as vgc

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "docs" / "schemas"
PLANTED = REPO / "tests" / "data" / "plugin" / "planted_device.py"


def _valid(name: str, doc: dict) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:10])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("schemas")
    check = vgc.check_trace(
        [
            *sorted(REPO.glob("traces/qemu-*/*/")),
            REPO / "tests" / "data" / "fuzz" / "qemu-7.2-empty-backing-accepted-then-missing.ndjson",
        ],
        timeline=True,
    )
    planted = vgc.DeviceSpec("adapter", adapter=f"{sys.executable} {PLANTED}", timeout=5.0)
    fuzz = vgc.fuzz([planted, "reference"], examples=15, seed=2, steps=15, survey=True, out=str(out / "fuzz"))
    return check, fuzz


@pytest.mark.slow
def test_results_and_report_follow_their_schemas(results):
    check, fuzz = results
    assert check.definite and check.sessions[0].exchanges > 0  # findings and real sessions are both in it
    _valid("check-result", check.to_json())
    assert fuzz.findings and fuzz.doc["differential"], "the planted device (leading) breaks a rule and differs"
    _valid("fuzz-result", fuzz.to_json())
    _valid("report", json.loads(vgc.report([check, fuzz], format="json")))
    # what the CLI wrote is the same document
    _valid("fuzz-result", json.loads((Path(fuzz.out) / "fuzz-result.json").read_text()))


def test_a_schema_rejects_what_the_tool_does_not_write():
    """The schemas are strict where the documents are: an unknown key or verdict is an error."""
    doc = vgc.check_trace(REPO / "traces" / "qemu-7.2" / "fbdev").to_json()
    _valid("check-result", doc)
    doc["sessions"][0]["surprise"] = 1
    with pytest.raises(AssertionError, match="surprise"):
        _valid("check-result", doc)
    del doc["sessions"][0]["surprise"]
    next(iter(doc["sessions"][0]["requirements"].values()))["verdict"] = "maybe"
    with pytest.raises(AssertionError, match="maybe"):
        _valid("check-result", doc)
