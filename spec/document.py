"""Group the LaTeX event stream into sections, text blocks with positions, and listings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from . import latex as L

LEVELS = {"section": 0, "subsection": 1, "subsubsection": 2, "paragraph": 3}

# A field reference is rendered between these marks so phrase patterns can tell
# `\field{struct x}` from prose; they never occur in the sources.
FOPEN, FCLOSE = "\u27e8", "\u27e9"


@dataclass
class Sec:
    index: int
    level: str
    title: str
    kind: str  # plain | devicenormative | drivernormative | conformance
    line: int
    col: int
    parent: Optional[int]
    label: Optional[str] = None
    end_line: int = 0
    id: str = ""

    @property
    def depth(self) -> int:
        return LEVELS.get(self.level, 3)


@dataclass
class Piece:
    """A run of rendered text and the source position of its first character."""

    start: int  # offset in Block.text
    line: int
    col: int


@dataclass
class Block:
    """A paragraph or an item body: the unit requirement statements are found in."""

    section: int
    item: Optional[str]  # label of the enclosing description item, outermost first
    item_fields: list[str]
    env: Optional[str]
    text: str = ""
    pieces: list[Piece] = field(default_factory=list)
    fields: list[tuple[str, int]] = field(default_factory=list)  # name, offset in text
    line: int = 0

    def add(self, text: str, line: int, col: int) -> None:
        if not text:
            return
        if not self.pieces:
            self.line = line
        self.pieces.append(Piece(len(self.text), line, col))
        self.text += text

    def position(self, offset: int) -> tuple[int, int]:
        """Source line and column of the character at `offset` of the rendered text."""
        best = self.pieces[0]
        for p in self.pieces:
            if p.start > offset:
                break
            best = p
        return best.line, best.col + (offset - best.start)

    @property
    def plain(self) -> str:
        return self.text.replace(FOPEN, "").replace(FCLOSE, "")


@dataclass
class ListingAt:
    listing: L.Listing
    section: int
    item: Optional[str]


@dataclass
class Doc:
    path: str
    tex: L.TexDocument
    sections: list[Sec] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    listings: list[ListingAt] = field(default_factory=list)
    labels: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> line, section
    refs: list[L.Ref] = field(default_factory=list)
    field_refs: list[tuple[L.FieldRef, int]] = field(default_factory=list)  # with section
    defects: list[tuple[int, int, str]] = field(default_factory=list)
    items: list[tuple[str, int, int, int]] = field(default_factory=list)  # label, line, section, env depth

    def section_path(self, index: int) -> list[Sec]:
        out = []
        cur: Optional[int] = index
        while cur is not None:
            out.append(self.sections[cur])
            cur = self.sections[cur].parent
        return out[::-1]


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def build(tex: L.TexDocument) -> Doc:
    doc = Doc(tex.path, tex)
    b = _Builder(doc)
    for ev in tex.events:
        b.feed(ev)
    b.finish()
    _assign_ids(doc)
    return doc


def _assign_ids(doc: Doc) -> None:
    seen: dict[str, int] = {}
    for s in doc.sections:
        base = slug(s.title) or f"section-{s.line}"
        sid = base
        if sid in seen and s.parent is not None:
            sid = f"{doc.sections[s.parent].id}/{base}"
        n = 2
        while sid in seen:
            sid, n = f"{base}-{n}", n + 1
        seen[sid] = s.index
        s.id = sid


class _Builder:
    def __init__(self, doc: Doc):
        self.doc = doc
        self.sec: Optional[int] = None
        self.env_stack: list[str] = []
        self.item_stack: list[Optional[tuple[str, list[str]]]] = []  # per env level
        self.block: Optional[Block] = None
        self.pending_label_for: Optional[int] = None

    # -- sections
    def _open_section(self, level: str, title: str, kind: str, line: int, col: int) -> None:
        self._close_block()
        depth = LEVELS.get(level, 3)
        parent = self.sec
        while parent is not None and self.doc.sections[parent].depth >= depth:
            self.doc.sections[parent].end_line = line - 1
            parent = self.doc.sections[parent].parent
        idx = len(self.doc.sections)
        self.doc.sections.append(Sec(idx, level, title, kind, line, col, parent))
        self.sec = idx
        self.pending_label_for = idx

    def feed(self, ev: L.Event) -> None:
        d = self.doc
        if isinstance(ev, L.Heading):
            self._open_section(ev.level, ev.title, "plain", ev.line, ev.col)
        elif isinstance(ev, L.Normative):
            kind = ev.kind
            prefix = "Device Requirements: " if kind == "devicenormative" else "Driver Requirements: "
            self._open_section(ev.level, prefix + ev.title, kind, ev.line, ev.col)
            label = f"{kind}:{ev.label}"
            d.sections[-1].label = label
            d.labels[label] = (ev.line, len(d.sections) - 1)
            self.pending_label_for = None
        elif isinstance(ev, L.Conformance):
            self._open_section(ev.level, ev.title, "conformance", ev.line, ev.col)
        elif isinstance(ev, L.Label):
            d.labels[ev.target] = (ev.line, self.sec if self.sec is not None else -1)
            if self.pending_label_for is not None and d.sections[self.pending_label_for].label is None:
                d.sections[self.pending_label_for].label = ev.target
            self.pending_label_for = None
        elif isinstance(ev, L.EnvBegin):
            self._close_block()
            self.env_stack.append(ev.name)
            self.item_stack.append(None)
        elif isinstance(ev, L.EnvEnd):
            self._close_block()
            if self.env_stack:
                self.env_stack.pop()
                self.item_stack.pop()
        elif isinstance(ev, L.Item):
            self._close_block()
            if self.item_stack:
                if ev.label is not None:
                    self.item_stack[-1] = (ev.label, ev.fields)
                    d.items.append((ev.label, ev.line, self._sec(), len(self.env_stack)))
                else:
                    self.item_stack[-1] = None
        elif isinstance(ev, L.Listing):
            self._close_block()
            d.listings.append(ListingAt(ev, self._sec(), self._item()[0]))
        elif isinstance(ev, L.ParBreak):
            self._close_block()
        elif isinstance(ev, L.Text):
            self._blk().add(ev.text, ev.line, ev.col)
        elif isinstance(ev, L.FieldRef):
            blk = self._blk()
            name = " ".join(ev.name.split())
            blk.fields.append((name, len(blk.text)))
            blk.add(FOPEN + name + FCLOSE, ev.line, ev.col)
            d.field_refs.append((ev, self._sec()))
        elif isinstance(ev, L.Ref):
            d.refs.append(ev)
        elif isinstance(ev, L.BareGroup):
            # `field{x}` (backslash lost) or a bare `{x}`: keep the text, report the defect
            if ev.prev_word.endswith("field"):
                d.defects.append(
                    (ev.line, ev.col - len("field"), f"'field{{{ev.text}}}' lacks its backslash: \\field{{{ev.text}}}")
                )
                blk = self._blk()
                if blk.text.endswith("field"):  # the word was the last piece added
                    blk.text = blk.text[: -len("field")]
                self.feed(L.FieldRef(ev.text, ev.line, ev.col))
            elif re.fullmatch(r"[a-z_][a-z0-9_]*", ev.text):
                d.defects.append((ev.line, ev.col, f"bare group '{{{ev.text}}}' in text: missing \\field?"))

    def _sec(self) -> int:
        if self.sec is None:  # text before any heading
            self._open_section("section", "(preamble)", "plain", 1, 1)
        return self.sec  # type: ignore[return-value]

    def _item(self) -> tuple[Optional[str], list[str]]:
        for it in self.item_stack:  # outermost labelled item wins: it names the command
            if it is not None:
                return it
        return None, []

    def _blk(self) -> Block:
        if self.block is None:
            label, fields = self._item()
            self.block = Block(self._sec(), label, fields, self.env_stack[-1] if self.env_stack else None)
        return self.block

    def _close_block(self) -> None:
        blk = self.block
        if blk is not None:
            if blk.text.strip():
                self.doc.blocks.append(blk)
        self.block = None

    def finish(self) -> None:
        self._close_block()
        last = self.doc.tex.text.count("\n") + 1
        for s in self.doc.sections:
            if not s.end_line:
                s.end_line = last
