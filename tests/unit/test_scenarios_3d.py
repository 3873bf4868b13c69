"""Scenarios for 3D: contexts and their resources, 3D transfers, submission, rings and fence timelines."""

from __future__ import annotations

import dataclasses

import pytest

from virtgpu_conform.model.device import ReferenceDevice, default_settings
from virtgpu_conform.model.rules_common import RING_COMPLETE
from virtgpu_conform.model.state import KIND_3D

FENCE, RING = 1, 2  # VIRTIO_GPU_FLAG_FENCE, VIRTIO_GPU_FLAG_INFO_RING_IDX
OK = "VIRTIO_GPU_RESP_OK_NODATA"
TEX = {"target": 2, "format": 1, "bind": 2, "width": 64, "height": 64, "depth": 1, "array_size": 1}
PAGE = [{"addr": 0x400000, "length": 64 * 64 * 4}]


def send(dev, cmd, fields=None, entries=None, payload=b""):
    raw = dev.codec.encode(f"VIRTIO_GPU_CMD_{cmd}", fields or {}, entries=entries, payload=payload)
    return dev.codec.decode_response(dev.handle(raw))


def is_err(resp):
    return "_RESP_ERR_" in resp.name


def outcome(dev, cmd, fields):
    return dev.protocol.expect(dev.state, dev.codec.decode_request(dev.codec.encode(f"VIRTIO_GPU_CMD_{cmd}", fields)))


def device(ir, drop=()):
    base = default_settings(ir)
    return ReferenceDevice(ir, dataclasses.replace(base, features=base.features - set(drop)))


def texture(dev, rid=1, backed=True, ctx=None):
    assert send(dev, "RESOURCE_CREATE_3D", {"resource_id": rid, **TEX}).name == OK
    if backed:
        assert send(dev, "RESOURCE_ATTACH_BACKING", {"resource_id": rid}, PAGE).name == OK
    if ctx is not None:
        assert send(dev, "CTX_ATTACH_RESOURCE", {"hdr.ctx_id": ctx, "resource_id": rid}).name == OK


@pytest.fixture
def dev(ir):
    d = ReferenceDevice(ir)
    assert send(d, "CTX_CREATE", {"hdr.ctx_id": 1, "nlen": 4, "debug_name": b"test"}).name == OK
    return d


def test_context_lifecycle(dev):
    ctx = dev.state.contexts[1]
    assert ctx.debug_name == b"test" and ctx.capset == 0  # no capset named: the device picks the type
    assert send(dev, "SUBMIT_3D", {"hdr.ctx_id": 1}, payload=bytes(16)).name == OK
    assert send(dev, "CTX_DESTROY", {"hdr.ctx_id": 1}).name == OK
    assert dev.state.contexts == {}
    assert is_err(send(dev, "CTX_DESTROY", {"hdr.ctx_id": 1}))
    assert is_err(send(dev, "SUBMIT_3D", {"hdr.ctx_id": 1}, payload=bytes(16)))
    assert send(dev, "CTX_CREATE", {"hdr.ctx_id": 1}).name == OK and 1 in dev.state.contexts


def test_context_init_names_a_reported_capset(dev):
    assert send(dev, "CTX_CREATE", {"hdr.ctx_id": 2, "context_init": 2}).name == OK  # VIRTIO_GPU_CAPSET_VIRGL2
    assert dev.state.contexts[2].capset == 2
    assert is_err(send(dev, "CTX_CREATE", {"hdr.ctx_id": 3, "context_init": 5}))  # CROSS_DOMAIN: not offered
    assert 3 not in dev.state.contexts


def test_context_init_without_the_feature(ir):
    dev = device(ir, drop={"VIRTIO_GPU_F_CONTEXT_INIT"})
    assert send(dev, "CTX_CREATE", {"hdr.ctx_id": 1}).name == OK
    o = outcome(dev, "CTX_CREATE", {"hdr.ctx_id": 2, "context_init": 2})
    assert [c.id for c in o.failed] == ["context-init-needs-feature"]
    assert is_err(send(dev, "CTX_CREATE", {"hdr.ctx_id": 2, "context_init": 2}))  # the reference device's choice
    assert list(dev.state.contexts) == [1]


def test_create_3d_and_attach_detach_in_a_context(dev):
    texture(dev, ctx=1)
    r = dev.state.resources[1]
    assert (r.kind, r.width, r.height, r.depth, r.contexts) == (KIND_3D, 64, 64, 1, {1})
    assert is_err(send(dev, "RESOURCE_CREATE_3D", {"resource_id": 1, **TEX}))  # id in use
    assert is_err(send(dev, "RESOURCE_CREATE_3D", {"resource_id": 0, **TEX}))
    assert send(dev, "CTX_DETACH_RESOURCE", {"hdr.ctx_id": 1, "resource_id": 1}).name == OK
    assert dev.state.resources[1].contexts == set()
    assert is_err(send(dev, "CTX_ATTACH_RESOURCE", {"hdr.ctx_id": 8, "resource_id": 1}))  # no context 8
    assert is_err(send(dev, "CTX_ATTACH_RESOURCE", {"hdr.ctx_id": 1, "resource_id": 9}))  # no resource 9
    assert is_err(send(dev, "CTX_DETACH_RESOURCE", {"hdr.ctx_id": 8, "resource_id": 1}))
    assert dev.state.resources[1].contexts == set()


