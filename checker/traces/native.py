"""The native trace format: NDJSON, one session record then one record per request, response and reset.

Version 1 (documented in README.md, "Native trace format"):
  {"kind": "session", "format": "virtgpu-conform-trace", "version": 1, "spec": "1.4",
   "features": [...], "num_scanouts": 1, "capsets": [[id, max_version, max_size]],
   "blob_alignment": 0, "host_visible": 0, "from_reset": true, "producer": "..."}
  {"kind": "request", "id": 7, "queue": "controlq", "ts": 0.5, "bytes": "hex"}
  {"kind": "request", "id": 7, "type": "VIRTIO_GPU_CMD_RESOURCE_UNREF", "fields": {"resource_id": 3}}
  {"kind": "response", "id": 7, "bytes": "hex"}   or   "type"/"fields" as above
  {"kind": "no-response", "id": 7, "reason": "timeout"}
  {"kind": "reset"}   or   {"kind": "reset", "how": ["pending", "early_notify"]}
  {"kind": "migration", "status": "done"}   (the device moved to a new process here)
  {"kind": "config", "offset": 4, "bytes": "hex", "before": "hex", "read": "hex"}   (a write to
   the device configuration at that byte offset; the configuration read right before and after
   it, both optional)
  {"kind": "host-visible", "offset": 4096, "bytes": "hex", "length": 16, "read": "hex"}   (the
   driver's write of `bytes` into the host-visible region at that offset, then its read of `length`
   bytes there, `read` what it read; either may be empty)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Optional

from virtgpu_conform.model.codec import Codec, Message, Value

from .events import (
    CONTROLQ,
    CURSORQ,
    NO_ANSWER,
    RESET,
    ConfigWrite,
    Diagnostic,
    Event,
    Exchange,
    Reset,
    Session,
    TraceError,
    Where,
)
from .pairing import Pairer

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

FORMAT, VERSION = "virtgpu-conform-trace", 1
QUEUES = (CONTROLQ, CURSORQ)
_SESSION_INTS = ("num_scanouts", "num_capsets", "blob_alignment", "host_visible")


def looks_native(first_line: str) -> bool:
    return first_line.lstrip().startswith("{") and f'"{FORMAT}"' in first_line


class _Bad(ValueError):
    pass


_BATCH = 256  # records parsed by one json.loads call: a third of the cost of one call per line
# The request and response records most traces are made of, as Writer writes them (or with
# json.dumps' default spacing): read without the JSON parser. What the pattern accepts means
# the same as what json.loads would make of it (a string without escapes or control
# characters is its own text; an id without leading zeros is an integer); anything else,
# other keys or key orders included, goes to the parser.
_PLAIN = re.compile(
    r'\{"kind": ?"(request|response)", ?"id": ?(0|[1-9][0-9]{0,17})'
    r'(?:, ?"queue": ?"(controlq|cursorq)")?, ?"bytes": ?"([^"\\\x00-\x1f]*)"\}'
)


def _parsed(batch: list[tuple[int, str]]) -> Iterator[tuple[int, str, object]]:
    """(line number, text, record or None) for lines parsed as one JSON array; a batch that does
    not come out as one object per line gives None for each (parsed alone later), so a broken
    line is still reported at its own number."""
    try:
        recs = json.loads("[" + ",".join(t for _, t in batch) + "]")
    except (ValueError, RecursionError):
        recs = None
    if recs is None or len(recs) != len(batch) or not all(type(r) is dict for r in recs):
        recs = [None] * len(batch)
    for (no, text), rec in zip(batch, recs):
        yield no, text, rec


_ID = re.compile(r"0|[1-9][0-9]{0,17}").fullmatch  # the ids _PLAIN accepts


class _Plain:
    """(id, [kind, queue, bytes, message or None]) of a plain record, or None. Records differ
    mostly in their id: what surrounds it is remembered (bounded) once _PLAIN has accepted it
    with some id, and then any id _PLAIN accepts in its place makes a record _PLAIN accepts
    just the same. The message is filled in by the reader when it first decodes the bytes."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], list] = {}

    def __call__(self, text: str) -> Optional[tuple[int, list]]:
        head, _, tail = text.partition('"id":')
        rid, _, rest = tail.partition(",")
        hit = self.seen.get((head, rest))
        if hit is not None and _ID(rid):
            return int(rid), hit
        m = _PLAIN.fullmatch(text)
        if m is None:
            return None
        kind, got, queue, raw = m.groups()
        hit = [kind, queue, raw, None]
        if got == rid and len(rest) <= 1024:  # compact spacing, and bounded memory
            if len(self.seen) >= 4096:
                self.seen.clear()
            self.seen[(head, rest)] = hit
        return int(got), hit


