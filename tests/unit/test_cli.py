"""The command line: help everywhere, version, exit codes, stdout for results, NO_COLOR."""

from __future__ import annotations

import json
import re

import click
from click.testing import CliRunner

from virtgpu_conform.checker.cli import main


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


def test_every_command_has_help():
    runner = CliRunner()
    paths = [()] + list(_commands(main))
    assert ("spec", "show") in paths and ("spec", "lint") in paths and ("spec", "diff") in paths
    for path in paths:
        result = runner.invoke(main, list(path) + ["--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output and "--help" in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and re.search(r"virtgpu-conform, version \d+\.\d+", result.output)


def test_show_json_is_the_snapshot():
    result = CliRunner().invoke(main, ["spec", "show", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["version"] == "v1.4-cs01" and len(data["commands"]) == 26


def test_show_renders_tables_without_colour_when_asked(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    result = CliRunner().invoke(main, ["spec", "show"], color=True)
    assert result.exit_code == 0
    assert "\x1b[" not in result.output
    assert "RESOURCE_CREATE_2D" in result.output and "Requirements (34)" in result.output


def test_lint_exit_1_with_findings_on_stdout(spec_sources):
    result = CliRunner().invoke(main, ["spec", "lint", "--spec-dir", str(spec_sources),
                                       "--header", str(spec_sources / "virtio_gpu.h")])
    assert result.exit_code == 1
    assert "gpu-description.tex:292:4: warning:" in result.stdout
    assert re.search(r"\d+ errors, \d+ warnings, \d+ notes", result.stderr)


def test_lint_without_sources_is_a_usage_error():
    result = CliRunner().invoke(main, ["spec", "lint"])
    assert result.exit_code == 2 and "give --spec-dir" in result.output


def test_diff_command(spec_sources):
    result = CliRunner().invoke(main, ["spec", "diff", str(spec_sources / "virtio-gpu-v1.2.tex"),
                                       str(spec_sources)])
    assert result.exit_code == 0
    assert "+ feature VIRTIO_GPU_F_BLOB_ALIGNMENT: bit 5" in result.stdout
    assert "6 changes from v1.2" in result.stderr


def test_import_writes_a_snapshot(tmp_path, spec_sources):
    out = tmp_path / "snap.json"
    result = CliRunner().invoke(main, ["spec", "import", str(spec_sources), "--header",
                                       str(spec_sources / "virtio_gpu.h"), "--version-label", "x", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["version"] == "x"


def test_unknown_option_is_exit_2():
    assert CliRunner().invoke(main, ["spec", "show", "--nope"]).exit_code == 2
