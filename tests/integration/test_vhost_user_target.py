"""QEMU's separate vhost-user-gpu backend as a fuzz target: the qtest script, checked by the model; no stray process."""

from __future__ import annotations

import io
import os
import signal
import textwrap

import pytest
from processes import alive as _alive
from processes import assert_children_die_with_tool
from test_qemu_target import _need_qemu, check_native, script

from virtgpu_conform.checker.devices.vhost_user import BACKEND, KvmUnusable, VhostUserGpuTarget, kvm_problem
from virtgpu_conform.checker.fuzz.record import record
from virtgpu_conform.model.protocol import Protocol

pytestmark = pytest.mark.integration

OK_NODATA = 0x1100
ERR_INVALID_RESOURCE_ID, ERR_INVALID_SCANOUT_ID = 0x1203, 0x1202


def _need_backend() -> None:
    _need_qemu()
    if not os.access(BACKEND, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"CI installs qemu-system-gui: {BACKEND} must exist")
        pytest.skip(f"{BACKEND} is not installed (apt-get install qemu-system-gui)")


def _target(ir, tmp_path, **kw) -> VhostUserGpuTarget:
    _need_backend()
    try:
        return VhostUserGpuTarget(ir, log_path=str(tmp_path / "qemu-trace.log"), **kw)
    except KvmUnusable as exc:  # in CI too: a machine without usable KVM cannot run vhost-user
        pytest.skip(str(exc))


def _type(data: bytes) -> int:
    return int.from_bytes(data[:4], "little")


@pytest.mark.needs_qemu
def test_scripted_run_is_recorded_and_checked(ir, tmp_path):
    p = Protocol(ir)
    steps = script(p.codec)
    out = io.StringIO()
    with _target(ir, tmp_path) as t:
        replies = record(ir, t, steps, out)
        edid = "VIRTIO_GPU_F_EDID" in t.settings.features
    assert [r.status for r in replies] == ["answered"] * len(steps)
    c = check_native(p, out.getvalue())
    assert c.exchanges == len(steps) and c.unidentified == 0
    line = {i: 2 + 2 * i for i in range(len(steps))}
    driver = sorted({(f.where.line, f.check) for f in c.findings if f.side == "driver"})
    expected = [
        (line[8], "resource-id-nonzero"),
        (line[9], "resource-exists"),
        (line[10], "scanout-id"),
        (line[11], "rect-inside-resource"),
        (line[14], "resource-exists"),
    ]
    if not edid:  # QEMU 7.2's backend offers no VIRTIO_GPU_F_EDID: the script's GET_EDID is then a mistake too
        expected.append((line[1], "feature-gate"))
        assert _type(replies[1].data) >= 0x1200, "GET_EDID without the feature must be answered with an error"
    assert driver == sorted(expected)
    # A REAL FINDING (QEMU 7.2's vhost-user-gpu): SET_SCANOUT of scanout 7 on a device with
    # num_scanouts 1 is answered OK_NODATA, where QEMU's built-in device answers
    # ERR_INVALID_SCANOUT_ID. The backend compares scanout_id with VIRTIO_GPU_MAX_SCANOUTS (16),
    # not with the num_scanouts it reports. The checker must report it (definite), and nothing else.
    known = {(line[10], "response-type")}
    device = {(f.where.line, f.check) for f in c.findings if f.side == "device" and f.definite}
    assert device <= known, sorted(device - known)
    if device:
        assert _type(replies[10].data) == OK_NODATA
    else:  # a fixed backend
        assert _type(replies[10].data) == ERR_INVALID_SCANOUT_ID
    # every other error the script provokes is an error here too
    for i in (8, 9, 11, 14):
        assert _type(replies[i].data) >= 0x1200, (i, replies[i].data[:24].hex())
    backend_log = (tmp_path / "vhost-user-gpu.log").read_text()
    assert "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D" in backend_log  # G_MESSAGES_DEBUG=all: one line per command


