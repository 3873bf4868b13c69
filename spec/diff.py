"""What changed between two spec versions: features, config, commands, structs, requirements."""

from __future__ import annotations

from dataclasses import dataclass

from .ir import SpecIR


@dataclass(frozen=True)
class Change:
    area: str  # feature | config | command | struct | constant | requirement
    change: str  # added | removed | changed
    name: str
    detail: str = ""

    def __str__(self) -> str:
        sign = {"added": "+", "removed": "-", "changed": "~"}[self.change]
        return f"{sign} {self.area} {self.name}" + (f": {self.detail}" if self.detail else "")


def _spec_only(items):
    # facts only the header supplied are the header's, not this spec version's
    return {i.name if hasattr(i, "name") else i.id: i for i in items if i.source != "header"}


def diff(old: SpecIR, new: SpecIR) -> list[Change]:
    out: list[Change] = []

    def keyed(area, a, b, describe, compare):
        for k in sorted(a.keys() - b.keys(), key=str):
            out.append(Change(area, "removed", k, describe(a[k])))
        for k in sorted(b.keys() - a.keys(), key=str):
            out.append(Change(area, "added", k, describe(b[k])))
        for k in sorted(a.keys() & b.keys(), key=str):
            for d in compare(a[k], b[k]):
                out.append(Change(area, "changed", k, d))

    keyed(
        "feature",
        _spec_only(old.features),
        _spec_only(new.features),
        lambda f: f"bit {f.bit}" + (f", requires {', '.join(f.requires)}" if f.requires else ""),
        lambda a, b: _attrs(a, b, ("bit", "requires", "config_fields")),
    )
    keyed(
        "config",
        {f.name: f for f in old.config.fields},
        {f.name: f for f in new.config.fields},
        lambda f: f"{f.wire_type} at offset {f.offset}",
        lambda a, b: _attrs(a, b, ("wire_type", "offset", "value_min", "value_max")),
    )
    # commands and responses all stand in the chapter's enum, whatever supplied their structs
    keyed(
        "command",
        {c.name: c for c in old.commands},
        {c.name: c for c in new.commands},
        lambda c: f"{c.code:#06x} on {c.queue}, request {c.request}",
        lambda a, b: _attrs(a, b, ("code", "queue", "request", "responses", "features", "needs_shm")),
    )
    keyed("struct", _spec_only(old.structs), _spec_only(new.structs), lambda s: f"{s.size} bytes", _struct_changes)
    keyed(
        "response",
        {r.name: r for r in old.responses},
        {r.name: r for r in new.responses},
        lambda r: f"{r.code:#06x}, {r.struct}",
        lambda a, b: _attrs(a, b, ("code", "struct")),
    )

    def plain_constants(ir: SpecIR):  # command and response codes are reported above
        return {k: c for k, c in _spec_only(ir.constants).items() if c.enum != "virtio_gpu_ctrl_type"}

    keyed(
        "constant",
        plain_constants(old),
        plain_constants(new),
        lambda c: f"{c.value:#x}",
        lambda a, b: _attrs(a, b, ("value",)),
    )
    keyed(
        "requirement",
        {r.id: r for r in old.requirements},
        {r.id: r for r in new.requirements},
        lambda r: f"{r.binds} {r.level} ({r.basis}) at {r.loc}",
        lambda a, b: _attrs(a, b, ("level", "binds", "basis")),
    )
    return out


def _attrs(a, b, names) -> list[str]:
    out = []
    for n in names:
        va, vb = getattr(a, n), getattr(b, n)
        if va != vb:
            out.append(f"{n} {_show(va)} -> {_show(vb)}")
    return out


def _show(v) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(map(str, v)) + ")" if v else "()"
    if isinstance(v, int) and not isinstance(v, bool) and v > 255:
        return hex(v)
    return str(v)


def _struct_changes(a, b) -> list[str]:
    out = []
    fa, fb = {f.name: f for f in a.fields}, {f.name: f for f in b.fields}
    for n in fa.keys() - fb.keys():
        out.append(f"field {n} removed")
    for n in fb.keys() - fa.keys():
        out.append(f"field {n} added ({fb[n].wire_type} at {fb[n].offset})")
    for n in fa.keys() & fb.keys():
        for d in _attrs(fa[n], fb[n], ("wire_type", "offset", "count")):
            out.append(f"field {n}: {d}")
    if a.size != b.size:
        out.append(f"size {a.size} -> {b.size}")
    if a.trailing != b.trailing and (
        a.trailing is None or b.trailing is None or a.trailing.element != b.trailing.element
    ):
        out.append(f"trailing {a.trailing and a.trailing.element} -> {b.trailing and b.trailing.element}")
    return sorted(out)
