"""`report` on unusable or hostile results: a one-line error naming the file, never a traceback;
strings from traces rendered inert in Markdown and JUnit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from virtgpu_conform.checker.cli.main import main

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "traces" / "qemu-7.2" / "fbdev"
HOSTILE = "<script>alert(1)</script> | `x` \x01\x1b[31m ]]> &amp;"


def _report(*args):
    return CliRunner().invoke(main, ["report", *map(str, args)])


@pytest.mark.parametrize(
    "content, says",
    [
        (None, "no such file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "not a text file"),
        (b'{"schema": "virtgpu-conform/check-result",\n "version": 1,\n "sessions": [}', ":3:"),
        (b'{"schema": "something-else", "version": 1}', "not a virtgpu-conform result"),
        (b'{"schema": "virtgpu-conform/check-result", "version": 99, "sessions": []}', "version 99"),
        (b'{"schema": "virtgpu-conform/check-result", "version": 1, "sessions": [{"target": "t"}]}', "'requirements'"),
    ],
)
def test_unusable_results_get_a_one_line_error(tmp_path, content, says):
    path = tmp_path / "result.json"
    if content is not None:
        path.write_bytes(content)
    r = _report(path)
    assert r.exit_code == 2, r.output
    assert says in r.output and str(path) in r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_a_fuzz_out_directory_without_its_result_is_named(tmp_path):
    r = _report(tmp_path)
    assert r.exit_code == 2 and "fuzz-result.json" in r.output


@pytest.fixture
def hostile_result(tmp_path) -> Path:
    """A real check result whose strings were replaced by what a crafted trace could carry."""
    out = tmp_path / "check.json"
    r = CliRunner().invoke(main, ["check", str(TRACE), "--json", str(out)])
    assert r.exit_code in (0, 1, 3), r.output
    doc = json.loads(out.read_text())
    s = doc["sessions"][0]
    s["target"] = HOSTILE
    s["skipped_files"] = [HOSTILE]
    s["findings"] = [
        {
            "definite": True,
            "side": "device",
            "command": HOSTILE,
            "check": "response-type",
            "basis": "informal",
            "requirements": [],
            "file": HOSTILE,
            "line": 3,
            "event": 2,
            "message": HOSTILE,
            "reason": None,
            "related": [{"at": HOSTILE, "what": HOSTILE}],
            "spec": [],
        }
    ]
    out.write_text(json.dumps(doc))
    return out


def test_markdown_renders_trace_strings_inert(hostile_result, tmp_path):
    out = tmp_path / "r.md"
    r = _report(hostile_result, "--format", "md", "-o", out)
    assert r.exit_code == 0, r.output
    md = out.read_text()
    # Raw markup only inside code spans, where Markdown shows it as text; escaped everywhere else.
    outside = re.sub(r"`[^`\n]*`", "", md)
    assert "<script>" not in outside and "\\<script\\>" in outside
    assert "\x1b" not in md and "\\x1b" in md
    # A table row stays one row: the pipe in the label is escaped.
    assert "\\|" in md


def test_junit_spells_out_characters_xml_cannot_hold(hostile_result, tmp_path):
    junitparser = pytest.importorskip("junitparser", reason="pip install junitparser (in the [test] extra)")
    out = tmp_path / "r.xml"
    r = _report(hostile_result, "--format", "junit", "-o", out)
    assert r.exit_code == 0, r.output
    xml = junitparser.JUnitXml.fromfile(str(out))
    suite = next(iter(xml))
    assert suite.name == HOSTILE.replace("\x01", "\\x01").replace("\x1b", "\\x1b")
    failed = [c for c in suite if any(type(x).__name__ == "Failure" for x in c.result)]
    assert failed and failed[0].name.startswith("implied/")
    assert "<script>alert(1)</script>" in failed[0].result[0].message  # as text, read back intact
