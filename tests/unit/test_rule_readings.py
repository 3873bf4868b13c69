"""Each rule is written once and read three ways; the readings must agree (DESIGN.md principle 1)."""

from __future__ import annotations

import pytest

from virtgpu_conform.model.expr import Var, compile_py, evaluate, fits
from virtgpu_conform.model.symbolic import boundaries, every_condition, prove


@pytest.mark.slow
def test_every_rule_has_an_edge_model_and_a_least_violation_and_python_agrees_with_z3(protocol):
    seen = 0
    for rule, item in every_condition(protocol):
        b = boundaries(protocol, rule, item)
        fn = compile_py(item.full)
        where = f"{rule.command} {item.id}"
        assert b["satisfy"] is not None, f"z3 finds no way to meet {where}"
        assert b["violate"] is not None, f"z3 finds no way to break {where}: the condition is vacuous"
        assert fn(b["satisfy"]) is True, f"{where}: z3 says met, Python says broken at {b['satisfy']}"
        assert fn(b["violate"]) is False, f"{where}: z3 says broken, Python says met at {b['violate']}"
        seen += 1
    assert seen > 200  # every check and obligation of the 26 rules


def test_wrap_around_is_caught_the_same_way_by_both_readings():
    x, w, limit = Var("x", 32), Var("w", 32), Var("lim", 32)
    naive, safe = (x + w).ule(limit), fits(x, w, limit)
    wrap = {"x": 0xFFFFFFF0, "w": 0x20, "lim": 64}  # x + w wraps to 0x10
    assert compile_py(naive)(wrap) is True  # the u32 sum a buggy device computes
    assert compile_py(safe)(wrap) is False
    assert evaluate(safe, wrap) is False
    # z3 on the same expression: the edge of `safe` is exactly x + w == lim, no wrap.
    from virtgpu_conform.model.expr import boundary

    b = boundary(safe)
    assert b["satisfy"]["x"] + b["satisfy"]["w"] <= b["satisfy"]["lim"]
    assert compile_py(safe)(b["violate"]) is False
    # The fuzzer asks for one edge at a time: the one asked for is the same, the other is not solved.
    only = boundary(safe, edges=("violate",))
    assert only["satisfy"] is None and compile_py(safe)(only["violate"]) is False


def test_unknown_fields_are_decided_by_z3_only_when_every_completion_agrees():
    x, w = Var("x", 32), Var("w", 32)
    inside = fits(x, w, Var("lim", 32))
    assert evaluate(inside, {"x": 0, "w": 10, "lim": 100}) is True
    assert evaluate(inside, {"x": None, "w": 200, "lim": 100}) is False  # too wide whatever x is
    assert evaluate(inside, {"x": None, "w": 10, "lim": 100}) is None  # depends on x: inconclusive


def test_boundary_of_a_rect_check_sits_exactly_on_the_resource_edge(protocol):
    rule = protocol.rules["VIRTIO_GPU_CMD_SET_SCANOUT"]
    check = next(c for c in rule.checks if c.id == "rect-inside-resource")
    b = boundaries(protocol, rule, check)
    sat, bad = b["satisfy"], b["violate"]
    assert sat["st.res.exists"] and sat["resource_id"] != 0
    edges = [
        sat["r.x"] + sat["r.width"] == sat["st.res.width"],
        sat["r.y"] + sat["r.height"] == sat["st.res.height"],
        sat["r.width"] == sat["st.res.width"],
        sat["r.height"] == sat["st.res.height"],
        sat["r.x"] == sat["st.res.width"] - sat["r.width"],
        sat["r.y"] == sat["st.res.height"] - sat["r.height"],
    ]
    assert any(edges)
    assert compile_py(check.full)(bad) is False and bad["st.res.exists"] and bad["resource_id"] != 0


def test_no_command_demands_contradictory_outcomes(protocol):
    proof = prove(protocol, "conformant")
    assert proof.unknown == []
    assert proof.contradictions == {}, proof.contradictions
    assert set(proof.valid_exists.values()) == {"sat"}, "some command has no valid request at all"
    assert proof.conflicts == []
    assert proof.holds


@pytest.mark.slow
def test_reading_only_the_preferred_codes_exposes_requirement_pairs_that_conflict(protocol):
    proof = prove(protocol, "preferred")
    assert proof.contradictions  # the spec does not say which error wins
    pairs = {(c.command, c.first.id, c.second.id) for c in proof.conflicts}
    assert ("VIRTIO_GPU_CMD_SET_SCANOUT", "scanout-id", "resource-exists") in pairs
    for c in proof.conflicts:  # each witness really fails both checks
        assert compile_py(c.first.full)(c.witness) is False
        assert compile_py(c.second.full)(c.witness) is False


@pytest.mark.parametrize("profile,expect", [("spec", False), ("strict", True)])
def test_profiles_select_bases(protocol, profile, expect):
    from virtgpu_conform.model.rule import PROFILES

    assert ("informal" in PROFILES[profile]) is expect
    assert {"normative", "spec-text"} <= PROFILES[profile]
