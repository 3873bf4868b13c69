"""Byte layout of parsed C structs under the C ABI rules (natural alignment, tail padding)."""

from __future__ import annotations

import re
from typing import Optional

from .cdecl import CStruct
from .ir import Field, Loc, Struct, Trailing

_PRIM = re.compile(r"(?:__)?(le|be|u|s)(8|16|32|64)$")


def wire_type(ctype: str) -> str:
    """The spec's spelling of a type: __le32 -> le32, __u8 -> u8; structs unchanged."""
    return ctype[2:] if ctype.startswith("__") else ctype


def prim_size(ctype: str) -> Optional[int]:
    if ctype == "char":
        return 1
    m = _PRIM.match(ctype)
    return int(m.group(2)) // 8 if m else None


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def lay_out(
    cstruct: CStruct, known: dict[str, Struct], file: str, source: str, trailing: Optional[Trailing] = None
) -> Struct:
    """Compute offsets and sizes; `known` holds the structs already laid out."""
    offset, align, fields, flexible = 0, 1, [], False
    for m in cstruct.members:
        if m.type.startswith("struct "):
            inner = known.get(m.type.split(" ", 1)[1])
            if inner is None:
                raise KeyError(m.type)
            esize, ealign, sname = inner.size, inner.align, inner.name
        else:
            prim = prim_size(m.type)
            if prim is None:
                raise KeyError(m.type)
            esize, ealign, sname = prim, prim, None
        offset = _align_up(offset, ealign)
        align = max(align, ealign)
        count = m.array_value if m.array is not None else None
        size = esize * (count if count is not None else 1)
        if count == 0:
            flexible = True
        fields.append(
            Field(
                name=m.name,
                wire_type=wire_type(m.type),
                offset=offset,
                size=size,
                elem_size=esize,
                count=count,
                count_expr=m.array,
                struct=sname,
                loc=Loc(file, m.line),
            )
        )
        offset += size
    return Struct(
        name=cstruct.name,
        fields=tuple(fields),
        size=_align_up(offset, align),
        align=align,
        flexible=flexible,
        trailing=trailing,
        source=source,
        loc=Loc(file, cstruct.line),
    )
