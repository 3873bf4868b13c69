"""Trace files in: reading lines safely, telling the formats apart, and merging sources of one session."""

from __future__ import annotations

import os
import select
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Optional

from virtgpu_conform.model.codec import Codec

from . import guest_log, native, qemu_log
from .events import CONTROLQ, Diagnostic, Event, Exchange, Session, TraceError, Where

FORMATS = ("native", "qemu", "guest")
READERS = {"native": native.read, "qemu": qemu_log.read, "guest": guest_log.read}
_SNIFF = 64  # lines looked at to tell the format
_LOOKAHEAD = 16  # exchanges searched ahead when two sources disagree about a command
_BLOCK = 1 << 18  # bytes read at a time for a reader that takes blocks of lines
_BACKLOG = 1024  # the other source's exchanges held for a queue the leading source has not reached


class Lines:
    """Lines of a file as text, numbered from 1; undecodable bytes become U+FFFD, never an exception.

    Iterating gives (number, line) with its "\\n". `blocks` gives the same text as
    (number of its first line, many whole lines): a reader that matches one pattern
    over a block skips the per-line cost, and both ways read the file lazily.
    """

    def __init__(self, path: str, progress: Optional[Callable[[int], None]] = None):
        self.path, self.progress = path, progress

    def _open(self):
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise TraceError(Where(self.path, 0), exc.strerror or str(exc), "check the path") from None

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return _lines(self._open()) if self.progress is None else self._counted()

    def _counted(self) -> Iterator[tuple[int, str]]:
        progress = self.progress
        assert progress is not None, "read this way only with a progress callback"
        done = 0
        for no, text in _lines(self._open()):
            done += len(text)  # characters: bytes for the ASCII of trace files
            if no % 4096 == 0:
                progress(done)
                done = 0
            yield no, text

    def blocks(self) -> Iterator[tuple[int, str]]:
        # Cut at a newline, a block decodes to what its lines decode to one by one: a newline
        # is never part of a multi-byte sequence, so it ends a broken one in both readings.
        no, rest = 1, []
        with self._open() as f:
            while True:
                chunk = f.read(_BLOCK)
                if not chunk:
                    break
                cut = chunk.rfind(b"\n") + 1
                if not cut:  # a line longer than a block: read on, as reading it by lines would
                    rest.append(chunk)
                    continue
                rest.append(chunk[:cut])
                raw = b"".join(rest)
                rest = [chunk[cut:]]
                if self.progress is not None:
                    self.progress(len(raw))
                yield no, _text(raw)
                no += raw.count(b"\n")
            raw = b"".join(rest)
            if raw:
                yield no, _text(raw)


