"""Blob resources mapped into the host-visible region of a real device: Debian 13's QEMU 10.0.13
(virglrenderer 1.1) with blob=true,hostmem=64M. A HOST3D blob made from a buffer the virgl stream
created under a blob id, mapped; bytes carried in from guest RAM show through the BAR, bytes
written through the BAR come back out to guest RAM; unmapped, the range reads as nothing; mapped
again, the same bytes are there. The model judges every answer on the way (map_info among them)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_gl_targets import _qemu13

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.devices.running_vm import accelerator
from virtgpu_conform.checker.devices.target import HOST_VISIBLE, Reply
from virtgpu_conform.checker.fuzz import virgl
from virtgpu_conform.checker.fuzz.choices import Choices
from virtgpu_conform.checker.fuzz.exercised import Exercised
from virtgpu_conform.checker.fuzz.machine import vocabulary
from virtgpu_conform.checker.fuzz.oracle import Oracle
from virtgpu_conform.checker.fuzz.record import session_header
from virtgpu_conform.checker.fuzz.replay import steps_from_trace
from virtgpu_conform.checker.fuzz.rules_3d import Rules3D
from virtgpu_conform.checker.fuzz.run import DeviceSpec
from virtgpu_conform.model.protocol import Protocol

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]

N, RAM, BLOB, BUF, BLOB_ID = 4096, 0x02000000, 9, 5, 7
HOST3D, MAPPABLE = 2, 1  # VIRTIO_GPU_BLOB_MEM_HOST3D, VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE
PATTERN = bytes(range(256)) * (N // 256)
WRITTEN = b"through the BAR!" * (N // 16)


def test_a_mapped_host3d_blob_is_the_same_bytes_through_the_bar_and_through_the_renderer(ir, tmp_path):
    p = Protocol(ir)
    c = p.codec
    device = "virtio-gpu-pci,blob=true,hostmem=64M"
    with QemuTarget(ir, qemu=_qemu13(), device=device, gl=True, timeout=5, log_path=str(tmp_path / "q.log")) as t:
        region = t.pci.host_visible()
        assert region is not None
        base = region[0]
        oracle = Oracle(p, session_header(ir, t), peek=t.peek)
        seen = []

        def send(name: str, fields: dict, payload: bytes = b"", entries=None, ins: int = 24) -> str:
            raw = c.encode(name, fields, entries, payload)
            reply = t.send("controlq", [raw], [ins])
            seen.extend(oracle.step("controlq", [raw], [ins], reply))
            return c.decode_response(reply.data).name

        def submit(stream: bytes) -> str:
            return send("VIRTIO_GPU_CMD_SUBMIT_3D", {"hdr.ctx_id": 1, "size": len(stream)}, stream)

        box = {"box.w": N, "box.h": 1, "box.d": 1}
        ok, mapped = "VIRTIO_GPU_RESP_OK_NODATA", "VIRTIO_GPU_RESP_OK_MAP_INFO"
        assert send("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1, "nlen": 4, "debug_name": b"blob"}) == ok
        assert submit(virgl.pipe_buffer(N, BLOB_ID)) == ok
        blob = {"resource_id": BLOB, "blob_mem": HOST3D, "blob_flags": MAPPABLE, "blob_id": BLOB_ID, "size": N}
        assert send("VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB", {"hdr.ctx_id": 1, **blob}, entries=[]) == ok
        assert send("VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE", {"hdr.ctx_id": 1, "resource_id": BLOB}) == ok
        at = {"hdr.ctx_id": 1, "resource_id": BLOB, "offset": 0}
        assert send("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", at, ins=32) == mapped
        # an ordinary buffer with guest backing carries bytes between guest RAM and the blob
        buffer = {"resource_id": BUF, "target": virgl.BUFFER, "format": virgl.FORMAT_R8_UNORM}
        buffer |= {"bind": virgl.BIND_VERTEX_BUFFER, "width": N, "height": 1, "depth": 1, "array_size": 1}
        assert send("VIRTIO_GPU_CMD_RESOURCE_CREATE_3D", buffer) == ok
        entry = [{"addr": RAM, "length": N}]
        assert send("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", {"resource_id": BUF}, entries=entry) == ok
        assert send("VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE", {"hdr.ctx_id": 1, "resource_id": BUF}) == ok

        # guest RAM -> buffer -> blob: the BAR shows it
        t.q.memwrite(RAM, PATTERN)
        assert send("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D", {"hdr.ctx_id": 1, "resource_id": BUF, **box}) == ok
        assert submit(virgl.copy_region(BLOB, (0, 0, 0), BUF, (0, 0, 0, N, 1, 1))) == ok
        assert t.q.memread(base, N) == PATTERN
        # the BAR -> blob -> buffer -> guest RAM
        t.q.memwrite(base, WRITTEN)
        t.q.memwrite(RAM, bytes(N))
        assert submit(virgl.copy_region(BUF, (0, 0, 0), BLOB, (0, 0, 0, N, 1, 1))) == ok
        back = {"hdr.ctx_id": 1, "hdr.flags": 1, "hdr.fence_id": 1, "resource_id": BUF, **box}
        assert send("VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D", back) == ok
        assert t.q.memread(RAM, N) == WRITTEN
        # unmapped, the range is gone (reads as zeros); mapped again, the blob's bytes are back
        assert send("VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB", {"hdr.ctx_id": 1, "resource_id": BLOB}) == ok
        assert t.q.memread(base, N) == bytes(N)
        assert send("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", at, ins=32) == mapped
        assert t.q.memread(base, N) == WRITTEN
    # the model found every answer allowed, map_info's caching value among them
    assert [str(o.signature) for o in seen if o.signature.kind != "divergence"] == []


DATA = Path(__file__).resolve().parents[1] / "data" / "fuzz" / "blob"
MAP_ACCEPTED = "violation: RESOURCE_MAP_BLOB response-type [informal]"
EDGES = [
    # nr_entries 0 is allowed (backing may be attached later); virglrenderer wants backing >= size at once
    (
        "qemu-10.0.13-gl-guest-blob-without-entries-refused",
        "violation: RESOURCE_CREATE_BLOB response-type [informal]",
        "a valid request",
    ),
    # offset 64 MiB in a 64 MiB region: answered OK_MAP_INFO
    ("qemu-10.0.13-gl-map-blob-past-the-region-accepted", MAP_ACCEPTED, "inside-region"),
    # a second blob mapped at the offset of the first, still mapped: answered OK_MAP_INFO
    ("qemu-10.0.13-gl-map-blob-over-a-mapping-accepted", MAP_ACCEPTED, "no-overlap"),
    # found by a 10-minute blob campaign (qemu@trixie --gl --device-opts blob=true,hostmem=64M), cut to
    # the requests that show them: a GUEST blob of size 2^64-1 on 4 KiB of backing, refused ERR_UNSPEC
    # (the model allows OUT_OF_MEMORY); a 0x0 rectangle on a blob (QEMU wants 16x16 at least)
    (
        "qemu-10.0.13-gl-create-blob-of-size-2-64-refused-unspec",
        "violation: RESOURCE_CREATE_BLOB response-type [informal]",
        "expected VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY",
    ),
    (
        "qemu-10.0.13-gl-scanout-blob-with-a-0x0-rect-refused",
        "violation: SET_SCANOUT_BLOB response-type [informal]",
        "ERR_INVALID_PARAMETER to a valid request",
    ),
    # where the spec leaves the error to the device, QEMU's and the reference device's differ
    (
        "qemu-10.0.13-gl-map-blob-mapped-already-refused-unspec",
        "divergence: RESOURCE_MAP_BLOB preferred-answer",
        "answered VIRTIO_GPU_RESP_ERR_UNSPEC",
    ),
    (
        "qemu-10.0.13-gl-unmap-blob-of-a-2d-resource-answered-ok",
        "divergence: RESOURCE_UNMAP_BLOB preferred-answer",
        "answered VIRTIO_GPU_RESP_OK_NODATA",
    ),
    (
        "qemu-10.0.13-gl-unmap-blob-of-no-resource-invalid-resource-id",
        "divergence: RESOURCE_UNMAP_BLOB preferred-answer",
        "answered VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID",
    ),
    (
        "qemu-10.0.13-gl-create-blob-of-an-unknown-blob-mem-refused-unspec",
        "divergence: RESOURCE_CREATE_BLOB preferred-answer",
        "answered VIRTIO_GPU_RESP_ERR_UNSPEC",
    ),
    (
        "qemu-10.0.13-gl-scanout-blob-of-no-resource-refused-invalid-parameter",
        "divergence: SET_SCANOUT_BLOB preferred-answer",
        "the reference device answers VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID",
    ),
    # a virtio reset leaves a mapped blob's memory region in place: the same resource id mapped after
    # it aborts QEMU (found by a 10-minute blob campaign, whose QEMU is reset between cases)
    (
        "qemu-10.0.13-gl-blob-mapped-at-reset-then-mapped-again-aborts",
        "crash: RESOURCE_MAP_BLOB device-died",
        "attempt to add duplicate property 'blob[1]'",
    ),
]


@pytest.mark.parametrize("name,signature,why", EDGES, ids=[e[0] for e in EDGES])
def test_debian_13s_device_at_the_edges_of_blobs_and_the_region(tmp_path, name, signature, why):
    device = DeviceSpec("qemu", gl=True, suite="trixie", qemu=_qemu13(), device_opts="blob=true,hostmem=64M")
    r = vgc.replay(str(DATA / f"{name}.ndjson"), device, out=str(tmp_path))
    found = [o for o in r.observations if str(o.signature) == signature]
    assert found and why in found[0].message, [(str(o.signature), o.message) for o in r.observations]


# --- the coherency oracle in a campaign's own steps --------------------------------------------


class _Scene:
    """What the blob scene's coherency probe (Rules3D._coherency_probe) reads of a machine."""

    def __init__(self, p: Protocol, settings):
        self.vocab = vocabulary(p)
        self.model = SimpleNamespace(state=p.new_state(settings))

    _blob_step = Rules3D._blob_step
    _coherency_probe = Rules3D._coherency_probe
    _last_global_fence = Rules3D._last_global_fence


