"""The tool leaves the machine as it found it: the temp dir holds nothing of its own after a
campaign ends, is interrupted (Ctrl-C) or terminated (SIGTERM), for every kind of target, and
after a module of this suite; a campaign's device logs are under its --out."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOOL = [sys.executable, "-m", "virtgpu_conform"]


@pytest.fixture
def temp():
    """A fresh temp dir for the tool (TMPDIR), short enough for unix socket paths."""
    d = Path(tempfile.mkdtemp(prefix="vgc-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _left(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _env(temp: Path) -> dict:
    return {**os.environ, "TMPDIR": str(temp)}


@pytest.mark.needs_qemu
@pytest.mark.parametrize("target", ["qemu", "vhost-user-gpu"])
def test_a_campaign_leaves_nothing_and_keeps_its_device_logs_under_out(temp, tmp_path, target):
    if target == "vhost-user-gpu":
        from virtgpu_conform.checker.devices.vhost_user import BACKEND, kvm_problem

        why = kvm_problem() or ("" if os.access(BACKEND, os.X_OK) else f"{BACKEND} is missing")
        if why:
            pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    out = tmp_path / "out"
    r = subprocess.run(
        [*TOOL, "fuzz", "--target", target, "--examples", "8", "--steps", "10", "--seed", "4", "--out", str(out)],
        env=_env(temp),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert _left(temp) == [], f"the campaign left {_left(temp)} in the temp dir"
    assert (out / "device" / "qemu-trace.log").stat().st_size > 0  # the live device's log, under --out


@pytest.mark.needs_qemu
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_campaign_leaves_nothing(temp, tmp_path, how):
    p = subprocess.Popen(
        [*TOOL, "fuzz", "--target", "qemu", "--time", "60s", "--out", str(tmp_path / "out")],
        env=_env(temp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "out" / "fuzz-result.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # written as soon as the first finding comes: QEMU runs by then
    time.sleep(0.5)
    p.send_signal(how)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, out + err
    assert "interrupted" in (tmp_path / "out" / "fuzz-result.json").read_text()
    assert _left(temp) == [], f"the stopped campaign left {_left(temp)} in the temp dir"


def test_an_adapter_campaign_and_a_replay_leave_nothing(temp, tmp_path):
    serve = f"{sys.executable} -m virtgpu_conform.checker.devices.adapter_serve"
    r = subprocess.run(
        [*TOOL, "fuzz", "--target", "adapter", "--adapter", serve, "--examples", "5", "--steps", "8", "--timeout", "5"],
        env=_env(temp),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr
    case = REPO / "tests" / "data" / "fuzz" / "qemu-7.2-empty-backing-accepted-then-missing.ndjson"
    r = subprocess.run(
        [
            *TOOL,
            "fuzz",
            "--replay",
            str(case),
            "--target",
            "adapter",
            "--adapter",
            serve,
            "--out",
            str(tmp_path / "replay"),
        ],
        env=_env(temp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert _left(temp) == [], f"left {_left(temp)} in the temp dir"


@pytest.mark.needs_qemu
def test_a_module_of_this_suite_leaves_nothing(temp, tmp_path):
    """The QEMU target's own tests (QEMU started, killed, its tool killed) with the temp dir counted
    before and after; pytest's own folder (--basetemp) is elsewhere."""
    before = _left(temp)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "basetemp"),
            str(REPO / "tests" / "integration" / "test_qemu_target.py"),
        ],
        env=_env(temp),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert before == [] and _left(temp) == [], f"the module left {_left(temp)} in the temp dir"
