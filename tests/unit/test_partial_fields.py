"""Partial messages: unknown fields make a check inconclusive unless every completion agrees (principle 6)."""

from __future__ import annotations

from virtgpu_conform.model.codec import Message
from virtgpu_conform.model.state import KIND_2D, Resource


def _req(codec, name, fields, unknown=()):
    msg = codec.decode_request(codec.encode(name, fields))
    return Message(msg.kind, msg.name, msg.struct, {k: (None if k in unknown else v) for k, v in msg.fields.items()})


def test_an_unknown_rect_is_inconclusive_only_where_it_matters(protocol, codec):
    st = protocol.new_state()
    st.resources[1] = Resource(1, KIND_2D, 1, 64, 64, backing=[(0, 16384)])
    name = "VIRTIO_GPU_CMD_RESOURCE_FLUSH"
    undecided = protocol.expect(st, _req(codec, name, {"resource_id": 1, "r.width": 64, "r.height": 64}, {"r.x"}))
    assert [c.id for c in undecided.unknown] == ["rect-inside-resource"]
    assert undecided.failed == [] and undecided.acceptable() is None  # a candidate split, not a verdict
    too_wide = protocol.expect(st, _req(codec, name, {"resource_id": 1, "r.width": 65, "r.height": 1}, {"r.x"}))
    assert [c.id for c in too_wide.failed] == ["rect-inside-resource"]  # no x makes 65 columns fit in 64
    assert too_wide.unknown == []


def test_a_truncated_request_is_judged_on_what_it_holds(protocol, codec):
    data = codec.encode("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": 9})
    msg = codec.decode_request(data[:24])  # header only: resource_id unknown
    assert msg.fields["resource_id"] is None
    st = protocol.new_state()
    st.resources[1] = Resource(1, KIND_2D, 1, 64, 64)
    outcome = protocol.expect(st, msg)
    # Which resource it names is unknown, so whether it exists is too: no definite verdict.
    assert outcome.failed == [] and [c.id for c in outcome.unknown] == ["resource-exists"]
    whole = protocol.expect(st, codec.decode_request(data))
    assert [c.id for c in whole.failed] == ["resource-exists"]
