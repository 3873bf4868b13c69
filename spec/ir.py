"""The SpecIR: frozen, JSON-serialisable facts about the virtio-gpu protocol."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, cast

IR_SCHEMA = 1  # bump when the shape of the JSON changes


@dataclass(frozen=True)
class Loc:
    """Where a fact stands: a file named by its role-relative path, 1-based line."""

    file: str
    line: int
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" + (f":{self.col}" if self.col else "")


@dataclass(frozen=True)
class Section:
    id: str  # stable slug of the title, unique in the chapter
    title: str
    path: tuple[str, ...]  # titles from the chapter down to this section
    level: str  # section | subsection | subsubsection | paragraph
    label: Optional[str]
    kind: str  # plain | devicenormative | drivernormative
    loc: Loc
    end_line: int


@dataclass(frozen=True)
class Feature:
    name: str
    bit: int
    requires: tuple[str, ...]
    config_fields: tuple[str, ...]  # config fields this feature makes valid
    source: str  # tex | header | tex+header
    loc: Loc


@dataclass(frozen=True)
class Constant:
    name: str
    value: int
    kind: str  # define | enum
    enum: Optional[str]
    source: str
    loc: Loc


@dataclass(frozen=True)
class Enum:
    name: str
    members: tuple[tuple[str, int], ...]
    source: str
    loc: Loc


@dataclass(frozen=True)
class Field:
    name: str
    wire_type: str  # le32, u8, char, struct virtio_gpu_rect, ...
    offset: int
    size: int  # of the whole field (all elements)
    elem_size: int
    count: Optional[int]  # array length; None for a scalar; 0 for a flexible []
    count_expr: Optional[str]  # the array length as written, e.g. VIRTIO_GPU_MAX_SCANOUTS
    struct: Optional[str]  # element struct name for struct-typed fields
    loc: Loc
    value_min: Optional[int] = None  # from the text ("minimum value is ...")
    value_max: Optional[int] = None


@dataclass(frozen=True)
class Trailing:
    """Elements that follow a struct on the wire, counted by one of its fields."""

    element: str  # struct name
    count_field: str
    loc: Loc


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[Field, ...]
    size: int
    align: int
    flexible: bool  # ends in a flexible array member
    trailing: Optional[Trailing]
    source: str  # tex | header
    loc: Loc

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")


@dataclass(frozen=True)
class Response:
    name: str
    code: int
    struct: str
    source: str  # tex | header | implied
    loc: Loc
    kind: str  # ok | error: the device carried the command out, or refused it


@dataclass(frozen=True)
class Command:
    name: str
    code: int
    queue: str  # controlq | cursorq
    request: str  # struct name
    responses: tuple[str, ...]  # success response type names
    errors: tuple[str, ...]  # error response type names the device may return
    features: tuple[str, ...]  # feature bits that gate the command (all needed)
    needs_shm: Optional[str]  # shared memory region that must be present
    section: str  # section id
    source: str  # tex, or tex+header when the request struct came from the header
    loc: Loc
    request_source: str = "tex"  # where the request struct binding came from


@dataclass(frozen=True)
class Requirement:
    id: str
    level: str  # MUST | MUST NOT | SHOULD | SHOULD NOT | MAY | must | must not
    binds: str  # driver | device
    binds_by: str  # how binds was decided: subject | request-field | response-field | block
    normative: bool  # inside a \devicenormative / \drivernormative block
    basis: str  # normative | spec-text | informal
    section: str  # section id
    anchor: str  # item label or first identifier the statement is about
    identifiers: tuple[str, ...]  # spec names the statement mentions
    loc: Loc
    summary: str  # our own one-line summary (never the spec's words)


@dataclass(frozen=True)
class Citation:
    """A conformance clause entry that cites a normative block."""

    clause: str  # device | driver
    target: str  # label cited
    resolved: bool
    loc: Loc


@dataclass(frozen=True)
class SpecIR:
    schema: int
    version: str  # e.g. v1.4, or "unknown" for an unrecognised checkout
    sources: dict[str, str]  # role -> path as read (chapter, header, ...)
    sections: tuple[Section, ...]
    features: tuple[Feature, ...]
    config: Struct
    enums: tuple[Enum, ...]
    constants: tuple[Constant, ...]
    structs: tuple[Struct, ...]
    responses: tuple[Response, ...]
    commands: tuple[Command, ...]
    requirements: tuple[Requirement, ...]
    citations: tuple[Citation, ...] = field(default_factory=tuple)

    # Lookups used everywhere; linear scans are fine at this size (tens of items).
    def struct(self, name: str) -> Struct:
        return _find(self.structs, "name", name, "struct")

    def command(self, name: str) -> Command:
        return _find(self.commands, "name", name, "command")

    def constant(self, name: str) -> int:
        return _find(self.constants, "name", name, "constant").value

    def feature(self, name: str) -> Feature:
        return _find(self.features, "name", name, "feature")

    def requirement(self, rid: str) -> Requirement:
        return _find(self.requirements, "id", rid, "requirement")

    @functools.cached_property
    def ok_responses(self) -> frozenset[str]:
        """The response types that say the device carried the command out."""
        return frozenset(r.name for r in self.responses if r.kind == "ok")

    @functools.cached_property
    def error_responses(self) -> frozenset[str]:
        """The response types that say the device refused the command."""
        return frozenset(r.name for r in self.responses if r.kind == "error")

    def to_json(self) -> dict[str, Any]:
        return _encode(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpecIR:
        if data.get("schema") != IR_SCHEMA:
            raise ValueError(
                f"SpecIR schema {data.get('schema')!r} is not {IR_SCHEMA}: "
                "regenerate it with `virtgpu-conform spec import`"
            )
        return _decode(cls, data)


def _find(items, attr: str, value: str, what: str):
    for item in items:
        if getattr(item, attr) == value:
            return item
    raise KeyError(f"no {what} {value} in the SpecIR")


def _encode(obj: Any) -> Any:
    if isinstance(obj, Loc):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_encode(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    return obj


def _parse_loc(text: str) -> Loc:
    parts = text.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return Loc(parts[0], int(parts[1]), int(parts[2]))
    path, line = text.rsplit(":", 1)
    return Loc(path, int(line))


def _decode(tp: Any, data: Any) -> Any:
    if tp is Loc:
        return _parse_loc(data)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if data is None else _decode(members[0], data)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], x) for x in data)
        return tuple(_decode(a, x) for a, x in zip(args, data))
    if origin is dict:
        return dict(data)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _decode(hints[f.name], data[f.name])
        return cast(type, tp)(**kwargs)  # is_dataclass also admits an instance; an annotation is a class
    return data