@pytest.mark.needs_qemu
def test_reset_gives_a_fresh_device(ir, tmp_path):
    p = Protocol(ir)
    create = p.codec.encode(
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 8, "height": 8}
    )
    with _target(ir, tmp_path) as t:
        assert _type(t.send("controlq", [create], [24]).data) == OK_NODATA
        assert _type(t.send("controlq", [create], [24]).data) == ERR_INVALID_RESOURCE_ID
        old = (t.q.proc.pid, t.backend.pid)
        t.reset()
        assert _type(t.send("controlq", [create], [24]).data) == OK_NODATA
        assert t.starts == 2
    assert not any(_alive(pid) for pid in old)


@pytest.mark.needs_qemu
def test_a_backend_that_dies_is_reported_and_reset_recovers(ir, tmp_path):
    p = Protocol(ir)
    info = p.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")
    with _target(ir, tmp_path, timeout=1.0) as t:
        assert t.send("controlq", [info], [408]).status == "answered"
        os.kill(t.backend.pid, signal.SIGKILL)
        t.backend.wait(10)
        r = t.send("controlq", [info], [408])
        assert r.status == "died" and "backend exited" in r.detail
        t.reset()
        assert t.send("controlq", [info], [408]).status == "answered"
        pids = (t.q.proc.pid, t.backend.pid)
    assert not any(_alive(pid) for pid in pids), "close() left QEMU or the backend running"


@pytest.mark.needs_qemu
def test_no_qemu_or_backend_survives_a_killed_tool(ir, tmp_path):
    t = _target(ir, tmp_path)  # skips here, not in the child, when KVM is unusable
    t.close()
    child = textwrap.dedent(f"""
        import time
        from virtgpu_conform.spec.load import load_snapshot
        from virtgpu_conform.checker.devices.vhost_user import VhostUserGpuTarget
        t = VhostUserGpuTarget(load_snapshot(), log_path={str(tmp_path / "log")!r})
        print(t.q.proc.pid, t.backend.pid, flush=True)
        time.sleep(60)
    """)
    assert_children_die_with_tool(child, 2, "QEMU or the backend")


def test_kvm_problem_names_kvm(tmp_path):
    reason = kvm_problem(str(tmp_path / "no-kvm"))
    assert reason and "KVM is unusable" in reason and "does not exist" in reason


@pytest.mark.needs_qemu
def test_a_spare_pair_started_ahead_is_fresh_when_used_and_nothing_outlives_close(ir, tmp_path):
    # A campaign's target keeps a backend + QEMU started ahead (a QEMU with KVM takes ~0.1 s to
    # answer); the reset takes it: a fresh device, the retired pair gone, the spare on this CPU.
    from virtgpu_conform.checker.devices import affinity

    p = Protocol(ir)
    create = p.codec.encode(
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 8, "height": 8}
    )
    cpu = affinity.choose("auto")
    with affinity.pinned(cpu):
        with _target(ir, tmp_path, spares=1) as t:
            assert len(t.spares) == 1
            spare_backend, spare_qemu = t.spares[0][0].pid, t.spares[0][1].proc.pid
            if cpu is not None:  # started away from the CPU this process works on
                assert os.sched_getaffinity(spare_qemu) != {cpu}
            assert _type(t.send("controlq", [create], [24]).data) == OK_NODATA
            old = (t.q.proc.pid, t.backend.pid)
            t.reset()
            assert (t.q.proc.pid, t.backend.pid) == (spare_qemu, spare_backend)
            assert _type(t.send("controlq", [create], [24]).data) == OK_NODATA  # resource 1 is new here
            if cpu is not None:
                for pid in (spare_qemu, spare_backend):
                    assert {os.sched_getaffinity(int(tid)) == {cpu} for tid in os.listdir(f"/proc/{pid}/task")} == {
                        True
                    }
            assert len(t.spares) == 1
            every = [*old, spare_qemu, spare_backend, t.spares[0][0].pid, t.spares[0][1].proc.pid]
    assert not any(_alive(pid) for pid in every), "close() left a QEMU or a backend running"
