"""Assemble the SpecIR from a parsed chapter, its listings and the C header."""

from __future__ import annotations

import dataclasses as dc
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Optional

from . import document as D
from .cdecl import CStruct, CUnit, parse_c
from .ir import IR_SCHEMA, Citation, Command, Constant, Enum, Feature, Loc, Response, Section, SpecIR, Struct, Trailing
from .layout import lay_out
from .requirements import extract_requirements

CMD, RESP_OK, RESP_ERR, FEAT = "VIRTIO_GPU_CMD_", "VIRTIO_GPU_RESP_OK_", "VIRTIO_GPU_RESP_ERR_", "VIRTIO_GPU_F_"
F = re.escape(D.FOPEN) + r"\s*struct\s+(\w+)\s*" + re.escape(D.FCLOSE)


@dataclass
class Parsed:
    """Everything read from the sources, kept for lint and diff beside the SpecIR."""

    chapter: D.Doc
    listings: list[tuple[D.ListingAt, CUnit]]
    header: Optional[CUnit]
    conformance: list[D.Doc] = field(default_factory=list)
    macro_arity: dict[str, int] = field(default_factory=dict)
    external_labels: set[str] = field(default_factory=set)
    external_fields: set[str] = field(default_factory=set)
    tex_structs: dict[str, CStruct] = field(default_factory=dict)
    header_structs: dict[str, CStruct] = field(default_factory=dict)
    header_struct_commands: dict[str, list[str]] = field(default_factory=dict)  # struct -> names
    header_feature_gates: dict[str, list[str]] = field(default_factory=dict)  # feature -> patterns
    header_comment_names: list[tuple[str, int]] = field(default_factory=list)


def parse_listings(doc: D.Doc) -> list[tuple[D.ListingAt, CUnit]]:
    env: dict[str, int] = {}
    out = []
    for at in doc.listings:
        unit = parse_c(at.listing.body, doc.path, at.listing.body_line - 1, env)
        for e in unit.enums:
            env.update({n: v for n, v, _ in e.members})
        env.update({d.name: d.value for d in unit.defines if d.value is not None})
        out.append((at, unit))
    return out


def _header_annotations(parsed: Parsed) -> None:
    """Read the header's comments that name commands, tying each to the next declaration."""
    h = parsed.header
    if h is None:
        return
    decls: list[tuple[int, str, str]] = [(s.line, "struct", s.name) for s in h.structs]
    decls += [(d.line, "define", d.name) for d in h.defines]
    decls.sort()
    for c in h.comments:
        names = re.findall(r"VIRTIO_GPU_(?:CMD|RESP)_[A-Z0-9_*]+", c.text)
        if not names:
            continue
        parsed.header_comment_names += [(n, c.line) for n in names]
        after = [d for d in decls if d[0] > c.end_line]
        if not after:
            continue
        # a feature #define right after the comment: the comment lists what it gates
        if after[0][1] == "define" and after[0][2].startswith(FEAT):
            parsed.header_feature_gates[after[0][2]] = names
            continue
        nxt = next((d for d in after if d[1] == "struct"), None)
        if nxt is not None and not any(n.endswith("*") for n in names):
            parsed.header_struct_commands.setdefault(nxt[2], []).extend(names)


