"""Requests waiting for their answers, released in request order: what keeps importers streaming."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from typing import Optional

from .events import LOST, OVERTAKEN, OVERTAKEN_BY, TRACE_ENDED, Exchange

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
        self.overtaken: set[int] = set()  # unanswered slots a later request was answered before
        self.window = window
        self._n = 0

    def request(self, key: Hashable, ex: Exchange) -> Iterable[Exchange]:
        """Book a request. A key still open means the earlier request under it was never answered."""
        old = self.open.pop(key, None)
        if old is not None:
            _unanswered(self.waiting[old], LOST)
            self.settled.add(old)
        self._n += 1
        waiting = self.waiting
        waiting[self._n] = ex
        self.open[key] = self._n
        if len(waiting) <= self.window and next(iter(waiting)) not in self.settled:
            return ()  # the oldest still waits: what _drain would find, without the call
        return self._drain()

    def is_open(self, key: Hashable) -> bool:
        return key in self.open

    def answer(self, key: Hashable) -> tuple[Optional[Exchange], Iterable[Exchange]]:
        """Settle the request under this key as answered; the caller fills in the answer before draining."""
        slot = self.open.pop(key, None)
        if slot is None:
            return None, iter(())
        waiting = self.waiting
        if next(iter(waiting)) == slot:
            # The oldest, answered in order (nearly always): it leaves at once, overtaking nothing.
            ex = waiting.pop(slot)
            self.overtaken.discard(slot)
            return ex, [ex, *self._drain()] if waiting else [ex]
        self.settled.add(slot)
        for older in self.waiting:
            if older == slot:
                break
            if older not in self.settled:
                self.overtaken.add(older)
        return self.waiting[slot], self._drain()

    def _drain(self) -> list[Exchange]:
        # A list, not a generator: most calls release nothing, and a list costs less to make.
        # What is released is the same objects the caller still fills in, so order of work holds.
        out = []
        waiting = self.waiting
        while waiting:
            slot = next(iter(waiting))
            if slot not in self.settled:
                if len(waiting) <= self.window:
                    break
                self._give_up(slot)
            self.settled.discard(slot)
            self.overtaken.discard(slot)
            out.append(waiting.pop(slot))
        return out

    def _give_up(self, slot: int) -> None:
        _unanswered(self.waiting[slot], OVERTAKEN)
        for k, s in list(self.open.items()):
            if s == slot:
                del self.open[k]

    def flush(self, why: str = TRACE_ENDED) -> Iterator[Exchange]:
        """End of trace (or a reset): whatever is still waiting has no answer in the trace."""
        self.open.clear()
        while self.waiting:
            slot, ex = self.waiting.popitem(last=False)
            if slot in self.overtaken:
                _unanswered(ex, f"{OVERTAKEN_BY} while it waited, and {why}")
            elif slot not in self.settled:
                _unanswered(ex, why)
            self.settled.discard(slot)
            yield ex
        self.overtaken.clear()


def _unanswered(ex: Exchange, why: str) -> None:
    ex.answered = False
    ex.unanswered = why
