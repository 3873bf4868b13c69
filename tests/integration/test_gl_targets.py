"""The GL (virgl) devices as targets: QEMU 7.2's and 10.0's virtio-gpu-gl-pci and vhost-user-gpu --virgl,
rendering with Mesa's software renderer. A virgl stream from our encoder clears a texture and the
fenced readback shows the colour in guest RAM; fenced answers come after later unfenced ones; a
short campaign and a differential run reach the 3D half."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from test_qemu_target import _need_qemu

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices import debian_qemu, debian_root
from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.devices.target import TOGETHER, TargetError, together_step
from virtgpu_conform.checker.devices.vhost_user import BACKEND, KvmUnusable, VhostUserGpuTarget
from virtgpu_conform.checker.fuzz import virgl
from virtgpu_conform.checker.fuzz.oracle import Oracle
from virtgpu_conform.checker.fuzz.record import session_header
from virtgpu_conform.checker.fuzz.run import DeviceSpec
from virtgpu_conform.model.protocol import Protocol

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]

SUITE = "bookworm-backports"
OK_NODATA = (0x1100).to_bytes(4, "little")
RAM = 0x02000000  # guest RAM for the readbacks, away from the rings and the pixel pattern


def cached_or_made(found: str, make: Callable[[], str], doing: str, missing: str) -> str:
    """A part in the tool's cache: `found` when there, made where the suite may change the host (CI
    must manage: `doing` names what it does), else a skip saying `missing`."""
    if found:
        return found
    if os.environ.get("VIRTGPU_MUTATE_HOST") == "1":
        try:
            return make()
        except TargetError as exc:
            if os.environ.get("CI"):
                pytest.fail(f"CI {doing}: {exc}")
            pytest.skip(str(exc))
    pytest.skip(missing)


def _qemu10() -> str:
    """QEMU 10.0 from bookworm-backports, unpacked in the cache (fetched where the suite may mutate the host)."""
    return cached_or_made(
        debian_qemu.cached(SUITE),
        lambda: debian_qemu.unpack(SUITE),
        "fetches QEMU 10.0",
        f"QEMU 10.0 is not in the cache: `virtgpu-conform fuzz --qemu-suite {SUITE}` fetches it",
    )


def _qemu13() -> str:
    """Debian 13's QEMU 10.0.13 (virglrenderer 1.1: CONTEXT_INIT) in a root of its own in the cache."""
    return cached_or_made(
        debian_root.cached("trixie"),
        lambda: debian_root.make("trixie"),
        "makes the Debian 13 root",
        "no Debian 13 root in the cache: `virtgpu-conform fuzz --qemu-suite trixie` makes it (as root)",
    )


def _gl(ir, kind: str, tmp_path):
    _need_qemu()
    log = str(tmp_path / "qemu-trace.log")
    if kind == "vhost-user-gpu":
        if not os.access(BACKEND, os.X_OK):
            pytest.skip(f"{BACKEND} is not installed (apt-get install qemu-system-gui)")
        try:
            return VhostUserGpuTarget(ir, gl=True, timeout=5, log_path=log)
        except KvmUnusable as exc:
            pytest.skip(str(exc))
    if kind == "vhost-device-gpu":
        from test_vhost_device_gpu import _vdg

        from virtgpu_conform.checker.devices.vhost_device_gpu import VhostDeviceGpuTarget

        _vdg()
        return VhostDeviceGpuTarget(ir, gl=True, timeout=5, log_path=log)
    qemu = {"qemu-10.0": _qemu10, "qemu-10.0.13": _qemu13}.get(kind, lambda: "qemu-system-x86_64")()
    return QemuTarget(ir, gl=True, timeout=5, log_path=log, qemu=qemu)