def extract(parsed: Parsed, version: str, sources: dict[str, str]) -> SpecIR:
    doc = parsed.chapter
    chapter_file = doc.path
    for _at, unit in parsed.listings:
        for s in unit.structs:
            parsed.tex_structs.setdefault(s.name, s)
    if parsed.header:
        for s in parsed.header.structs:
            parsed.header_structs.setdefault(s.name, s)
    _header_annotations(parsed)

    enums, constants = _enums_and_constants(parsed)
    items = _item_blocks(doc)

    # trailing arrays the text describes: "Request data is A, followed by B entries"
    trailing: dict[str, Trailing] = {}
    for _label, blocks in items.items():
        text = " ".join(b.text for b in blocks)
        m = re.search(r"Request data is\s+" + F + r"\s*,?\s*followed by\s+" + F + r"\s+entries", text)
        if m:
            holder = parsed.tex_structs.get(m.group(1))
            count = next((mm.name for mm in holder.members if mm.name.startswith("nr_")), None) if holder else None
            if count:
                line = blocks[0].position(m.start(2))[0]
                trailing[m.group(1)] = Trailing(m.group(2), count, Loc(chapter_file, line))

    structs = _lay_out_all(parsed, trailing, chapter_file, sources.get("header", ""))
    struct_names = {s.name for s in structs}
    ranges = _value_ranges(doc, items, parsed)
    structs = [_with_ranges(s, ranges) for s in structs]
    config = next((s for s in structs if s.name == "virtio_gpu_config"), None)
    if config is None:
        raise ValueError("the chapter declares no struct virtio_gpu_config")

    features = _features(doc, items, parsed, chapter_file, sources.get("header", ""))
    responses = _responses(parsed, enums, items, chapter_file, sources.get("header", ""))
    commands = _commands(doc, parsed, enums, items, responses, struct_names, chapter_file, sources.get("header", ""))
    sections = tuple(
        Section(
            s.id,
            s.title,
            tuple(x.title for x in doc.section_path(s.index)),
            s.level,
            s.label,
            s.kind,
            Loc(chapter_file, s.line),
            s.end_line,
        )
        for s in doc.sections
    )
    reqs = extract_requirements(doc, commands, structs, responses)
    citations = []
    for cdoc in parsed.conformance:
        clause = "driver" if "driver" in cdoc.path.lower() else "device"
        for ref in cdoc.refs:
            if ref.target.startswith(("devicenormative:", "drivernormative:")):
                citations.append(Citation(clause, ref.target, ref.target in doc.labels, Loc(cdoc.path, ref.line)))
    return SpecIR(
        schema=IR_SCHEMA,
        version=version,
        sources=dict(sources),
        sections=sections,
        features=tuple(features),
        config=config,
        enums=tuple(enums),
        constants=tuple(constants),
        structs=tuple(structs),
        responses=tuple(responses),
        commands=tuple(commands),
        requirements=tuple(reqs),
        citations=tuple(citations),
    )


def _item_blocks(doc: D.Doc) -> dict[str, list[D.Block]]:
    """Blocks under each description item; empty items share the next item's text."""
    items: dict[str, list[D.Block]] = {}
    for b in doc.blocks:
        if b.item is not None:
            items.setdefault(b.item, []).append(b)
    # \item[A] \item[B] text: A has no block of its own and shares B's
    for i, (label, _line, sec, _depth) in enumerate(doc.items):
        if label in items:
            continue
        for nxt in doc.items[i + 1 :]:
            if nxt[2] != sec:
                break
            if nxt[0] in items:
                items[label] = items[nxt[0]]
                break
    return items


def _enums_and_constants(parsed: Parsed) -> tuple[list[Enum], list[Constant]]:
    enums: dict[str, Enum] = {}
    consts: dict[str, Constant] = {}
    path = parsed.chapter.path
    for _at, unit in parsed.listings:
        for e in unit.enums:
            enums[e.name] = Enum(e.name, tuple((n, v) for n, v, _ in e.members), "tex", Loc(path, e.line))
            for n, v, line in e.members:
                consts[n] = Constant(n, v, "enum", e.name, "tex", Loc(path, line))
        for d in unit.defines:
            if d.value is not None:
                consts[d.name] = Constant(d.name, d.value, "define", None, "tex", Loc(path, d.line))
    h = parsed.header
    if h is not None:
        hpath = h.path
        for e in h.enums:
            if e.name not in enums:
                enums[e.name] = Enum(e.name, tuple((n, v) for n, v, _ in e.members), "header", Loc(hpath, e.line))
            for n, v, line in e.members:
                consts.setdefault(n, Constant(n, v, "enum", e.name, "header", Loc(hpath, line)))
        for d in h.defines:
            if d.value is not None and not d.name.startswith(FEAT) and not d.name.endswith("_H"):
                consts.setdefault(d.name, Constant(d.name, d.value, "define", None, "header", Loc(hpath, d.line)))
    return list(enums.values()), list(consts.values())


def _lay_out_all(parsed: Parsed, trailing: dict[str, Trailing], chapter_file: str, header_file: str) -> list[Struct]:
    known: dict[str, Struct] = {}
    order: list[Struct] = []

    def add(cs: CStruct, file: str, source: str) -> None:
        if cs.name in known:
            return
        for m in cs.members:  # a member's struct may be defined only in the other source
            dep = m.type.split(" ", 1)[1] if m.type.startswith("struct ") else None
            if dep and dep not in known:
                if dep in parsed.tex_structs:
                    add(parsed.tex_structs[dep], chapter_file, "tex")
                elif dep in parsed.header_structs:
                    add(parsed.header_structs[dep], header_file, "header")
        st = lay_out(cs, known, file, source, trailing.get(cs.name))
        known[cs.name] = st
        order.append(st)

    for cs in parsed.tex_structs.values():
        add(cs, chapter_file, "tex")
    for cs in parsed.header_structs.values():
        add(cs, header_file, "header")
    return order


