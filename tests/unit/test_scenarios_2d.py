"""Scenarios for the 2D commands, queries, fences and reset, judged by the spec's meaning of each command."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from virtgpu_conform.model.device import ReferenceDevice, default_settings
from virtgpu_conform.model.rules_common import CAPSET_ID, FENCE_ECHO
from virtgpu_conform.model.state import KIND_2D

FENCE = 1  # VIRTIO_GPU_FLAG_FENCE
FMT = 1  # VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM
PAGE = [{"addr": 0x10000, "length": 64 * 64 * 4}]


def send(dev, cmd, fields=None, entries=None, queue="controlq"):
    raw = dev.codec.encode(f"VIRTIO_GPU_CMD_{cmd}", fields or {}, entries=entries)
    return dev.codec.decode_response(dev.handle(raw, queue))


def is_err(resp):
    return "_RESP_ERR_" in resp.name


def make_fb(dev, rid=1, w=64, h=64, backed=True):
    assert (
        send(dev, "RESOURCE_CREATE_2D", {"resource_id": rid, "format": FMT, "width": w, "height": h}).name
        == "VIRTIO_GPU_RESP_OK_NODATA"
    )
    if backed:
        assert send(dev, "RESOURCE_ATTACH_BACKING", {"resource_id": rid}, PAGE).name == "VIRTIO_GPU_RESP_OK_NODATA"


def judge_answer(dev, cmd, fields, resp_name, resp_fields=None, entries=None):
    """What the protocol says of a hand-made answer to a request, in the device's current state."""
    req = dev.codec.decode_request(dev.codec.encode(f"VIRTIO_GPU_CMD_{cmd}", fields, entries=entries), "controlq")
    outcome = dev.protocol.expect(dev.state, req)
    resp = dev.codec.decode_response(dev.codec.encode(resp_name, resp_fields or {}))
    return dev.protocol.judge(dev.state, req, outcome, resp)


@pytest.fixture
def dev(ir):
    return ReferenceDevice(ir)


def test_display_info_reports_each_scanout_and_leaves_the_rest_disabled(dev):
    resp = send(dev, "GET_DISPLAY_INFO")
    assert resp.name == "VIRTIO_GPU_RESP_OK_DISPLAY_INFO"
    assert resp.fields["pmodes.0.enabled"] == 1 and resp.fields["pmodes.0.r.width"] > 0
    assert all(resp.fields[f"pmodes.{i}.enabled"] == 0 for i in range(1, 16))
    assert dev.state.display_info_read
    # A device claiming a scanout past num_scanouts is caught.
    bad = judge_answer(dev, "GET_DISPLAY_INFO", {}, "VIRTIO_GPU_RESP_OK_DISPLAY_INFO", {"pmodes.5.enabled": 1})
    assert any(b.check == "scanout-5-beyond-num-scanouts-disabled" and b.side == "device" for b in bad)


def test_config_space_carries_scanouts_capsets_and_a_power_of_two_alignment(dev):
    _, _, scanouts, capsets, align = struct.unpack("<5I", dev.config())
    assert 1 <= scanouts <= 16 and capsets == len(dev.settings.capsets)
    assert align >= 1 and align & (align - 1) == 0


def test_framebuffer_lifecycle_create_back_scanout_transfer_flush_unref(dev):
    make_fb(dev)
    r = dev.state.resources[1]
    assert (r.kind, r.format, r.width, r.height) == (KIND_2D, FMT, 64, 64) and r.backing == [(0x10000, 16384)]
    rect = {"r.width": 64, "r.height": 64, "resource_id": 1}
    assert send(dev, "SET_SCANOUT", {**rect, "scanout_id": 0}).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert dev.state.scanouts[0].resource_id == 1 and dev.state.scanouts[0].rect == (0, 0, 64, 64)
    assert send(dev, "TRANSFER_TO_HOST_2D", rect).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert dev.state.resources[1].transferred
    assert send(dev, "RESOURCE_FLUSH", rect).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert send(dev, "RESOURCE_UNREF", {"resource_id": 1}).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert 1 not in dev.state.resources
    # The id is free again: the guest may reuse it.
    make_fb(dev, backed=False)
    assert dev.state.resources[1].backing is None