def _scene(c, fmt: int, rgba, w: int, h: int) -> list[bytes]:
    return [
        c.encode("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1, "nlen": 4, "debug_name": b"test"}),
        c.encode(
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D",
            {
                "resource_id": 5,
                "target": virgl.TEXTURE_2D,
                "format": fmt,
                "bind": virgl.BIND_RENDER_TARGET | virgl.BIND_SAMPLER_VIEW,
                "width": w,
                "height": h,
                "depth": 1,
                "array_size": 1,
            },
        ),
        c.encode("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", {"resource_id": 5}, [{"addr": RAM, "length": w * h * 4}]),
        c.encode("VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE", {"hdr.ctx_id": 1, "resource_id": 5}),
        c.encode(
            "VIRTIO_GPU_CMD_SUBMIT_3D",
            {"hdr.ctx_id": 1, "hdr.flags": 1, "hdr.fence_id": 1},
            None,
            virgl.clear_scene(5, fmt, rgba),
        ),
        c.encode(
            "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D",
            {"hdr.ctx_id": 1, "hdr.flags": 1, "hdr.fence_id": 2, "resource_id": 5, "box.w": w, "box.h": h, "box.d": 1}
            | {"stride": w * 4},
        ),
    ]


@pytest.mark.parametrize("kind", ["qemu", "qemu-10.0", "qemu-10.0.13", "vhost-user-gpu", "vhost-device-gpu"])
def test_a_virgl_stream_clears_a_texture_and_the_fenced_readback_shows_it(ir, tmp_path, kind):
    p = Protocol(ir)
    with _gl(ir, kind, tmp_path) as t:
        assert "VIRTIO_GPU_F_VIRGL" in t.settings.features
        # GET_CAPSET_INFO was asked of each capset at initialisation, as a driver does
        assert t.settings.known and [c.id for c in t.settings.capsets] == [1, 2]
        oracle = Oracle(p, session_header(ir, t), peek=t.peek)
        for fmt, rgba in (
            (virgl.FORMAT_B8G8R8A8_UNORM, (1.0, 0.5, 0.25, 1.0)),
            (virgl.FORMAT_R8G8B8A8_UNORM, (0, 1, 0, 1)),
        ):
            t.q.memwrite(RAM, b"\x11" * 64 * 32 * 4)
            seen = []
            for raw in _scene(p.codec, fmt, rgba, 64, 32):
                reply = t.send("controlq", [raw], [24])
                assert reply.status == "answered" and reply.data[:4] == OK_NODATA, (raw[:4].hex(), reply)
                seen += oracle.step("controlq", [raw], [24], reply)
            got = t.peek(RAM, 64 * 32 * 4)
            assert (
                got is not None
                and got[:4] == virgl.pixel(fmt, rgba)
                and len(set(got[i : i + 4] for i in range(0, len(got), 4))) == 1
            )
            # the oracle judged the readback (it found it right) and nothing else of the scene
            assert oracle.renders is not None and not [o for o in seen if o.signature.kind != "divergence"]
            destroy = p.codec.encode("VIRTIO_GPU_CMD_CTX_DESTROY", {"hdr.ctx_id": 1})
            unref = p.codec.encode("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": 5})
            for raw in (destroy, unref):
                oracle.step("controlq", [raw], [24], t.send("controlq", [raw], [24]))


def test_a_fenced_answer_comes_after_a_later_unfenced_one_and_nothing_is_called_lost(ir, tmp_path):
    p = Protocol(ir)
    c = p.codec
    with _gl(ir, "qemu", tmp_path) as t:
        oracle = Oracle(p, session_header(ir, t), peek=t.peek)
        w = h = 1024  # a clear that takes llvmpipe a while: the fence is signalled at a later poll
        for raw in _scene(c, virgl.FORMAT_B8G8R8A8_UNORM, (0, 0, 1, 1), w, h)[:4]:
            oracle.step("controlq", [raw], [24], t.send("controlq", [raw], [24]))
        submit = _scene(c, virgl.FORMAT_B8G8R8A8_UNORM, (0, 0, 1, 1), w, h)[4]
        query = c.encode("VIRTIO_GPU_CMD_GET_CAPSET_INFO", {"capset_index": 0})
        buf = together_step("controlq", [([submit], [24]), ([query], [40])])
        reply = t.send(TOGETHER, [buf], [])
        assert reply.status == "answered" and reply.parts is not None
        assert [x.order for x in reply.parts] == [1, 0]  # the unfenced query overtook the fenced clear
        found = oracle.step(TOGETHER, [buf], [], reply)
        assert [o for o in found if o.signature.kind in ("liveness", "violation")] == []


def test_a_short_campaign_on_each_gl_device_reaches_the_3d_half(ir, tmp_path):
    _need_qemu()
    result = vgc.fuzz(
        DeviceSpec("qemu", gl=True, timeout=2.0), examples=12, seed=1, out=str(tmp_path / "out"), survey=True
    )
    doc = result.doc
    assert doc["target"] == "qemu-gl" and doc["commands"] > 0 and doc["stopped"] != "refused"
    three = doc["exercised"]["families"]["3d"]
    assert three["exchanges"] > 0 and three["judged"] > 0
    judged = {r["command"] for r in doc["exercised"]["checks"]}
    assert {"VIRTIO_GPU_CMD_SUBMIT_3D", "VIRTIO_GPU_CMD_CTX_CREATE"} & judged