_MIN = re.compile(r"minimum value is\s+(\d+|zero)", re.I)
_MAX = re.compile(r"maximum value is\s+(\d+)", re.I)


def _value_ranges(
    doc: D.Doc, items: dict[str, list[D.Block]], parsed: Parsed
) -> dict[tuple[str, str], tuple[Optional[int], Optional[int]]]:
    """Ranges stated in a field's description item, tied to the last struct declaring it."""
    out: dict[tuple[str, str], tuple[Optional[int], Optional[int]]] = {}
    struct_lines = sorted((s.line, s.name, {m.name for m in s.members}) for s in parsed.tex_structs.values())
    for label, line, _sec, _depth in doc.items:
        blocks = items.get(label)
        if not blocks or " " in label:
            continue
        text = " ".join(b.plain for b in blocks)
        lo, hi = _MIN.search(text), _MAX.search(text)
        if not (lo or hi):
            continue
        owner = None
        for sline, sname, members in struct_lines:
            if sline < line and label in members:
                owner = sname
        if owner:
            out[(owner, label)] = (_num(lo.group(1)) if lo else None, int(hi.group(1)) if hi else None)
    return out


def _with_ranges(st: Struct, ranges) -> Struct:
    if not any(k[0] == st.name for k in ranges):
        return st
    fields = tuple(
        dc.replace(f, value_min=ranges[(st.name, f.name)][0], value_max=ranges[(st.name, f.name)][1])
        if (st.name, f.name) in ranges
        else f
        for f in st.fields
    )
    return dc.replace(st, fields=fields)


def _features(doc: D.Doc, items, parsed: Parsed, chapter_file: str, header_file: str) -> list[Feature]:
    feats: dict[str, Feature] = {}
    for label, line, _sec, _depth in doc.items:
        m = re.fullmatch(r"(" + FEAT + r"\w+)\s*\((\d+)\)", label)
        if not m:
            continue
        text = " ".join(b.text for b in items.get(label, []))
        requires = tuple(re.findall(r"Requires\s+(" + FEAT + r"\w+)", text))
        cfg = tuple(re.findall(r"configuration field\s+" + re.escape(D.FOPEN) + r"(\w+)", text))
        feats[m.group(1)] = Feature(m.group(1), int(m.group(2)), requires, cfg, "tex", Loc(chapter_file, line))
    if parsed.header:
        for d in parsed.header.defines:
            if d.name.startswith(FEAT) and d.value is not None:
                if d.name in feats:
                    f = feats[d.name]
                    feats[d.name] = Feature(f.name, f.bit, f.requires, f.config_fields, "tex+header", f.loc)
                else:
                    feats[d.name] = Feature(d.name, d.value, (), (), "header", Loc(header_file, d.line))
    return sorted(feats.values(), key=lambda f: f.bit)


def _responses(parsed: Parsed, enums: list[Enum], items, chapter_file: str, header_file: str) -> list[Response]:
    ctrl = next(e for e in enums if e.name == "virtio_gpu_ctrl_type")
    stated: dict[str, tuple[str, int]] = {}  # response -> struct, line
    for _label, blocks in items.items():
        for b in blocks:
            for m in re.finditer(r"Response type is\s+(VIRTIO_GPU_RESP_\w+)\s*,\s*response data is\s+" + F, b.text):
                stated.setdefault(m.group(1), (m.group(2), b.position(m.start())[0]))
    by_comment = {n: s for s, names in parsed.header_struct_commands.items() for n in names}
    enum_line = {n: ln for n, v, ln in _enum_lines(parsed, ctrl.name)}
    out = []
    for name, code in ctrl.members:
        if not name.startswith("VIRTIO_GPU_RESP_"):
            continue
        # the spec's names say which: VIRTIO_GPU_RESP_OK_* carry a command out, VIRTIO_GPU_RESP_ERR_* refuse it
        kind = "ok" if name.startswith(RESP_OK) else "error" if name.startswith(RESP_ERR) else "unknown"
        loc = Loc(chapter_file, enum_line.get(name, 0))
        if name in stated:
            out.append(Response(name, code, stated[name][0], "tex", Loc(chapter_file, stated[name][1]), kind))
        elif name in by_comment:
            out.append(Response(name, code, by_comment[name], "header", loc, kind))
        else:  # no payload: the bare header (the text says OK_NODATA and errors carry none)
            out.append(Response(name, code, "virtio_gpu_ctrl_hdr", "implied", loc, kind))
    return out