def read(lines: Iterable[tuple[int, str]], path: str, codec: Codec) -> Iterator[Event]:
    """Events from numbered lines; a record it cannot use becomes a diagnostic and reading goes on.

    Plain records (nearly every line) are handled here as they come; other lines wait in a
    batch for one json.loads call, and go first when a plain record follows them."""
    pairs = Pairer()
    decode = _Decoder(codec)
    plain = _Plain()
    batch: list[tuple[int, str]] = []
    for no, line in lines:
        text = line.strip()
        if not text:
            continue
        rec = plain(text)
        if rec is None:
            batch.append((no, text))
            if len(batch) < _BATCH:
                continue
        if batch:
            for bno, btext, brec in _parsed(batch):
                yield from _record(bno, btext, brec, Where(path, bno), pairs, decode)
            batch = []
        if rec is None:
            continue
        # What _record does with the same record, without building its dict.
        where = Where(path, no)
        rid, hit = rec
        kind, queue, raw, msg = hit
        try:
            if kind == "request":
                if msg is None:
                    msg = hit[3] = decode.plain("request", raw, queue)
                new = Exchange(where, msg, queue=queue, source="native")
                if rid in pairs.open:
                    yield Diagnostic(
                        where,
                        "warning",
                        "duplicate-id",
                        f"id {rid!r} is reused while the "
                        "request under it is unanswered; that one is taken as not seen answered",
                    )
                yield from pairs.request(rid, new)
                continue
            ex, drain = pairs.answer(rid)
            if ex is None:
                yield Diagnostic(
                    where, "warning", "unpaired", f"response for id {rid!r} with no request waiting for it; skipped"
                )
                continue
            ex.resp_where = where
            if raw == "" and ex.queue == CURSORQ:
                ex.no_body = True
            else:
                if msg is None:
                    msg = hit[3] = decode.plain("response", raw, queue)
                ex.resp = msg
            yield from drain
        except _Bad as exc:  # bytes that are not hex
            yield Diagnostic(where, "error", "bad-record", f"{exc}; skipped")
    for bno, btext, brec in _parsed(batch) if batch else ():
        yield from _record(bno, btext, brec, Where(path, bno), pairs, decode)
    yield from pairs.flush()


class Records:
    """Events from records already in hand, one at a time, as `read` makes them of the same records'
    lines: for a writer's own records (the fuzz oracle), which JSON would give back unchanged
    (strings, integers, lists of integers), so reading the text back would only cost time."""

    def __init__(self, path: str, codec: Codec):
        self.path, self.pairs, self.decode = path, Pairer(), _Decoder(codec)

    def feed(self, no: int, rec: dict) -> Iterator[Event]:
        return _record(no, "", rec, Where(self.path, no), self.pairs, self.decode)