def test_destroying_a_context_leaves_its_resources_but_unlinks_them(dev):
    texture(dev, ctx=1)
    assert send(dev, "CTX_DESTROY", {"hdr.ctx_id": 1}).name == OK
    assert dev.state.resources[1].contexts == set()


@pytest.mark.parametrize("cmd", ["TRANSFER_TO_HOST_3D", "TRANSFER_FROM_HOST_3D"])
def test_a_box_inside_the_resource_transfers(dev, cmd):
    texture(dev, ctx=1)
    box = {"box.x": 32, "box.y": 60, "box.w": 32, "box.h": 4, "box.d": 1}  # touching the far corner
    assert send(dev, cmd, {"hdr.ctx_id": 1, "resource_id": 1, **box}).name == OK
    assert dev.state.resources[1].transferred == cmd.startswith("TRANSFER_TO")


@pytest.mark.parametrize("cmd", ["TRANSFER_TO_HOST_3D", "TRANSFER_FROM_HOST_3D"])
@pytest.mark.parametrize(
    "box",
    [
        {"box.x": 0xFFFFFFF0, "box.w": 0x20, "box.h": 1, "box.d": 1},  # x + w wraps u32 to 0x10
        {"box.y": 0xFFFFFFFF, "box.h": 2, "box.w": 1, "box.d": 1},  # y + h wraps to 1
        {"box.z": 0xFFFFFFFF, "box.d": 1, "box.w": 1, "box.h": 1},  # z + d wraps to 0
        {"box.z": 1, "box.d": 1, "box.w": 1, "box.h": 1},  # past the single layer
        {"box.w": 65, "box.h": 1, "box.d": 1},
    ],
)
def test_a_box_past_the_resource_is_refused_even_when_u32_sums_wrap(dev, cmd, box):
    texture(dev, ctx=1)
    assert is_err(send(dev, cmd, {"hdr.ctx_id": 1, "resource_id": 1, **box}))
    assert not dev.state.resources[1].transferred
    assert is_err(send(dev, cmd, {"hdr.ctx_id": 1, "resource_id": 2, "box.w": 1, "box.h": 1, "box.d": 1}))


def test_transfer_to_host_needs_backing(dev):
    texture(dev, backed=False, ctx=1)
    assert is_err(
        send(dev, "TRANSFER_TO_HOST_3D", {"hdr.ctx_id": 1, "resource_id": 1, "box.w": 1, "box.h": 1, "box.d": 1})
    )
    assert not dev.state.resources[1].transferred


def test_transfer_from_host_needs_backing_too(dev):
    texture(dev, backed=False, ctx=1)
    assert is_err(
        send(dev, "TRANSFER_FROM_HOST_3D", {"hdr.ctx_id": 1, "resource_id": 1, "box.w": 1, "box.h": 1, "box.d": 1})
    )


def test_transfer_3d_into_a_default_blob(dev):
    assert (
        send(
            dev,
            "RESOURCE_CREATE_BLOB",
            {"hdr.ctx_id": 1, "resource_id": 5, "blob_mem": 3, "blob_id": 1, "size": 16384},
            PAGE,
        ).name
        == OK
    )  # VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST
    box = {"box.w": 16384, "box.h": 1, "box.d": 1}  # a buffer view of the whole blob
    assert send(dev, "TRANSFER_TO_HOST_3D", {"hdr.ctx_id": 1, "resource_id": 5, **box}).name == OK


def test_submit_carries_its_command_stream(dev):
    stream = bytes(range(64))
    raw = dev.codec.encode("VIRTIO_GPU_CMD_SUBMIT_3D", {"hdr.ctx_id": 1}, payload=stream)
    req = dev.codec.decode_request(raw)
    assert req.fields["size"] == 64 and req.payload == stream and not req.problems
    assert dev.codec.decode_response(dev.handle(raw)).name == OK
    assert is_err(send(dev, "SUBMIT_3D", {"hdr.ctx_id": 2}, payload=stream))  # no context 2
    short = dev.codec.encode("VIRTIO_GPU_CMD_SUBMIT_3D", {"hdr.ctx_id": 1, "size": 64}, payload=stream[:16])
    assert is_err(dev.codec.decode_response(dev.handle(short)))  # size promises more bytes than follow


