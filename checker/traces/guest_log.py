"""The Linux guest driver's tracepoints (tracefs `virtio_gpu_cmd_queue` / `virtio_gpu_cmd_response`).

Every command's header and every response's type, no payloads. Linux 6.1 prints
`vdev= vq= name= type= flags= fence_id= ctx_id=`; newer kernels (6.12) add `num_free=`
and `seqno=`, the command's number on its queue, which pairs a response with its command
and numbers the commands as the device saw them. Without it, responses on a queue pair
with commands in order (the device answers a queue in order).

What the lines prove (basis: the Linux driver's code, not the spec): a queue line is a
command the driver put on the queue, with the header it wrote; a response line on the
control queue is the header the device wrote into the response buffer. On the cursor
queue the device writes nothing (it has no device-writable buffer), so 6.12's response
line there, printing the driver's zeroed buffer, says only that the command completed.
6.1 traces no cursor completions at all.
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
_NAMES = {CONTROLQ: "control", CURSORQ: "cursor"}


def looks_guest(line: str) -> bool:
    return "virtio_gpu_cmd_queue:" in line or "virtio_gpu_cmd_response:" in line or line.startswith("# tracer:")


class GuestLog:
    def __init__(self, codec: Codec, path: str):
        self.codec, self.path = codec, path
        self.pairs = Pairer()
        self.fifo: dict[tuple, deque] = {}  # (vdev, vq) -> open commands in order, when there is no seqno
        self.count = 0
        self.cursor_answers = False  # some kernels trace no cursor-queue completions at all
        self.first_seqno: dict[str, int] = {}  # queue -> the seqno its first command carried
        self.messages: dict[tuple, Message] = {}  # (request|response, the header as printed) -> its message
        self.fence_flag = codec.ir.constant("VIRTIO_GPU_FLAG_FENCE")
        self.fences: dict[tuple, tuple] = {}  # open fenced command (no seqno) -> (fence_id, ctx_id)
        self.ambiguous = False  # the last response was paired by a guess

    def read(self, lines: Iterable[tuple[int, str]]) -> Iterator[Event]:
        event, path = _EVENT.fullmatch, self.path
        for no, line in lines:
            m = event(line)  # (the pattern's trailing \s* takes the newline)
            if m is not None:
                if m["dir"] == "queue":
                    yield from self._request(Where(path, no), m)
                else:
                    yield from self._response(Where(path, no), m)
                continue
            where = Where(path, no)
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
            if _MARKER.search(text):
                continue  # trace_marker lines a capture writes between its steps
            yield _unusable(where, text)
        yield from self.pairs.flush()

    def _queue(self, m) -> str:
        return _QUEUES.get(m["name"]) or _VQ.get(int(m["vq"]), CONTROLQ)

    def _header(self, m) -> dict:
        flags, fence = int(m["flags"], 16), int(m["fence"])
        return {"hdr.type": int(m["type"], 16), "hdr.flags": flags, "hdr.fence_id": fence, "hdr.ctx_id": int(m["ctx"])}

    def _message(self, kind: str, m) -> Message:
        """The request or response a line's header describes, decoded once per distinct header (a
        display workload repeats the same few): messages are shared and never changed."""
        key = (kind, m["type"], m["flags"], m["fence"], m["ctx"])
        msg = self.messages.get(key)
        if msg is None:
            hdr = self._header(m)
            if kind == "request":
                cmd = self.codec.commands.get(hdr["hdr.type"])
                # ring_idx is not printed; with the ring flag clear it does not matter to any rule
                msg = Message("request", None, None, hdr) if cmd is None else self.codec.partial(cmd.name, hdr)
            else:
                resp = self.codec.responses.get(hdr["hdr.type"])
                msg = Message("response", None, None, hdr) if resp is None else self.codec.partial(resp.name, hdr)
            if len(self.messages) >= 4096:  # bounded: fence ids make headers many
                self.messages.clear()
            self.messages[key] = msg
        return msg

    def _request_key(self, m) -> tuple:
        dev = (m["vdev"], m["vq"])
        if m["seqno"] is not None:
            return dev + ("seqno", int(m["seqno"]))
        self.count += 1
        key = dev + (self.count,)
        self.fifo.setdefault(dev, deque()).append(key)
        if int(m["flags"], 16) & self.fence_flag:
            self.fences[key] = (int(m["fence"]), m["ctx"])
        return key

    def _response_key(self, m) -> Optional[tuple]:
        """The command a response answers: by seqno; else, without it (Linux 6.1), a fenced answer's by
        its fence (a device may complete a fenced command after later ones: QEMU's GL device does, when
        the fence signals) and any other the oldest open unfenced command on its queue."""
        dev = (m["vdev"], m["vq"])
        if m["seqno"] is not None:
            return dev + ("seqno", int(m["seqno"]))
        open_ = self.fifo.get(dev)
        while open_ and not self.pairs.is_open(open_[0]):
            open_.popleft()  # given up on (never answered in time): not this response's command
        if not open_:
            return None
        if int(m["flags"], 16) & self.fence_flag:
            fence = (int(m["fence"]), m["ctx"])
            key = next((k for k in open_ if self.fences.get(k) == fence and self.pairs.is_open(k)), None)
        else:
            key = next((k for k in open_ if k not in self.fences and self.pairs.is_open(k)), None)
        if key is None:  # no command fits (a device that echoed no fence, or a wrong one): in order, then
            key = open_[0]
            if any(k in self.fences for k in open_) or int(m["flags"], 16) & self.fence_flag:
                self.ambiguous = True  # which command this answers is a guess: said by the caller
        open_.remove(key)
        self.fences.pop(key, None)
        return key

    def _request(self, where: Where, m) -> Iterator[Event]:
        ex = Exchange(where, self._message("request", m), queue=self._queue(m), ts=float(m["ts"]), source="guest")
        if m["seqno"] is not None:
            assert ex.queue is not None, "a queue line has its queue"
            ex.seqno = int(m["seqno"])
            if ex.queue not in self.first_seqno:
                self.first_seqno[ex.queue] = ex.seqno
                if ex.seqno > 1:
                    yield Diagnostic(
                        where,
                        "info",
                        "late-start",
                        f"the log starts at the {_NAMES[ex.queue]} queue's command {ex.seqno} (seqno={ex.seqno}): the "
                        f"{ex.seqno - 1} before it were queued before the tracepoints were on",
                    )
        elif ex.queue == CURSORQ and not self.cursor_answers:
            # Linux 6.1 traces no completion on the cursor queue: nothing will pair this one.
            ex.evidence.append("the guest's tracepoints record no cursor-queue completions")
            yield ex
            return
        yield from self.pairs.request(self._request_key(m), ex)

    def _response(self, where: Where, m) -> Iterator[Event]:
        if self._queue(m) == CURSORQ:
            self.cursor_answers = True
        key = self._response_key(m)
        if self.ambiguous:
            self.ambiguous = False
            # An error: what rests on this pairing (the state after it) is then possible, not definite.
            yield Diagnostic(
                where,
                "error",
                "ambiguous-pairing",
                "no open command fits this answer's fence (a device that echoed none, or another one): "
                "paired with the oldest open command, which may be the wrong one",
            )
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
        ex.resp_where = where
        if ex.queue == CURSORQ:
            # The device writes nothing on the cursor queue: the line prints the driver's own zeroed
            # buffer, and proves only that the command completed.
            ex.no_body = True
            yield from drain
            return
        ex.resp = self._message("response", m)
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
