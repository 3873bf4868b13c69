"""A rule's choices read from one string of drawn bytes (checker/fuzz/choices.py): in range, every
option reachable, and the simplest option wherever the bytes run out (what a shrunk case is made of)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtgpu_conform.checker.fuzz.choices import Among, Bytes, Choices, Fields, Ints, Lists, OneOf

EVERY = [
    Ints(3, 9),
    Ints(0, 1 << 40),
    Among("abc"),
    OneOf(7, Among([1, 2]), Ints(10, 12)),
    Bytes(2, 5),
    Lists(Ints(0, 3), 4),
    Fields(a=Ints(0, 1), b=5),
]


@given(st.binary(max_size=64))
def test_choices_stay_in_range(raw):
    c = Choices(raw)
    assert 3 <= c.draw(Ints(3, 9)) <= 9
    assert 0 <= c.draw(Ints(0, 1 << 40)) <= 1 << 40
    assert c.draw(Among("abc")) in "abc"
    assert c.draw(OneOf(7, Among([1, 2]), Ints(10, 12))) in (7, 1, 2, 10, 11, 12)
    assert 2 <= len(c.draw(Bytes(2, 5))) <= 5
    assert all(0 <= x <= 3 for x in c.draw(Lists(Ints(0, 3), 4)))
    f = c.draw(Fields(a=Ints(0, 1), b=5))
    assert f["a"] in (0, 1) and f["b"] == 5


def test_past_the_bytes_every_choice_is_its_first_option():
    c = Choices(b"")
    assert [c.draw(x) for x in EVERY] == [3, 0, "a", 7, b"\0\0", [], {"a": 0, "b": 5}]
    assert c.left() < 0


def test_every_option_is_reachable():
    seen = {Choices(bytes([i])).draw(Among("abcdef")) for i in range(256)}
    assert seen == set("abcdef")
    wide = {Choices(i.to_bytes(2, "little")).draw(Ints(0, 300)) for i in range(1024)}
    assert wide == set(range(301))


def test_a_strategy_needs_hypothesis_data():
    with pytest.raises(TypeError, match="hypothesis strategy"):
        Choices(b"\1").draw(st.integers())


@given(st.binary(max_size=64), st.sampled_from([4096, (1 << 32) - 1]))
def test_bad_backing_entries_always_fit_the_wire(raw, need):
    # A resource of 4 GiB or more made the "one past" length 2**32 (a reference campaign, seed 1,
    # ended on struct.error in the wild rule after 150 s).
    from virtgpu_conform.checker.fuzz.machine import _bad_entries

    entries = Choices(raw).draw(_bad_entries(need))
    assert all(0 <= e["length"] <= (1 << 32) - 1 for e in entries)
    assert all(e["length"] in (0, need - 1, need, need + 1, (1 << 32) - 1) for e in entries)
