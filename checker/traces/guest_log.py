"""The Linux guest driver's tracepoints (tracefs `virtio_gpu_cmd_queue` / `virtio_gpu_cmd_response`).

Every command's header and every response's type, no payloads. Linux 6.1 prints
`vdev= vq= name= type= flags= fence_id= ctx_id=`; newer kernels add `num_free=`
and `seqno=`, which pairs a response with its command. Without it, responses on a
queue pair with commands in order (the device answers a queue in order).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Optional

from virtgpu_conform.model.codec import Codec, Message

from .events import CONTROLQ, CURSORQ, Diagnostic, Event, Exchange, Where
from .pairing import Pairer

_EVENT = re.compile(
    r"\s*(?P<task>.*?)\s+\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?(?P<ts>\d+\.\d+):\s+virtio_gpu_cmd_(?P<dir>queue|response):\s+"
    r"vdev=(?P<vdev>-?\d{1,10}) vq=(?P<vq>\d{1,10}) name=(?P<name>\S*) type=0x(?P<type>[0-9a-fA-F]{1,8}) "
    r"flags=0x(?P<flags>[0-9a-fA-F]{1,8}) fence_id=(?P<fence>\d{1,20}) ctx_id=(?P<ctx>\d{1,10})"
    r"(?: num_free=(?P<free>\d{1,10}))?(?:,? seqno=(?P<seqno>\d{1,10}))?\s*"
)
# tracefs' header: fewer entries in the buffer than were written means the oldest were lost
_ENTRIES = re.compile(r"#\s*entries-in-buffer/entries-written:\s*(\d{1,20})/(\d{1,20})")
_MARKER = re.compile(r"\]\s+\S*\s*\d+\.\d+:\s+tracing_mark_write: ")
_QUEUES = {"control": CONTROLQ, "cursor": CURSORQ}
_VQ = {0: CONTROLQ, 1: CURSORQ}


def looks_guest(line: str) -> bool:
    return "virtio_gpu_cmd_queue:" in line or "virtio_gpu_cmd_response:" in line or line.startswith("# tracer:")


class GuestLog:
    def __init__(self, codec: Codec, path: str):
        self.codec, self.path = codec, path
        self.pairs = Pairer()
        self.fifo: dict[tuple, deque] = {}  # (vdev, vq) -> open commands in order, when there is no seqno
        self.count = 0
        self.cursor_answers = False  # some kernels trace no cursor-queue completions at all

    def read(self, lines: Iterable[tuple[int, str]]) -> Iterator[Event]:
        for no, line in lines:
            where = Where(self.path, no)
            text = line.rstrip("\n")
            if not text.strip():
                continue
            if text.lstrip().startswith("#"):
                lost = _ENTRIES.search(text)
                if lost and int(lost.group(1)) < int(lost.group(2)):
                    yield Diagnostic(
                        where,
                        "error",
                        "lost-events",
                        f"tracefs dropped the oldest "
                        f"{int(lost.group(2)) - int(lost.group(1))} events (its buffer was too small): "
                        "commands before this log began are not in it",
                    )
                continue
            m = _EVENT.fullmatch(text)
            if m is None and _MARKER.search(text):
                continue  # trace_marker lines a capture writes between its steps
            if m is None:
                yield _unusable(where, text)
                continue
            yield from (self._request(where, m) if m["dir"] == "queue" else self._response(where, m))
        yield from self.pairs.flush()

    def _queue(self, m) -> str:
        return _QUEUES.get(m["name"]) or _VQ.get(int(m["vq"]), CONTROLQ)

    def _header(self, m) -> dict:
        flags, fence = int(m["flags"], 16), int(m["fence"])
        return {"hdr.type": int(m["type"], 16), "hdr.flags": flags, "hdr.fence_id": fence, "hdr.ctx_id": int(m["ctx"])}

    def _request_key(self, m) -> tuple:
        dev = (m["vdev"], m["vq"])
        if m["seqno"] is not None:
            return dev + ("seqno", int(m["seqno"]))
        self.count += 1
        self.fifo.setdefault(dev, deque()).append(dev + (self.count,))
        return dev + (self.count,)

    def _response_key(self, m) -> Optional[tuple]:
        """The command a response answers: by seqno, else the oldest open one on its queue."""
        dev = (m["vdev"], m["vq"])
        if m["seqno"] is not None:
            return dev + ("seqno", int(m["seqno"]))
        open_ = self.fifo.get(dev)
        while open_ and not self.pairs.is_open(open_[0]):
            open_.popleft()  # given up on (never answered in time): not this response's command
        return open_.popleft() if open_ else None

    def _request(self, where: Where, m) -> Iterator[Event]:
        hdr = self._header(m)
        cmd = self.codec.commands.get(hdr["hdr.type"])
        if cmd is None:
            req = Message("request", None, None, hdr)
        else:
            # ring_idx is not printed; with the ring flag clear it does not matter to any rule
            req = self.codec.partial(cmd.name, hdr)
        ex = Exchange(where, req, queue=self._queue(m), ts=float(m["ts"]), source="guest")
        if ex.queue == CURSORQ and not self.cursor_answers:
            ex.evidence.append("the guest's tracepoints record no cursor-queue completions")
            yield ex
            return
        yield from self.pairs.request(self._request_key(m), ex)

    def _response(self, where: Where, m) -> Iterator[Event]:
        if self._queue(m) == CURSORQ:
            self.cursor_answers = True
        key = self._response_key(m)
        ex, drain = self.pairs.answer(key) if key is not None else (None, iter(()))
        if ex is None:
            yield Diagnostic(
                where,
                "warning",
                "unpaired",
                "a response with no command waiting for it "
                "(the buffer wrapped, or the trace starts mid-session); skipped",
            )
            return
        hdr = self._header(m)
        resp = self.codec.responses.get(hdr["hdr.type"])
        if resp is None:
            ex.resp = Message("response", None, None, hdr)
        else:
            ex.resp = self.codec.partial(resp.name, hdr)
        ex.resp_where = where
        yield from drain


def _unusable(where: Where, text: str) -> Diagnostic:
    if sum(ch.isprintable() for ch in text) < 0.9 * len(text):
        return Diagnostic(where, "error", "binary-junk", "binary data, not a tracepoint line; skipped")
    if "virtio_gpu_cmd_" in text:
        return Diagnostic(
            where,
            "error",
            "bad-event",
            "a virtio_gpu tracepoint line this tool cannot read "
            f"(truncated, or a kernel's new format): {text.strip()[:90]!r}; skipped",
        )
    return Diagnostic(where, "info", "unknown-event", f"not a virtio_gpu tracepoint: {text.strip()[:80]!r}; skipped")


def read(lines: Iterable[tuple[int, str]], path: str, codec: Codec) -> Iterator[Event]:
    return GuestLog(codec, path).read(lines)
