"""`virtgpu-conform report RESULTS...`: saved results rendered as one spec-compliance report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import click

from . import console
from .console import EXIT_USAGE

FORMATS = ("text", "json", "md", "html", "junit", "sarif")


def render(doc: dict, fmt: str) -> str:
    """The report document in a file format (all but `text`, which prints with rich)."""
    if fmt == "json":
        return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if fmt == "md":
        from .report.markdown import render as md
        return md(doc)
    if fmt == "html":
        from .report.html import render as html
        return html(doc)
    if fmt == "junit":
        from .report.junit import render as junit
        return junit(doc)
    if fmt == "sarif":
        from .report.sarif import render as sarif
        return sarif(doc)
    raise ValueError(fmt)


def make_report(columns, inputs: list[str], spec_dir: Optional[str]) -> dict:
    """The report document for these columns, quoting the spec from `spec_dir` when given."""
    from virtgpu_conform.model.protocol import Protocol
    from virtgpu_conform.spec.load import load_snapshot

    from .cli import _version
    from .report.build import build

    ir = load_snapshot()
    quotes = None
    if spec_dir:
        from virtgpu_conform.spec.quote import quotes as read_quotes
        _, quotes = read_quotes(Path(spec_dir))  # SpecSourceError: reported by the CLI with file:line
    for c in columns:
        if c.spec_version and c.spec_version != ir.version:
            c.notes.append(f"checked against spec {c.spec_version}; this report lists the {ir.version} requirements")
    return build(columns, ir, Protocol(ir), inputs, _version(), quotes, spec_dir)


def write(doc: dict, fmt: str, output: Optional[str]) -> None:
    """Print (text, or any format without -o) or write the report atomically."""
    if fmt == "text" and not output:
        from .report.text import render as text
        text(doc, console.out)
        return
    if fmt == "text":
        from rich.console import Console

        from .report.text import render as text
        with open(output, "w", encoding="utf-8") as fh:
            text(doc, Console(file=fh, width=160, no_color=True, highlight=False))
        return
    body = render(doc, fmt)
    if not output:
        sys.stdout.write(body)
        return
    tmp = f"{output}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(body)
    os.replace(tmp, output)


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text for a terminal; json (the primary, versioned form), md, html (one self-contained file), "
                   "junit (XML), sarif (2.1.0).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.option("--spec-dir", type=click.Path(), help="A virtio-spec checkout (or a folder of the GPU chapter's "
              ".tex files) to quote each requirement's text from; without it the report links to the spec "
              "and quotes nothing.")
def report(results: tuple[str, ...], fmt: str, output: Optional[str], spec_dir: Optional[str]) -> None:
    """Render saved results as one spec-compliance report.

    RESULTS are files written by `check --json` (every session in one becomes a column)
    and `fuzz --out` directories (or their fuzz-result.json). Each requirement of the spec
    gets a verdict per trace or target, with the findings under it.

    Exits 0 once the report is written (the verdicts are in it), 2 on unusable input.
    """
    from .report.results import ResultError, load

    columns = []
    for path in results:
        try:
            columns += load(path)
        except ResultError as exc:
            console.err.print(str(exc), markup=False, soft_wrap=True)
            sys.exit(EXIT_USAGE)
    if not columns:
        console.err.print("the results hold no checked session or campaign; nothing to report", markup=False)
        sys.exit(EXIT_USAGE)
    doc = make_report(columns, list(results), spec_dir)
    try:
        write(doc, fmt, output)
    except OSError as exc:
        console.err.print(f"{output}: cannot write the report: {exc.strerror}", markup=False)
        sys.exit(EXIT_USAGE)
    if output:
        console.err.print(f"wrote {output} ({fmt}, {len(columns)} column{'s' if len(columns) > 1 else ''})",
                          markup=False)
