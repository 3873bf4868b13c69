"""Encode and decode every virtio-gpu request and response, derived from the SpecIR layouts."""

from __future__ import annotations

import functools
import struct as _struct
from dataclasses import dataclass, field
from typing import Any, Optional, Union, cast

from virtgpu_conform.spec.ir import Command, Response, SpecIR, Struct

Value = Union[int, bytes, None]
# Fields as code that knows the struct reads them: each leaf is its layout's type (an int, bytes for a
# byte array) or None where unknown; which is which is the SpecIR's, beyond the type checker.
Leaves = dict[str, Any]

HDR = "virtio_gpu_ctrl_hdr"

# The one wire fact the layouts do not carry: SUBMIT_3D's opaque command stream
# follows the struct and its length is the `size` field (header and spec text agree
# informally; no struct member describes it).
PAYLOAD_LENGTH = {"virtio_gpu_cmd_submit": "size"}

_PRIM = {1: "B", 2: "H", 4: "I", 8: "Q"}
_BYTES = {"u8", "char", "uint8_t", "__u8"}


@dataclass(frozen=True)
class Problem:
    """Something wrong with the bytes themselves; the checker turns it into a finding."""

    code: str  # short-buffer | unknown-type | wrong-queue | trailing-bytes | nonzero-padding | entries-truncated | payload-truncated
    offset: int
    detail: str

    def __str__(self) -> str:
        return f"{self.code} at byte {self.offset}: {self.detail}"


@dataclass
class Message:
    """A decoded request or response: what could be read, and what was wrong."""

    kind: str  # request | response
    name: Optional[str]  # VIRTIO_GPU_CMD_* or VIRTIO_GPU_RESP_*; None for an unknown type
    struct: Optional[str]
    fields: dict[str, Value]  # flat: "hdr.flags", "r.x", "strides.2"; None = not present in the bytes
    entries: list[dict[str, Value]] = field(default_factory=list)  # trailing elements
    payload: bytes = b""  # SUBMIT_3D stream, capset data
    problems: list[Problem] = field(default_factory=list)
    size: int = 0  # bytes read


@dataclass(frozen=True)
class Layout:
    """A struct flattened to its leaves, with one struct.Struct to read them all."""

    name: str
    size: int
    keys: tuple[str, ...]
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    is_bytes: tuple[bool, ...]
    packer: _struct.Struct
    flexible: Optional[str]  # key of a trailing flexible byte array
    widths: dict[str, int]  # bits of each integer leaf

    def size_of(self, key: str) -> int:
        return self.sizes[self.keys.index(key)]

    @functools.cached_property
    def padding(self) -> tuple[str, ...]:
        return tuple(k for k in self.keys if k.rsplit(".", 1)[-1] == "padding" or ".padding." in f".{k}.")


def _leaves(ir: SpecIR, s: Struct, prefix: str, base: int):
    for f in s.fields:
        key = prefix + f.name
        if f.struct:
            inner = ir.struct(f.struct)
            if f.count is None:
                yield from _leaves(ir, inner, key + ".", base + f.offset)
            else:
                for i in range(f.count):
                    yield from _leaves(ir, inner, f"{key}.{i}.", base + f.offset + i * f.elem_size)
        elif f.count == 0:
            yield key, base + f.offset, 0, "flex"
        elif f.count is not None and f.wire_type in _BYTES:
            yield key, base + f.offset, f.size, "bytes"
        elif f.count is not None:
            for i in range(f.count):
                yield f"{key}.{i}", base + f.offset + i * f.elem_size, f.elem_size, "int"
        else:
            yield key, base + f.offset, f.size, "int"


def layout_of(ir: SpecIR, s: Struct) -> Layout:
    keys, offsets, sizes, is_bytes, widths = [], [], [], [], {}
    fmt, pos, flexible = "<", 0, None
    # A bare header (OK_NODATA, the errors) reads as "hdr.*" like the header inside every other message.
    for key, off, size, kind in _leaves(ir, s, "hdr." if s.name == HDR else "", 0):
        if kind == "flex":
            flexible = key
            continue
        if off > pos:
            fmt += f"{off - pos}x"
        fmt += f"{size}s" if kind == "bytes" else _PRIM[size]
        pos = off + size
        keys.append(key)
        offsets.append(off)
        sizes.append(size)
        is_bytes.append(kind == "bytes")
        if kind == "int":
            widths[key] = size * 8
    if s.size > pos:
        fmt += f"{s.size - pos}x"
    return Layout(
        s.name,
        s.size,
        tuple(keys),
        tuple(offsets),
        tuple(sizes),
        tuple(is_bytes),
        _struct.Struct(fmt),
        flexible,
        widths,
    )


