"""`virtgpu-conform model rules|prove`: the rules as a table, and z3's verdict on their consistency."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from virtgpu_conform.checker.cli.main import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_prove_conformant_reading_holds():
    res = run("model", "prove", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["holds"] is True and data["conflicts"] == [] and data["contradictions"] == {}
    assert len(data["valid_request_exists"]) == 26


@pytest.mark.slow
def test_prove_preferred_reading_lists_conflicting_pairs_and_exits_1():
    res = run("model", "prove", "--reading", "preferred", "--json")
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["conflicts"]
    first = data["conflicts"][0]
    assert {"command", "first", "second", "witness"} <= set(first)


def test_rules_table_for_one_command_and_a_helpful_error_for_an_unknown_one():
    res = run("model", "rules", "map_blob")
    assert res.exit_code == 0
    assert "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB" in res.output and "not-mapped" in res.output
    bad = run("model", "rules", "frobnicate")
    assert bad.exit_code == 2
    assert "no rule for 'frobnicate'" in bad.output and "SET_SCANOUT" in bad.output