@pytest.mark.parametrize(
    "fields",
    [
        {"resource_id": 0, "format": FMT, "width": 8, "height": 8},  # 0 means "no resource" elsewhere
        {"resource_id": 2, "format": 0, "width": 8, "height": 8},  # not one of enum virtio_gpu_formats
        {"resource_id": 2, "format": 5, "width": 8, "height": 8},
    ],
)
def test_create_2d_rejects_a_null_id_or_a_format_outside_the_enum(dev, fields):
    assert is_err(send(dev, "RESOURCE_CREATE_2D", fields))
    assert fields["resource_id"] not in dev.state.resources


def test_create_2d_with_an_id_in_use_fails_and_keeps_the_first_resource(dev):
    make_fb(dev, w=64, h=64)
    assert is_err(send(dev, "RESOURCE_CREATE_2D", {"resource_id": 1, "format": FMT, "width": 8, "height": 8}))
    assert dev.state.resources[1].width == 64


@pytest.mark.parametrize(
    "cmd,extra",
    [
        ("RESOURCE_UNREF", {}),
        ("RESOURCE_ATTACH_BACKING", {}),
        ("RESOURCE_DETACH_BACKING", {}),
        ("RESOURCE_FLUSH", {"r.width": 1}),
        ("TRANSFER_TO_HOST_2D", {"r.width": 1}),
    ],
)
def test_commands_on_a_resource_never_created_fail(dev, cmd, extra):
    resp = send(dev, cmd, {"resource_id": 42, **extra}, PAGE if cmd == "RESOURCE_ATTACH_BACKING" else None)
    assert is_err(resp)
    assert resp.name == "VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID"  # the reference device's choice
    assert 42 not in dev.state.resources


def test_double_unref_fails_the_second_time(dev):
    make_fb(dev)
    assert send(dev, "RESOURCE_UNREF", {"resource_id": 1}).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert is_err(send(dev, "RESOURCE_UNREF", {"resource_id": 1}))


def test_transfer_needs_backing_and_detach_takes_it_away(dev):
    make_fb(dev, backed=False)
    rect = {"r.width": 64, "r.height": 64, "resource_id": 1}
    assert is_err(send(dev, "TRANSFER_TO_HOST_2D", rect))
    assert not dev.state.resources[1].transferred
    assert send(dev, "RESOURCE_ATTACH_BACKING", {"resource_id": 1}, PAGE).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert send(dev, "TRANSFER_TO_HOST_2D", rect).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert send(dev, "RESOURCE_DETACH_BACKING", {"resource_id": 1}).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert dev.state.resources[1].backing is None
    assert is_err(send(dev, "TRANSFER_TO_HOST_2D", rect))


@pytest.mark.parametrize("cmd", ["SET_SCANOUT", "RESOURCE_FLUSH", "TRANSFER_TO_HOST_2D"])
@pytest.mark.parametrize(
    "rect",
    [
        {"r.x": 0xFFFFFFF0, "r.width": 0x20, "r.height": 64},  # x + width wraps to 0x10 in u32
        {"r.y": 0xFFFFFFC1, "r.height": 0x40, "r.width": 64},  # y + height wraps to 1
        {"r.x": 1, "r.width": 64, "r.height": 64},  # one column past the edge
        {"r.width": 65, "r.height": 1},
    ],
)
def test_rectangles_past_the_resource_are_refused_even_when_the_u32_sum_wraps(dev, cmd, rect):
    make_fb(dev)
    before = dict(dev.state.scanouts)
    assert is_err(send(dev, cmd, {**rect, "resource_id": 1, "scanout_id": 0}))
    assert dev.state.scanouts == before and not dev.state.resources[1].transferred


def test_scanout_rect_may_be_a_sub_rectangle_touching_the_far_edge(dev):
    make_fb(dev)
    ok = send(dev, "SET_SCANOUT", {"r.x": 32, "r.y": 16, "r.width": 32, "r.height": 48, "resource_id": 1})
    assert ok.name == "VIRTIO_GPU_RESP_OK_NODATA" and dev.state.scanouts[0].rect == (32, 16, 32, 48)


