"""Scenarios for blob resources: creation, blob scanouts and mapping into the host-visible region."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from virtgpu_conform.model.device import ReferenceDevice, default_settings
from virtgpu_conform.model.rules_common import MAP_IMPLEMENTED
from virtgpu_conform.model.state import KIND_BLOB

GUEST, HOST3D, HOST3D_GUEST = 1, 2, 3  # VIRTIO_GPU_BLOB_MEM_*
MAPPABLE, SHAREABLE, CROSS_DEVICE = 1, 2, 4  # VIRTIO_GPU_BLOB_FLAG_USE_*
FB = 64 * 64 * 4
PAGE = [{"addr": 0x200000, "length": FB}]
OK = "VIRTIO_GPU_RESP_OK_NODATA"


def send(dev, cmd, fields=None, entries=None):
    raw = dev.codec.encode(f"VIRTIO_GPU_CMD_{cmd}", fields or {}, entries=entries)
    return dev.codec.decode_response(dev.handle(raw))


def is_err(resp):
    return "_RESP_ERR_" in resp.name


def outcome(dev, cmd, fields, entries=None):
    req = dev.codec.decode_request(dev.codec.encode(f"VIRTIO_GPU_CMD_{cmd}", fields, entries=entries))
    return dev.protocol.expect(dev.state, req)


def guest_blob(dev, rid=1, size=FB, flags=0):
    return send(
        dev, "RESOURCE_CREATE_BLOB", {"resource_id": rid, "blob_mem": GUEST, "blob_flags": flags, "size": size}, PAGE
    )


def host_blob(dev, rid, size=8192, flags=MAPPABLE, mem=HOST3D):
    if 1 not in dev.state.contexts:
        assert send(dev, "CTX_CREATE", {"hdr.ctx_id": 1}).name == OK
    return send(
        dev,
        "RESOURCE_CREATE_BLOB",
        {"hdr.ctx_id": 1, "resource_id": rid, "blob_mem": mem, "blob_flags": flags, "blob_id": rid, "size": size},
    )


def device(ir, drop=(), **kw):
    base = default_settings(ir)
    return ReferenceDevice(ir, dataclasses.replace(base, features=base.features - set(drop), **kw))


@pytest.fixture
def dev(ir):
    return ReferenceDevice(ir)


def test_guest_blob_is_created_from_the_pages_that_follow(dev):
    assert guest_blob(dev, flags=SHAREABLE | CROSS_DEVICE).name == OK
    r = dev.state.resources[1]
    assert (r.kind, r.blob_mem, r.size, r.backing) == (KIND_BLOB, GUEST, FB, [(0x200000, FB)])
    assert r.blob_flags == SHAREABLE | CROSS_DEVICE and r.mapped is None


def test_guest_blob_without_entries_gets_its_backing_later(dev):
    assert send(dev, "RESOURCE_CREATE_BLOB", {"resource_id": 1, "blob_mem": GUEST, "size": FB}).name == OK
    assert send(dev, "RESOURCE_ATTACH_BACKING", {"resource_id": 1}, PAGE).name == OK
    assert dev.state.resources[1].backing == [(0x200000, FB)]


@pytest.mark.parametrize(
    "change",
    [
        {"blob_mem": 0},  # zero is not a memory type
        {"blob_mem": 4},
        {"blob_mem": 0xFFFFFFFF},  # not a VIRTIO_GPU_BLOB_MEM_*
        {"blob_flags": 8},
        {"blob_flags": 0x80000001},  # a bit outside VIRTIO_GPU_BLOB_FLAG_*
        {"resource_id": 0},
        {"size": 0},
    ],
)
def test_create_blob_refuses_undefined_memory_flags_ids_and_sizes(dev, change):
    fields = {"resource_id": 1, "blob_mem": GUEST, "size": FB, **change}
    assert is_err(send(dev, "RESOURCE_CREATE_BLOB", fields, PAGE))
    assert dev.state.resources == {}


def test_create_blob_with_a_live_id_fails_and_keeps_the_first(dev):
    assert guest_blob(dev).name == OK
    assert is_err(guest_blob(dev, size=2 * FB))
    assert dev.state.resources[1].size == FB


def test_host_blobs_come_from_a_context_object_and_need_virgl(ir, dev):
    assert is_err(
        send(dev, "RESOURCE_CREATE_BLOB", {"hdr.ctx_id": 9, "resource_id": 1, "blob_mem": HOST3D, "size": 4096})
    )  # context 9 was never created
    assert host_blob(dev, 1).name == OK and host_blob(dev, 2, mem=HOST3D_GUEST).name == OK
    assert {r.blob_mem for r in dev.state.resources.values()} == {HOST3D, HOST3D_GUEST}
    no3d = device(ir, drop={"VIRTIO_GPU_F_VIRGL", "VIRTIO_GPU_F_CONTEXT_INIT"})
    assert is_err(
        send(no3d, "RESOURCE_CREATE_BLOB", {"hdr.ctx_id": 1, "resource_id": 1, "blob_mem": HOST3D, "size": 4096})
    )
    assert guest_blob(no3d).name == OK  # guest memory does not depend on VIRGL
    assert list(no3d.state.resources) == [1] and no3d.state.resources[1].blob_mem == GUEST


def test_blob_alignment_from_config_space_and_unaligned_sizes(ir, dev):
    align = struct.unpack("<5I", dev.config())[4]
    assert align == dev.settings.blob_alignment and align & (align - 1) == 0
    o = outcome(dev, "RESOURCE_CREATE_BLOB", {"resource_id": 1, "blob_mem": GUEST, "size": align + 1}, PAGE)
    assert [c.id for c in o.failed] == ["size-aligned"]
    assert o.acceptable() is None  # a driver MUST; the device's answer is left open
    assert is_err(guest_blob(dev, size=align + 1)) and dev.state.resources == {}  # the reference device's choice
    assert guest_blob(dev, size=2 * align).name == OK
    loose = device(ir, drop={"VIRTIO_GPU_F_BLOB_ALIGNMENT"}, blob_alignment=0)
    assert guest_blob(loose, size=FB + 3).name == OK and loose.state.resources[1].size == FB + 3


def scanout_blob(change=None):
    return {
        "r.width": 64,
        "r.height": 64,
        "scanout_id": 0,
        "resource_id": 1,
        "width": 64,
        "height": 64,
        "format": 1,
        "strides.0": 256,
        **(change or {}),
    }


def test_scanout_blob_shows_a_blob_that_holds_every_row(dev):
    guest_blob(dev)
    assert send(dev, "SET_SCANOUT_BLOB", scanout_blob()).name == OK
    s = dev.state.scanouts[0]
    assert s.resource_id == 1 and s.blob["strides.0"] == 256 and s.blob["format"] == 1
    assert send(dev, "SET_SCANOUT_BLOB", scanout_blob({"resource_id": 0})).name == OK  # 0 disables
    assert dev.state.scanouts[0].resource_id == 0 and dev.state.scanouts[0].blob is None


@pytest.mark.parametrize(
    "change",
    [
        {"height": 65, "r.height": 65},  # one row more than the blob holds
        {"offsets.0": 4},  # the plane starts late and its last row overruns the blob
        {"offsets.0": 0xFFFFFFF0},
        {"width": 4, "r.width": 4, "height": 5, "r.height": 5, "strides.0": 0x40000004},  # 4 strides wrap u32 to 0x10
        {"strides.0": 128},  # a row of 64 pixels needs 256 bytes
        {"format": 0},
        {"format": 200},  # not in enum virtio_gpu_formats
        {"r.x": 0xFFFFFFF0, "r.width": 0x20},  # x + width wraps to 0x10
        {"r.y": 1},  # the rect hangs one row below the framebuffer
        {"scanout_id": 1},
        {"resource_id": 7},
    ],
)
def test_scanout_blob_refuses_what_does_not_fit(dev, change):
    guest_blob(dev)
    assert is_err(send(dev, "SET_SCANOUT_BLOB", scanout_blob(change)))
    assert dev.state.scanouts == {}


def test_scanout_blob_on_a_2d_resource_fails(dev):
    send(dev, "RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 64, "height": 64})
    assert is_err(send(dev, "SET_SCANOUT_BLOB", scanout_blob())) and dev.state.scanouts == {}


def test_map_and_unmap_record_the_mapping(dev):
    assert host_blob(dev, 1).name == OK
    resp = send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 0})
    assert resp.name == "VIRTIO_GPU_RESP_OK_MAP_INFO" and resp.fields["map_info"] & 0x0F in (0, 1, 2, 3)
    assert dev.state.resources[1].mapped == (0, 8192) and dev.state.mappings() == {1: (0, 8192)}
    assert send(dev, "RESOURCE_UNMAP_BLOB", {"resource_id": 1}).name == OK
    assert dev.state.resources[1].mapped is None and dev.state.mappings() == {}
    # Unmapping twice: nothing in the spec settles the answer.
    assert outcome(dev, "RESOURCE_UNMAP_BLOB", {"resource_id": 1}).acceptable() is None
    assert send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 4096}).name == "VIRTIO_GPU_RESP_OK_MAP_INFO"


def test_mapping_a_mapped_blob_is_a_driver_fault_and_keeps_the_first_mapping(dev):
    host_blob(dev, 1)
    send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 0})
    o = outcome(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 65536})
    assert "not-mapped" in [c.id for c in o.failed] and o.acceptable() is None
    assert is_err(send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 65536}))  # reference choice
    assert dev.state.resources[1].mapped == (0, 8192)


def test_map_offsets_inside_the_region_alignment_and_u64_wrap(dev):
    region = dev.settings.host_visible
    host_blob(dev, 1)
    for off in (region - 4096, 0xFFFFFFFFFFFFF000, region):  # past the end; offset + size wraps u64 to 0x1000
        assert is_err(send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": off}))
        assert dev.state.resources[1].mapped is None
    assert outcome(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 100}).acceptable() is None
    assert is_err(send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 100}))  # unaligned: reference choice
    last = region - 8192  # the blob's last byte is the region's last byte
    assert send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": last}).name == "VIRTIO_GPU_RESP_OK_MAP_INFO"
    assert dev.state.resources[1].mapped == (last, 8192)


def test_two_mappings_never_share_region_bytes(dev):
    host_blob(dev, 1)
    host_blob(dev, 2)
    send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 0})
    assert is_err(send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 2, "offset": 4096}))
    assert dev.state.resources[2].mapped is None
    assert send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 2, "offset": 8192}).name == "VIRTIO_GPU_RESP_OK_MAP_INFO"
    assert dev.state.mappings() == {1: (0, 8192), 2: (8192, 8192)}
    assert send(dev, "RESOURCE_UNREF", {"resource_id": 1}).name == OK
    assert dev.state.mappings() == {2: (8192, 8192)}  # the mapping went with the resource


@pytest.mark.parametrize("make", ["guest", "unmappable", "2d"])
def test_only_mappable_host_blobs_map(dev, make):
    if make == "guest":
        guest_blob(dev, flags=MAPPABLE)
    elif make == "unmappable":
        host_blob(dev, 1, flags=SHAREABLE)
    else:
        send(dev, "RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 64, "height": 64})
    assert is_err(send(dev, "RESOURCE_MAP_BLOB", {"resource_id": 1, "offset": 0}))
    assert dev.state.mappings() == {}


def test_no_host_visible_region_means_no_mapping(ir):
    dev = device(ir, host_visible=None)
    host_blob(dev, 1)
    for cmd in ("RESOURCE_MAP_BLOB", "RESOURCE_UNMAP_BLOB"):
        assert is_err(send(dev, cmd, {"resource_id": 1, "offset": 0}))
    assert dev.state.mappings() == {}


def test_a_device_with_the_region_must_map_a_valid_request(dev):
    host_blob(dev, 1)
    req = dev.codec.decode_request(dev.codec.encode("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", {"resource_id": 1}))
    o = dev.protocol.expect(dev.state, req)

    def device_breaches(name, fields):
        resp = dev.codec.decode_response(dev.codec.encode(name, fields))
        return [b for b in dev.protocol.judge(dev.state, req, o, resp) if b.side == "device"]

    refused = device_breaches("VIRTIO_GPU_RESP_ERR_UNSPEC", {})
    assert [(b.check, b.basis) for b in refused] == [("response-type", "normative")]
    assert MAP_IMPLEMENTED in refused[0].reqs
    assert [b.check for b in device_breaches("VIRTIO_GPU_RESP_OK_MAP_INFO", {"map_info": 0x07})] == [
        "map-info-caching"
    ]  # 7 is no VIRTIO_GPU_MAP_CACHE_* value
    assert device_breaches("VIRTIO_GPU_RESP_OK_MAP_INFO", {"map_info": 0x03}) == []


@pytest.mark.parametrize(
    "cmd,fields",
    [
        ("RESOURCE_CREATE_BLOB", {"resource_id": 1, "blob_mem": GUEST, "size": FB}),
        ("SET_SCANOUT_BLOB", scanout_blob()),
        ("RESOURCE_MAP_BLOB", {"resource_id": 1}),
        ("RESOURCE_UNMAP_BLOB", {"resource_id": 1}),
    ],
)
def test_blob_commands_fail_without_resource_blob(ir, cmd, fields):
    dev = device(ir, drop={"VIRTIO_GPU_F_RESOURCE_BLOB", "VIRTIO_GPU_F_BLOB_ALIGNMENT"}, blob_alignment=0)
    send(dev, "RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 64, "height": 64})
    assert "feature-gate" in [c.id for c in outcome(dev, cmd, fields, PAGE).failed]
    assert is_err(send(dev, cmd, fields, PAGE if cmd == "RESOURCE_CREATE_BLOB" else None))
    assert dev.state.resources[1].kind != KIND_BLOB and dev.state.scanouts == {} and dev.state.mappings() == {}
