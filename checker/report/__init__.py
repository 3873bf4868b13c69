"""Spec-compliance reports: saved results -> one report document (JSON) -> text, Markdown, HTML, JUnit, SARIF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..version import tool_version

FORMATS = ("text", "json", "md", "html", "junit", "sarif")


def render(doc: dict, fmt: str) -> str:
    """The report document in a file format (all but `text`, which prints with rich)."""
    if fmt == "json":
        return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if fmt == "md":
        from .markdown import render as md
        return md(doc)
    if fmt == "html":
        from .html import render as html
        return html(doc)
    if fmt == "junit":
        from .junit import render as junit
        return junit(doc)
    if fmt == "sarif":
        from .sarif import render as sarif
        return sarif(doc)
    raise ValueError(fmt)


def make_report(columns, inputs: list[str], spec_dir: Optional[str]) -> dict:
    """The report document for these columns, quoting the spec from `spec_dir` when given."""
    from virtgpu_conform.model.protocol import Protocol
    from virtgpu_conform.spec.load import load_snapshot

    from .build import build

    ir = load_snapshot()
    quotes = None
    if spec_dir:
        from virtgpu_conform.spec.quote import quotes as read_quotes
        _, quotes = read_quotes(Path(spec_dir))  # SpecSourceError: reported by the CLI with file:line
    for c in columns:
        if c.spec_version and c.spec_version != ir.version:
            c.notes.append(f"checked against spec {c.spec_version}; this report lists the {ir.version} requirements")
    return build(columns, ir, Protocol(ir), inputs, tool_version(), quotes, spec_dir)
