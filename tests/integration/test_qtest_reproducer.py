"""Reproducers in QEMU's own form: the repro.qtest and repro.sh written beside a replayed case run
with QEMU alone (a bare environment: no Python, nothing of this tool) and show the finding again:
the wrong answer, the stall, the crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices.qtest_script import QUIT
from virtgpu_conform.checker.devices.vhost_user import BACKEND, kvm_problem
from virtgpu_conform.checker.fuzz.replay import judge_qtest_run

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]
DATA = Path(__file__).parent.parent / "data" / "fuzz"
ALONE = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}  # QEMU and a POSIX shell


def _replayed(name: str, kind: str, out: Path) -> vgc.ReplayResult:
    r = vgc.replay(str(DATA / name), kind, str(out))
    assert sorted(os.path.basename(p) for p in r.reproducer) == ["repro.qtest", "repro.sh"]
    return r


def _alone(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/sh", str(folder / "repro.sh")],
        env=ALONE,
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _seen(obs) -> list[tuple[int, str]]:
    return [(o.line, str(o.signature)) for o in obs]


def test_wrong_answers_reproduce_with_qemu_alone(protocol, tmp_path):
    """QEMU 7.2 takes an empty backing and then refuses the resource's transfers and detach (ERR_UNSPEC)."""
    r = _replayed("qemu-7.2-empty-backing-accepted-then-missing.ndjson", "qemu", tmp_path)
    run = _alone(tmp_path)
    assert run.returncode == 0, run.stderr  # QEMU's own exit, at the end of the script
    tail = (tmp_path / "repro-qtest.log").read_text().splitlines()[-3:]  # ... QUIT, its OK, CLOSED
    assert any(line.endswith(f"] {QUIT}") for line in tail), tail
    seen = judge_qtest_run(protocol, str(tmp_path / "replay.ndjson"), str(tmp_path))
    assert _seen(seen) == _seen(r.observations) != []
    assert [o.line for o in seen] == [6, 8]


def test_a_stall_reproduces_with_qemu_alone(protocol, tmp_path):
    """A request cut inside its header: QEMU 7.2 never answers it."""
    r = _replayed("qemu-7.2-short-header-never-answered.ndjson", "qemu", tmp_path)
    run = _alone(tmp_path)
    assert run.returncode == 0, run.stderr
    seen = judge_qtest_run(protocol, str(tmp_path / "replay.ndjson"), str(tmp_path))
    assert [str(o.signature) for o in seen] == ["liveness: any command no-response-to-short-buffer"]
    assert _seen(seen) == _seen(r.observations)


def test_an_abort_reproduces_with_qemu_alone(protocol, tmp_path):
    """QEMU 7.2: a transfer whose offset lies past the backing attached aborts QEMU (an assertion in
    iov_to_buf_full), three requests in."""
    r = _replayed("qemu-7.2-transfer-offset-past-backing-aborts.ndjson", "qemu", tmp_path)
    assert [str(o.signature) for o in r.observations] == ["crash: TRANSFER_TO_HOST_2D device-died"]
    run = _alone(tmp_path)
    assert run.returncode == 128 + signal.SIGABRT, run.stderr
    assert "iov_to_buf_full: Assertion `offset == 0' failed" in run.stderr
    seen = judge_qtest_run(protocol, str(tmp_path / "replay.ndjson"), str(tmp_path))
    assert _seen(seen) == _seen(r.observations)


def test_without_its_polls_the_script_shows_something_else(tmp_path):
    """The repeated polls are what makes the script wait for each answer: with one read where the
    driver polled, the next chain overwrites the last before QEMU has handled it."""
    _replayed("qemu-7.2-empty-backing-accepted-then-missing.ndjson", "qemu", tmp_path)
    lines = (tmp_path / "repro.qtest").read_text().splitlines()
    single = [line for i, line in enumerate(lines) if not (line.startswith("readw ") and line == lines[i - 1])]
    (tmp_path / "repro.qtest").write_text("\n".join(single) + "\n")
    assert _alone(tmp_path).returncode == 0
    answers = (tmp_path / "repro.out").read_text().splitlines()
    read_back = [a for c, a in zip(single, answers) if c.startswith("read 0x400")]  # the response buffers
    recorded = [json.loads(line) for line in (tmp_path / "replay.ndjson").read_text().splitlines()]
    want = ["OK 0x" + rec["bytes"] for rec in recorded if rec["kind"] == "response"]
    assert len(read_back) == len(want) == 4 and read_back != want


