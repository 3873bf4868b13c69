"""The pixel oracle's model (checker/fuzz/pixels.py): the picture a transfer and a flush must leave on
scanout 0, worked out here by hand from the pattern, and what it refuses to judge."""

from __future__ import annotations

import pytest

from virtgpu_conform.checker.devices.qmp import parse_ppm
from virtgpu_conform.checker.fuzz.pixels import PATTERN, PATTERN_BASE, PATTERN_SIZE, PixelModel, channel_order
from virtgpu_conform.model.protocol import Protocol

W, H = 8, 4


@pytest.fixture(scope="module")
def p(ir):
    return Protocol(ir)


def feed(p, pm, commands):
    due = []
    for name, fields, entries in commands:
        req = p.codec.decode_request(p.codec.encode(name, fields, entries), "controlq")
        due.append(pm.due(req, True))
    return due


def scene(fmt, addr=PATTERN_BASE, part=None, view=None):
    rect = {"resource_id": 1, "r.width": W, "r.height": H}
    return [
        ("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": fmt, "width": W, "height": H}, None),
        ("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", {"resource_id": 1}, [{"addr": addr, "length": W * H * 4}]),
        ("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0, **(view or rect)}, None),
        ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", part or rect, None),
        ("VIRTIO_GPU_CMD_RESOURCE_FLUSH", rect, None),
    ]


def test_channel_order_comes_from_the_format_names(ir):
    order = channel_order(ir)
    assert len(order) == 8
    assert order[ir.constant("VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM")] == (2, 1, 0)
    assert order[ir.constant("VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM")] == (0, 1, 2)
    assert order[ir.constant("VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM")] == (1, 2, 3)


def test_a_part_transferred_with_its_offset_shows_through_an_offset_scanout(ir, p):
    fmt = ir.constant("VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM")
    pm = PixelModel(ir)
    part = {"resource_id": 1, "r.x": 2, "r.y": 1, "r.width": 3, "r.height": 2, "offset": (1 * W + 2) * 4}
    view = {"resource_id": 1, "r.x": 1, "r.y": 1, "r.width": 6, "r.height": 3}
    assert feed(p, pm, scene(fmt, part=part, view=view)) == [False] * 4 + [True]
    w, h, rgb = pm.expected()
    assert (w, h) == (6, 3)
    for y in range(3):
        for x in range(6):
            rx, ry = x + 1, y + 1  # the resource pixel the scanout shows here
            if 2 <= rx < 5 and 1 <= ry < 3:
                src = (1 * W + 2) * 4 + (ry - 1) * W * 4 + (rx - 2) * 4  # offset + row * stride
                want = bytes((PATTERN[src + 2], PATTERN[src + 1], PATTERN[src]))  # B, G, R, X in memory
            else:
                want = bytes(3)  # never transferred: black
            assert rgb[3 * (y * 6 + x) : 3 * (y * 6 + x) + 3] == want, (x, y)
    assert pm.check((w, h, rgb)) is None
    wrong = bytearray(rgb)
    wrong[3 * 7] ^= 0xFF
    m = pm.check((w, h, bytes(wrong)))
    assert m is not None and m.differ == 1 and "first at (1,1)" in m.message
    assert "shows a 5x3 picture" in pm.check((5, 3, rgb[:45])).message


def test_what_the_oracle_cannot_follow_is_not_judged(ir, p):
    fmt = ir.constant("VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM")
    # a backing outside the pattern: the resource's pixels are unknown, so the flush is not judged
    assert not any(feed(p, PixelModel(ir), scene(fmt, addr=PATTERN_BASE + PATTERN_SIZE)))
    # a format the names do not give
    assert not any(feed(p, PixelModel(ir), scene(77)))
    # an accepted 3D command: nothing more is judged in the case
    pm = PixelModel(ir)
    feed(p, pm, [("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1}, None)])
    assert pm.lost and not any(feed(p, pm, scene(fmt)))
    # an answer that never came
    pm = PixelModel(ir)
    pm.lose()
    assert not any(feed(p, pm, scene(fmt)))


def test_refused_commands_change_nothing(ir, p):
    fmt = ir.constant("VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM")
    pm = PixelModel(ir)
    cmds = scene(fmt)
    feed(p, pm, cmds[:3])
    transfer = p.codec.decode_request(p.codec.encode(*cmds[3]), "controlq")
    assert pm.due(transfer, False) is False  # refused: the resource stays black
    assert feed(p, pm, cmds[4:]) == [True]
    assert pm.expected()[2] == bytes(3 * W * H)


def test_ppm_as_qemu_writes_it():
    assert parse_ppm(b"P6\n2 1\n255\n\x01\x02\x03\x04\x05\x06") == (2, 1, b"\x01\x02\x03\x04\x05\x06")
    assert parse_ppm(b"P6\n2 1\n255\n\x01") is None
    assert parse_ppm(b"P5\n2 1\n255\n\x01\x02") is None
    # QEMU 7.2 pads every row to 4 bytes: a 1-pixel-wide picture of 2 rows is 8 bytes, not 6
    assert parse_ppm(b"P6\n1 2\n255\n\x01\x02\x03\x00\x04\x05\x06\x00") == (1, 2, b"\x01\x02\x03\x04\x05\x06")


def test_an_answer_cut_before_its_type_stops_the_judging(ir, p):
    # A SET_SCANOUT that disables the scanout, answered into a 1-byte buffer, was carried out all the same
    # (QEMU 10.0 then shows its grey placeholder): the oracle cannot tell, so it judges nothing more.
    from virtgpu_conform.checker.devices.target import ReferenceTarget, Reply
    from virtgpu_conform.checker.fuzz.oracle import Oracle
    from virtgpu_conform.checker.fuzz.record import session_header

    target = ReferenceTarget(ir)
    shots = []
    o = Oracle(p, session_header(ir, target), screen=lambda: shots.append(1))
    fmt = ir.constant("VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM")
    ok = p.codec.encode("VIRTIO_GPU_RESP_OK_NODATA")
    for name, fields, entries in scene(fmt)[:3]:
        raw = p.codec.encode(name, fields, entries)
        o.step("controlq", [raw], [24], Reply("answered", ok))
    off = p.codec.encode("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0})
    o.step("controlq", [off], [1], Reply("answered", ok[:1]))
    cursor = p.codec.encode("VIRTIO_GPU_CMD_MOVE_CURSOR", {"pos.x": 3})
    o.step("cursorq", [cursor], [24], Reply("answered", b""))
    for name, fields, entries in scene(fmt)[3:]:
        o.step("controlq", [p.codec.encode(name, fields, entries)], [24], Reply("answered", ok))
    assert o.pixels.lost and not shots
    # the cursor queue's empty answers are how it always answers: they stop nothing
    o = Oracle(p, session_header(ir, target), screen=lambda: None)
    o.step("cursorq", [cursor], [24], Reply("answered", b""))
    assert not o.pixels.lost