def _too_wide(lay: Layout, records: list[dict]) -> str:
    """The integer leaves of `lay` that some record gives a value its wire width cannot hold."""
    return ", ".join(
        k
        for k in lay.keys
        if any(isinstance(r.get(k), int) and not 0 <= r[k] < 1 << lay.widths.get(k, 0) for r in records)
    )


class Codec:
    """Bytes <-> Message for one SpecIR. Decoding never raises on bad bytes."""

    def __init__(self, ir: SpecIR):
        self.ir = ir
        self.layouts = {s.name: layout_of(ir, s) for s in ir.structs}
        self.commands: dict[int, Command] = {c.code: c for c in ir.commands}
        self.responses: dict[int, Response] = {r.code: r for r in ir.responses}
        self.by_name: dict[str, Union[Command, Response]] = {c.name: c for c in ir.commands}
        self.by_name.update({r.name: r for r in ir.responses})
        self.hdr = self.layouts[HDR]
        self.config = layout_of(ir, ir.config)
        self.structs = {s.name: s for s in ir.structs}
        self._partials: dict[str, tuple] = {}  # name -> (kind, struct, every leaf unknown, type code)

    # --- decoding --------------------------------------------------------
    def decode_request(self, data: bytes, queue: Optional[str] = None) -> Message:
        return self._decode("request", bytes(data), queue)

    def decode_response(self, data: bytes) -> Message:
        return self._decode("response", bytes(data), None)

    def _decode(self, kind: str, data: bytes, queue: Optional[str]) -> Message:
        problems: list[Problem] = []
        table = self.commands if kind == "request" else self.responses
        code = int.from_bytes(data[:4], "little") if len(data) >= 4 else None
        item = table.get(code) if code is not None else None
        if item is None:
            fields = self._read(self.hdr, data, problems)
            if code is not None:  # a short buffer was recorded by _read
                problems.append(Problem("unknown-type", 0, f"{code:#x} is not a virtio-gpu {kind} type"))
            return Message(kind, None, None, fields, problems=problems, size=len(data))
        # item is a Command exactly when kind is "request": the table is the kind's
        sname = item.request if isinstance(item, Command) else item.struct
        if isinstance(item, Command) and queue and item.queue != queue:
            problems.append(Problem("wrong-queue", 0, f"{item.name} belongs on {item.queue}, not {queue}"))
        lay = self.layouts[sname]
        fields = self._read(lay, data, problems)
        msg = Message(kind, item.name, sname, fields, problems=problems, size=len(data))
        pos = lay.size
        s = self.structs[sname]
        if s.trailing:
            pos = self._entries(msg, s, data, pos)
        if sname in PAYLOAD_LENGTH:
            want = cast("Optional[int]", fields.get(PAYLOAD_LENGTH[sname]))  # an integer leaf
            if want is not None:
                msg.payload = data[pos : pos + want]
                if len(msg.payload) < want:
                    problems.append(
                        Problem(
                            "payload-truncated",
                            pos,
                            f"{PAYLOAD_LENGTH[sname]}={want} but {len(msg.payload)} bytes follow",
                        )
                    )
                pos += len(msg.payload)
        elif lay.flexible:
            msg.payload, pos = data[pos:], max(pos, len(data))
        if len(data) > pos:
            problems.append(Problem("trailing-bytes", pos, f"{len(data) - pos} bytes after the {sname} message"))
        for key in lay.padding:
            v = fields.get(key)
            if v and (not isinstance(v, bytes) or v.count(0) != len(v)):
                i = lay.keys.index(key)
                problems.append(Problem("nonzero-padding", lay.offsets[i], f"{key} is {v!r}, not zero"))
        return msg

    def _read(self, lay: Layout, data: bytes, problems: list[Problem]) -> dict[str, Value]:
        if len(data) >= lay.size:
            return dict(zip(lay.keys, lay.packer.unpack_from(data)))
        problems.append(Problem("short-buffer", len(data), f"{lay.name} needs {lay.size} bytes, got {len(data)}"))
        vals = lay.packer.unpack(data + bytes(lay.size - len(data)))
        # Leaves the buffer does not cover stay unknown (None), never a made-up zero.
        return {
            k: (v if off + sz <= len(data) else None) for k, v, off, sz in zip(lay.keys, vals, lay.offsets, lay.sizes)
        }

    def _entries(self, msg: Message, s: Struct, data: bytes, pos: int) -> int:
        trailing = s.trailing
        assert trailing is not None, "called for a struct with trailing entries"
        elem = self.layouts[trailing.element]
        count = cast("Optional[int]", msg.fields.get(trailing.count_field))  # an integer leaf
        if count is None:
            return pos
        room = max(0, len(data) - pos) // elem.size
        if count > room:
            msg.problems.append(
                Problem("entries-truncated", pos, f"{trailing.count_field}={count} but only {room} entries fit")
            )
            return len(data)  # the leftover bytes are the torn entry, not trailing garbage
        for i in range(min(count, room)):
            msg.entries.append(dict(zip(elem.keys, elem.packer.unpack_from(data, pos + i * elem.size))))
        return pos + min(count, room) * elem.size

    def partial(self, name: str, fields: dict[str, Value], entries: Optional[list] = None) -> Message:
        """A message from what a trace names of it: the leaves it does not name stay unknown (None)."""
        hit = self._partials.get(name)
        if hit is None:
            item = self.by_name[name]
            kind = "request" if isinstance(item, Command) else "response"
            sname = item.request if isinstance(item, Command) else item.struct
            unknown = dict.fromkeys(self.layouts[sname].keys)
            unknown["hdr.type"] = item.code
            hit = self._partials[name] = (kind, sname, unknown, item.code)
        kind, sname, unknown, code = hit
        # Importers call this once per command: copying a template beats rebuilding it key by key.
        vals = unknown.copy()
        for k, v in fields.items():
            if k in vals:
                vals[k] = v
        vals["hdr.type"] = code
        return Message(kind, name, sname, vals, entries=list(entries or []))

    # --- encoding --------------------------------------------------------
    def encode(
        self,
        name: str,
        fields: Optional[dict[str, Value]] = None,
        entries: Optional[list[dict[str, Value]]] = None,
        payload: bytes = b"",
    ) -> bytes:
        """Bytes for a command or response; missing leaves are zero, the type and counts are filled in."""
        item = self.by_name[name]
        sname = item.request if isinstance(item, Command) else item.struct
        lay = self.layouts[sname]
        vals = dict(fields or {})
        vals.setdefault("hdr.type", item.code)
        s = self.ir.struct(sname)
        if s.trailing and entries is not None:
            vals.setdefault(s.trailing.count_field, len(entries))
        if sname in PAYLOAD_LENGTH:
            vals.setdefault(PAYLOAD_LENGTH[sname], len(payload))
        try:
            out = lay.packer.pack(*[(vals.get(k) or (b"" if b else 0)) for k, b in zip(lay.keys, lay.is_bytes)])
        except _struct.error:
            raise ValueError(f"{name}: {_too_wide(lay, [vals]) or 'a field'} does not fit its wire width") from None
        if s.trailing and entries:
            elem = self.layouts[s.trailing.element]
            try:
                out += b"".join(elem.packer.pack(*[(e.get(k) or 0) for k in elem.keys]) for e in entries)
            except _struct.error:
                raise ValueError(
                    f"{name}: entry {_too_wide(elem, entries) or 'field'} does not fit its wire width"
                ) from None
        return out + bytes(payload)

    def decode_config(self, data: bytes) -> dict[str, Value]:
        """The device configuration as a driver read it; fields past the end of `data` (an older
        device's shorter config) are None."""
        return self._read(self.config, bytes(data), [])

    def written_config(self, offset: int, data: bytes) -> dict[str, Value]:
        """The configuration's fields as a driver write of `data` at byte `offset` sets them (the
        bytes it does not write read as zero)."""
        buf = bytearray(self.config.size)
        buf[offset : offset + len(data)] = data[: max(0, self.config.size - offset)]
        return self.decode_config(bytes(buf))

    def encode_config(self, values: dict[str, Value]) -> bytes:
        """The device configuration's bytes; fields not given are zero."""
        return self.config.packer.pack(*[values.get(k) or 0 for k in self.config.keys])

    def layout(self, name: str) -> Layout:
        """The layout of a struct, or of a command's request / a response's struct by name."""
        item = self.by_name.get(name)
        if item is not None:
            name = item.request if isinstance(item, Command) else item.struct
        return self.layouts[name]


_CODECS: dict[int, tuple[SpecIR, Codec]] = {}


def codec_for(ir: SpecIR) -> Codec:
    """One codec per SpecIR object (the SpecIR holds a dict, so it is not hashable)."""
    hit = _CODECS.get(id(ir))
    if hit is None or hit[0] is not ir:
        hit = _CODECS[id(ir)] = (ir, Codec(ir))
    return hit[1]