def _record(no: int, text: str, rec, where: Where, pairs: Pairer, decode: _Decoder) -> Iterator[Event]:
    """Events from one record (None: the line is still to be parsed)."""
    try:
        if rec is None:
            rec = json.loads(text)
        if not isinstance(rec, dict):
            raise _Bad("a record is a JSON object")
        kind = rec.get("kind")
        if kind == "request":
            new = Exchange(
                where, decode(rec, "request"), queue=_queue(rec), ts=_ts(rec), source="native", resp_room=_room(rec)
            )
            rid = _id(rec)
            if pairs.is_open(rid):
                yield Diagnostic(
                    where,
                    "warning",
                    "duplicate-id",
                    f"id {rec['id']!r} is reused while the "
                    "request under it is unanswered; that one is taken as not seen answered",
                )
            yield from pairs.request(rid, new)
        elif kind in ("response", "no-response"):
            ex, drain = pairs.answer(_id(rec))
            if ex is None:
                yield Diagnostic(
                    where,
                    "warning",
                    "unpaired",
                    f"{kind} for id {rec.get('id')!r} with no request waiting for it; skipped",
                )
                return
            ex.resp_where = where
            if kind == "response" and rec.get("bytes") == "" and ex.queue == CURSORQ:
                ex.no_body = True  # completed with nothing written: how cursor commands are answered
            elif kind == "response":
                ex.resp = decode(rec, "response")
            else:
                ex.answered, ex.unanswered = False, NO_ANSWER
                ex.evidence.append(f"no response: {rec.get('reason', 'not given')}")
            yield from drain
        elif kind == "reset":
            yield from pairs.flush(RESET)
            yield Reset(where, known_start=True)
        elif kind == "migration":
            return  # the device moved to a new process between two chains: its state is what it was
        elif kind == "config":
            yield _config(rec, where)  # chains still open go on: a config write does not touch them
        elif kind == "host-visible":
            _host_visible(rec)  # memory, not the device's state: nothing for `check` to judge
        elif kind == "session":
            yield _session(rec, where)
        else:
            raise _Bad(
                f"unknown record kind {kind!r} (request, response, no-response, reset, migration, config, "
                "host-visible, session)"
            )
    except json.JSONDecodeError as exc:
        yield Diagnostic(where, "error", "bad-json", f"not a JSON record ({exc.msg} at column {exc.colno}); skipped")
    except _Bad as exc:
        yield Diagnostic(where, "error", "bad-record", f"{exc}; skipped")
    except (ValueError, RecursionError, OverflowError) as exc:  # numbers or nesting past Python's limits
        yield Diagnostic(where, "error", "bad-record", f"unusable record ({type(exc).__name__}); skipped")


def config_write(rec: dict, where: Where) -> ConfigWrite:
    """A `config` record's write, read as `check` reads it (for fuzz --replay); TraceError when it is not one."""
    try:
        return _config(rec, where)
    except _Bad as exc:
        raise TraceError(where, str(exc)) from None


def _config(rec: dict, where: Where) -> ConfigWrite:
    offset, data = rec.get("offset"), _hex(rec, "bytes")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 1 << 16 or not data:
        raise _Bad("a config record needs 'offset' (a byte offset) and 'bytes' (what was written, hex)")
    return ConfigWrite(where, offset, data, _hex(rec, "read"), _hex(rec, "before"))


def host_visible(rec: dict, where: Where) -> tuple[int, bytes, int, Optional[bytes]]:
    """A `host-visible` record's (offset, bytes written, bytes asked to read, bytes read) (for fuzz
    --replay); TraceError when it is not one."""
    try:
        return _host_visible(rec)
    except _Bad as exc:
        raise TraceError(where, str(exc)) from None


def _host_visible(rec: dict) -> tuple[int, bytes, int, Optional[bytes]]:
    offset, length = rec.get("offset"), rec.get("length", 0)
    if not (
        isinstance(offset, int)
        and isinstance(length, int)
        and not isinstance(offset, bool)
        and not isinstance(length, bool)
        and 0 <= offset < 1 << 64
        and 0 <= length < 1 << 32
    ):
        raise _Bad("a host-visible record needs 'offset' (u64) and 'length' (bytes read, u32), numbers from 0")
    return offset, _hex(rec, "bytes") or b"", length, _hex(rec, "read")


def _hex(rec: dict, key: str) -> Optional[bytes]:
    raw = rec.get(key)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _Bad(f"{key!r} is a hex string")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise _Bad(f"{key!r} is not hex") from None


def _id(rec: dict):
    rid = rec.get("id")
    if not isinstance(rid, (int, str)) or isinstance(rid, bool):
        raise _Bad("'id' (an integer or string pairing a request with its response) is missing")
    return rid


def _queue(rec: dict) -> Optional[str]:
    q = rec.get("queue")
    if q is not None and q not in QUEUES:
        raise _Bad(f"queue {q!r} is not one of {', '.join(QUEUES)}")
    return q


