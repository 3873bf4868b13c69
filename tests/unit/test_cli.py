"""The command line: help everywhere, version, exit codes, stdout for results, NO_COLOR."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from virtgpu_conform.checker.cli.main import main

REPO = Path(__file__).resolve().parents[2]


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
    monkeypatch.setenv("COLUMNS", "160")  # a pipe's width (pytest-xdist workers inherit a terminal's 80)
    result = CliRunner().invoke(main, ["spec", "show"], color=True)
    assert result.exit_code == 0
    assert "\x1b[" not in result.output
    assert "RESOURCE_CREATE_2D" in result.output and "Requirements (34)" in result.output


def test_lint_exit_1_with_findings_on_stdout(spec_sources):
    result = CliRunner().invoke(
        main, ["spec", "lint", "--spec-dir", str(spec_sources), "--header", str(spec_sources / "virtio_gpu.h")]
    )
    assert result.exit_code == 1
    assert "gpu-description.tex:292:4: warning:" in result.stdout
    assert re.search(r"\d+ errors, \d+ warnings, \d+ notes", result.stderr)


def test_lint_without_sources_is_a_usage_error():
    result = CliRunner().invoke(main, ["spec", "lint"])
    assert result.exit_code == 2 and "give --spec-dir" in result.output


def test_diff_command(spec_sources):
    result = CliRunner().invoke(main, ["spec", "diff", str(spec_sources / "virtio-gpu-v1.2.tex"), str(spec_sources)])
    assert result.exit_code == 0
    assert "+ feature VIRTIO_GPU_F_BLOB_ALIGNMENT: bit 5" in result.stdout
    assert "6 changes from v1.2" in result.stderr


def test_import_writes_a_snapshot(tmp_path, spec_sources):
    out = tmp_path / "snap.json"
    result = CliRunner().invoke(
        main,
        [
            "spec",
            "import",
            str(spec_sources),
            "--header",
            str(spec_sources / "virtio_gpu.h"),
            "--version-label",
            "x",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["version"] == "x"


def test_unknown_option_is_exit_2():
    assert CliRunner().invoke(main, ["spec", "show", "--nope"]).exit_code == 2


def test_a_bug_in_the_tool_is_one_line_exit_4_and_a_saved_traceback(monkeypatch, tmp_path):
    from virtgpu_conform.checker.cli import check as check_cli

    def broken(*a, **k):
        raise ZeroDivisionError("seeded bug")

    monkeypatch.setattr(check_cli, "check_session", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    result = CliRunner().invoke(main, ["check", str(REPO / "traces" / "qemu-7.2" / "fbdev")])
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output
    m = re.search(
        r"internal error \(a bug in virtgpu-conform.*\): ZeroDivisionError: seeded bug; traceback saved to (\S+)",
        result.stderr,
    )
    assert m, result.stderr
    saved = m.group(1)
    assert saved.startswith(str(tmp_path)) and "Traceback" in open(saved).read()


@pytest.mark.parametrize("once", [False, True])
def test_a_fuzzer_bug_stops_the_campaign_and_keeps_its_findings(monkeypatch, tmp_path, once):
    # The reference campaign of seed 1 once ended on a struct.error in the wild rule, as a traceback
    # and with fuzz-result.json saying nothing of it. A bug that shows only once (hypothesis' replay
    # then calls the case flaky) is a bug all the same, not a warning.
    from virtgpu_conform.checker.devices.target import ReferenceTarget

    real, sent = ReferenceTarget.send, []

    def send(self, queue, outs, in_sizes):
        sent.append(1)
        if len(sent) == 200 if once else len(sent) >= 200:
            raise ZeroDivisionError("seeded bug")
        return real(self, queue, outs, in_sizes)

    monkeypatch.setattr(ReferenceTarget, "send", send)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["fuzz", "--target", "reference", "--examples", "100", "--out", str(out)])
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output
    assert "stopped: internal error" in result.stdout
    assert re.search(
        r"fuzz: internal error .*ZeroDivisionError: seeded bug; traceback saved to .*internal-error.txt; "
        r"the campaign stopped there and the findings so far are kept",
        result.stderr,
    ), result.stderr
    r = json.loads((out / "fuzz-result.json").read_text())
    assert r["stopped"] == "internal error" and r["error"]["type"] == "ZeroDivisionError"
    assert r["commands"] >= 199
    assert "ZeroDivisionError: seeded bug" in (out / "internal-error.txt").read_text()


def test_a_trace_nothing_could_be_checked_from_exits_2_and_says_how_to_record_it(tmp_path):
    """Nothing checked is never a pass: a QEMU log with no command event, alone or beside a guest log."""
    log = tmp_path / "qemu-trace.log"
    log.write_text("virtio_gpu_features virgl 0\n" * 3)
    r = CliRunner().invoke(main, ["check", str(log)])
    assert r.exit_code == 2, r.output
    assert f"{log}: no command could be read from this qemu trace" in r.stderr
    assert "-trace 'virtio_gpu*' -D FILE" in r.stderr
    (tmp_path / "guest-tracepoints.log").write_text(
        (REPO / "traces" / "qemu-7.2" / "fbdev" / "guest-tracepoints.log").read_text()
    )
    r = CliRunner().invoke(main, ["check", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 2 and f"{log}: no command" in r.stderr, r.output
    sources = json.loads((tmp_path / "r.json").read_text())["sessions"][0]["sources"]
    assert [(s["format"], s["exchanges"] > 0) for s in sources] == [("qemu", False), ("guest", True)]


def test_a_closed_pipe_leaves_the_exit_code_to_the_verdict(tmp_path):
    """`check ... | head -1`: the reader goes after one line; the tool stops printing and exits as the
    check decided (0 here: a clean session), not 1 as if it had found something."""
    import fcntl
    import subprocess
    import sys

    for args, expect in (
        (["check", "--all-requirements", str(REPO / "traces" / "qemu-7.2" / "fbdev-modetest")], 0),
        (["spec", "show"], 0),
    ):
        p = subprocess.Popen(
            [sys.executable, "-m", "virtgpu_conform", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        fcntl.fcntl(p.stdout, 1031, 4096)  # F_SETPIPE_SZ: a small pipe, so the output does not fit in it
        assert p.stdout.readline()
        p.stdout.close()
        _, err = p.communicate(timeout=60)
        assert p.returncode == expect, err
        assert "Traceback" not in err and "Broken pipe" not in err, err


@pytest.mark.slow
def test_follow_checks_a_log_as_it_grows_and_ctrl_c_ends_it_with_the_summary(tmp_path):
    """A running VM's QEMU log, written while the check follows it: the finding is printed while
    the log still grows; Ctrl-C ends it with the summary and --json, the exit code the verdict."""
    import signal
    import subprocess
    import sys
    import time

    lines = (REPO / "traces" / "qemu-7.2" / "fbdev-modetest" / "qemu-trace.log").read_text().splitlines(True)
    ts = lines[-1].split(":", 1)[0]
    # an unknown resource flushed: the driver's fault, definite (the device's complaint says it refused)
    fault = [
        f"{ts}:virtqueue_pop vq 0x0 elem 0xdead0 in_num 1 out_num 1\n",
        f"{ts}:virtio_gpu_cmd_res_flush res 0x77, w 8, h 8, x 0, y 0\n",
        f"{ts}:virtqueue_fill vq 0x0 elem 0xdead0 len 24 idx 0\n",
    ]
    log = tmp_path / "qemu-trace.log"
    log.write_text("".join(lines[:200]))
    p = subprocess.Popen(
        [sys.executable, "-m", "virtgpu_conform", "check", "--follow", str(log), "--json", str(tmp_path / "r.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        vq = next(x.split()[2] for x in lines if "virtqueue_pop" in x)  # the control queue's pointer
        with log.open("a") as f:
            f.writelines(lines[200:])
            f.writelines(x.replace("vq 0x0", f"vq {vq}") for x in fault)
        first = p.stdout.readline()  # printed while the log is still open and the check goes on
        assert "RESOURCE_FLUSH: resource 119 does not exist" in first and "definite driver finding" in first
        assert p.poll() is None
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 1, err
    assert "1 definite, 0 possible findings" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["sessions"][0]["exchanges"] > 300 and doc["totals"]["definite"] == 1


def test_thousands_of_rounds_ended_on_flakiness_are_summed_up_not_listed(monkeypatch, tmp_path):
    # a blob campaign against Debian 13's QEMU: a mapped blob outlives the virtio reset, and each of
    # 3,462 rounds ended on hypothesis' flakiness check; the summary printed a line for each
    from types import SimpleNamespace

    from click.testing import CliRunner

    from virtgpu_conform.checker.cli.main import main
    from virtgpu_conform.checker.fuzz import run

    doc = {"stopped": "time", "target": "reference", "device": "reference", "commands": 10, "cases": 2}
    doc |= {"seconds": 1.0, "pipelined": False, "seed": 0, "findings": [], "differential": None, "notes": []}
    doc |= {"error": None, "flaky": [f"round {n}: Flaky: the device answered a rerun differently" for n in range(40)]}
    fake = SimpleNamespace(doc=doc, campaign=SimpleNamespace(found={}))
    monkeypatch.setattr(run, "fuzz", lambda *a, **k: fake)
    r = CliRunner().invoke(main, ["fuzz", "--examples", "2", "--out", str(tmp_path)])
    said = r.output
    assert said.count("a round ended on hypothesis' flakiness check") == 3
    assert "37 more rounds ended the same way" in said, said