def test_a_differential_run_across_the_gl_devices_tables_where_they_differ(ir, tmp_path):
    _need_qemu()
    if not os.access(BACKEND, os.X_OK):
        pytest.skip(f"{BACKEND} is not installed (apt-get install qemu-system-gui)")
    from virtgpu_conform.checker.devices.running_vm import kvm_problem

    if kvm_problem():
        pytest.skip(kvm_problem())
    result = vgc.fuzz(
        [DeviceSpec("qemu", gl=True, timeout=2.0), DeviceSpec("vhost-user-gpu", gl=True, timeout=2.0)],
        examples=4,
        steps=10,
        seed=2,
        out=str(tmp_path / "out"),
        survey=True,
    )
    table = result.doc["differential"]
    assert table is not None
    # vhost-user-gpu --virgl offers no EDID, QEMU's device does: every run shows it
    assert all(set(row["answers"]) == {"qemu-gl", "vhost-user-gpu-gl"} for row in table)


def test_a_gl_device_without_a_renderer_is_a_target_error_naming_the_package(ir, tmp_path, monkeypatch):
    _need_qemu()
    monkeypatch.setenv("LIBGL_DRIVERS_PATH", str(tmp_path / "no-dri"))  # Mesa finds no driver, not even llvmpipe
    with pytest.raises(TargetError, match="libgl1-mesa-dri"):
        QemuTarget(ir, gl=True, timeout=2)


def test_with_context_init_fences_on_a_ring_are_answered_in_their_order(ir, tmp_path):
    p = Protocol(ir)
    c = p.codec
    with _gl(ir, "qemu-10.0.13", tmp_path) as t:
        assert "VIRTIO_GPU_F_CONTEXT_INIT" in t.settings.features
        oracle = Oracle(p, session_header(ir, t), peek=t.peek)
        w = h = 512
        scene = _scene(c, virgl.FORMAT_B8G8R8A8_UNORM, (1, 0, 0, 1), w, h)
        scene[0] = c.encode("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1, "context_init": 2})  # VIRGL2
        for raw in scene[:4]:
            assert oracle.step("controlq", [raw], [24], t.send("controlq", [raw], [24])) == []
        ring = {"hdr.ctx_id": 1, "hdr.flags": 3, "hdr.ring_idx": 0}  # FENCE | INFO_RING_IDX
        chains = [
            c.encode(
                "VIRTIO_GPU_CMD_SUBMIT_3D", {**ring, "hdr.fence_id": 1}, None, virgl.clear_scene(5, 1, (1, 0, 0, 1))
            ),
            c.encode("VIRTIO_GPU_CMD_GET_CAPSET_INFO", {"capset_index": 1}),
            c.encode("VIRTIO_GPU_CMD_SUBMIT_3D", {**ring, "hdr.fence_id": 2}),
            c.encode(
                "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D",
                {**ring, "hdr.fence_id": 3, "resource_id": 5, "box.w": w, "box.h": h, "box.d": 1, "stride": w * 4},
            ),
        ]
        buf = together_step("controlq", [([x], [40]) for x in chains])
        reply = t.send(TOGETHER, [buf], [])
        assert reply.status == "answered" and reply.parts is not None
        order = [x.order for x in reply.parts]
        assert order[1] == 0  # the unfenced query first
        assert order[0] < order[2] < order[3]  # the ring's fences in their order
        found = oracle.step(TOGETHER, [buf], [], reply)
        # the readback was judged right; only the ring echo (informal) may be said
        assert [o.signature.check for o in found if o.signature.kind != "divergence"] == []
        assert t.peek(RAM, 4) == virgl.pixel(virgl.FORMAT_B8G8R8A8_UNORM, (1, 0, 0, 1))


def test_debian_13s_device_with_blobs_announces_a_host_visible_region_which_the_driver_maps(ir, tmp_path):
    # virtio-gpu-gl-pci,blob=true,hostmem=64M: a virtio_pci_cap64 of cfg_type 8 (shared memory) with
    # shmid 1 (VIRTIO_GPU_SHM_ID_HOST_VISIBLE) names a 64-bit BAR; without hostmem there is none
    qemu = _qemu13()
    log = str(tmp_path / "qemu-trace.log")
    with QemuTarget(ir, qemu=qemu, gl=True, timeout=5, log_path=log) as plain:
        assert plain.pci.host_visible() is None and plain.settings.host_visible is None
    blob = "virtio-gpu-pci,blob=true,hostmem=64M"
    with QemuTarget(ir, qemu=qemu, device=blob, gl=True, timeout=5, log_path=log) as t:
        assert t.device == "virtio-gpu-gl-pci,blob=true,hostmem=64M"
        assert "VIRTIO_GPU_F_RESOURCE_BLOB" in t.settings.features
        region = t.pci.host_visible()
        assert region is not None and region[1] == 64 << 20 == t.settings.host_visible
        assert region[0] % region[1] == 0  # the BAR placed at a multiple of its size, as PCI asks
        assert len(t.q.memread(region[0], 4)) == 4  # qtest reads inside the region the BAR maps
