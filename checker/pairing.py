"""Requests waiting for their answers, released in request order: what keeps importers streaming."""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Iterator, Optional

from .trace import Exchange

# A request still unanswered after this many later requests were is taken as never answered:
# the bound is what keeps memory flat on a trace where a device stopped answering.
WINDOW = 4096


class Pairer:
    """Exchanges keyed by whatever pairs a request with its completion (an element pointer, an id).

    The device processes a queue in order, so the checker must see exchanges in
    request order; an answered exchange waits behind an older unanswered one.
    """

    def __init__(self, window: int = WINDOW):
        self.waiting: OrderedDict[int, Exchange] = OrderedDict()  # slot -> exchange, in request order
        self.settled: set[int] = set()  # slots whose fate is known (answered, or given up)
        self.open: dict[Hashable, int] = {}  # key -> slot of its unanswered request
        self.window = window
        self._n = 0

    def request(self, key: Hashable, ex: Exchange) -> Iterator[Exchange]:
        """Book a request. A key still open means the earlier request under it was never answered."""
        old = self.open.pop(key, None)
        if old is not None:
            self.waiting[old].answered = False
            self.settled.add(old)
        self._n += 1
        self.waiting[self._n] = ex
        self.open[key] = self._n
        return self._drain()

    def find(self, key: Hashable) -> Optional[Exchange]:
        """The unanswered exchange under this key."""
        slot = self.open.get(key)
        return None if slot is None else self.waiting[slot]

    def answer(self, key: Hashable) -> tuple[Optional[Exchange], Iterator[Exchange]]:
        """Settle the request under this key as answered; the caller fills in the answer before draining."""
        slot = self.open.pop(key, None)
        if slot is None:
            return None, iter(())
        self.settled.add(slot)
        return self.waiting[slot], self._drain()

    def _drain(self) -> Iterator[Exchange]:
        while self.waiting:
            slot = next(iter(self.waiting))
            if slot not in self.settled:
                if len(self.waiting) <= self.window:
                    return
                self._give_up(slot)
            self.settled.discard(slot)
            yield self.waiting.pop(slot)

    def _give_up(self, slot: int) -> None:
        ex = self.waiting[slot]
        ex.answered = False
        for k, s in list(self.open.items()):
            if s == slot:
                del self.open[k]

    def flush(self) -> Iterator[Exchange]:
        """End of trace: whatever is still waiting was never answered."""
        while self.waiting:
            slot, ex = self.waiting.popitem(last=False)
            if slot not in self.settled:
                ex.answered = False
            self.settled.discard(slot)
            yield ex