def _probe_steps(p: Protocol, settings, probe: str, seed: int) -> list:
    """The blob scene's steps for one probe: a context, a 16 KiB mappable blob mapped a page into the
    region, then the probe (out, in, gone), all built by the machine's own code."""
    scene = _Scene(p, settings)
    size, offset, ctx, blob, buf = 4 * 4096, 4096, 1, 20, 21
    plan = [
        ("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": ctx}, None, b""),
        ("VIRTIO_GPU_CMD_SUBMIT_3D", {"hdr.ctx_id": ctx}, None, virgl.pipe_buffer(size, blob)),
        (
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB",
            {"hdr.ctx_id": ctx, "resource_id": blob, "blob_mem": HOST3D, "blob_flags": MAPPABLE, "blob_id": blob}
            | {"size": size},
            [],
            b"",
        ),
        ("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", {"resource_id": blob, "offset": offset}, None, b""),
    ]
    data = Choices(seed.to_bytes(4, "big"))
    return [scene._blob_step(*x) for x in plan] + scene._coherency_probe(data, probe, ctx, blob, size, offset, buf)


class _Garbling:
    """A device whose region or guest RAM shows one byte wrong: what the oracle must catch."""

    def __init__(self, t: QemuTarget, where: str):
        self.t, self.where = t, where

    def send(self, queue, outs, ins) -> Reply:
        r = self.t.send(queue, outs, ins)
        if self.where == "region" and queue == HOST_VISIBLE and r.data:
            r.data = bytes([r.data[0] ^ 1]) + r.data[1:]
        return r

    def peek(self, addr: int, n: int):
        got = self.t.peek(addr, n)
        return bytes([got[0] ^ 1]) + got[1:] if self.where == "ram" and got else got


