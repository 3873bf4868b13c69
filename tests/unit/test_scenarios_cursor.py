"""Scenarios for the cursor queue: a prepared 64x64 image, hiding, moving, and scanout ids."""

from __future__ import annotations

import dataclasses

import pytest

from virtgpu_conform.model.device import ReferenceDevice, default_settings
from virtgpu_conform.model.rules_common import CURSOR_64, CURSOR_PREPARED, FENCE_ECHO
from virtgpu_conform.model.state import Cursor

FENCE = 1
OK = "VIRTIO_GPU_RESP_OK_NODATA"


def send(dev, cmd, fields=None, entries=None, queue="controlq"):
    raw = dev.codec.encode(f"VIRTIO_GPU_CMD_{cmd}", fields or {}, entries=entries)
    return dev.codec.decode_response(dev.handle(raw, queue))


def cursor_cmd(dev, cmd, fields):
    return send(dev, cmd, fields, queue="cursorq")


def is_err(resp):
    return "_RESP_ERR_" in resp.name


def outcome(dev, cmd, fields):
    req = dev.codec.decode_request(dev.codec.encode(f"VIRTIO_GPU_CMD_{cmd}", fields), "cursorq")
    return req, dev.protocol.expect(dev.state, req)


def image(dev, rid=1, size=64, backed=True, filled=True):
    """Create, back and fill a cursor image, each step fenced and seen complete."""
    steps = [("RESOURCE_CREATE_2D", {"format": 1, "width": size, "height": size}, None)]
    if backed:
        steps.append(("RESOURCE_ATTACH_BACKING", {}, [{"addr": 0x80000, "length": size * size * 4}]))
    if filled:
        steps.append(("TRANSFER_TO_HOST_2D", {"r.width": size, "r.height": size}, None))
    for i, (cmd, fields, entries) in enumerate(steps):
        fid = 100 * rid + i + 1
        resp = send(dev, cmd, {"resource_id": rid, "hdr.flags": FENCE, "hdr.fence_id": fid, **fields}, entries)
        assert resp.name == OK and resp.fields["hdr.flags"] & FENCE and resp.fields["hdr.fence_id"] == fid
    assert dev.state.timeline(("global",)).pending == []


def at(scanout=0, x=0, y=0, **rest):
    return {"pos.scanout_id": scanout, "pos.x": x, "pos.y": y, **rest}


@pytest.fixture
def dev(ir):
    return ReferenceDevice(ir, dataclasses.replace(default_settings(ir), num_scanouts=2))


def test_a_prepared_64x64_image_becomes_the_cursor(dev):
    image(dev)
    fields = at(1, 10, 20, resource_id=1, hot_x=3, hot_y=4)
    assert outcome(dev, "UPDATE_CURSOR", fields)[1].failed == []
    assert cursor_cmd(dev, "UPDATE_CURSOR", fields).name == OK
    assert dev.state.cursor == Cursor(scanout_id=1, x=10, y=20, resource_id=1, hot_x=3, hot_y=4)


def test_resource_id_zero_hides_the_cursor(dev):
    image(dev)
    cursor_cmd(dev, "UPDATE_CURSOR", at(0, 5, 5, resource_id=1))
    assert cursor_cmd(dev, "UPDATE_CURSOR", at(0, 5, 5, resource_id=0)).name == OK
    assert dev.state.cursor.resource_id == 0
    # Hiding needs no image at all, so nothing about the image is checked.
    assert outcome(dev, "UPDATE_CURSOR", at(0, 0, 0, resource_id=0, hot_x=999))[1].failed == []


def test_move_changes_only_the_position(dev):
    image(dev)
    cursor_cmd(dev, "UPDATE_CURSOR", at(0, 1, 2, resource_id=1, hot_x=7, hot_y=8))
    # The fields past pos are not used by a move: junk there changes nothing.
    assert cursor_cmd(dev, "MOVE_CURSOR", at(1, 300, 400, resource_id=99, hot_x=50, hot_y=60)).name == OK
    assert dev.state.cursor == Cursor(scanout_id=1, x=300, y=400, resource_id=1, hot_x=7, hot_y=8)
    assert outcome(dev, "MOVE_CURSOR", at(0, 0xFFFFFFFF, 0xFFFFFFFF, resource_id=99))[1].failed == []


def test_moving_a_cursor_never_shown_keeps_it_hidden(dev):
    assert cursor_cmd(dev, "MOVE_CURSOR", at(0, 40, 50)).name == OK
    assert dev.state.cursor == Cursor(scanout_id=0, x=40, y=50, resource_id=0)


