"""QEMU's trace log (`-trace 'virtio_gpu*' -trace virtqueue_pop -trace virtqueue_fill`, optionally `-d guest_errors`).

A command is the element QEMU pops from a virtqueue, the `virtio_gpu_cmd_*` event
QEMU logs while it handles the element, and the element's fill. The log carries
some request fields, never the header's flags or fence (2D path), never a response
code: the written length and the device's own complaints narrow the answer.

Traced as QEMU's documentation has it, `-trace 'virtio_gpu*'` alone, the log has the
command events and nothing else: the command stream in order, with its fields, and no
answers. Each event is then a command of its own, its answer unknown.

What the events prove (basis: QEMU's code, hw/display/virtio-gpu.c in 7.2 and 10.0, not the
spec): a `virtio_gpu_cmd_*` event is traced only after QEMU read the command's whole
request struct (a short one is refused before); the control queue is processed one
command at a time, in the order popped, each completed before the next (2D: no fence
waits; with virgl a fenced command's completion may come later, and in-order reasoning
about its answer does not hold); a fill's length is what the device wrote.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Optional

from virtgpu_conform.model.codec import Codec, Message

from .events import CONTROLQ, CURSORQ, RESET, Diagnostic, Event, Exchange, Reset, Session, Where
from .pairing import Pairer

# event -> (command, format string as QEMU 7.2 / 10.0 print it, the request fields its conversions fill)
EVENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "virtio_gpu_cmd_get_display_info": ("VIRTIO_GPU_CMD_GET_DISPLAY_INFO", "", ()),
    "virtio_gpu_cmd_get_edid": ("VIRTIO_GPU_CMD_GET_EDID", "scanout %d", ("scanout",)),
    "virtio_gpu_cmd_set_scanout": (
        "VIRTIO_GPU_CMD_SET_SCANOUT",
        "id %d, res 0x%x, w %d, h %d, x %d, y %d",
        ("scanout_id", "resource_id", "r.width", "r.height", "r.x", "r.y"),
    ),
    "virtio_gpu_cmd_set_scanout_blob": (
        "VIRTIO_GPU_CMD_SET_SCANOUT_BLOB",
        "id %d, res 0x%x, w %d, h %d, x %d, y %d",
        ("scanout_id", "resource_id", "r.width", "r.height", "r.x", "r.y"),
    ),
    "virtio_gpu_cmd_res_create_2d": (
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D",
        "res 0x%x, fmt 0x%x, w %d, h %d",
        ("resource_id", "format", "width", "height"),
    ),
    "virtio_gpu_cmd_res_create_3d": (
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D",
        "res 0x%x, fmt 0x%x, w %d, h %d, d %d",
        ("resource_id", "format", "width", "height", "depth"),
    ),
    "virtio_gpu_cmd_res_create_blob": (
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB",
        "res 0x%x, size %d",
        ("resource_id", "size"),
    ),
    "virtio_gpu_cmd_res_unref": ("VIRTIO_GPU_CMD_RESOURCE_UNREF", "res 0x%x", ("resource_id",)),
    "virtio_gpu_cmd_res_back_attach": ("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", "res 0x%x", ("resource_id",)),
    "virtio_gpu_cmd_res_back_detach": ("VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING", "res 0x%x", ("resource_id",)),
    "virtio_gpu_cmd_res_xfer_toh_2d": ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", "res 0x%x", ("resource_id",)),
    "virtio_gpu_cmd_res_xfer_toh_3d": ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D", "res 0x%x", ("resource_id",)),
    "virtio_gpu_cmd_res_xfer_fromh_3d": ("VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D", "res 0x%x", ("resource_id",)),
    "virtio_gpu_cmd_res_flush": (
        "VIRTIO_GPU_CMD_RESOURCE_FLUSH",
        "res 0x%x, w %d, h %d, x %d, y %d",
        ("resource_id", "r.width", "r.height", "r.x", "r.y"),
    ),
    "virtio_gpu_cmd_ctx_create": ("VIRTIO_GPU_CMD_CTX_CREATE", "ctx 0x%x, name %s", ("hdr.ctx_id", "debug_name")),
    "virtio_gpu_cmd_ctx_destroy": ("VIRTIO_GPU_CMD_CTX_DESTROY", "ctx 0x%x", ("hdr.ctx_id",)),
    "virtio_gpu_cmd_ctx_res_attach": (
        "VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE",
        "ctx 0x%x, res 0x%x",
        ("hdr.ctx_id", "resource_id"),
    ),
    "virtio_gpu_cmd_ctx_res_detach": (
        "VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE",
        "ctx 0x%x, res 0x%x",
        ("hdr.ctx_id", "resource_id"),
    ),
    "virtio_gpu_cmd_ctx_submit": ("VIRTIO_GPU_CMD_SUBMIT_3D", "ctx 0x%x, size %d", ("hdr.ctx_id", "size")),
    # %s is define, update or move; the command follows from it
    "virtio_gpu_update_cursor": (
        "VIRTIO_GPU_CMD_UPDATE_CURSOR",
        "scanout %d, x %d, y %d, %s, res 0x%x",
        ("pos.scanout_id", "pos.x", "pos.y", "@kind", "resource_id"),
    ),
}
# Events that say nothing the checker uses; known so that they are not reported as unknown.
QUIET = {
    "virtio_gpu_fence_resp",
    "virtio_gpu_fence_ctrl",
    "virtio_gpu_inc_inflight_fences",
    "virtio_gpu_dec_inflight_fences",
    "virtqueue_flush",
    "virtio_notify",
    "virtio_queue_notify",
    "virtio_notify_irqfd",
    "virtio_gpu_cmd_suspended",
    "virtqueue_alloc_element",
}

# Digit counts are capped: a number longer than any field is junk, not a reason to stall on int().
_CONV = {"%d": r"(-?\d{1,20})", "0x%x": r"0x([0-9a-fA-F]{1,16})", "%s": r"(.*?)"}
_LINE = re.compile(r"(?:(\d+)@(\d+\.\d+):)?([a-z][a-z0-9_]*)(?: (.*))?")
_COMPLAINT = re.compile(r"(?:\d+@\d+\.\d+:)?(virtio_gpu\w*|vhost_user_gpu\w*|virtio_\w+): (.*)")
_POP = re.compile(r"vq (0x[0-9a-f]{1,16}|\(nil\)) elem (0x[0-9a-f]{1,16}|\(nil\)) in_num \d{1,10} out_num \d{1,10}")
_FILL = re.compile(r"vq (0x[0-9a-f]{1,16}|\(nil\)) elem (0x[0-9a-f]{1,16}|\(nil\)) len (\d{1,10}) idx \d{1,10}")
_NO_MATCH = (None, None, None, None)  # _LINE's groups for a line it does not match
# The lines nearly every command is made of, in one match: a whole pop or fill line (what _LINE
# and then _POP or _FILL accept of it), or a virtio_gpu_* event split as _LINE splits it. A
# line this does not match takes that longer way (and fails there the same way it always did).
_HOT = re.compile(
    r"(?:\d+@(\d+\.\d+):)?(?:virtqueue_(?:"
    r"pop vq (0x[0-9a-f]{1,16}|\(nil\)) elem (0x[0-9a-f]{1,16}|\(nil\)) in_num \d{1,10} out_num \d{1,10}"
    r"|fill vq (0x[0-9a-f]{1,16}|\(nil\)) elem (0x[0-9a-f]{1,16}|\(nil\)) len (\d{1,10}) idx \d{1,10})"
    r"|(virtio_gpu_[a-z0-9_]*)(?: (.*))?)"
)
# Over a block of lines (reader.blocks): a pop, its command event and its fill on three lines
# in a row, or one line _HOT takes. A line with whitespace at either end is left to the
# per-line path, which strips it, so every line matched here reads as it does there; so is a
# line with digits other than ASCII ones (\d takes those too, and is slower to test).
_BLOCK = re.compile(
    (
        r"^(?:(?:\d+@(\d+\.\d+):)?virtqueue_pop vq (0x[0-9a-f]{1,16}|\(nil\)) elem (0x[0-9a-f]{1,16}|\(nil\))"
        r" in_num \d{1,10} out_num \d{1,10}\n"
        r"(?:\d+@(\d+\.\d+):)?(virtio_gpu_[a-z0-9_]*)(?: (.*))?(?<!\s)\n"
        r"(?:\d+@\d+\.\d+:)?virtqueue_fill vq \2 elem \3 len (\d{1,10}) idx \d{1,10}"
        r"|" + _HOT.pattern + r")(?<!\s)$"
    ).replace(r"\d", "[0-9]"),
    re.MULTILINE,
)
_COMMANDS = 4096  # command events whose reading is remembered (a display workload repeats its flushes)
_STATUS = re.compile(r"vdev (0x[0-9a-f]{1,16}|\(nil\)) val (\d{1,10})")
# Complaints that do not mean the command was refused: a short response buffer (the answer
# was written, cut to the driver's buffer) and the cursor queue, which answers nothing.
_NOT_REFUSALS = ("virtio_gpu_ctrl_response", "virtio_gpu_handle_cursor", "update_cursor")


def _compile(fmt: str) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"0x%x|%d|%s", fmt):
        out += re.escape(fmt[pos : m.start()]) + _CONV[m.group()]
        pos = m.end()
    return re.compile(out + re.escape(fmt[pos:]) + r"\s*")


PATTERNS = {name: _compile(fmt) for name, (_, fmt, _) in EVENTS.items()}
CONVERSIONS = {name: re.findall(r"0x%x|%d|%s", fmt) for name, (_, fmt, _) in EVENTS.items()}
# Per event, how each argument becomes a field: (key, base), base 16 or 10, or None for the
# two that are not integers (the cursor's kind, a context's name). Built once: every line uses it.
_ARGS = {
    name: tuple(
        (k, None if k in ("@kind", "debug_name") else 16 if c == "0x%x" else 10)
        for k, c in zip(keys, CONVERSIONS[name])
    )
    for name, (_, _, keys) in EVENTS.items()
}


def looks_qemu(line: str) -> bool:
    m = _LINE.fullmatch(line.strip())
    return m is not None and (
        m.group(3) in EVENTS
        or m.group(3) in QUIET
        or m.group(3) in ("virtqueue_pop", "virtqueue_fill", "virtio_gpu_features")
    )


class _Elem:
    """What is known of one popped element while QEMU handles it."""

    __slots__ = ("ex", "described", "vq")

    def __init__(self, ex: Exchange, vq: str):
        self.ex, self.described, self.vq = ex, False, vq


class QemuLog:
    def __init__(self, codec: Codec, path: str):
        self.codec, self.path = codec, path
        self.pairs = Pairer()
        self.elems: dict[tuple[str, str], _Elem] = {}  # (vq, elem) -> element being handled
        self.queues: dict[str, str] = {}  # vq pointer -> controlq | cursorq, learned from the events
        self.last: Optional[_Elem] = None  # the element the latest command event described
        self.errors = codec.ir.error_responses
        self.cursor_commands = frozenset(c.name for c in codec.ir.commands if c.queue == CURSORQ)
        self.by_size: dict[int, frozenset[str]] = {}
        self.unknown_events: set[str] = set()
        self.widths: dict[str, dict[str, int]] = {}  # command -> bits of its fields
        self.messages: dict[tuple[str, str], Message] = {}  # (event, arguments) -> the message they describe
        self.wrote: dict[int, str] = {}  # written length -> its line of evidence
        self.lengths: dict[str, tuple] = {}  # a fill's length as logged -> (length, resp_types, evidence)
        self.popped = False  # a virtqueue_pop was seen: commands are elements, answers are fills
        # command events and no pops: each event a command, its answer unknown (None: just found so)
        self.gpu_only: Optional[bool] = False

    # --- the answer a written length allows -------------------------------
    def types_for_length(self, n: int) -> frozenset[str]:
        hit = self.by_size.get(n)
        if hit is None:
            out = set()
            for r in self.codec.ir.responses:
                lay = self.codec.layout(r.name)
                if n == lay.size or (lay.flexible and n >= lay.size):
                    out.add(r.name)
            hit = self.by_size[n] = frozenset(out)
        return hit

    def read(self, lines: Iterable[tuple[int, str]]) -> Iterator[Event]:
        yield Session(Where(self.path, 1), producer="qemu trace log")
        blocks = getattr(lines, "blocks", None)
        events = (
            self._blocks(blocks()) if blocks is not None else (e for no, line in lines for e in self._one(no, line))
        )
        # Each command's number on its queue since the device's reset: what the guest's seqno is.
        counts: dict[Optional[str], int] = {}
        for ev in itertools.chain(events, self.pairs.flush()):
            if type(ev) is Exchange:
                n = counts[ev.queue] = counts.get(ev.queue, 0) + 1
                ev.seqno = n
                if self.gpu_only is None:  # the first command of a log without pops: say what it lacks
                    self.gpu_only = True
                    yield Diagnostic(
                        ev.where,
                        "info",
                        "no-answers",
                        NO_ANSWERS + ": the device's answers are "
                        "unknown; record with -trace virtqueue_pop -trace virtqueue_fill to see them",
                    )
            elif type(ev) is Reset:
                counts = {}
            yield ev

    def _blocks(self, blocks: Iterable[tuple[int, str]]) -> Iterator[Event]:
        """The events of blocks of whole lines (number of the first, text): what `_one` makes of each line."""
        path, queues = self.path, self.queues
        elems, waiting, messages, lengths = self.elems, self.pairs.waiting, self.messages, self.lengths
        for no, text in blocks:
            pos = 0
            for m in _BLOCK.finditer(text):
                start = m.start()
                if start != pos:  # lines the pattern does not take: one by one
                    for line in _split(text[pos:start]):
                        yield from self._one(no, line)
                        no += 1
                pos = m.end() + 1
                tp, vq, elem, tc, name, args, n, ts, pvq, pelem, fvq, felem, fn, hname, hargs = m.groups()
                if vq is not None:
                    # A pop, its command event and its fill with nothing else in flight: the exchange
                    # the three lines make one by one, without booking the element.
                    msg = queue = None
                    if not elems and not waiting:
                        msg = messages.get((name, args or ""))
                        if msg is None and name in EVENTS:
                            try:
                                msg = self._message(name, args or "")
                            except ValueError:
                                pass  # the lines one by one say why
                    if type(msg) is Message:
                        known = queues.get(vq)
                        if msg.name in self.cursor_commands:
                            queue = CURSORQ
                        elif known is None or known == CONTROLQ:  # not popped from the cursor queue
                            queue = CONTROLQ
                    if queue is None:
                        pop, cmd, fill = _split(text[start:pos])
                        yield from self._one(no, pop)
                        yield from self._one(no + 1, cmd)
                        yield from self._one(no + 2, fill)
                        no += 3
                        continue
                    if known != queue:
                        queues[vq] = queue
                    length = lengths.get(n)
                    if length is None:
                        k = int(n)
                        if len(lengths) >= 256:  # lengths are few; a broken log may show many
                            lengths.clear()
                        length = lengths[n] = (k, self.types_for_length(k), self._wrote(k))
                    k, types, said = length
                    assert msg is not None, "a queue is found for a Message only"
                    nobody = queue == CURSORQ and k == 0
                    # Positional, in the field order of Exchange (where, req, queue, resp, resp_types,
                    # resp_where, answered, unanswered, no_body, evidence, ts, source): matching
                    # keywords costs a third of the call.
                    ex = Exchange(
                        Where(path, no + 1),
                        msg,
                        queue,
                        None,
                        None if nobody else types,
                        Where(path, no + 2),
                        True,
                        "",
                        nobody,
                        [] if nobody else [said],
                        (float(tc) if tc else None) or (float(tp) if tp else None),
                        "qemu",
                    )
                    self.last = None  # what the three lines leave it: an element no longer in flight
                    yield ex
                    no += 3
                    continue
                try:
                    if pvq is not None:
                        yield from self._popped(Where(path, no), pvq, pelem, float(ts) if ts else None)
                    elif fvq is not None:
                        yield from self._filled(Where(path, no), fvq, felem, int(fn))
                    elif hname in EVENTS:
                        ev = self._command(Where(path, no), hname, hargs or "", float(ts) if ts else None)
                        if ev is not None:
                            yield ev
                    else:
                        yield from self._one(no, text[start:pos])
                except ValueError as exc:
                    yield Diagnostic(Where(path, no), "error", "bad-number", f"unusable number ({exc}); skipped")
                no += 1
            if pos < len(text):
                for line in _split(text[pos:]):
                    yield from self._one(no, line)
                    no += 1

    def _one(self, no: int, line: str) -> Iterator[Event]:
        path = self.path
        try:
            # The three events nearly every line carries are dispatched here; _line does the rest.
            text = line.strip()
            h = _HOT.fullmatch(text)
            if h is not None:
                ts, pvq, pelem, fvq, felem, n, name, args = h.groups()
                if pvq is not None:
                    yield from self._popped(Where(path, no), pvq, pelem, float(ts) if ts else None)
                    return
                if fvq is not None:
                    yield from self._filled(Where(path, no), fvq, felem, int(n))
                    return
                if name in EVENTS:
                    ev = self._command(Where(path, no), name, args or "", float(ts) if ts else None)
                    if ev is not None:
                        yield ev
                    return
            m = _LINE.fullmatch(text)
            _, ts, name, args = m.groups() if m else _NO_MATCH
            if name == "virtqueue_pop":
                yield from self._pop(Where(path, no), args or "", float(ts) if ts else None)
            elif name == "virtqueue_fill":
                yield from self._fill(Where(path, no), args or "")
            elif name in EVENTS:
                ev = self._command(Where(path, no), name, args or "", float(ts) if ts else None)
                if ev is not None:
                    yield ev
            else:
                yield from self._line(no, line.rstrip("\n"), m)
        except ValueError as exc:
            yield Diagnostic(Where(self.path, no), "error", "bad-number", f"unusable number ({exc}); skipped")

    def _line(self, no: int, line: str, m: Optional[re.Match]) -> Iterator[Event]:
        """Every line but the hot events `read` dispatches itself."""
        where = Where(self.path, no)
        text = line.strip()
        if not text:
            return
        name = m.group(3) if m else None
        args = (m.group(4) or "") if m else ""
        if name == "virtio_gpu_features":  # feature negotiation: the device was just reset
            yield from self._reset(where)
        elif name == "virtio_set_status":
            s = _STATUS.fullmatch(args)
            if s and s.group(2) == "0":
                yield from self._reset(where)
        elif name in QUIET:
            return
        elif c := _COMPLAINT.fullmatch(text):
            yield from self._complaint(where, c.group(1), c.group(2))
        elif name is not None and ("virtio" in name or "vhost" in name):  # m matched
            if name not in self.unknown_events:
                self.unknown_events.add(name)
                yield Diagnostic(
                    where,
                    "info",
                    "unknown-event",
                    f"trace event {name} is not one the checker reads; it and its repeats are skipped",
                )
        else:
            yield _junk(where, line)

    # --- elements ----------------------------------------------------------
    def _pop(self, where: Where, args: str, ts: Optional[float]) -> Iterator[Event]:
        p = _POP.fullmatch(args)
        if not p:
            yield _bad(where, "virtqueue_pop", args)
            return
        yield from self._popped(where, p.group(1), p.group(2), ts)

    def _popped(self, where: Where, vq: str, elem: str, ts: Optional[float]) -> Iterable[Exchange]:
        self.popped = True
        queue = self.queues.get(vq)
        if queue is None and not self.queues:
            # The driver's first command is on controlq; the cursor queue shows itself by its event.
            queue = self.queues[vq] = CONTROLQ
        ex = Exchange(where, _UNDESCRIBED, queue=queue, ts=ts, source="qemu")
        elems, key = self.elems, (vq, elem)
        if len(elems) > 2 * self.pairs.window:  # fills that never come: forget the oldest
            elems.pop(next(iter(elems)))
        elems.pop(key, None)  # a reused pointer goes to the back: oldest-first stays true
        elems[key] = _Elem(ex, vq)
        return self.pairs.request(key, ex)

    def _fill(self, where: Where, args: str) -> Iterator[Event]:
        f = _FILL.fullmatch(args)
        if not f:
            yield _bad(where, "virtqueue_fill", args)
            return
        yield from self._filled(where, f.group(1), f.group(2), int(f.group(3)))

    def _filled(self, where: Where, vq: str, elem: str, n: int) -> Iterable[Event]:
        key = (vq, elem)
        el = self.elems.pop(key, None)
        ex, drain = self.pairs.answer(key)
        if ex is None or el is None:
            return [
                Diagnostic(
                    where,
                    "warning",
                    "unpaired",
                    f"virtqueue_fill of element {key[1]} that was never "
                    "popped in this trace (it starts mid-session?); skipped",
                )
            ]
        ex.resp_where = where
        if ex.queue == CURSORQ and n == 0:
            ex.no_body = True
        else:
            allowed = self.types_for_length(n)
            ex.resp_types = allowed if ex.resp_types is None else ex.resp_types & allowed
            ex.evidence.append(self._wrote(n))
        if not el.described and self.queues.get(el.vq, CONTROLQ) == CONTROLQ:
            ex.untraced = NO_EVENT
        return drain

    def _wrote(self, n: int) -> str:
        said = self.wrote.get(n)
        if said is None:
            said = self.wrote[n] = f"the device wrote {n} bytes"
            if len(self.wrote) > 256:  # lengths are few; a broken log may show many
                self.wrote.clear()
                self.wrote[n] = said
        return said

    def _oldest_undescribed_control(self) -> Optional[_Elem]:
        for el in self.elems.values():
            if not el.described and self.queues.get(el.vq, CONTROLQ) == CONTROLQ:
                return el
        return None

    def _command(self, where: Where, name: str, args: str, ts: Optional[float]) -> Optional[Event]:
        """Describes the element the event belongs to; returns a diagnostic when it cannot."""
        msg = self._message(name, args)
        if type(msg) is not Message:
            return Diagnostic(where, *msg)
        if msg.name in self.cursor_commands:
            el = self._newest_unfilled()  # QEMU logs the cursor event right after popping it
            if el is not None and el.described:
                el = None  # that pop's line was lost: do not overwrite another command
            if el is not None and self.queues.get(el.vq) != CURSORQ:
                self.queues[el.vq] = CURSORQ
                el.ex.queue = CURSORQ
        else:
            el = self._oldest_undescribed_control()
            if el is not None and el.vq not in self.queues:
                self.queues[el.vq] = CONTROLQ
                el.ex.queue = CONTROLQ
        if el is None and not self.popped:
            return self._alone(where, msg, ts)
        if el is None:
            return Diagnostic(
                where,
                "warning",
                "unpaired",
                f"{name} with no popped element it could belong to "
                "(the trace starts mid-command, or lost the pop's line); skipped",
            )
        el.described = True
        el.ex.req = msg  # shared by every event with these arguments: messages are never changed
        el.ex.where, el.ex.ts = where, ts or el.ex.ts
        self.last = el
        return None

    def _alone(self, where: Where, msg: Message, ts: Optional[float]) -> Exchange:
        """A command event in a log without virtqueue_pop/fill: a command of its own, its answer unknown
        (on the cursor queue the device writes nothing anyway)."""
        if not self.gpu_only:
            self.gpu_only = None
        cursor = msg.name in self.cursor_commands
        ex = Exchange(where, msg, queue=CURSORQ if cursor else CONTROLQ, ts=ts, source="qemu", no_body=cursor)
        if not cursor:
            ex.evidence.append(NO_ANSWERS)
            ex.unseen = UNSEEN
        return ex

    def _message(self, name: str, args: str):
        """`_describe`, remembered: a display workload repeats the same few events."""
        msg = self.messages.get((name, args))
        if msg is None:
            msg = self._describe(name, args)
            if type(msg) is Message and len(args) <= 256:  # bounded memory (a context's name may be long)
                if len(self.messages) >= _COMMANDS:
                    self.messages.clear()
                self.messages[(name, args)] = msg
        return msg

    def _describe(self, name: str, args: str):
        """The message an event's arguments describe, or (level, code, text) of why they do not."""
        cmd = EVENTS[name][0]
        m = PATTERNS[name].fullmatch(args)
        if not m:
            return _bad_text(name, args)
        fields: dict = {}
        for (key, base), raw in zip(_ARGS[name], m.groups()):
            if base is not None:
                fields[key] = int(raw, base)
            elif key == "@kind":
                if raw == "move":
                    cmd = "VIRTIO_GPU_CMD_MOVE_CURSOR"
                elif raw not in ("define", "update"):
                    return _bad_text(name, args)
            else:
                fields[key] = raw.encode("utf-8", "replace")
        bad = self._out_of_range(cmd, fields)
        if bad:
            return "error", "bad-number", f"{name}: {bad}; the event is skipped"
        return self.codec.partial(cmd, fields)

    def _newest_unfilled(self) -> Optional[_Elem]:
        return next(reversed(self.elems.values()), None) if self.elems else None

    def _out_of_range(self, cmd: str, fields: dict) -> str:
        widths = self.widths.get(cmd)
        if widths is None:
            widths = self.widths[cmd] = self.codec.layout(cmd).widths
        for k, v in fields.items():
            if isinstance(v, int) and (v < 0 or v >> widths.get(k, 64)):
                return f"{k}={v} does not fit the field's {widths.get(k, 64)} bits"
        return ""

    def _complaint(self, where: Where, func: str, text: str) -> Iterator[Event]:
        if func.startswith(_NOT_REFUSALS) or "cursor" in func:
            yield Diagnostic(where, "info", "complaint", f"device complaint that refuses no command: {func}: {text}")
            return
        el = self.last if self.last is not None and self.last in self.elems.values() else None
        el = el or self._oldest_undescribed_control()
        if el is None:
            yield Diagnostic(where, "info", "complaint", f"device complaint outside any command: {func}: {text}")
            return
        el.ex.evidence.append(f"QEMU complained at {where}: {func}: {text}")
        if el.ex.queue != CURSORQ:
            el.ex.resp_types = self.errors if el.ex.resp_types is None else el.ex.resp_types & self.errors

    def _reset(self, where: Where) -> Iterator[Event]:
        yield from self.pairs.flush(RESET)
        self.elems.clear()
        self.last = None
        yield Reset(where, known_start=True)