def _room(rec: dict) -> Optional[int]:
    framing = rec.get("framing")
    if framing is None:
        return None
    ins = framing.get("ins") if isinstance(framing, dict) else None
    if not isinstance(ins, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in ins):
        raise _Bad('\'framing\' is {"outs": [lengths], "ins": [sizes]} of non-negative integers')
    return sum(ins)


def _ts(rec: dict) -> Optional[float]:
    ts = rec.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return None
    try:
        return float(ts)
    except OverflowError:
        return None


class _Decoder:
    """Messages from records. Traces repeat the same bytes (every OK_NODATA, every identical
    flush), so decoded byte strings are kept, bounded; messages are never changed once made."""

    def __init__(self, codec: Codec):
        self.codec = codec
        self.seen: dict[tuple, Message] = {}

    def __call__(self, rec: dict, kind: str) -> Message:
        raw = rec.get("bytes")
        if raw is None:
            return _message(self.codec, rec, kind)
        return self.plain(kind, raw, rec.get("queue"), rec)

    def plain(self, kind: str, raw: str, queue: Optional[str], rec: Optional[dict] = None) -> Message:
        """The message of a record's "bytes" (and "queue"), which is all that decides it."""
        key = (kind, raw, queue)
        msg = self.seen.get(key)
        if msg is None:
            if len(self.seen) >= 4096:
                self.seen.clear()
            if rec is None:
                rec = {"bytes": raw, "queue": queue}
            msg = self.seen[key] = _message(self.codec, rec, kind)
        return msg


def _message(codec: Codec, rec: dict, kind: str) -> Message:
    if "bytes" in rec:
        try:
            data = bytes.fromhex(rec["bytes"])
        except (TypeError, ValueError):
            raise _Bad("'bytes' is not a hex string") from None
        if kind == "request":
            return codec.decode_request(data, rec.get("queue"))
        return codec.decode_response(data)
    name, fields = rec.get("type"), rec.get("fields") or {}
    if not isinstance(fields, dict):
        raise _Bad("'fields' is an object of field name to integer")
    if isinstance(name, int):
        table = codec.commands if kind == "request" else codec.responses
        item = table.get(name)
        name = item.name if item else None
    if not isinstance(name, str) or name not in codec.by_name:
        raise _Bad(f"a {kind} needs 'bytes' or a known 'type' (got {rec.get('type')!r})")
    clean: dict[str, Value] = {}
    for k, v in fields.items():
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            if isinstance(v, str) and k in ("debug_name", "uuid", "edid"):
                clean[k] = v.encode("utf-8", "replace")
                continue
            raise _Bad(f"field {k}={v!r} is not a non-negative integer")
        clean[k] = v
    widths = codec.layout(name).widths
    for k, v in clean.items():
        if isinstance(v, int) and k in widths and v >> widths[k]:
            raise _Bad(f"field {k}={v} does not fit in {widths[k]} bits")
    return codec.partial(name, clean, _entries(codec, name, rec.get("entries")))


def _entries(codec: Codec, name: str, entries) -> Optional[list]:
    if entries is None:
        return None
    s = codec.structs[codec.layout(name).name]
    if not s.trailing:
        raise _Bad(f"{name} has no trailing entries")
    keys = codec.layouts[s.trailing.element].keys
    if not isinstance(entries, list) or not all(
        isinstance(e, dict)
        and all(isinstance(e.get(k, 0), int) and not isinstance(e.get(k, 0), bool) and e.get(k, 0) >= 0 for k in keys)
        for e in entries
    ):
        raise _Bad(f"'entries' is a list of objects with integer {', '.join(keys)}")
    return [{k: e.get(k, 0) for k in keys} for e in entries]