def test_a_crash_reproduces_with_qemu_and_its_backend_alone(protocol, tmp_path):
    """vhost-user-gpu (QEMU 7.2): a zero-width scanout, then a flush of it, kills QEMU (SIGSEGV)."""
    if not os.access(BACKEND, os.X_OK):
        pytest.skip(f"{BACKEND} is not installed (apt-get install qemu-system-gui)")
    problem = kvm_problem()
    if problem:
        pytest.skip(problem)
    r = _replayed("vhost-user-gpu-7.2-zero-width-scanout-then-flush-kills-qemu.ndjson", "vhost-user-gpu", tmp_path)
    assert any(o.signature.kind == "crash" for o in r.observations)
    run = _alone(tmp_path)
    assert run.returncode == 128 + signal.SIGSEGV, run.stderr
    seen = judge_qtest_run(protocol, str(tmp_path / "replay.ndjson"), str(tmp_path))
    assert _seen(seen) == _seen(r.observations)
    # the script's own files are gone with it; the backend exited with QEMU (the script waited for it)
    assert not (tmp_path / "repro.sock").exists() and not (tmp_path / "HALT.BIN").exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "-s repro.sock" not in ps


def test_a_case_with_config_writes_and_resets_reproduces_with_qemu_alone(protocol, tmp_path):
    """The empty-backing case after a config write and a reset with chains pending and early kicks:
    the script makes them as the driver did, and the chains after them are judged as before."""
    lines = (DATA / "qemu-7.2-empty-backing-accepted-then-missing.ndjson").read_text().splitlines()
    aside = [
        {"kind": "config", "offset": 4, "bytes": "01000000"},
        {"kind": "reset", "how": ["pending", "early_notify"]},
    ]
    case = tmp_path / "case.ndjson"
    case.write_text("\n".join([lines[0], *map(json.dumps, aside), *lines[1:]]) + "\n")
    out = tmp_path / "out"
    r = vgc.replay(str(case), "qemu", str(out))
    run = _alone(out)
    assert run.returncode == 0, run.stderr
    script = (out / "repro.qtest").read_text()
    assert "writeb" in script  # the reset and the status writes after it
    seen = judge_qtest_run(protocol, str(out / "replay.ndjson"), str(out))
    assert _seen(seen) == _seen(r.observations) != []
    kinds = [json.loads(x)["kind"] for x in (out / "replay.ndjson").read_text().splitlines()[:3]]
    assert kinds == ["session", "config", "reset"]


@pytest.mark.parametrize("kind", ["qemu", "vhost-user-gpu"])
def test_the_pictures_of_a_case_are_taken_again_by_its_script(protocol, tmp_path, kind):
    """A display scene with its scanout at (2,1): its repro.sh takes the screendump the replay took,
    with an HMP monitor, after the same qtest commands, and finds the same picture; judged, the run
    shows what the replay did (QEMU: a right picture; QEMU 7.2's vhost-user-gpu: a picture shifted
    by the scanout's origin, a pixel finding)."""
    if kind == "vhost-user-gpu":
        why = kvm_problem() or ("" if os.access(BACKEND, os.X_OK) else f"{BACKEND} is missing")
        if why:
            pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    from test_pixel_oracle_devices import _scene

    from virtgpu_conform.checker.devices.target import ReferenceTarget
    from virtgpu_conform.checker.fuzz.replay import replay as send

    case = tmp_path / "scene.ndjson"
    send(
        protocol,
        ReferenceTarget(protocol.ir),
        _scene(protocol.codec, 1, {"r.x": 2, "r.y": 1, "r.width": 48, "r.height": 24}),
        str(case),
    )
    out = tmp_path / "out"
    r = vgc.replay(str(case), kind, str(out))
    assert sorted(os.path.basename(p) for p in r.reproducer) == ["repro.qtest", "repro.sh", "seen-1.ppm"]
    run = _alone(out)
    assert run.returncode == 0, run.stderr
    assert "shot-1.ppm: the picture the replay saw" in run.stdout, run.stdout + run.stderr
    seen = judge_qtest_run(protocol, str(out / "replay.ndjson"), str(out))
    assert _seen(seen) == _seen(r.observations)
    pixels = [o for o in seen if o.signature.check == "pixels"]
    assert bool(pixels) == (kind == "vhost-user-gpu"), _seen(seen)
    assert not list(out.glob("monitor.*"))  # the FIFOs are gone
