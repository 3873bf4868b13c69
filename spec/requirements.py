"""Find requirement statements (MUST/SHOULD/MAY and lower-case must) with stable IDs."""

from __future__ import annotations

import re
from collections.abc import Iterable

from . import document as D
from .ir import Command, Loc, Requirement, Response, Struct
from .summaries import SUMMARIES

KEYWORD = re.compile(r"\b(MUST\s+NOT|MUST\s+not|MUST|SHOULD\s+NOT|SHOULD|MAY|must\s+not|must)\b")
SUBJECT = re.compile(r"\b(driver|guest|device|implementation|host)\b", re.I)
IDENT = re.compile(r"\bVIRTIO_GPU_[A-Z0-9_]+\b")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\" + re.escape(D.FOPEN) + r"])")
CLAUSE = re.compile(r"[,;:(]")


def level_of(keyword: str) -> str:
    words = keyword.split()
    if words[0].isupper():
        return "MUST NOT" if len(words) == 2 else words[0]
    return " ".join(words)


def basis_of(level: str, normative: bool) -> str:
    if normative:
        return "normative"
    return "spec-text" if level.split()[0].isupper() else "informal"


def _sentences(text: str) -> Iterable[tuple[int, int]]:
    start = 0
    for m in SENTENCE_END.finditer(text):
        yield start, m.start()
        start = m.end()
    yield start, len(text)


def extract_requirements(
    doc: D.Doc, commands: list[Command], structs: list[Struct], responses: list[Response]
) -> list[Requirement]:
    cmd_by_name = {c.name: c for c in commands}
    struct_by_name = {s.name: s for s in structs}
    resp_struct = {r.name: r.struct for r in responses}
    resp_structs = {r.struct for r in responses if r.struct != "virtio_gpu_ctrl_hdr"}
    counts: dict[str, int] = {}
    found: list[tuple[str, dict]] = []
    for blk in doc.blocks:
        sec = doc.sections[blk.section]
        normative = any(s.kind in ("devicenormative", "drivernormative") for s in doc.section_path(blk.section))
        block_kind = next((s.kind for s in reversed(doc.section_path(blk.section)) if s.kind != "plain"), "plain")
        for s0, s1 in _sentences(blk.text):
            sentence = blk.text[s0:s1]
            for m in KEYWORD.finditer(sentence):
                level = level_of(m.group(1))
                at = s0 + m.start()
                line, col = blk.position(at)
                before = sentence[: m.start()]
                fields = [name for name, off in blk.fields if s0 <= off < s1]
                idents = list(dict.fromkeys(IDENT.findall(D.FOPEN.join(sentence.split(D.FOPEN)))))
                binds, how = _binds(
                    before, sentence, fields, blk, cmd_by_name, struct_by_name, resp_struct, resp_structs, block_kind
                )
                anchor = _anchor(blk, idents, fields, before)
                # ID: where it stands, what it is about, whom it binds and how strongly;
                # a position counter is added only to tell apart statements sharing all four
                base = f"{sec.id}/{anchor}/{binds}-{level.replace(' ', '-')}"
                counts[base] = counts.get(base, 0) + 1
                found.append(
                    (
                        base,
                        dict(
                            level=level,
                            binds=binds,
                            binds_by=how,
                            normative=normative,
                            basis=basis_of(level, normative),
                            section=sec.id,
                            anchor=anchor,
                            identifiers=tuple(
                                dict.fromkeys(idents + [f for f in fields if not f.startswith(("struct ", "enum "))])
                            ),
                            loc=Loc(doc.path, line, col),
                        ),
                    )
                )
    out: list[Requirement] = []
    ordinal: dict[str, int] = {}
    for base, kw in found:
        ordinal[base] = ordinal.get(base, 0) + 1
        rid = base if counts[base] == 1 else f"{base}.{ordinal[base]}"
        out.append(Requirement(id=rid, summary=SUMMARIES.get(rid) or _auto_summary(kw), **kw))
    return out


def _binds(
    before: str,
    sentence: str,
    fields: list[str],
    blk: D.Block,
    cmds: dict[str, Command],
    structs: dict[str, Struct],
    resp_struct: dict[str, str],
    resp_structs: set[str],
    block_kind: str,
) -> tuple[str, str]:
    """Who the statement binds: its grammatical subject, else the struct its fields belong to."""
    clause = CLAUSE.split(before)[-1] if CLAUSE.search(before) else before
    for text in (clause, before):
        subj = SUBJECT.findall(text)
        if subj:
            word = subj[-1].lower()
            return ("driver" if word in ("driver", "guest") else "device"), "subject"
    # the command the statement is about: its item, else one the sentence names
    cmd = cmds.get(blk.item or "") or next((cmds[i] for i in IDENT.findall(sentence) if i in cmds), None)
    if cmd is not None:
        req = structs.get(cmd.request)
        req_fields = {f.name for f in req.fields} if req else set()
        words = set(re.findall(r"\w+", sentence.replace(D.FOPEN, " ").replace(D.FCLOSE, " ")))
        named = [f for f in fields if not f.startswith(("struct ", "enum "))] + sorted(words)
        for name in named:
            if name in req_fields and name != "hdr":
                return "driver", "request-field"
            for r in cmd.responses:
                rs = structs.get(resp_struct.get(r, ""))
                if rs and name in {f.name for f in rs.fields} and name != "hdr":
                    return "device", "response-field"
        if blk.item == cmd.name:  # a statement about a request's content binds its sender
            return "driver", "command-item"
    if block_kind in ("devicenormative", "drivernormative"):
        return block_kind.replace("normative", ""), "block"
    for name in fields:
        for s in structs.values():
            if name in {f.name for f in s.fields}:
                return ("device" if s.name in resp_structs else "driver"), (
                    "response-field" if s.name in resp_structs else "request-field"
                )
    return "driver", "default"


def _anchor(blk: D.Block, idents: list[str], fields: list[str], before: str) -> str:
    if blk.item:
        return blk.item.split(" ")[0]
    cmds = [i for i in idents if i.startswith("VIRTIO_GPU_CMD_")]
    if cmds:
        return cmds[0]
    plain_fields = [f for f in fields if not f.startswith(("struct ", "enum "))]
    if plain_fields:
        return plain_fields[0]
    if idents:
        return idents[0]
    subj = SUBJECT.findall(before)
    return subj[-1].lower() if subj else "statement"


def _auto_summary(kw: dict) -> str:
    about = ", ".join(kw["identifiers"][:3]) or kw["anchor"]
    return f"{kw['binds']} {kw['level']} (about {about})"
