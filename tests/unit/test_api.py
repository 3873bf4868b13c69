"""The library: what `import virtgpu_conform` offers is what the CLI uses, and says what it found."""

from __future__ import annotations

import importlib
import inspect
import json
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_layers import _modules

import virtgpu_conform as vgc
from virtgpu_conform.checker.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SESSION = REPO / "traces" / "qemu-7.2" / "fbdev-modetest"
BACKING_MISSING = REPO / "tests" / "data" / "fuzz" / "qemu-7.2-empty-backing-accepted-then-missing.ndjson"


def test_the_package_root_names_its_api_and_version():
    assert vgc.__version__ == version("virtgpu-conform")
    for name in vgc.__all__:
        assert getattr(vgc, name) is not None, name
    assert {"check_trace", "fuzz", "replay", "report", "load_spec", "Error", "DeviceSpec"} <= set(dir(vgc))
    with pytest.raises(AttributeError):
        vgc.no_such_thing  # noqa: B018
    # PEP 561: the package says its hints are to be read
    assert (Path(vgc.__file__).parent / "py.typed").is_file()


def test_every_error_raised_on_purpose_is_an_error():
    """Every exception class of the package derives from virtgpu_conform.Error, but for the three that
    are signals inside the fuzzer, never seen by a user (a case's finding for hypothesis, the
    campaign's stop, a native line the reader turns into a diagnostic)."""
    signals = {"Failure", "Stop", "_Bad"}
    seen, outside = [], []
    for name in sorted(n for n in _modules() if not n.endswith("__main__")):  # that one runs the CLI
        module = importlib.import_module(name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseException):
                seen.append(name)
                if not issubclass(cls, vgc.Error) and name not in signals:
                    outside.append(f"{module.__name__}.{name}")
    assert len(seen) >= 18 and not outside, outside


def test_check_trace_is_what_check_json_writes(tmp_path):
    result = vgc.check_trace(SESSION, timeline=True)  # what --json records, for reports
    [s] = result.sessions
    assert s.exchanges == 314 and result.definite == [] and result.possible == []
    assert s.requirements()["device-operation/guest/driver-must.2"]["verdict"] == "pass"
    doc = result.to_json()
    assert doc["schema"] == "virtgpu-conform/check-result" and doc["version"] == 1
    out = tmp_path / "check.json"
    r = CliRunner().invoke(main, ["check", str(SESSION), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    result.assert_conformant()


def test_assert_conformant_lists_each_definite_finding_and_never_passes_nothing(tmp_path):
    bad = vgc.check_trace(BACKING_MISSING)
    assert bad.definite
    with pytest.raises(vgc.NotConformant) as exc:
        bad.assert_conformant()
    assert isinstance(exc.value, vgc.Error) and isinstance(exc.value, AssertionError)
    for f in bad.definite:
        assert f"{f.where}: definite {f.side} finding" in str(exc.value)
    empty = tmp_path / "empty.ndjson"
    empty.write_text('{"kind": "session", "format": "virtgpu-conform-trace", "version": 1}\n')
    with pytest.raises(vgc.NotConformant, match=r"nothing was checked \(0 exchanges\)"):
        vgc.check_trace(empty).assert_conformant()


def test_unusable_input_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(vgc.TraceError) as exc:
        vgc.check_trace(tmp_path)  # a folder holding no trace
    assert str(tmp_path) in str(exc.value) and isinstance(exc.value, vgc.Error)


@pytest.mark.slow
def test_fuzz_replay_and_report_from_python(tmp_path):
    out = tmp_path / "fuzz"
    campaign = vgc.fuzz("reference", examples=25, seed=3, out=str(out))
    assert campaign.commands > 0 and campaign.doc["cases"] == 25
    campaign.assert_conformant()  # the model's own device breaks nothing of the model's
    assert json.loads((out / "fuzz-result.json").read_text()) == campaign.to_json()
    replayed = vgc.replay(str(BACKING_MISSING), "reference", out=str(tmp_path / "replay"))
    assert replayed.steps > 0 and replayed.failing == [] and Path(replayed.trace).is_file()
    md = vgc.report([vgc.check_trace(SESSION), campaign], format="md")
    assert "**c1**" in md and "**c2**" in md and "fbdev-modetest" in md
    assert vgc.report(str(out), format="json").startswith("{")
    for fmt in ("text", "html", "junit", "sarif"):
        assert vgc.report(campaign, format=fmt)
    with pytest.raises(ValueError, match="no report format"):
        vgc.report(campaign, format="docx")


def test_a_device_spec_is_checked_and_names_its_cli_options():
    with pytest.raises(ValueError, match="unknown device kind"):
        vgc.DeviceSpec("crosvm")
    with pytest.raises(ValueError, match="adapter="):
        vgc.DeviceSpec("adapter")
    spec = vgc.DeviceSpec("qemu", qemu="/opt/q", device_opts="edid=off", timeout=1.0)
    assert spec.cli_args() == ["--target", "qemu", "--qemu", "/opt/q", "--device-opts", "edid=off", "--timeout", "1"]


def test_load_spec_reads_a_checkout(spec_sources, shared_header):
    ir = vgc.load_spec(spec_sources, shared_header)
    assert isinstance(ir, vgc.SpecIR) and len(ir.commands) == 26
    assert vgc.check_trace(SESSION, spec=ir).sessions[0].exchanges == 314
