"""Hypothesis strategies for every message, derived from the codec's layouts."""

from __future__ import annotations

from hypothesis import strategies as st

from .codec import PAYLOAD_LENGTH, Codec, Layout

MAX_ENTRIES = 4
MAX_PAYLOAD = 64


def leaves(lay: Layout, zero_padding: bool = True) -> st.SearchStrategy[dict]:
    """Every leaf of a layout: integers over their full width, byte arrays of their size."""
    parts = {}
    pad = set(lay.padding) if zero_padding else set()
    for key, size, is_bytes in zip(lay.keys, lay.sizes, lay.is_bytes):
        if key in pad:
            parts[key] = st.just(bytes(size) if is_bytes else 0)
        elif is_bytes:
            parts[key] = st.binary(min_size=size, max_size=size)
        else:
            parts[key] = st.integers(0, (1 << (8 * size)) - 1)
    return st.fixed_dictionaries(parts)


@st.composite
def message(draw, codec: Codec, name: str) -> tuple[dict, list, bytes]:
    """(fields, entries, payload) for a command or response, with counts that match what follows."""
    item = codec.by_name[name]
    lay = codec.layout(name)
    fields = draw(leaves(lay))
    fields["hdr.type"] = item.code
    s = codec.ir.struct(lay.name)
    entries: list = []
    payload = b""
    if s.trailing:
        entries = draw(st.lists(leaves(codec.layouts[s.trailing.element]), max_size=MAX_ENTRIES))
        fields[s.trailing.count_field] = len(entries)
    if lay.name in PAYLOAD_LENGTH or lay.flexible:
        payload = draw(st.binary(max_size=MAX_PAYLOAD))
        if lay.name in PAYLOAD_LENGTH:
            fields[PAYLOAD_LENGTH[lay.name]] = len(payload)
    return fields, entries, payload


def any_message(codec: Codec) -> st.SearchStrategy[tuple[str, tuple[dict, list, bytes]]]:
    names = sorted(codec.by_name)
    return st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), message(codec, n)))
