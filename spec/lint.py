"""Cross-check the chapter against the header, and report defects met in the spec sources."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .extract import FEAT, Parsed, header_gate_matches
from .ir import Loc, SpecIR
from .latex import GRAMMAR_ARITY
from .layout import prim_size, wire_type
from .summaries import SUMMARIES


@dataclass(frozen=True)
class LintFinding:
    kind: str  # disagreement (tex vs header) | defect (in a source) | note
    severity: str  # error | warning | info
    loc: Loc
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.severity}: {self.message}"


def lint(ir: SpecIR, parsed: Parsed) -> list[LintFinding]:
    out: list[LintFinding] = []
    out += _source_defects(ir, parsed)
    if parsed.header is not None:
        out += _tex_vs_header(ir, parsed)
    out += _requirement_notes(ir, parsed.chapter.tex.text)
    return sorted(out, key=lambda f: (f.loc.file, f.loc.line, f.loc.col, f.message))


# ---- defects in the sources ----------------------------------------------------------


def _source_defects(ir: SpecIR, parsed: Parsed) -> list[LintFinding]:
    doc = parsed.chapter
    path = doc.path
    out = [LintFinding("defect", "warning", Loc(path, ln, col), msg) for ln, col, msg in doc.defects]
    for _at, unit in parsed.listings:
        out += [LintFinding("defect", "warning", Loc(path, ln, col), msg) for ln, col, msg in unit.defects]
    # \field references that name nothing the spec declares
    known = {f.name for s in ir.structs for f in s.fields}
    known |= {f"struct {s.name}" for s in ir.structs} | {f"enum {e.name}" for e in ir.enums}
    known |= parsed.external_fields
    for fref, _sec in doc.field_refs:
        name = " ".join(fref.name.split())
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        out.append(
            LintFinding(
                "defect",
                "warning",
                Loc(path, fref.line, fref.col),
                f"\\field{{{name}}} names no field, struct or enum{hint}",
            )
        )
    # \ref targets that resolve nowhere
    labels = set(doc.labels) | parsed.external_labels
    norm = {" ".join(lbl.split()) for lbl in labels}
    for ref in doc.refs:
        if " ".join(ref.target.split()) not in norm:
            out.append(
                LintFinding(
                    "defect",
                    "warning",
                    Loc(path, ref.line, ref.col),
                    f"\\ref target {ref.target!r} is not defined in the sources read",
                )
            )
    # conformance clauses against normative blocks
    cited = {c.target for c in ir.citations}
    for c in ir.citations:
        if not c.resolved:
            out.append(
                LintFinding("defect", "error", c.loc, f"conformance clause cites {c.target!r}, which no block defines")
            )
    if parsed.conformance:
        for sec in ir.sections:
            if sec.kind != "plain" and sec.label and sec.label not in cited:
                out.append(
                    LintFinding(
                        "defect", "warning", sec.loc, f"normative block {sec.label!r} is cited by no conformance clause"
                    )
                )
    # macro arity: what the grammar assumes against what the macro file declares
    for name, arity in GRAMMAR_ARITY.items():
        declared = parsed.macro_arity.get(name)
        if parsed.macro_arity and declared is None:
            out.append(
                LintFinding(
                    "defect",
                    "error",
                    Loc(ir.sources.get("macros", "commands.tex"), 1),
                    f"macro \\{name} is used by the chapter but not defined in the macro file",
                )
            )
        elif declared is not None and declared != arity:
            out.append(
                LintFinding(
                    "defect",
                    "error",
                    Loc(ir.sources.get("macros", "commands.tex"), 1),
                    f"macro \\{name} takes {declared} arguments, the chapter uses {arity}",
                )
            )
    # keyword casing: an upper-case keyword followed by lower-case "not"
    for r in ir.requirements:
        if r.level == "MUST NOT" and re.match(r"MUST\s+not\b", _text_at(doc.tex.text, r.loc)):
            out.append(
                LintFinding(
                    "defect", "warning", r.loc, "mixed-case keyword 'MUST not': RFC 2119 spelling is 'MUST NOT'"
                )
            )
    # stated value ranges that the field's wire type cannot hold
    for s in ir.structs:
        for f in s.fields:
            size = prim_size(f.wire_type)
            if f.value_max is not None and size and f.value_max >= 1 << (8 * size):
                out.append(
                    LintFinding(
                        "defect",
                        "warning",
                        f.loc,
                        f"{s.name}.{f.name} is {f.wire_type} but its stated maximum is {f.value_max}"
                        f" (largest {f.wire_type} is {(1 << (8 * size)) - 1})",
                    )
                )
    return out


# ---- tex against header --------------------------------------------------------------


def _tex_vs_header(ir: SpecIR, parsed: Parsed) -> list[LintFinding]:
    out: list[LintFinding] = []
    h = parsed.header
    assert h is not None
    hpath, tpath = h.path, parsed.chapter.path

    tex_consts: dict[str, tuple[int, int]] = {}
    for _at, unit in parsed.listings:
        for e in unit.enums:
            tex_consts.update({n: (v, ln) for n, v, ln in e.members})
        tex_consts.update({d.name: (d.value, d.line) for d in unit.defines if d.value is not None})
    hdr_consts: dict[str, tuple[int, int]] = {}
    for e in h.enums:
        hdr_consts.update({n: (v, ln) for n, v, ln in e.members})
    hdr_consts.update(
        {
            d.name: (d.value, d.line)
            for d in h.defines
            if d.value is not None and not d.name.startswith(FEAT) and not d.name.endswith("_H")
        }
    )
    for name in sorted(tex_consts.keys() | hdr_consts.keys()):
        t, hv = tex_consts.get(name), hdr_consts.get(name)
        if t and hv and t[0] != hv[0]:
            out.append(
                LintFinding(
                    "disagreement",
                    "error",
                    Loc(tpath, t[1]),
                    f"{name} is {t[0]:#x} in the spec but {hv[0]:#x} in the header ({hpath}:{hv[1]})",
                )
            )
        elif t and not hv:
            out.append(
                LintFinding("disagreement", "warning", Loc(tpath, t[1]), f"{name} is in the spec but not in the header")
            )
        elif hv and not t:
            out.append(
                LintFinding("disagreement", "info", Loc(hpath, hv[1]), f"{name} is in the header but not in the spec")
            )

    # features and the config fields they validate
    tex_feats = {f.name: f for f in ir.features if f.source != "header"}
    hdr_feats = {d.name: d for d in h.defines if d.name.startswith(FEAT)}
    for name in sorted(tex_feats.keys() | hdr_feats.keys()):
        tf, hd = tex_feats.get(name), hdr_feats.get(name)
        if tf and hd and tf.bit != hd.value:
            out.append(
                LintFinding(
                    "disagreement",
                    "error",
                    tf.loc,
                    f"feature {name} is bit {tf.bit} in the spec, {hd.value} in the header",
                )
            )
        elif tf and not hd:
            out.append(
                LintFinding(
                    "disagreement", "warning", tf.loc, f"feature {name} (bit {tf.bit}) is missing from the header"
                )
            )
        elif hd and not tf:
            out.append(
                LintFinding(
                    "disagreement",
                    "warning",
                    Loc(hpath, hd.line),
                    f"feature {name} is in the header but not in the spec",
                )
            )

    # structs: renamed (found through the command they carry), missing, or laid out differently
    renamed: dict[str, str] = {}
    for c in ir.commands:
        for hname, cmds in parsed.header_struct_commands.items():
            if c.name in cmds and c.request_source == "tex" and hname != c.request and hname not in parsed.tex_structs:
                renamed[c.request] = hname
                out.append(
                    LintFinding(
                        "disagreement",
                        "warning",
                        c.loc,
                        f"{c.name}'s request is struct {c.request} in the spec but struct {hname} in the header",
                    )
                )
    for name, ts in parsed.tex_structs.items():
        hs = parsed.header_structs.get(renamed.get(name, name))
        if hs is None:
            if name not in renamed:
                out.append(
                    LintFinding(
                        "disagreement",
                        "warning",
                        Loc(tpath, ts.line),
                        f"struct {name} is in the spec but not in the header",
                    )
                )
            continue
        tm = [(m.name, wire_type(m.type), m.array_value) for m in ts.members]
        hm = [(m.name, wire_type(m.type), m.array_value) for m in hs.members]
        if tm != hm:
            for diff in _member_diff(tm, hm):
                out.append(
                    LintFinding(
                        "disagreement",
                        "error" if "type" in diff or "length" in diff else "warning",
                        Loc(tpath, ts.line),
                        f"struct {name}: {diff} (header {hpath}:{hs.line})",
                    )
                )
    for name, hs in parsed.header_structs.items():
        if name not in parsed.tex_structs and name not in renamed.values():
            out.append(
                LintFinding(
                    "disagreement",
                    "info",
                    Loc(hpath, hs.line),
                    f"struct {name} is only in the header (the spec has no listing for it)",
                )
            )

    # header comments that name commands which do not exist
    known = {c.name for c in ir.commands} | {r.name for r in ir.responses}
    for name, line in parsed.header_comment_names:
        if "*" in name:
            if not any(header_gate_matches(name, k) for k in known):
                out.append(
                    LintFinding(
                        "defect", "warning", Loc(hpath, line), f"header comment pattern {name} matches no command"
                    )
                )
        elif name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
            hint = f"; did you mean {close[0]}?" if close else ""
            out.append(
                LintFinding(
                    "defect", "warning", Loc(hpath, line), f"header comment names {name}, which is not a command{hint}"
                )
            )

    # feature gates: the header's comments against the chapter's text
    for feat, patterns in parsed.header_feature_gates.items():
        for c in ir.commands:
            in_header = any(header_gate_matches(p, c.name) for p in patterns)
            in_tex = feat in c.features
            if in_header and not in_tex:
                out.append(
                    LintFinding(
                        "disagreement",
                        "warning",
                        c.loc,
                        f"the header gates {c.name} on {feat}; the spec gates it on "
                        f"{', '.join(c.features) or 'nothing'}",
                    )
                )
    return out


def _member_diff(tex, hdr) -> list[str]:
    out = []
    tn, hn = [m[0] for m in tex], [m[0] for m in hdr]
    for n in tn:
        if n not in hn:
            out.append(f"field {n} is not in the header")
    for n in hn:
        if n not in tn:
            out.append(f"field {n} is only in the header")
    common = [n for n in tn if n in hn]
    if common != [n for n in hn if n in tn]:
        out.append("fields are in a different order")
    td, hd = {m[0]: m for m in tex}, {m[0]: m for m in hdr}
    for n in common:
        if td[n][1] != hd[n][1]:
            out.append(f"field {n} has type {td[n][1]} in the spec, {hd[n][1]} in the header")
        if td[n][2] != hd[n][2]:
            out.append(f"field {n} has array length {td[n][2]} in the spec, {hd[n][2]} in the header")
    return out


# ---- requirements as statements --------------------------------------------------------


def _text_at(text: str, loc: Loc, length: int = 200) -> str:
    """Source text from a location on, for checks that look at the words themselves."""
    lines = text.split("\n")
    if not 1 <= loc.line <= len(lines):
        return ""
    return " ".join("\n".join(lines[loc.line - 1 :])[max(loc.col - 1, 0) :][:length].split())


def _requirement_notes(ir: SpecIR, text: str) -> list[LintFinding]:
    out = []
    sections = {s.id: s for s in ir.sections}
    for r in ir.requirements:
        # the device never sends commands: a device duty carried out "using" one is misattributed
        m = re.search(r"using\s+(?:the\s+)?(VIRTIO_GPU_CMD_\w+)", _text_at(text, r.loc))
        if r.binds == "device" and r.binds_by == "subject" and m:
            out.append(
                LintFinding(
                    "defect",
                    "warning",
                    r.loc,
                    f"{r.id}: binds the device to use {m.group(1)}, but only the driver sends commands",
                )
            )
        sec = sections.get(r.section)
        if sec and sec.kind == "devicenormative" and r.binds == "driver":
            out.append(
                LintFinding("note", "info", r.loc, f"{r.id}: a driver {r.level} inside a device-normative block")
            )
        if sec and sec.kind == "drivernormative" and r.binds == "device":
            out.append(
                LintFinding("note", "info", r.loc, f"{r.id}: a device {r.level} inside a driver-normative block")
            )
        if r.id not in SUMMARIES:
            out.append(
                LintFinding("note", "info", r.loc, f"{r.id}: no project summary yet (add one to spec/summaries.py)")
            )
    return out
