"""Reports from real results: the committed traces checked, and a real fuzz campaign against QEMU.
Every format is rendered from the same report document; JUnit is read back by an independent
parser (junitparser), SARIF is validated against the official 2.1.0 schema."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import shared_file
from test_qemu_target import _need_qemu

from virtgpu_conform.checker.cli.main import main
from virtgpu_conform.spec.load import load_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]  # the results hold a campaign against QEMU
REPO = Path(__file__).resolve().parents[2]
TRACES = sorted(str(p) for p in (REPO / "traces").glob("qemu-*/*") if p.is_dir())
SARIF_SCHEMA = REPO.parent / "shared" / "schemas" / "sarif-schema-2.1.0.json"


def _run(*args) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code in (0, 1, 3), r.output
    return r.output


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """check --json of every committed real trace, and `fuzz --out` of a short campaign against QEMU."""
    _need_qemu()
    d = tmp_path_factory.mktemp("results")
    _run("check", *TRACES, "--json", str(d / "check.json"))
    _run("fuzz", "--target", "qemu", "--examples", "30", "--steps", "15", "--seed", "2", "--out", str(d / "fuzz"))
    return {"check": str(d / "check.json"), "fuzz": str(d / "fuzz"), "dir": d}


def _report(results: dict, fmt: str, *extra: str) -> str:
    out = results["dir"] / f"report.{fmt}"
    r = CliRunner().invoke(main, ["report", results["check"], results["fuzz"], "--format", fmt, "-o", str(out), *extra])
    assert r.exit_code == 0, r.output
    return out.read_text(encoding="utf-8")


def test_json_report_has_every_requirement_in_spec_order_for_every_column(results):
    doc = json.loads(_report(results, "json"))
    ir = load_snapshot()
    assert doc["schema"] == "virtgpu-conform/report" and doc["version"] == 1
    reqs = [r for s in doc["sections"] for r in s["requirements"]]
    assert [r["id"] for r in reqs] == [r.id for r in ir.requirements]
    cols = doc["columns"]
    assert [c["kind"] for c in cols] == ["trace"] * len(TRACES) + ["fuzz"]
    assert [c["label"] for c in cols[:-1]] == TRACES and cols[-1]["label"] == "fuzz: qemu"
    for r in reqs:
        assert set(r["verdicts"]) == {c["id"] for c in cols}, r["id"]
        assert r["url"].startswith("https://github.com/oasis-tcs/virtio-spec/blob/")
        assert r["quote"] is None  # no --spec-dir: nothing of the spec's text
    # The real traces exercise the display path: some requirements pass on every trace.
    passing = [r for r in reqs if all(r["verdicts"][c["id"]]["verdict"] == "pass" for c in cols[:-1])]
    assert passing
    # The campaign judges what the device owes; the driver's duties are not-applicable there.
    fuzz = cols[-1]["id"]
    for r in reqs:
        v = r["verdicts"][fuzz]
        if v["verdict"] in ("pass", "fail", "inconclusive"):
            assert v["events"] > 0
    # Every fuzz finding lands under a requirement or an implied rule, with a reproducer that exists.
    fuzz_result = json.loads((Path(results["fuzz"]) / "fuzz-result.json").read_text())
    shown = [
        f
        for s in doc["sections"]
        for item in (*s["requirements"], *s["rules"])
        for f in item["findings"]
        if f["column"] == fuzz
    ]
    failing = [f for f in fuzz_result["findings"] if f["kind"] != "divergence"]
    assert len({(f["command"], f["check"], f["kind"]) for f in shown}) == len(failing)
    for f in shown:
        assert Path(f["reproducer"]).is_file() and f["line"] > 0
    # Totals per basis cover every requirement once.
    assert sum(t["requirements"] for t in doc["totals"]["by_basis"].values()) == len(reqs)


def test_junit_reads_back_with_an_independent_parser(results):
    junitparser = pytest.importorskip("junitparser", reason="pip install junitparser (in the [test] extra)")
    text = _report(results, "junit")
    doc = json.loads(_report(results, "json"))
    path = results["dir"] / "read-back.xml"
    path.write_text(text)
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert [s.name for s in suites] == [c["label"] for c in doc["columns"]]
    for suite, col in zip(suites, doc["columns"]):
        cases = list(suite)
        verdicts = {r["id"]: r["verdicts"][col["id"]]["verdict"] for s in doc["sections"] for r in s["requirements"]}
        by_name = {c.name: c for c in cases}
        for rid, v in verdicts.items():
            case = by_name[rid]
            kinds = {type(x).__name__ for x in case.result}
            assert kinds == ({"Failure"} if v == "fail" else set() if v == "pass" else {"Skipped"}), (rid, v, kinds)
        implied = [c for c in cases if c.name.startswith("implied/")]
        assert all(any(type(x).__name__ == "Failure" for x in c.result) or c.is_skipped for c in implied)
        assert suite.tests == len(cases)
        assert suite.failures == sum(1 for c in cases if any(type(x).__name__ == "Failure" for x in c.result))


def test_sarif_is_valid_2_1_0_and_stable(results, tmp_path):
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (in the [test] extra)")
    schema = json.loads(shared_file(SARIF_SCHEMA, "the SARIF 2.1.0 schema").read_text())
    sarif = json.loads(_report(results, "sarif"))
    jsonschema.validate(sarif, schema, cls=jsonschema.Draft4Validator)
    ir = load_snapshot()
    runs = sarif["runs"]
    assert len(runs) == len(TRACES) + 1
    rule_ids = [r["id"] for r in runs[0]["tool"]["driver"]["rules"]]
    assert [x for x in rule_ids if not x.startswith("implied/")] == [r.id for r in ir.requirements]
    for rule in runs[0]["tool"]["driver"]["rules"]:
        if "helpUri" in rule:
            assert rule["helpUri"].startswith("https://github.com/oasis-tcs/virtio-spec/blob/v1.4")
    fuzz = runs[-1]
    assert fuzz["results"], "a campaign against QEMU finds something (see test_fuzz)"
    line_of = {r.id: r.loc.line for r in ir.requirements}
    for res in (r for run in runs for r in run["results"]):
        assert rule_ids[res["ruleIndex"]] == res["ruleId"]
        loc = res["locations"][0]["physicalLocation"]
        assert Path(loc["artifactLocation"]["uri"].removeprefix("file://")).is_file()
        assert loc["region"]["startLine"] >= 1
        for rel in res.get("relatedLocations", []):
            assert rel["physicalLocation"]["artifactLocation"]["uriBaseId"] == "VIRTIOSPEC"
            assert rel["physicalLocation"]["region"]["startLine"] == line_of[res["ruleId"]]
    # Fingerprints: the same input, checked again from another place, fingerprints the same.
    copy = tmp_path / "elsewhere"
    shutil.copytree(TRACES[0], copy / Path(TRACES[0]).name)
    _run("check", str(copy / Path(TRACES[0]).name), "--json", str(tmp_path / "again.json"))
    again = tmp_path / "again.sarif"
    r = CliRunner().invoke(main, ["report", str(tmp_path / "again.json"), "--format", "sarif", "-o", str(again)])
    assert r.exit_code == 0, r.output
    first = sorted(x["partialFingerprints"]["virtgpuConformFinding/v1"] for x in runs[0]["results"])
    second = sorted(
        x["partialFingerprints"]["virtgpuConformFinding/v1"]
        for x in json.loads(again.read_text())["runs"][0]["results"]
    )
    assert first == second


def test_markdown_and_text_carry_the_matrix(results):
    md = _report(results, "md")
    doc = json.loads(_report(results, "json"))
    assert "## Matrix" in md and "## Totals per basis" in md
    for s in doc["sections"]:
        for r in s["requirements"]:
            assert r["url"] in md
    text = _report(results, "text")
    assert "requirements" in text and doc["columns"][-1]["label"] in text


def test_spec_dir_quotes_each_requirement_from_the_copy(results, spec_sources):
    doc = json.loads(_report(results, "json", "--spec-dir", str(spec_sources)))
    tex = (spec_sources / "gpu-description.tex").read_text().splitlines()
    reqs = [r for s in doc["sections"] for r in s["requirements"]]
    assert all(r["quote"] for r in reqs)
    for r in reqs:
        # The quote's first words stand in the spec file near the requirement's line.
        line = r["loc"]["line"]
        near = " ".join(tex[max(0, line - 6) : line + 4])
        words = re.findall(r"[A-Za-z]{4,}", r["quote"])[:4]
        assert all(w in near for w in words), (r["id"], words)
    assert doc["spec"]["quoted_from"] == str(spec_sources)
    # Without --spec-dir no format carries a sentence of the spec.
    for fmt in ("md", "sarif", "junit", "json"):
        body = _report(results, fmt)
        assert not any(r["quote"] in body for r in reqs if len(r["quote"]) > 40), fmt


def test_check_report_option_renders_the_same_report(results, tmp_path):
    out = tmp_path / "direct.sarif"
    r = CliRunner().invoke(main, ["check", TRACES[0], "--report", "sarif", "-o", str(out)])
    assert r.exit_code in (0, 1, 3), r.output
    direct = json.loads(out.read_text())
    assert direct["runs"][0]["properties"]["label"] == TRACES[0]
    assert len(direct["runs"][0]["tool"]["driver"]["rules"]) >= len(load_snapshot().requirements)


def test_html_report_from_the_same_results(results):
    import html as htmllib

    page = _report(results, "html")
    doc = json.loads(_report(results, "json"))
    assert page.startswith("<!DOCTYPE html>") and page.count("<script") == 1
    for s in doc["sections"]:
        for r in s["requirements"]:
            assert htmllib.escape(r["id"]) in page
    fuzz = doc["columns"][-1]
    assert htmllib.escape(fuzz["label"]) in page
    reproducers = {
        f["reproducer"]
        for s in doc["sections"]
        for i in (*s["requirements"], *s["rules"])
        for f in i["findings"]
        if f["column"] == fuzz["id"]
    }
    assert reproducers and all(htmllib.escape(p) in page for p in reproducers)
