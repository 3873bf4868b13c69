"""Every requirement of the SpecIR is enforced by a rule or listed as not checkable, with a reason."""

from __future__ import annotations

import json

from click.testing import CliRunner

from virtgpu_conform.checker.cli.main import main
from virtgpu_conform.model import rules_common
from virtgpu_conform.model.coverage import BOOKKEEPING, NOT_CHECKABLE, counts, coverage


def test_no_requirement_is_left_uncovered(protocol):
    rows = coverage(protocol)
    assert len(rows) == len(protocol.ir.requirements)
    assert [r.requirement.id for r in rows if r.status == "uncovered"] == []
    enforced = {r.requirement.id for r in rows if r.status == "enforced"}
    assert not enforced & set(NOT_CHECKABLE), "a requirement is both enforced and called uncheckable"


def test_every_requirement_id_the_rules_cite_exists_in_the_spec(ir):
    known = {r.id for r in ir.requirements}
    cited = {
        v
        for k, v in vars(rules_common).items()
        if k.isupper() and not k.startswith("_") and isinstance(v, str) and "/" in v
    }
    cited |= set(NOT_CHECKABLE) | set(BOOKKEEPING)
    assert cited - known == set()  # a typo or an ID that drifted would silently drop a citation


def test_every_rule_cites_only_known_bases(protocol):
    for rule in protocol.rules.values():
        for item in (*rule.checks, *rule.obligations):
            assert item.basis in ("normative", "spec-text", "informal", "implementation"), item.id
            assert item.note or item.reqs, f"{rule.command} {item.id} says neither why nor which requirement"


def test_counts_by_status_and_basis(protocol):
    c = counts(coverage(protocol))
    assert sum(sum(v.values()) for v in c.values()) == len(protocol.ir.requirements)
    assert sum(c["enforced"].values()) >= 20


def test_cli_prints_the_table_and_counts():
    res = CliRunner().invoke(main, ["spec", "requirements"])
    assert res.exit_code == 0, res.output
    assert "enforced:" in res.output and "not-checkable:" in res.output
    res = CliRunner().invoke(main, ["spec", "requirements", "--json"])
    rows = json.loads(res.output)
    assert {r["status"] for r in rows} == {"enforced", "not-checkable"}
    assert all(r["by"] or r["reason"] for r in rows)


def test_a_chapter_too_old_for_the_rules_is_a_clear_error_not_a_traceback(spec_sources):
    res = CliRunner().invoke(main, ["spec", "requirements", "--spec-dir", str(spec_sources / "virtio-gpu-v1.1.tex")])
    assert res.exit_code == 2
    assert "Traceback" not in res.output and "use a v1.2 or later" in res.output


def test_the_v12_chapter_builds_a_model_with_its_own_requirements(spec_sources):
    res = CliRunner().invoke(
        main,
        [
            "spec",
            "requirements",
            "--json",
            "--spec-dir",
            str(spec_sources / "virtio-gpu-v1.2.tex"),
            "--header",
            str(spec_sources / "virtio_gpu.h"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert not any("BLOB_ALIGNMENT" in " ".join(r["by"]) for r in rows)  # v1.2 has no blob_alignment MUSTs
    assert {r["status"] for r in rows} == {"enforced", "not-checkable"}