def _session(rec: dict, where: Where) -> Session:
    if rec.get("format") != FORMAT:
        raise _Bad(f'a session record has "format": "{FORMAT}"')
    if rec.get("version") != VERSION:
        raise _Bad(f"trace format version {rec.get('version')!r}; this tool reads version {VERSION}")
    vals = {}
    for k in _SESSION_INTS:
        v = rec.get(k)
        if v is not None and (not isinstance(v, int) or v < 0):
            raise _Bad(f"session {k}={v!r} is not a non-negative integer")
        vals[k] = v
    feats = rec.get("features")
    caps = rec.get("capsets")
    if feats is not None and (not isinstance(feats, list) or not all(isinstance(f, str) for f in feats)):
        raise _Bad("session 'features' is a list of feature names")
    if caps is not None and (
        not isinstance(caps, list)
        or not all(isinstance(c, list) and len(c) == 3 and all(isinstance(x, int) and x >= 0 for x in c) for c in caps)
    ):
        raise _Bad("session 'capsets' is a list of [id, max_version, max_size]")
    return Session(
        where,
        spec=rec.get("spec"),
        features=None if feats is None else frozenset(feats),
        capsets=None if caps is None else tuple(tuple(c) for c in caps),
        from_reset=rec.get("from_reset"),
        producer=rec.get("producer"),
        **vals,
    )


class Writer:
    """Writes a native trace: what the fuzzer saves, and what other tools can emit."""

    def __init__(self, out: SupportsWrite[str], on_record=None, **session):
        """`on_record(rec)`: called with each record as it is written, for a reader in the same process."""
        self.out, self.on_record = out, on_record
        rec = {"kind": "session", "format": FORMAT, "version": VERSION, **session}
        if isinstance(rec.get("features"), (set, frozenset)):
            rec["features"] = sorted(rec["features"])
        self._write(rec)
        self._id = 0

    def _write(self, rec: dict) -> None:
        self.out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        if self.on_record is not None:
            self.on_record(rec)

    def request(
        self,
        data: bytes,
        queue: str = CONTROLQ,
        ts: Optional[float] = None,
        framing: Optional[tuple[list[int], list[int]]] = None,
        together: Optional[int] = None,
    ) -> int:
        """`framing`: how the bytes were split over driver-readable descriptors, and the sizes of
        the device-writable ones, when that is part of what is being tested. `together`: requests
        with the same number were made available to the device at once (a replay sends them so)."""
        self._id += 1
        rec: dict = {"kind": "request", "id": self._id, "queue": queue, "bytes": data.hex()}
        if framing is not None:
            rec["framing"] = {"outs": list(framing[0]), "ins": list(framing[1])}
        if together is not None:
            rec["together"] = together
        if ts is not None:
            rec["ts"] = ts
        self._write(rec)
        return self._id

    def response(self, rid: int, data: bytes, ts: Optional[float] = None) -> None:
        rec = {"kind": "response", "id": rid, "bytes": data.hex()}
        if ts is not None:
            rec["ts"] = ts
        self._write(rec)

    def no_response(self, rid: int, reason: str) -> None:
        self._write({"kind": "no-response", "id": rid, "reason": reason})

    def reset(self, how: Sequence[str] = ()) -> None:
        """A device reset; `how`: what came with it (pending: a chain kicked with it; early_notify:
        the queues kicked before they were set up again)."""
        self._write({"kind": "reset", **({"how": list(how)} if how else {})})

    def config(self, offset: int, data: bytes, before: Optional[bytes] = None, read: Optional[bytes] = None) -> None:
        """A driver write to the device configuration, and the configuration read before and after it."""
        rec: dict = {"kind": "config", "offset": offset, "bytes": data.hex()}
        for key, value in (("before", before), ("read", read)):
            if value is not None:
                rec[key] = value.hex()
        self._write(rec)

    def host_visible(self, offset: int, data: bytes, length: int, read: Optional[bytes]) -> None:
        """The driver's write into the host-visible region at `offset`, then its read of `length` bytes
        there (`read`: what it read; None where nothing was read)."""
        rec: dict = {"kind": "host-visible", "offset": offset, "bytes": data.hex(), "length": length}
        if read is not None:
            rec["read"] = read.hex()
        self._write(rec)

    def migration(self, status: str = "done", detail: str = "") -> None:
        """The device was saved and restored in a new process here (`status` done, or failed)."""
        self._write({"kind": "migration", "status": status, **({"detail": detail} if detail else {})})