# probe -> judgements (reads through the region, readbacks into guest RAM), what a wrong byte there breaks
PROBES = {"out": (2, "ram"), "in": (1, "region"), "gone": (1, "region")}


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_the_coherency_oracle_judges_debian_13s_device_and_catches_a_wrong_byte(ir, tmp_path, probe):
    """The blob scene's probes on the real device: every read through the region and every readback
    into guest RAM of a mapped blob's bytes is judged, and holds; the same steps through a device that
    shows one byte wrong (in the region, or in guest RAM) break. The case the oracle wrote replays the
    same on a fresh QEMU (its host-visible records come back as steps)."""
    p = Protocol(ir)
    judged, garbled = PROBES[probe]
    device = "virtio-gpu-pci,blob=true,hostmem=64M"
    for where in ("", garbled):
        with QemuTarget(ir, qemu=_qemu13(), device=device, gl=True, timeout=5, log_path=str(tmp_path / "q.log")) as t:
            dev = _Garbling(t, where)
            seen = Exercised(p)
            oracle = Oracle(p, session_header(ir, t), peek=dev.peek, exercised=seen)
            obs = []
            steps = _probe_steps(p, t.settings, probe, seed=7)
            fences = [
                r.fields["hdr.fence_id"]
                for r in (p.codec.decode_request(b"".join(x.outs), x.queue) for x in steps if x.queue == "controlq")
                if r.fields.get("hdr.flags")
            ]
            assert fences == sorted(set(fences)), fences  # in the order sent, each once
            for step in steps:
                obs += oracle.step(step.queue, step.outs, step.ins, dev.send(step.queue, step.outs, step.ins))
            wrong = [o for o in obs if o.signature.check == "blob-coherency"]
            counts = seen.oracles["blob-coherency"]
            if not where:
                assert (counts.held, counts.broken, wrong) == (judged, 0, []), obs
                case = tmp_path / "case.ndjson"
                case.write_text(oracle.text())
            else:
                assert counts.broken >= 1 and wrong, obs
                assert "byte 0: " in wrong[0].message
    again = vgc.replay(
        str(case),
        DeviceSpec("qemu", gl=True, suite="trixie", qemu=_qemu13(), device_opts="blob=true,hostmem=64M"),
        out=str(tmp_path / "r"),
    )
    steps = steps_from_trace(str(case), p.codec)
    assert sum(s.queue == HOST_VISIBLE for s in steps) == {"out": 2, "in": 1, "gone": 3}[probe]
    assert not [o for o in again.observations if o.signature.check == "blob-coherency"]


def test_a_blob_mapped_off_a_page_aborts_debian_13s_qemu_under_kvm(tmp_path):
    """MAP_BLOB at offset 100 of the region (found by a 10-minute blob campaign, 4 steps once shrunk):
    under KVM, QEMU hands KVM a memory slot that does not start on a page and aborts; under TCG the
    same request is mapped and answered."""
    device = DeviceSpec("qemu", gl=True, suite="trixie", qemu=_qemu13(), device_opts="blob=true,hostmem=64M")
    r = vgc.replay(str(DATA / "qemu-10.0.13-gl-map-blob-off-a-page-aborts-under-kvm.ndjson"), device, out=str(tmp_path))
    said = [(str(o.signature), o.message) for o in r.observations]
    if accelerator() == "kvm":
        assert said and said[0][0] == "crash: RESOURCE_MAP_BLOB device-died", said
        assert "KVM_SET_USER_MEMORY_REGION failed" in said[0][1]
    else:
        assert said == []
        last = json.loads(Path(r.trace).read_text().splitlines()[-1])
        assert last["kind"] == "response" and last["bytes"].startswith("0611")  # OK_MAP_INFO