@pytest.mark.parametrize("cmd", ["UPDATE_CURSOR", "MOVE_CURSOR"])
@pytest.mark.parametrize("scanout", [2, 16, 0xFFFFFFFF])
def test_scanout_ids_past_num_scanouts_on_the_cursor_queue(dev, cmd, scanout):
    image(dev)
    cursor_cmd(dev, "UPDATE_CURSOR", at(0, 1, 1, resource_id=1))
    before = dataclasses.replace(dev.state.cursor)
    fields = at(scanout, 5, 5, resource_id=1)
    _, o = outcome(dev, cmd, fields)
    assert [c.id for c in o.failed] == ["scanout-id"]
    assert o.acceptable() is None  # the spec gives no error answer for the cursor queue
    resp = cursor_cmd(dev, cmd, fields)
    assert resp.name == "VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID"  # the reference device's choice
    assert dev.state.cursor == before


@pytest.mark.parametrize("backed,filled", [(False, False), (True, False)])
def test_an_image_not_backed_and_filled_is_a_driver_fault(dev, backed, filled):
    image(dev, backed=backed, filled=filled)
    req, o = outcome(dev, "UPDATE_CURSOR", at(0, 0, 0, resource_id=1))
    assert [c.id for c in o.failed] == ["cursor-prepared"] and CURSOR_PREPARED in o.failed[0].reqs
    assert o.acceptable() is None
    ok = dev.codec.decode_response(dev.codec.encode(OK, {}))
    blamed = dev.protocol.judge(dev.state, req, o, ok)
    assert [(b.check, b.side) for b in blamed] == [("cursor-prepared", "driver")]


@pytest.mark.parametrize("size", [32, 65, 128])
def test_an_image_not_64x64_is_a_driver_fault(dev, size):
    image(dev, size=size)
    _, o = outcome(dev, "UPDATE_CURSOR", at(0, 0, 0, resource_id=1))
    assert [c.id for c in o.failed] == ["cursor-64x64"] and CURSOR_64 in o.failed[0].reqs


def test_an_image_that_was_never_created_or_is_gone(dev):
    _, o = outcome(dev, "UPDATE_CURSOR", at(0, 0, 0, resource_id=5))
    assert "resource-exists" in [c.id for c in o.failed] and o.acceptable() is None
    image(dev, rid=5)
    assert send(dev, "RESOURCE_UNREF", {"resource_id": 5}).name == OK
    _, o = outcome(dev, "UPDATE_CURSOR", at(0, 0, 0, resource_id=5))
    assert "resource-exists" in [c.id for c in o.failed]


def test_cursor_commands_belong_on_the_cursor_queue_and_only_there(dev):
    image(dev)
    assert is_err(send(dev, "UPDATE_CURSOR", at(0, 9, 9, resource_id=1), queue="controlq"))
    assert is_err(send(dev, "MOVE_CURSOR", at(0, 9, 9), queue="controlq"))
    assert dev.state.cursor == Cursor()
    assert is_err(send(dev, "GET_DISPLAY_INFO", queue="cursorq")) and not dev.state.display_info_read


def test_fences_on_the_cursor_queue_are_echoed_and_judged(dev):
    image(dev)
    fields = at(0, 1, 1, resource_id=1, **{"hdr.flags": FENCE, "hdr.fence_id": 0xABCDEF})
    resp = cursor_cmd(dev, "UPDATE_CURSOR", fields)
    assert resp.name == OK and resp.fields["hdr.flags"] & FENCE and resp.fields["hdr.fence_id"] == 0xABCDEF
    req, o = outcome(dev, "MOVE_CURSOR", {**fields, "hdr.fence_id": 0xABCDF0})
    for wrong in ({}, {"hdr.flags": FENCE, "hdr.fence_id": 0xABCDEF}):  # no flag; the previous fence's id
        bad = dev.protocol.judge(dev.state, req, o, dev.codec.decode_response(dev.codec.encode(OK, wrong)))
        assert [(b.check, b.side, b.reqs) for b in bad] == [("fence-echo", "device", (FENCE_ECHO,))]


def test_reset_forgets_the_cursor(dev):
    image(dev)
    cursor_cmd(dev, "UPDATE_CURSOR", at(1, 3, 3, resource_id=1))
    dev.reset()
    assert dev.state.cursor == Cursor() and dev.state.resources == {}