@pytest.mark.parametrize(
    "cmd,fields",
    [
        ("CTX_CREATE", {"hdr.ctx_id": 1}),
        ("CTX_DESTROY", {"hdr.ctx_id": 1}),
        ("RESOURCE_CREATE_3D", {"resource_id": 1, **TEX}),
        ("SUBMIT_3D", {"hdr.ctx_id": 1}),
        ("TRANSFER_TO_HOST_3D", {"resource_id": 1}),
        ("CTX_ATTACH_RESOURCE", {"hdr.ctx_id": 1, "resource_id": 1}),
    ],
)
def test_3d_commands_fail_without_virgl(ir, cmd, fields):
    dev = device(ir, drop={"VIRTIO_GPU_F_VIRGL", "VIRTIO_GPU_F_CONTEXT_INIT"})
    assert "feature-gate" in [c.id for c in outcome(dev, cmd, fields).failed]
    assert is_err(send(dev, cmd, fields))
    assert dev.state.contexts == {} and dev.state.resources == {}


@pytest.mark.parametrize("ring", [0, 1, 31, 63])
def test_ring_indices_0_to_63_are_accepted_and_echoed(dev, ring):
    resp = send(dev, "SUBMIT_3D", {"hdr.flags": FENCE | RING, "hdr.fence_id": 9, "hdr.ctx_id": 1, "hdr.ring_idx": ring})
    assert resp.name == OK and resp.fields["hdr.flags"] & FENCE and resp.fields["hdr.fence_id"] == 9
    assert (resp.fields["hdr.ctx_id"], resp.fields["hdr.ring_idx"]) == (1, ring)
    assert dev.state.timelines[("ring", 1, ring)].last_completed == 9


@pytest.mark.parametrize("ring", [64, 255])
def test_ring_indices_past_63_are_refused(dev, ring):
    resp = send(dev, "SUBMIT_3D", {"hdr.flags": FENCE | RING, "hdr.fence_id": 1, "hdr.ctx_id": 1, "hdr.ring_idx": ring})
    assert is_err(resp) and resp.fields["hdr.fence_id"] == 1  # refused, but the fence is still answered
    assert dev.state.timelines[("ring", 1, ring)].pending == []


def test_ring_flag_without_context_init_is_outside_the_spec(ir):
    dev = device(ir, drop={"VIRTIO_GPU_F_CONTEXT_INIT"})
    send(dev, "CTX_CREATE", {"hdr.ctx_id": 1})
    o = outcome(dev, "SUBMIT_3D", {"hdr.flags": FENCE | RING, "hdr.fence_id": 1, "hdr.ctx_id": 1})
    assert [c.id for c in o.failed] == ["ring-idx-needs-context-init"] and o.acceptable() is None
    resp = send(dev, "SUBMIT_3D", {"hdr.flags": FENCE | RING, "hdr.fence_id": 1, "hdr.ctx_id": 1})
    assert resp.fields["hdr.flags"] & FENCE and resp.fields["hdr.fence_id"] == 1  # the echo is owed regardless


def test_each_context_ring_pair_is_its_own_fence_timeline(dev):
    assert send(dev, "CTX_CREATE", {"hdr.ctx_id": 2}).name == OK

    def fenced(ctx, fid, ring=None):
        hdr = {
            "hdr.flags": FENCE | (RING if ring is not None else 0),
            "hdr.fence_id": fid,
            "hdr.ctx_id": ctx,
            "hdr.ring_idx": ring or 0,
        }
        return hdr, [c.id for c in outcome(dev, "SUBMIT_3D", hdr).failed]

    for ctx, fid, ring in ((1, 10, 0), (1, 1, 1), (2, 1, 0), (1, 1, None)):  # a fresh timeline each time
        hdr, failed = fenced(ctx, fid, ring)
        assert failed == [] and send(dev, "SUBMIT_3D", hdr).fields["hdr.fence_id"] == fid
    assert set(dev.state.timelines) == {("ring", 1, 0), ("ring", 1, 1), ("ring", 2, 0), ("global",)}
    _, failed = fenced(1, 5, 0)  # going back on ctx 1 ring 0, which already reached 10
    assert failed == ["fence-sequence"]
    assert outcome(dev, "SUBMIT_3D", fenced(1, 5, 0)[0]).acceptable() is None  # the device need not refuse
    assert fenced(1, 2, 1)[1] == []  # ring 1 is only at 1


def test_a_later_fence_on_a_ring_completes_the_earlier_ones(dev):
    p, st = dev.protocol, dev.state
    msgs = [
        dev.codec.decode_request(
            dev.codec.encode(
                "VIRTIO_GPU_CMD_SUBMIT_3D",
                {"hdr.flags": FENCE | RING, "hdr.fence_id": fid, "hdr.ctx_id": 1, "hdr.ring_idx": 3},
            )
        )
        for fid in (1, 2)
    ]
    for m in msgs:
        p.submit(st, m)
    p.complete(st, msgs[1], None, OK)  # fence 2 answered while fence 1 is still outstanding
    owed = p.finish(st)
    assert [(b.check, b.side, b.reqs) for b in owed] == [("ring-timeline-completion", "device", (RING_COMPLETE,))]
    p.complete(st, msgs[0], None, OK)
    assert p.finish(st) == [] and st.timelines[("ring", 1, 3)].pending == []