def _enum_lines(parsed: Parsed, name: str):
    for _at, unit in parsed.listings:
        for e in unit.enums:
            if e.name == name:
                return e.members
    return []


def _commands(
    doc: D.Doc,
    parsed: Parsed,
    enums: list[Enum],
    items,
    responses: list[Response],
    struct_names: set[str],
    chapter_file: str,
    header_file: str,
) -> list[Command]:
    ctrl = next(e for e in enums if e.name == "virtio_gpu_ctrl_type")
    errors = tuple(r.name for r in responses if r.kind == "error")
    by_comment = {n: s for s, names in parsed.header_struct_commands.items() for n in names}
    item_info = {label: (line, sec) for label, line, sec, depth in doc.items}
    # a section's own gate: "supported by the device if the X feature flag is set"
    section_gate: dict[int, tuple[str, ...]] = {}
    for b in doc.blocks:
        if b.item is None:
            g = re.findall(r"supported by the device if the\s+(" + FEAT + r"\w+)", b.plain)
            if g:
                section_gate[b.section] = tuple(g)
    out = []
    for name, code in ctrl.members:
        if not name.startswith(CMD):
            continue
        blocks = items.get(name, [])
        text = " ".join(b.text for b in blocks)
        plain = " ".join(b.plain for b in blocks)
        line, sec = item_info.get(name, (0, None))
        # request struct: stated in the text, else from the header's comment
        request, req_src = None, "tex"
        m = re.search(r"Request data is\s+" + F, text) or re.search(r"No request data \(just bare\s+" + F, text)
        if m:
            request = m.group(1)
        elif name in by_comment:
            request, req_src = by_comment[name], "header"
        if request is None or request not in struct_names:
            request, req_src = request or "virtio_gpu_ctrl_hdr", "implied"
        resp = tuple(dict.fromkeys(re.findall(r"Response type is\s+(" + RESP_OK + r"\w+)", plain)))
        if not resp:
            resp = ("VIRTIO_GPU_RESP_OK_NODATA",)
        gates = tuple(dict.fromkeys(re.findall(r"negotiated\s+using the\s+(" + FEAT + r"\w+)", plain)))
        if not gates and sec is not None:
            s: Optional[int] = sec
            while s is not None and not gates:
                gates = section_gate.get(s, ())
                s = doc.sections[s].parent
        needs_shm = (
            "VIRTIO_GPU_SHM_ID_HOST_VISIBLE"
            if re.search(r"presence of the host visible memory region", plain)
            else None
        )
        queue = "controlq"
        if sec is not None and any("cursorq" in x.title for x in doc.section_path(sec)):
            queue = "cursorq"
        elif sec is None and _enum_group(parsed, name) == "cursor":
            queue = "cursorq"
        out.append(
            Command(
                name=name,
                code=code,
                queue=queue,
                request=request,
                responses=resp,
                errors=errors,
                features=gates,
                needs_shm=needs_shm,
                section=doc.sections[sec].id if sec is not None else "",
                source="tex+header" if req_src == "header" else "tex",
                loc=Loc(chapter_file, line) if line else Loc(header_file, 0),
                request_source=req_src,
            )
        )
    return out


def _enum_group(parsed: Parsed, name: str) -> str:
    """The `/* ... commands */` comment group an enumerator stands under."""
    for _at, unit in parsed.listings:
        line = next((ln for e in unit.enums for n, v, ln in e.members if n == name), None)
        if line is not None:
            groups = [c.text.strip("/* ").split() for c in unit.comments if c.line < line]
            return groups[-1][0] if groups and groups[-1] else ""
    return ""


def header_gate_matches(pattern: str, command: str) -> bool:
    return fnmatch.fnmatchcase(command, pattern)


def _num(word: str) -> int:
    return 0 if word.lower() == "zero" else int(word)