def test_resource_id_zero_disables_a_scanout_and_bad_scanout_ids_fail(ir):
    dev = ReferenceDevice(ir, dataclasses.replace(default_settings(ir), num_scanouts=2))
    make_fb(dev)
    full = {"r.width": 64, "r.height": 64, "resource_id": 1}
    for sid in (0, 1):  # mirroring: the same framebuffer on both heads
        assert send(dev, "SET_SCANOUT", {**full, "scanout_id": sid}).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert send(dev, "SET_SCANOUT", {"scanout_id": 1, "resource_id": 0}).name == "VIRTIO_GPU_RESP_OK_NODATA"
    assert dev.state.scanouts[1].resource_id == 0 and dev.state.scanouts[0].resource_id == 1
    for sid in (2, 16, 0xFFFFFFFF):
        resp = send(dev, "SET_SCANOUT", {**full, "scanout_id": sid})
        assert is_err(resp) and sid not in dev.state.scanouts
        assert resp.name == "VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID"  # the reference device's choice
    assert is_err(send(dev, "SET_SCANOUT", {**full, "resource_id": 9}))


def test_edid_follows_vesa_and_needs_the_feature(ir, dev):
    resp = send(dev, "GET_EDID", {"scanout": 0})
    assert resp.name == "VIRTIO_GPU_RESP_OK_EDID" and dev.state.edid_read
    size, block = resp.fields["size"], resp.fields["edid"]
    assert 128 <= size <= 1024 and block[:8] == b"\x00\xff\xff\xff\xff\xff\xff\x00"
    assert sum(block[:128]) % 256 == 0  # base block checksum
    assert is_err(send(dev, "GET_EDID", {"scanout": 1}))
    plain = ReferenceDevice(ir, default_settings(ir, frozenset()))
    assert is_err(send(plain, "GET_EDID", {"scanout": 0})) and not plain.state.edid_read


def test_capset_queries(dev):
    info = send(dev, "GET_CAPSET_INFO", {"capset_index": 0})
    assert info.name == "VIRTIO_GPU_RESP_OK_CAPSET_INFO"
    cid, vmax, size = (info.fields[k] for k in ("capset_id", "capset_max_version", "capset_max_size"))
    assert cid in (1, 2, 3, 4, 5)  # VIRTIO_GPU_CAPSET_VIRGL .. VIRTIO_GPU_CAPSET_CROSS_DOMAIN
    got = send(dev, "GET_CAPSET", {"capset_id": cid, "capset_version": vmax})
    assert got.name == "VIRTIO_GPU_RESP_OK_CAPSET" and 0 < len(got.payload) <= size
    assert is_err(send(dev, "GET_CAPSET", {"capset_id": cid, "capset_version": vmax + 1}))
    assert is_err(send(dev, "GET_CAPSET", {"capset_id": 4, "capset_version": 0}))  # never reported
    # An index past num_capsets breaks a driver MUST; any answer is then conformant.
    req = dev.codec.decode_request(dev.codec.encode("VIRTIO_GPU_CMD_GET_CAPSET_INFO", {"capset_index": 1}))
    assert dev.protocol.expect(dev.state, req).acceptable() is None
    assert is_err(send(dev, "GET_CAPSET_INFO", {"capset_index": 1}))  # the reference device's choice
    bad = judge_answer(
        dev, "GET_CAPSET_INFO", {"capset_index": 0}, "VIRTIO_GPU_RESP_OK_CAPSET_INFO", {"capset_id": 0x99}
    )
    assert any(b.check == "capset-id-defined" and CAPSET_ID in b.reqs for b in bad)