def _lines(f) -> Iterator[tuple[int, str]]:
    with f:
        for no, raw in enumerate(f, 1):
            text = raw.decode("utf-8", "replace")
            if "\x00" in text:
                text = text.replace("\x00", "\ufffd")
            yield no, text


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class Follow:
    """The lines of a file that is still being written (a running VM's QEMU log) or of a pipe
    (tracefs' trace_pipe), numbered from 1, as they come: at the end of what is there it waits,
    until `stop()` says the user is done; then a last line without its newline ends it."""

    def __init__(
        self, path: str, stop: Callable[[], bool], poll: float = 0.1, tick: Optional[Callable[[], None]] = None
    ):
        self.path, self.stop, self.poll, self.tick = path, stop, poll, tick

    def __iter__(self) -> Iterator[tuple[int, str]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise TraceError(Where(self.path, 0), exc.strerror or str(exc), "check the path") from None
        no, rest = 0, b""
        regular, fed = os.path.isfile(self.path), False
        try:
            while True:
                empty = False  # a pipe with a writer and nothing in it yet
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    chunk, empty = b"", True
                if chunk:
                    fed = True
                    rest += chunk
                    *whole, rest = rest.split(b"\n")
                    for raw in whole:
                        no += 1
                        yield no, _text(raw + b"\n")
                    if self.tick is not None:
                        self.tick()
                    continue
                # The end of a pipe whose writer had written and went away is the end; a file grows on.
                if self.stop() or (not regular and not empty and fed):
                    if rest:
                        yield no + 1, _text(rest)
                    return
                if self.tick is not None:  # waiting: the caller may show where it stands
                    self.tick()
                if empty:
                    select.select([fd], [], [], self.poll)
                else:  # a file at its end, or a FIFO no writer has opened yet: select would not wait
                    time.sleep(self.poll)
        finally:
            os.close(fd)


def numbered_lines(path: str, progress: Optional[Callable[[int], None]] = None) -> Lines:
    """Lines of a file as text, numbered from 1; `progress` hears how many characters were read."""
    return Lines(path, progress)


def detect(path: str) -> str:
    """The format of a trace file from its first lines."""
    votes = {"native": 0, "qemu": 0, "guest": 0}
    seen = 0
    for _, line in numbered_lines(path):
        if not line.strip():
            continue
        seen += 1
        if native.looks_native(line):
            return "native"
        if guest_log.looks_guest(line):
            votes["guest"] += 1
        elif qemu_log.looks_qemu(line):
            votes["qemu"] += 1
        if seen >= _SNIFF:
            break
    best = max(votes, key=lambda k: votes[k])
    if votes[best] == 0:
        raise TraceError(
            Where(path, 1),
            "not a trace this tool knows (no QEMU trace event, guest tracepoint or "
            "native session record in its first lines)",
            "give --format native|qemu|guest if it is one; see README.md, 'Trace formats'",
        )
    return best


def events(path: str, fmt: Optional[str], codec: Codec) -> Iterator[Event]:
    fmt = fmt or detect(path)
    yield from READERS[fmt](numbered_lines(path), path, codec)


def merged(primary: Iterable[Event], secondary: Iterable[Event]) -> Iterator[Event]:
    """One session seen from two sides (QEMU's log and the guest's tracepoints): each fills the other's gaps.

    The primary's order is the device's processing order. Where both sides number their
    commands (QEMU's count of a queue's commands since the device's reset, the guest's
    seqno), a command pairs with the one of the same number on its queue: a guest log that
    starts late (its tracepoints came on after the driver's first commands) is aligned, and
    said to start late. Where the guest has no seqno (Linux 6.1), the secondary's exchanges
    on the same queue are matched in order, and a short look-ahead resynchronises when both
    name a command and they differ.
    """
    sec = iter(secondary)
    waiting: dict[str, deque] = {}
    ended = False
    first: dict[str, int] = {}  # queue -> the secondary's first number on it
    # queue -> the secondary's commands the primary cannot show, so far: the primary's numbers run behind by as many
    shift: dict[str, int] = {}

    def pull(queue: str, need: int) -> Iterator[Event]:
        nonlocal ended
        buf = waiting.setdefault(queue, deque())
        while len(buf) < need and not ended:
            ev = next(sec, None)
            if ev is None:
                ended = True
            elif isinstance(ev, Exchange):
                held = waiting.setdefault(ev.queue or CONTROLQ, deque())
                held.append(ev)
                if len(held) > _BACKLOG:  # the leading source never shows this queue: do not hoard
                    yield held.popleft()
            elif not isinstance(ev, Session):
                yield ev  # diagnostics pass through at once

    for ev in primary:
        if not isinstance(ev, Exchange):
            yield ev
            continue
        q = ev.queue or CONTROLQ
        yield from pull(q, 1)
        buf = waiting[q]
        # The secondary's commands of kinds this source never shows have no counterpart here: theirs alone.
        while buf and buf[0].req.name in ev.unseen:
            shift[q] = shift.get(q, 0) + 1
            yield buf.popleft()
            if not buf:
                yield from pull(q, 1)
        if not buf:
            yield ev
            continue
        if ev.seqno is not None and buf[0].seqno is not None:
            n = ev.seqno + shift.get(q, 0)
            first.setdefault(q, buf[0].seqno)
            # The secondary's commands numbered below this one have no counterpart here.
            while buf and buf[0].seqno is not None and buf[0].seqno < n:
                g = buf.popleft()
                if g.req.name in ev.unseen:
                    shift[q] = shift.get(q, 0) + 1
                    n += 1
                else:
                    yield _unmatched(g)
                yield g
                if not buf:
                    yield from pull(q, 1)
            if buf and buf[0].seqno == n:
                if _agree(ev, buf[0]):
                    yield _combine(ev, buf.popleft())
                    continue
                g = buf.popleft()
                yield Diagnostic(
                    ev.where,
                    "error",
                    "mismatch",
                    f"{ev.req.name} is {g.req.name} at {g.where}, "
                    f"command {n} of the {q} queue in both sources; each is checked alone",
                )
                yield ev
                yield g
                continue
            if n < first[q]:
                yield ev  # before the secondary began (it says so itself): this source's alone
                continue
            yield _unmatched(ev)
            yield ev
            continue
        if _agree(ev, buf[0]):
            yield _combine(ev, buf.popleft())
            continue
        yield from pull(q, _LOOKAHEAD)
        skip = next((i for i, g in enumerate(buf) if _agree(ev, g)), None)
        if skip is None:
            yield _unmatched(ev)
            yield ev
            continue
        for _ in range(skip):
            g = buf.popleft()
            yield _unmatched(g)
            yield g
        yield _combine(ev, buf.popleft())
    for buf in waiting.values():
        yield from buf
    for ev in sec:
        if not isinstance(ev, Session):
            yield ev


def _unmatched(ex: Exchange) -> Diagnostic:
    return Diagnostic(
        ex.where,
        "error",
        "unmatched",
        f"{ex.req.name or 'this command'} has no counterpart in the other source of the session; "
        "checked from this source alone",
    )


def _agree(a: Exchange, b: Exchange) -> bool:
    return a.req.name is None or b.req.name is None or a.req.name == b.req.name


def _combine(a: Exchange, b: Exchange) -> Exchange:
    """a's fields win; b fills what a leaves unknown (or does not have at all)."""
    base, other = (a, b) if a.req.name else (b, a)
    fields = dict(base.req.fields)
    for k, v in other.req.fields.items():
        if fields.get(k) is None and (k in fields or not base.req.fields):
            fields[k] = v
    base.req = replace(base.req, fields=fields)  # messages are shared (decoded once), never changed
    if base.resp is None:
        base.resp = other.resp
    if base.resp_types is None:
        base.resp_types = other.resp_types
    elif other.resp_types is not None:
        base.resp_types &= other.resp_types
    base.answered = base.answered or other.answered  # either side seeing the answer is enough
    base.no_body = base.no_body or other.no_body
    base.evidence += other.evidence
    base.resp_where = base.resp_where or other.resp_where
    base.also.append(other.where)
    base.source = "merged"
    if base is not a:
        base.where, base.also = a.where, [b.where]
    return base
