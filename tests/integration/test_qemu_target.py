"""The qtest virtio-pci driver against QEMU's real virtio-gpu-pci: answers checked by the model, no stray QEMU."""

from __future__ import annotations

import io
import os
import shutil
import signal
import textwrap

import pytest
from processes import assert_children_die_with_tool

from virtgpu_conform.checker.check.engine import Checker
from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.devices.qtest import exit_status
from virtgpu_conform.checker.devices.target import ReferenceTarget
from virtgpu_conform.checker.fuzz.record import record
from virtgpu_conform.checker.traces import native
from virtgpu_conform.model.protocol import Protocol

pytestmark = pytest.mark.integration


def _need_qemu() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs qemu-system-x86: qemu-system-x86_64 must be on PATH")
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")


def script(codec) -> list[tuple[str, bytes, int]]:
    """Valid set-up, then the classic mistakes: stale ids, id 0, out-of-range scanout, wrapped rect."""
    e = codec.encode
    W, H = 64, 64
    rect = {"r.width": W, "r.height": H}
    return [
        ("controlq", e("VIRTIO_GPU_CMD_GET_DISPLAY_INFO"), 408),
        ("controlq", e("VIRTIO_GPU_CMD_GET_EDID", {"scanout": 0}), 1056),
        (
            "controlq",
            e("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": W, "height": H}),
            24,
        ),
        (
            "controlq",
            e("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", {"resource_id": 1}, [{"addr": 0x800000, "length": W * H * 4}]),
            24,
        ),
        ("controlq", e("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0, "resource_id": 1, **rect}), 24),
        ("controlq", e("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", {"resource_id": 1, **rect}), 24),
        ("controlq", e("VIRTIO_GPU_CMD_RESOURCE_FLUSH", {"resource_id": 1, **rect}), 24),
        ("cursorq", e("VIRTIO_GPU_CMD_MOVE_CURSOR", {"pos.x": 10, "pos.y": 10}), 24),
        # the driver's mistakes: a conformant device rejects each
        (
            "controlq",
            e("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 0, "format": 1, "width": 8, "height": 8}),
            24,
        ),
        ("controlq", e("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", {"resource_id": 9, **rect}), 24),
        ("controlq", e("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 7, "resource_id": 1, **rect}), 24),
        (
            "controlq",
            e("VIRTIO_GPU_CMD_RESOURCE_FLUSH", {"resource_id": 1, "r.x": 0xFFFFFFF0, "r.width": 0x20, "r.height": 1}),
            24,
        ),
        ("controlq", e("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0, "resource_id": 0}), 24),
        ("controlq", e("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": 1}), 24),
        ("controlq", e("VIRTIO_GPU_CMD_RESOURCE_FLUSH", {"resource_id": 1, **rect}), 24),
    ]


def check_native(protocol: Protocol, text: str) -> Checker:
    c = Checker(protocol)
    for ev in native.read(enumerate(text.splitlines(), 1), "run.ndjson", protocol.codec):
        c.feed(ev)
    c.finish()
    return c


@pytest.mark.parametrize("target", ["reference", pytest.param("qemu", marks=pytest.mark.needs_qemu)])
def test_scripted_run_is_recorded_and_checked(ir, tmp_path, target):
    p = Protocol(ir)
    steps = script(p.codec)
    out = io.StringIO()
    make = (
        (lambda: ReferenceTarget(ir))
        if target == "reference"
        else (lambda: QemuTarget(ir, log_path=str(tmp_path / "qemu-trace.log")))
    )
    with make() as t:
        replies = record(ir, t, steps, out)
    assert [r.status for r in replies] == ["answered"] * len(steps)
    c = check_native(p, out.getvalue())
    assert c.exchanges == len(steps) and c.unidentified == 0
    device = [f for f in c.findings if f.side == "device"]
    driver = sorted({(f.where.line, f.check) for f in c.findings if f.side == "driver"})
    # the script's own mistakes, found where they are (request lines: 2 per command after the header)
    line = {i: 2 + 2 * i for i in range(len(steps))}
    assert driver == sorted(
        [
            (line[8], "resource-id-nonzero"),
            (line[9], "resource-exists"),
            (line[10], "scanout-id"),
            (line[11], "rect-inside-resource"),
            (line[14], "resource-exists"),
        ]
    )
    # each was answered with an error; the device broke nothing definite
    assert [f for f in device if f.definite] == [], device
    if target == "qemu":
        log = (tmp_path / "qemu-trace.log").read_text()
        assert "virtio_gpu_cmd_res_create_2d" in log and "virtqueue_fill" in log


@pytest.mark.needs_qemu
def test_no_qemu_survives_a_killed_tool(tmp_path):
    child = textwrap.dedent(f"""
        import sys, time
        from virtgpu_conform.spec.load import load_snapshot
        from virtgpu_conform.checker.devices.qemu import QemuTarget
        t = QemuTarget(load_snapshot(), log_path={str(tmp_path / "log")!r})
        print(t.q.proc.pid, flush=True)
        time.sleep(60)
    """)
    assert_children_die_with_tool(child, 1, "QEMU")


@pytest.mark.needs_qemu
def test_a_device_that_dies_is_reported(ir, tmp_path):
    p = Protocol(ir)
    with QemuTarget(ir, log_path=str(tmp_path / "log")) as t:
        assert t.send("controlq", [p.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")], [408]).status == "answered"
        os.kill(t.q.proc.pid, signal.SIGKILL)
        t.q.proc.wait(timeout=10)
        r = t.send("controlq", [p.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")], [408])
        assert r.status == "died" and "exited" in r.detail


@pytest.mark.needs_qemu
def test_qemu_started_while_pinned_runs_every_thread_on_that_cpu(ir):
    # fuzz --cpu pins itself before it starts a device: QEMU inherits the CPU at fork, so the qtest
    # ping-pong stays on one CPU (several times faster than between two idle ones).
    from virtgpu_conform.checker.devices import affinity
    from virtgpu_conform.model.codec import codec_for

    cpu = affinity.choose("auto")
    if cpu is None:
        pytest.skip("one CPU: nothing is pinned")
    with affinity.pinned(cpu), QemuTarget(ir) as t:
        tasks = os.listdir(f"/proc/{t.q.proc.pid}/task")
        cpus = {
            open(f"/proc/{t.q.proc.pid}/task/{k}/status").read().split("Cpus_allowed_list:")[1].split()[0]
            for k in tasks
        }
        assert len(tasks) > 1 and cpus == {str(cpu)}, (tasks, cpus)
        info = codec_for(ir).encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")
        assert t.send("controlq", [info], [408]).status == "answered"
    assert sorted(os.sched_getaffinity(0)) != [cpu]  # this process's own affinity came back


@pytest.mark.needs_qemu
def test_close_stops_qemu_through_its_own_exit_path(ir):
    """SIGTERM first: QEMU leaves through its exit path (status 0, what it writes at exit written;
    a gcov build's counters among it), not killed outright (status -9, nothing written)."""
    t = QemuTarget(ir)
    q = t.q
    t.close()
    assert q.proc.returncode == 0, exit_status(q.proc.returncode)