NO_ANSWERS = "QEMU's log shows no answers (traced without virtqueue_pop and virtqueue_fill)"

# The request of a popped element no event described yet: shared, as messages are never changed.
_UNDESCRIBED = Message("request", None, None, {})


def _split(text: str) -> list[str]:
    """Whole lines with their newlines, split where reading the file by lines splits them (only at "\\n")."""
    lines = text.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out


# QEMU (7.2 to 10.0) has no trace event for these: their elements are popped and filled, unnamed.
UNTRACED = ("GET_CAPSET_INFO", "GET_CAPSET", "RESOURCE_ASSIGN_UUID", "RESOURCE_MAP_BLOB", "RESOURCE_UNMAP_BLOB")
UNSEEN = frozenset(f"VIRTIO_GPU_CMD_{n}" for n in UNTRACED)  # what a log without pops never shows
NO_EVENT = (
    f"a controlq element answered with no virtio_gpu_cmd_* event: QEMU traces none for {', '.join(UNTRACED)}, "
    "so its command is unknown in this log (the guest's tracepoints checked with it name it)"
)


def _bad(where: Where, event: str, args: str) -> Diagnostic:
    return Diagnostic(where, *_bad_text(event, args))


def _bad_text(event: str, args: str) -> tuple[str, str, str]:
    return (
        "error",
        "bad-event",
        (
            f"{event} with arguments {args[:80]!r} that do not match its format "
            "(a truncated line, or another QEMU version's format); skipped"
        ),
    )


def _junk(where: Where, line: str) -> Diagnostic:
    printable = sum(ch.isprintable() for ch in line) / max(1, len(line))
    if printable < 0.9:
        return Diagnostic(where, "error", "binary-junk", "binary data, not a trace line; skipped")
    return Diagnostic(where, "warning", "unknown-line", f"not a QEMU trace event: {line[:80]!r}; skipped")


def read(lines: Iterable[tuple[int, str]], path: str, codec: Codec) -> Iterator[Event]:
    return QemuLog(codec, path).read(lines)
