"""Spec-compliance reports: saved results -> one report document (JSON) -> text, Markdown, HTML, JUnit, SARIF."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Optional, Protocol, Union

from virtgpu_conform.checker.version import tool_version

# One renderer per format, each in its own module with `render(doc) -> str`; text also prints with rich.
RENDERERS = {"text": "text", "md": "markdown", "html": "html", "junit": "junit", "sarif": "sarif"}
FORMATS = ("text", "json", *(f for f in RENDERERS if f != "text"))


def render(doc: dict, fmt: str) -> str:
    """The report document in one of FORMATS."""
    if fmt == "json":
        return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if fmt not in RENDERERS:
        raise ValueError(f"no report format {fmt!r}: one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"{__name__}.{RENDERERS[fmt]}")
    return module.render(doc)


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


class Result(Protocol):
    """What a report reads of a result in hand (a CheckResult, a FuzzResult)."""

    def to_json(self) -> dict: ...


ResultLike = Union[str, PathLike, Result]  # a result, or the path of a saved one


def report(
    results: Union[ResultLike, Iterable[ResultLike]], format: str = "json", spec_dir: Optional[str] = None
) -> str:
    """One spec-compliance report over checked sessions and fuzz campaigns, rendered in `format`
    (text, json, md, html, junit, sarif). `results`: CheckResult and FuzzResult objects, or paths
    of saved ones (a `check --json` file, a `fuzz --out` directory); each session or campaign is a
    column. `spec_dir`: a virtio-spec checkout to quote each requirement from.
    Raises ResultError (an Error) for a path that holds no usable result."""
    from .results import columns_of, load

    items = [results] if isinstance(results, (str, PathLike)) or hasattr(results, "to_json") else list(results)
    columns, inputs = [], []
    for i, r in enumerate(items):
        if isinstance(r, (str, PathLike)):
            path = os.fspath(r)
            columns += load(path)
            inputs.append(path)
        else:
            doc = r.to_json()
            label = getattr(r, "out", None) or f"<{doc.get('schema', 'result').rsplit('/', 1)[-1]} {i + 1}>"
            columns += columns_of(label, doc)
            inputs.append(label)
    return render(make_report(columns, inputs, spec_dir), format)
