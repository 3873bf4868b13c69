"""rust-vmm's vhost-device-gpu (rutabaga's side of virtio-gpu) as a target: built from crates.io once
into the cache, driven through QEMU's vhost-user-gpu-pci; a scripted run checked by the model, short
campaigns (2D and GL), a differential run against QEMU's two implementations, a reproducer that runs
with QEMU alone, and every finding of its 10-minute campaigns replayed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_gl_targets import cached_or_made
from test_qemu_target import _need_qemu

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices import vhost_device_gpu_build as build
from virtgpu_conform.checker.devices.running_vm import kvm_problem
from virtgpu_conform.checker.devices.vhost_device_gpu import VhostDeviceGpuTarget
from virtgpu_conform.checker.devices.vhost_user import BACKEND
from virtgpu_conform.checker.fuzz.run import DeviceSpec
from virtgpu_conform.model.protocol import Protocol

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]

DATA = Path(__file__).resolve().parents[1] / "data" / "fuzz" / "vhost-device-gpu"
OK_NODATA, ERR_UNSPEC = 0x1100, 0x1200


def _vdg() -> str:
    """The cached build (made here where the suite may change the host, as CI does)."""
    _need_qemu()
    if kvm_problem():  # in CI too: a machine without usable KVM cannot run vhost-user
        pytest.skip(kvm_problem())
    return cached_or_made(
        build.cached(),
        build.build,
        "builds vhost-device-gpu",
        f"vhost-device-gpu is not built here: `{build.SETUP}` (as root) builds it once",
    )


def _type(data: bytes) -> int:
    return int.from_bytes(data[:4], "little")


def test_it_runs_the_2d_half_and_declines_virgl_unless_asked(ir, tmp_path):
    _vdg()
    c = Protocol(ir).codec
    with VhostDeviceGpuTarget(ir, log_path=str(tmp_path / "qemu-trace.log")) as t:
        assert not {"VIRTIO_GPU_F_VIRGL", "VIRTIO_GPU_F_CONTEXT_INIT"} & set(t.settings.features)
        create = c.encode(
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 64, "height": 64}
        )
        assert _type(t.send("controlq", [create], [24]).data) == OK_NODATA
        # X8B8G8R8_UNORM (68) is one of the spec's 2D formats; virglrenderer knows no such format
        other = c.encode(
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 2, "format": 68, "width": 64, "height": 64}
        )
        assert _type(t.send("controlq", [other], [24]).data) == ERR_UNSPEC
    log = (tmp_path / "vhost-device-gpu.log").read_text()
    assert "GpuBackend using mode virglrenderer" in log and "process_gpu_command: ResourceCreate2d" in log


def test_a_scanout_shows_the_picture_or_is_refused_for_want_of_a_dmabuf_in_its_own_words(ir, tmp_path):
    # Its virgl mode shows a scanout only as a dmabuf (VHOST_USER_GPU_DMABUF_SCANOUT); Mesa's llvmpipe,
    # with no render node, exports none, so the pixel oracle has no picture to judge on such a machine.
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from test_pixel_oracle_devices import _scene

    from virtgpu_conform.checker.fuzz.replay import replay

    _vdg()
    p = Protocol(ir)
    shots: list = []
    with VhostDeviceGpuTarget(ir, pixels=True, log_path=str(tmp_path / "qemu-trace.log")) as t:
        screen = t.screendump
        t.screendump = lambda: shots.append(screen()) or shots[-1]
        obs, _ = replay(p, t, _scene(p.codec, 1, {}), str(tmp_path / "scene.ndjson"))
    said = (tmp_path / "vhost-device-gpu.log").read_text()
    refused = [o for o in obs if o.signature.command == "VIRTIO_GPU_CMD_SET_SCANOUT"]
    if refused:
        assert "ERR_UNSPEC" in refused[0].message and "resource 1 has no handle" in said and not shots
    else:  # a machine whose renderer exports dmabufs: the picture was judged, and right
        assert len(shots) == 1 and not [o for o in obs if o.signature.check == "pixels"], [o.message for o in obs]


def test_a_blob_command_panics_its_worker_and_that_is_a_crash_naming_the_panic(ir, tmp_path):
    _vdg()
    c = Protocol(ir).codec
    with VhostDeviceGpuTarget(ir, log_path=str(tmp_path / "qemu-trace.log"), timeout=2.0) as t:
        blob = c.encode("VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB", {"resource_id": 1, "blob_mem": 1, "size": 4096})
        r = t.send("controlq", [blob], [24])
    assert r.status == "died"
    assert "vhost-device-gpu-0.2.0/src/device.rs" in r.detail and "ResourceCreateBlob unimplemented" in r.detail


def test_a_short_campaign_and_a_gl_one_run_with_every_finding_saved(ir, tmp_path):
    _vdg()
    for gl in (False, True):
        out = tmp_path / f"out-{gl}"
        doc = vgc.fuzz(DeviceSpec("vhost-device-gpu", gl=gl), examples=6, seed=3, out=str(out), survey=True).doc
        assert doc["target"] == "vhost-device-gpu" + ("-gl" if gl else "") and doc["error"] is None
        assert doc["commands"] > 0 and doc["stopped"] == "examples"
        for f in doc["findings"]:
            assert os.path.exists(f["reproducer"]), f
        if gl:
            assert doc["exercised"]["families"]["3d"]["exchanges"] > 0


def test_a_differential_run_against_qemus_two_implementations_tables_all_three(ir, tmp_path):
    _vdg()
    if not os.access(BACKEND, os.X_OK):
        pytest.fail(f"{BACKEND} is not installed (apt-get install qemu-system-gui)")
    devices = [DeviceSpec("qemu"), DeviceSpec("vhost-user-gpu"), DeviceSpec("vhost-device-gpu")]
    doc = vgc.fuzz(devices, examples=4, steps=10, seed=2, out=str(tmp_path / "out"), survey=True).doc
    table = doc["differential"]
    assert table, "the three answer differently somewhere on every run (RESOURCE_CREATE_2D of format 68 at least)"
    assert all(set(row["answers"]) == {"qemu", "vhost-user-gpu", "vhost-device-gpu"} for row in table)


def test_a_case_replays_and_its_reproducer_runs_with_qemu_and_the_backend_alone(tmp_path):
    binary = _vdg()
    case = DATA / "create-blob-panics-the-worker.ndjson"
    r = vgc.replay(str(case), DeviceSpec("vhost-device-gpu"), out=str(tmp_path))
    assert "crash: RESOURCE_CREATE_BLOB device-died" in {str(o.signature) for o in r.observations}
    sh = tmp_path / "repro.sh"
    assert binary in sh.read_text()
    done = subprocess.run(["sh", str(sh)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    said = (tmp_path / "repro-backend.log").read_text()
    assert "GpuCommand::ResourceCreateBlob unimplemented" in said


_INDEX = json.loads((DATA / "campaigns" / "index.json").read_text())["cases"]


@pytest.mark.parametrize(
    "case", [c for c in _INDEX if c["reproduced"]], ids=lambda c: c["case"].removesuffix(".ndjson")
)
def test_every_finding_of_its_campaigns_shows_again(tmp_path, case):
    _vdg()
    # 5 s, not the default 2: the suite's other worker shares the CPU the device is pinned to, and a
    # panic or an answer can come after 2 s there (seen: a different case each loaded run)
    device = DeviceSpec("vhost-device-gpu", gl=case["gl"], timeout=5.0)
    r = vgc.replay(str(DATA / "campaigns" / case["case"]), device, out=str(tmp_path))
    seen = {(o.signature.kind, o.signature.command, o.signature.check) for o in r.observations}
    # a case the device itself answers one way or another (index.json's `why`) shows one of them
    shown = [(f["kind"], f["command"], f["check"]) for f in (case["finding"], *case.get("or", []))]
    assert set(shown) & seen, (sorted(seen), case.get("why"))
