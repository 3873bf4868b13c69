"""A fresh trace from a real boot (Debian's kernel driving QEMU's virtio-gpu under TCG) checks clean.

Counts vary between runs (timing), so the test asserts invariants: both sources see the
same commands, the session starts at the device's initialisation, nothing definite is found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from virtgpu_conform.checker.check.engine import Checker
from virtgpu_conform.checker.check.session import Recording, check_session
from virtgpu_conform.model.protocol import Protocol

# Installs what it lacks with apt-get and keeps Debian's kernel in ~/.cache: asked for with --mutate-host.
pytestmark = [pytest.mark.integration, pytest.mark.mutates_host]

CAPTURE = Path(__file__).resolve().parents[2] / "traces" / "capture" / "capture.sh"


def _can_capture() -> str:
    """Why this machine cannot capture, or '' when it can."""
    if os.geteuid() != 0 and not shutil.which("qemu-system-x86_64"):
        return "capture.sh installs QEMU with apt-get, which needs root, and QEMU is not installed"
    if not shutil.which("apt-get"):
        return "capture.sh fetches Debian's kernel package with apt-get, which this machine lacks"
    return ""


def check(p: Protocol, *files: Path) -> Checker:
    return check_session(Recording.of(*files), p).checker


def test_fresh_capture_checks_clean(ir, tmp_path):
    why = _can_capture()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to capture: {why}")
        pytest.skip(why)
    out = tmp_path / "capture"
    r = subprocess.run(
        ["bash", str(CAPTURE), "--out", str(out), "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, f"capture failed (rc {r.returncode}):\n{r.stderr[-3000:]}"
    qemu, guest = out / "qemu-trace.log", out / "guest-tracepoints.log"
    assert qemu.stat().st_size > 0 and guest.stat().st_size > 0
    p = Protocol(ir)
    merged, alone_q, alone_g = check(p, qemu, guest), check(p, qemu), check(p, guest)
    assert merged.commands == alone_q.commands == alone_g.commands
    for name in (
        "VIRTIO_GPU_CMD_GET_DISPLAY_INFO",
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D",
        "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
        "VIRTIO_GPU_CMD_SET_SCANOUT",
        "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D",
        "VIRTIO_GPU_CMD_RESOURCE_FLUSH",
    ):
        assert merged.commands.get(name, 0) >= 1, f"the workload sent no {name}: {merged.commands}"
    for c in (merged, alone_q, alone_g):
        assert [f for f in c.findings if f.definite] == [], c.findings
        assert c.unidentified == 0
    assert merged.findings == [] and merged.max_split == 1 and not merged.uncertain
    assert merged.diagnostics.get("unmatched", 0) == 0 and merged.diagnostics.get("unpaired", 0) == 0
    v = merged.verdicts()
    assert (
        v["device-requirements-device-initialization/VIRTIO_GPU_CMD_GET_DISPLAY_INFO/driver-SHOULD"]["verdict"]
        == "pass"
    )
    assert v["device-operation/guest/driver-must.2"]["verdict"] == "pass"


# The 3D commands a virgl guest sends; Mesa sends all but TRANSFER_TO_HOST_3D (its uploads travel
# inside SUBMIT_3D), which the recipe's own virtgpu-roundtrip sends through the kernel's ioctl.
COMMANDS_3D = (
    "VIRTIO_GPU_CMD_CTX_CREATE",
    "VIRTIO_GPU_CMD_CTX_DESTROY",
    "VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE",
    "VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE",
    "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D",
    "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D",
    "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D",
    "VIRTIO_GPU_CMD_SUBMIT_3D",
    "VIRTIO_GPU_CMD_GET_CAPSET_INFO",
    "VIRTIO_GPU_CMD_GET_CAPSET",
)
BLOB_COMMANDS = (
    "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB",
    "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB",
    "VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB",
)


def _qemu_root() -> list[str]:
    """Debian 13's QEMU, whose GL device does blobs: the root it is installed in."""
    from test_gl_targets import _qemu13

    binary = _qemu13()
    return ["--qemu-root", binary.rsplit("/usr/bin/", 1)[0], "--device-opts", "blob=true,hostmem=64M"]


@pytest.mark.needs_qemu
@pytest.mark.parametrize("qemu", ["host", "debian-13-blob"])
def test_fresh_3d_capture_checks_clean(ir, tmp_path, qemu):
    """The gl workload (kmscube, glmark2 and the kernel-ioctl round trip through Mesa's virgl driver in the
    guest) on the host's QEMU and on Debian 13's with blobs: every 3D command type (and the blob ones
    where the device offers blobs) is in the session, and nothing is found."""
    why = _can_capture()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to capture: {why}")
        pytest.skip(why)
    extra = _qemu_root() if qemu == "debian-13-blob" else []
    out = tmp_path / "capture"
    r = subprocess.run(
        ["bash", str(CAPTURE), "--workload", "gl", "--gl", *extra, "--out", str(out), "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, f"capture failed (rc {r.returncode}):\n{r.stderr[-3000:]}"
    serial = (out / "serial.log").read_text()
    assert "virgl (" in serial, "the guest's GL did not render through virgl"
    assert " 0 pixels differ" in serial
    p = Protocol(ir)
    merged = check(p, out / "qemu-trace.log", out / "guest-tracepoints.log")
    wanted = COMMANDS_3D + (BLOB_COMMANDS if qemu == "debian-13-blob" else ())
    assert [n for n in wanted if not merged.commands.get(n)] == [], merged.commands
    assert merged.findings == [] and merged.unidentified == 0
    assert not any(v["verdict"] == "fail" for v in merged.verdicts().values())