def test_assign_uuid_needs_the_feature_and_a_live_resource(ir, dev):
    assert is_err(send(dev, "RESOURCE_ASSIGN_UUID", {"resource_id": 1}))
    make_fb(dev, backed=False)
    first = send(dev, "RESOURCE_ASSIGN_UUID", {"resource_id": 1})
    assert first.name == "VIRTIO_GPU_RESP_OK_RESOURCE_UUID" and len(first.fields["uuid"]) == 16
    assert dev.state.resources[1].uuid == first.fields["uuid"]
    plain = ReferenceDevice(ir, default_settings(ir, frozenset()))
    make_fb(plain, backed=False)
    assert is_err(send(plain, "RESOURCE_ASSIGN_UUID", {"resource_id": 1}))


@pytest.mark.parametrize("cmd,fields", [("GET_DISPLAY_INFO", {}), ("RESOURCE_UNREF", {"resource_id": 77})])
def test_fenced_requests_echo_the_fence_whether_they_succeed_or_fail(dev, cmd, fields):
    resp = send(dev, cmd, {**fields, "hdr.flags": FENCE, "hdr.fence_id": 0xFFFFFFFFFFFFFFFF})
    assert resp.fields["hdr.flags"] & FENCE and resp.fields["hdr.fence_id"] == 0xFFFFFFFFFFFFFFFF
    assert dev.state.timeline(("global",)).pending == []
    assert dev.state.timeline(("global",)).last_completed == 0xFFFFFFFFFFFFFFFF


@pytest.mark.parametrize("resp_fields", [{}, {"hdr.fence_id": 7}, {"hdr.flags": FENCE, "hdr.fence_id": 8}])
def test_a_fence_answered_without_the_flag_or_with_another_id_is_a_device_breach(dev, resp_fields):
    bad = judge_answer(
        dev, "GET_DISPLAY_INFO", {"hdr.flags": FENCE, "hdr.fence_id": 7}, "VIRTIO_GPU_RESP_OK_DISPLAY_INFO", resp_fields
    )
    echo = [b for b in bad if b.check == "fence-echo"]
    assert echo and echo[0].side == "device" and echo[0].definite and FENCE_ECHO in echo[0].reqs
    good = judge_answer(
        dev,
        "GET_DISPLAY_INFO",
        {"hdr.flags": FENCE, "hdr.fence_id": 7},
        "VIRTIO_GPU_RESP_OK_DISPLAY_INFO",
        {"hdr.flags": FENCE, "hdr.fence_id": 7},
    )
    assert not [b for b in good if b.check == "fence-echo"]


def test_success_to_an_invalid_request_or_an_error_to_a_valid_one_is_a_device_breach(dev):
    bad = judge_answer(dev, "RESOURCE_UNREF", {"resource_id": 5}, "VIRTIO_GPU_RESP_OK_NODATA")
    assert {(b.check, b.side) for b in bad} == {("resource-exists", "driver"), ("response-type", "device")}
    bad = judge_answer(dev, "SET_SCANOUT", {"scanout_id": 0xFFFFFFFF}, "VIRTIO_GPU_RESP_OK_NODATA")
    assert any(b.check == "response-type" and b.side == "device" for b in bad)
    bad = judge_answer(dev, "GET_DISPLAY_INFO", {}, "VIRTIO_GPU_RESP_ERR_UNSPEC")
    assert any(b.check == "response-type" and b.side == "device" for b in bad)


def test_device_reset_forgets_resources_scanouts_and_fences(dev):
    send(dev, "GET_DISPLAY_INFO")
    make_fb(dev)
    send(dev, "SET_SCANOUT", {"r.width": 64, "r.height": 64, "resource_id": 1, "hdr.flags": FENCE, "hdr.fence_id": 3})
    assert dev.reset() == []
    st = dev.state
    assert st.resources == {} and st.scanouts == {} and st.timelines == {} and not st.display_info_read
    assert is_err(send(dev, "RESOURCE_FLUSH", {"r.width": 1, "r.height": 1, "resource_id": 1}))
    make_fb(dev)  # the old id is free after the reset
    assert (
        send(
            dev,
            "RESOURCE_FLUSH",
            {"r.width": 1, "r.height": 1, "resource_id": 1, "hdr.flags": FENCE, "hdr.fence_id": 1},
        ).fields["hdr.fence_id"]
        == 1
    )
