"""The codec: derived from the SpecIR layouts, round-trips every message, and never raises on bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtgpu_conform.model.codec import HDR, PAYLOAD_LENGTH
from virtgpu_conform.model.strategies import any_message, message


def test_every_command_and_response_has_a_layout_of_its_struct_size(ir, codec):
    for c in ir.commands:
        assert codec.layout(c.name).size == ir.struct(c.request).size
    for r in ir.responses:
        assert codec.layout(r.name).size == ir.struct(r.struct).size
    # The header is the same 24 bytes everywhere, as the C compiler lays it out (test_c_layout).
    hdr = codec.layouts[HDR]
    assert hdr.size == 24
    assert hdr.keys == ("hdr.type", "hdr.flags", "hdr.fence_id", "hdr.ctx_id", "hdr.ring_idx", "hdr.padding")
    assert [hdr.widths[k] for k in hdr.keys[:5]] == [32, 32, 64, 32, 8]


def test_nested_structs_and_arrays_flatten_to_spec_names(codec):
    lay = codec.layout("VIRTIO_GPU_CMD_SET_SCANOUT_BLOB")
    assert {"r.x", "r.height", "strides.3", "offsets.0", "scanout_id"} <= set(lay.keys)
    info = codec.layout("VIRTIO_GPU_RESP_OK_DISPLAY_INFO")
    assert info.offsets[info.keys.index("pmodes.15.flags")] == 24 + 15 * 24 + 20
    assert codec.layout("VIRTIO_GPU_CMD_CTX_CREATE").is_bytes[
        codec.layout("VIRTIO_GPU_CMD_CTX_CREATE").keys.index("debug_name")
    ]


@pytest.mark.parametrize("kind", ["request", "response"])
def test_round_trip_of_every_message(ir, codec, kind):
    names = [c.name for c in ir.commands] if kind == "request" else [r.name for r in ir.responses]

    @settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), message(codec, n))))
    def run(case):
        name, (fields, entries, payload) = case
        data = codec.encode(name, fields, entries=entries, payload=payload)
        msg = codec.decode_request(data) if kind == "request" else codec.decode_response(data)
        assert msg.problems == []
        assert msg.name == name
        assert msg.fields == fields
        assert msg.entries == entries
        assert msg.payload == payload
        assert codec.encode(name, msg.fields, entries=msg.entries, payload=msg.payload) == data

    run()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decoding_arbitrary_bytes_never_raises(codec, data):
    for msg in (codec.decode_request(data), codec.decode_request(data, "cursorq"), codec.decode_response(data)):
        assert msg.size == len(data)
        if len(data) < 24:
            assert any(p.code == "short-buffer" for p in msg.problems)


@settings(max_examples=200, deadline=None)
@given(any_message_and_cut=st.data())
def test_truncating_a_valid_message_is_reported_not_raised(codec, any_message_and_cut):
    name, (fields, entries, payload) = any_message_and_cut.draw(any_message(codec))
    data = codec.encode(name, fields, entries=entries, payload=payload)
    cut = any_message_and_cut.draw(st.integers(0, max(0, len(data) - 1)))
    kind = "request" if "_CMD_" in name else "response"
    msg = codec.decode_request(data[:cut]) if kind == "request" else codec.decode_response(data[:cut])
    lay = codec.layout(name)
    if cut < lay.size:
        assert any(p.code == "short-buffer" for p in msg.problems)
        # What the bytes do not cover is unknown, never a made-up zero.
        assert all(msg.fields.get(k) is None for k, off, sz in zip(lay.keys, lay.offsets, lay.sizes) if off + sz > cut)
    elif entries or lay.name in PAYLOAD_LENGTH:
        assert {p.code for p in msg.problems} & {"entries-truncated", "payload-truncated"}


def test_named_problems(codec):
    attach = "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING"
    good = codec.encode(attach, {"resource_id": 1}, entries=[{"addr": 4096, "length": 4096}])
    assert codec.decode_request(good).problems == []

    def codes(data, **kw):
        return [p.code for p in codec.decode_request(data, **kw).problems]

    assert codes(good + b"\x00" * 5) == ["trailing-bytes"]
    assert codes(codec.encode(attach, {"resource_id": 1, "nr_entries": 3}, entries=[{"addr": 1, "length": 1}])) == [
        "entries-truncated"
    ]
    assert codes((0xDEAD).to_bytes(4, "little") + bytes(20)) == ["unknown-type"]
    padded = codec.encode("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": 1, "padding": 7})
    assert codes(padded) == ["nonzero-padding"]
    hdr_pad = codec.encode("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": 1, "hdr.padding": b"\x00\x01\x00"})
    assert codes(hdr_pad) == ["nonzero-padding"]
    submit = codec.encode("VIRTIO_GPU_CMD_SUBMIT_3D", {"size": 16}, payload=b"x" * 16)
    assert codes(submit) == []
    assert codes(submit[:-4]) == ["payload-truncated"]
    move = codec.encode("VIRTIO_GPU_CMD_MOVE_CURSOR", {})
    assert codes(move, queue="controlq") == ["wrong-queue"]
    assert codes(move, queue="cursorq") == []
    problem = codec.decode_request(good[:10]).problems[0]
    assert "needs 32 bytes, got 10" in str(problem)


def test_update_and_move_cursor_share_a_layout_and_differ_by_type(codec):
    up = codec.decode_request(codec.encode("VIRTIO_GPU_CMD_UPDATE_CURSOR", {"pos.x": 5}))
    mv = codec.decode_request(codec.encode("VIRTIO_GPU_CMD_MOVE_CURSOR", {"pos.x": 5}))
    assert (up.name, mv.name) == ("VIRTIO_GPU_CMD_UPDATE_CURSOR", "VIRTIO_GPU_CMD_MOVE_CURSOR")
    assert up.struct == mv.struct and up.fields["pos.x"] == mv.fields["pos.x"] == 5


def test_an_entry_field_past_its_wire_width_is_named(codec):
    cmd = "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING"
    with pytest.raises(ValueError, match=r"ATTACH_BACKING: entry length does not fit"):
        codec.encode(cmd, {"resource_id": 1}, [{"addr": 0, "length": 1 << 32}])
