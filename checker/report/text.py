"""The report on a terminal (rich): totals, the matrix, then the findings under each requirement."""

from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .common import MARK, column_size, findings_of, rows, short_req, where

STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "not-applicable": "dim", "not-exercised": "dim"}


def render(doc: dict) -> str:
    """The terminal view as plain text (160 columns, no colour): what `report -o FILE --format text` writes."""
    buf = io.StringIO()
    show(doc, Console(file=buf, width=160, no_color=True, highlight=False))
    return buf.getvalue()


def show(doc: dict, out: Console) -> None:
    cols = doc["columns"]
    out.print(
        f"[bold]virtio-gpu conformance report[/] (spec {escape(doc['spec']['version'])}, "
        f"{doc['totals']['requirements']} requirements)"
    )
    for c in cols:
        what = column_size(c)
        counts = ", ".join(f"{v} {n}" for v, n in c["verdict_counts"].items() if n)
        out.print(f"  [bold]{c['id']}[/] {escape(c['label'])} ({c['kind']}): {what}; {counts}")
        for n in c["notes"]:
            out.print(f"     [yellow]{escape(n)}[/]")
    t = Table(show_edge=False, pad_edge=False, title="requirements", title_justify="left")
    t.add_column("requirement", overflow="fold")
    t.add_column("basis")
    for c in cols:
        t.add_column(c["id"])
    for _, r in rows(doc):
        cells = []
        for c in cols:
            v = r["verdicts"].get(c["id"])
            cells.append(f"[{STYLE[v['verdict']]}]{MARK[v['verdict']]} {v['verdict']}[/]" if v else "")
        name = escape(short_req(r["id"])) + (" [magenta]differs[/]" if r["divergent"] else "")
        t.add_row(name, r["basis"], *cells)
    out.print(t)
    shown = 0
    for sec in doc["sections"]:
        for item in (*sec["requirements"], *sec["rules"]):
            fs = findings_of(item)
            if not fs:
                continue
            label = item["id"] if "level" in item else f"{item['id']} (implied rule)"
            out.print(f"[bold]{escape(label)}[/]: {escape(item['summary'])}")
            for f in fs[:5]:
                style = "red" if f["severity"] == "definite" else "yellow"
                out.print(
                    f"  [{style}]{f['severity']}[/] {f['column']} {escape(where(f))}: {escape(f['message'])}",
                    soft_wrap=True,
                )
            if len(fs) > 5:
                out.print(f"  ... and {len(fs) - 5} more")
            shown += 1
    if not shown:
        out.print("[green]no findings[/]")
    for d in doc["divergences"]:
        counts = ", ".join(f"{cid} x{n}" for cid, n in d["counts"].items())
        out.print(f"[magenta]open[/] {escape(d['command'] or 'any command')} {escape(d['check'])}: {counts}")
