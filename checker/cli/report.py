"""`virtgpu-conform report RESULTS...`: saved results rendered as one spec-compliance report."""

from __future__ import annotations

import os
import sys
from typing import Optional

import click

from virtgpu_conform.checker.report import FORMATS, make_report, render

from . import console
from .console import EXIT_USAGE


def write(doc: dict, fmt: str, output: Optional[str]) -> None:
    """Print (text, or any format without -o) or write the report atomically."""
    if fmt == "text" and not output:
        from virtgpu_conform.checker.report.text import show

        show(doc, console.out)
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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for a terminal; json (the primary, versioned form), md, html (one self-contained file), "
    "junit (XML), sarif (2.1.0).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.option(
    "--spec-dir",
    type=click.Path(),
    help="A virtio-spec checkout (or a folder of the GPU chapter's "
    ".tex files) to quote each requirement's text from; without it the report links to the spec "
    "and quotes nothing.",
)
def report(results: tuple[str, ...], fmt: str, output: Optional[str], spec_dir: Optional[str]) -> None:
    """Render saved results as one spec-compliance report.

    RESULTS are files written by `check --json` (every session in one becomes a column)
    and `fuzz --out` directories (or their fuzz-result.json). Each requirement of the spec
    gets a verdict per trace or target, with the findings under it.

    Exits 0 once the report is written (the verdicts are in it), 2 on unusable input.
    """
    from virtgpu_conform.checker.report.results import ResultError, load

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
        console.err.print(
            f"wrote {output} ({fmt}, {len(columns)} column{'s' if len(columns) > 1 else ''})", markup=False
        )
