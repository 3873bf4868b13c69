"""A rule's choices read from one string of bytes hypothesis drew for it.

A hypothesis draw costs 15 to 45 µs, more than building, predicting and checking a
command; a command needs eight or so choices. So each rule draws its bytes once and reads
its choices from them: an integer in a range, one of some values, one of some branches.
Hypothesis shrinks the bytes towards fewer and smaller ones, and a choice read past their
end is its first option (0, the first value, the first branch), so a shrunk case is built
from the simplest choices, as it would be from separate draws. Hypothesis' own strategies
still supply values where the machine asks for them (`Choices.draw` of a strategy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from hypothesis import strategies as st

# One draw a rule, sized so that what a rule reads is mostly drawn bytes, not the zeros past their
# end (those are every choice's first option).
ENTROPY = st.binary(min_size=24, max_size=320)
FEW = st.binary(min_size=8, max_size=48)


class Choice:
    """What a choice is, built once per distinct argument (the machine caches them)."""

    __slots__ = ()

    def read(self, c: Choices) -> Any:
        raise NotImplementedError


class Ints(Choice):
    """An integer in [lo, hi], shrinking towards lo."""

    __slots__ = ("lo", "span", "width")

    def __init__(self, lo: int, hi: int):
        self.lo, self.span = lo, max(0, hi - lo)
        self.width = (self.span.bit_length() + 7) // 8  # bytes read

    def read(self, c: Choices) -> int:
        if not self.span:
            return self.lo
        return self.lo + c.take_int(self.width) % (self.span + 1)


class Among(Choice):
    """One of `values`, shrinking towards the first."""

    __slots__ = ("values", "index")

    def __init__(self, values: Sequence):
        self.values = tuple(values)
        self.index = Ints(0, len(self.values) - 1)

    def read(self, c: Choices) -> Any:
        return self.values[self.index.read(c)]


class OneOf(Choice):
    """One of several choices (or plain values), shrinking towards the first, as st.one_of does."""

    __slots__ = ("branches", "index")

    def __init__(self, *branches):
        self.branches = branches
        self.index = Ints(0, len(branches) - 1)

    def read(self, c: Choices) -> Any:
        b = self.branches[self.index.read(c)]
        return b.read(c) if isinstance(b, Choice) else b


class Bytes(Choice):
    """Between lo and hi bytes, taken as they are."""

    __slots__ = ("lo", "size")

    def __init__(self, lo: int, hi: int):
        self.lo, self.size = lo, Ints(lo, hi)

    def read(self, c: Choices) -> bytes:
        return c.take(self.size.read(c))


class Lists(Choice):
    """Up to `most` of `element`."""

    __slots__ = ("element", "count")

    def __init__(self, element: Choice, most: int):
        self.element, self.count = element, Ints(0, most)

    def read(self, c: Choices) -> list:
        return [self.element.read(c) for _ in range(self.count.read(c))]


class Fields(Choice):
    """A dict of choices, in a fixed order; a part that is not a Choice is a constant, read as it is."""

    __slots__ = ("items",)

    def __init__(self, **parts: object):
        self.items = tuple(parts.items())

    def read(self, c: Choices) -> dict:
        return {k: v.read(c) if isinstance(v, Choice) else v for k, v in self.items}


class Choices:
    """The bytes of one rule, read front to back; `draw` takes a Choice or a hypothesis strategy."""

    __slots__ = ("raw", "pos", "data")

    def __init__(self, raw: bytes, data=None):
        self.raw, self.pos = raw, 0
        self.data = data  # hypothesis' st.data() object, for the strategies the rule draws from

    def left(self) -> int:
        return len(self.raw) - self.pos

    def take(self, n: int) -> bytes:
        out = self.raw[self.pos : self.pos + n]
        self.pos += n
        return out if len(out) == n else out + bytes(n - len(out))

    def take_int(self, n: int) -> int:
        out = int.from_bytes(self.raw[self.pos : self.pos + n], "little")  # short: the high bytes are 0
        self.pos += n
        return out

    def draw(self, what) -> Any:
        if isinstance(what, Choice):
            return what.read(self)
        if self.data is None:
            raise TypeError(f"{what!r} is a hypothesis strategy; this rule draws none")
        return self.data.draw(what)


def conjecture_draw(data) -> Optional[Any]:
    """`data.draw` without what st.data() adds to every call (a label and a note for hypothesis'
    failure report, a check that the strategy left `random` alone: two thirds of its cost);
    the choices drawn are the same. The public call where hypothesis does not have it."""
    conjecture = getattr(data, "conjecture_data", None)
    return conjecture if conjecture is not None else data
