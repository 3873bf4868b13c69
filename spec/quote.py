"""A requirement's own words, read from a copy of the spec the user points at.

The project never stores the spec's text; a report may quote it when the user gives a
checkout (or the shared sources in CI). The quote is the statement's sentence as the
requirement extractor saw it, found again by the keyword's position, so it is the very
sentence the requirement ID was made from, in whichever version the copy holds.
"""

from __future__ import annotations

import re
from pathlib import Path

from .ir import SpecIR
from .load import parse_sources
from .requirements import KEYWORD, _sentences

_SPACE = re.compile(r"\s+")


def quotes(spec_dir: Path) -> tuple[SpecIR, dict[str, str]]:
    """The copy's SpecIR and, per requirement ID, the sentence stating it (plain text).
    Raises SpecSourceError (with file:line) when the copy cannot be read."""
    ir, parsed = parse_sources(Path(spec_dir))
    doc = parsed.chapter
    by_pos: dict[tuple[int, int], str] = {}
    for blk in doc.blocks:
        for s0, s1 in _sentences(blk.text):
            sentence = blk.text[s0:s1]
            for m in KEYWORD.finditer(sentence):
                by_pos[blk.position(s0 + m.start())] = sentence
    out = {}
    for req in ir.requirements:
        text = by_pos.get((req.loc.line, req.loc.col))
        if text is not None and req.loc.file == doc.path:
            out[req.id] = _SPACE.sub(" ", text.replace("\u27e8", "").replace("\u27e9", "")).strip()
    return ir, out
