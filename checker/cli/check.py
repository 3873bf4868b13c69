"""`virtgpu-conform check TRACE...`: was what the trace shows conformant? Findings, verdicts, JSON."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

import click
from rich.markup import escape
from rich.table import Table

from virtgpu_conform.spec.load import load_spec

from ..version import tool_version

from . import console
from virtgpu_conform.checker.traces import sources
from .console import EXIT_FINDINGS, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE
from virtgpu_conform.checker.check.engine import MAX_CANDIDATES, Checker
from virtgpu_conform.checker.check.findings import RESULT_SCHEMA, RESULT_VERSION, VERDICTS
from virtgpu_conform.checker.check.timeline import Timeline
from virtgpu_conform.checker.traces.events import Exchange, Reset, TraceError, Where

_PROGRESS_BYTES = 8 << 20  # files smaller than this finish before a progress bar is worth drawing


@dataclass
class Target:
    """One session to check: a file, or a directory whose trace files are one session seen from several sides."""

    label: str
    files: list[tuple[str, str]] = field(default_factory=list)  # (path, format)
    skipped: list[str] = field(default_factory=list)


def targets(paths: tuple[str, ...], fmt: Optional[str]) -> list[Target]:
    out = []
    for path in paths:
        if os.path.isdir(path):
            t = Target(path)
            kinds: dict[str, str] = {}
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if not os.path.isfile(full):
                    continue
                try:
                    kind = fmt or sources.detect(full)
                except TraceError:
                    t.skipped.append(f"{name} (not a trace)")
                    continue
                if kind in kinds:
                    t.skipped.append(f"{name} (a second {kind} trace; {kinds[kind]} is used)")
                    continue
                kinds[kind] = name
                t.files.append((full, kind))
            if not t.files:
                raise TraceError(Where(path, 0), "the directory holds no trace file this tool reads",
                                 "see README.md, 'Trace formats'")
            if "native" in kinds and "qemu" in kinds:
                raise TraceError(Where(path, 0), "a native trace and a QEMU log in one session directory",
                                 "check them as separate files")
            t.files.sort(key=lambda f: f[1] == "guest")  # the device-side source leads
            out.append(t)
        else:
            out.append(Target(path, [(path, fmt or sources.detect(path))]))
    return out


def run(target: Target, checker: Checker, codec, progress=None, timeline: Optional[Timeline] = None) -> Optional[str]:
    """Feed one session to the checker; returns where it stopped when interrupted."""
    streams = [sources.READERS[kind](sources.numbered_lines(path, progress), path, codec) for path, kind in target.files]
    evs = streams[0]
    for extra in streams[1:]:
        evs = sources.merged(evs, extra)
    try:
        if timeline is None:
            for ev in evs:
                checker.feed(ev)
        else:
            for ev in evs:
                checker.feed(ev)
                if type(ev) is Exchange:
                    timeline.after(ev, checker.cands[0].state)
                elif type(ev) is Reset:
                    timeline.reset(checker.exchanges)
    except KeyboardInterrupt:
        return f"interrupted after {checker.exchanges} exchanges"
    checker.finish()
    return None


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(sources.FORMATS), help="Force the trace format (default: detected).")
@click.option("--profile", type=click.Choice(["strict", "spec"]), default="strict", show_default=True,
              help="strict: normative + spec-text + informal rules; spec: only what the spec states in upper case.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the result (versioned JSON) here.")
@click.option("--candidates", type=click.IntRange(1, 256), default=MAX_CANDIDATES, show_default=True,
              help="Readings of what the trace leaves unsaid kept at once; beyond it, definite findings become "
                   "possible.")
@click.option("--all-requirements", is_flag=True, help="List every requirement, also those not exercised.")
@click.option("--report", "report_fmt", type=click.Choice(("json", "md", "html", "junit", "sarif", "text")),
              help="Also write a spec-compliance report (as `virtgpu-conform report` renders it) to -o FILE.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where --report writes.")
@click.option("--spec-dir", type=click.Path(), help="With --report: a virtio-spec checkout to quote requirements from.")
def check(traces: tuple[str, ...], fmt: Optional[str], profile: str, json_path: Optional[str], candidates: int,
          all_requirements: bool, report_fmt: Optional[str], output: Optional[str], spec_dir: Optional[str]) -> None:
    """Check captured traces against the protocol model.

    TRACE is a QEMU trace log, a guest tracepoint log, a native NDJSON trace, or a
    directory holding the logs of one session (QEMU's and the guest's), which are
    merged so that each fills the other's gaps.

    Exits 0 when nothing was found, 1 on definite findings, 3 when every finding is
    only possible (the trace leaves the verdict open), 2 on unusable input.
    """
    from virtgpu_conform.model.protocol import Protocol

    if report_fmt and not output:
        raise click.UsageError("--report needs -o FILE (stdout carries the check's own summary)")
    if output and not report_fmt:
        raise click.UsageError("-o is where --report writes; add --report FORMAT")
    try:
        plan = targets(traces, fmt)
    except TraceError as exc:
        console.err.print(str(exc), markup=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    protocol = Protocol(load_spec(None, None))
    results = []
    for target in plan:
        checker = Checker(protocol, profile, candidates)
        timeline = Timeline() if json_path or report_fmt else None
        stopped = _with_progress(target, checker, protocol.codec, timeline)
        results.append(_result(target, checker, stopped))
        if timeline is not None:
            results[-1]["timeline"] = timeline.to_json(checker.exchanges)
        _print(target, checker, results[-1], all_requirements)
        if stopped:
            break
    doc = {"schema": RESULT_SCHEMA, "version": RESULT_VERSION, "tool": tool_version(), "profile": profile,
           "spec_version": protocol.ir.version, "sessions": results, "totals": _totals(results)}
    if json_path:
        try:
            with open(json_path, "w") as f:
                json.dump(doc, f, indent=1)
        except OSError as exc:
            console.err.print(f"{json_path}: cannot write the result: {exc.strerror}", markup=False)
            sys.exit(EXIT_USAGE)
    if report_fmt:
        _write_report(doc, json_path or "<check>", report_fmt, output, spec_dir)
    t = doc["totals"]
    if any(r["interrupted"] for r in results):
        sys.exit(130)
    sys.exit(EXIT_FINDINGS if t["definite"] else EXIT_INCONCLUSIVE if t["possible"] else EXIT_OK)


def _write_report(doc: dict, name: str, fmt: str, output: str, spec_dir: Optional[str]) -> None:
    from virtgpu_conform.checker.report import make_report
    from virtgpu_conform.checker.report.results import columns_of

    from .report import write

    report = make_report(columns_of(name, doc), [s["target"] for s in doc["sessions"]], spec_dir)
    try:
        write(report, fmt, output)
    except OSError as exc:
        console.err.print(f"{output}: cannot write the report: {exc.strerror}", markup=False)
        sys.exit(EXIT_USAGE)


def _with_progress(target: Target, checker: Checker, codec, timeline=None) -> Optional[str]:
    size = sum(os.path.getsize(p) for p, _ in target.files)
    if not console.err.is_terminal or size < _PROGRESS_BYTES:
        return run(target, checker, codec, timeline=timeline)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), console=console.err, transient=True) as bar:
        task = bar.add_task(f"checking {target.label}", total=size, rate="")

        def progress(chars: int) -> None:
            bar.update(task, advance=chars, rate=f"{checker.exchanges:,} exchanges")

        return run(target, checker, codec, progress, timeline)


def _result(target: Target, c: Checker, stopped: Optional[str]) -> dict:
    verdicts = c.verdicts()
    return {
        "target": target.label,
        "sources": [{"file": p, "format": k} for p, k in target.files],
        "skipped_files": target.skipped,
        "interrupted": stopped,
        "exchanges": c.exchanges,
        "unidentified": c.unidentified,
        "commands": dict(sorted(c.commands.items())),
        "max_candidates": c.max_split,
        "uncertain": sorted(set(c.uncertain.values())),
        "diagnostics": {"counts": dict(sorted(c.diagnostics.items())),
                        "first": [{"at": str(d.where), "level": d.level, "code": d.code, "message": d.message}
                                  for d in c.first_diagnostics]},
        "findings": [f.to_json() for f in c.findings],
        "divergences": [{"command": k[0], "check": k[1], **v} for k, v in sorted(c.divergences.items())],
        "requirements": verdicts,
        "verdict_counts": {v: sum(1 for r in verdicts.values() if r["verdict"] == v) for v in VERDICTS},
    }


def _totals(results: list[dict]) -> dict:
    return {"sessions": len(results),
            "exchanges": sum(r["exchanges"] for r in results),
            "definite": sum(1 for r in results for f in r["findings"] if f["definite"]),
            "possible": sum(1 for r in results for f in r["findings"] if not f["definite"]),
            "diagnostics": sum(sum(r["diagnostics"]["counts"].values()) for r in results)}


def _print(target: Target, c: Checker, r: dict, all_requirements: bool) -> None:
    out = console.out
    kinds = " + ".join(k for _, k in target.files)
    out.print(f"[bold]{escape(target.label)}[/] ({kinds}{', merged' if len(target.files) > 1 else ''})")
    cmds = ", ".join(f"{k.removeprefix('VIRTIO_GPU_CMD_')} {v}" for k, v in sorted(c.commands.items(), key=lambda x: -x[1]))
    out.print(f"  {c.exchanges} exchanges ({c.unidentified} of unknown command); {escape(cmds)}")
    if r["interrupted"]:
        out.print(f"  [yellow]{r['interrupted']}: the results below cover what was read[/]")
    for s in target.skipped:
        out.print(f"  skipped: {escape(s)}")
    if c.diagnostics:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(c.diagnostics.items()))
        out.print(f"  lines skipped or noted: {counts}")
        for d in c.first_diagnostics[:5]:
            out.print(f"    {escape(str(d))}", soft_wrap=True)
    if c.max_split > 1:
        out.print(f"  up to {c.max_split} readings of what the trace leaves unsaid were kept at once")
    for why in sorted(set(c.uncertain.values())):
        out.print(f"  [yellow]definite findings downgraded: {escape(why)}[/]")
    definite = [f for f in c.findings if f.definite]
    possible = [f for f in c.findings if not f.definite]
    style = "red" if definite else "yellow" if possible else "green"
    out.print(f"  [{style}]{len(definite)} definite, {len(possible)} possible findings[/] (profile {c.profile_name})")
    if c.findings:
        t = Table(show_edge=False, pad_edge=False)
        for col in ("where", "", "side", "basis", "requirement / check", "what"):
            t.add_column(col, overflow="fold")
        for f in c.findings[:50]:
            what = f.message + (f"\n[dim]possible: {escape(f.reason)}[/]" if f.reason else "")
            if f.related:
                what += "\n[dim]" + escape("; ".join(f"{w}: {x}" for w, x in f.related[-2:])) + "[/]"
            t.add_row(escape(str(f.where)), "definite" if f.definite else "possible", f.side, f.basis,
                      escape("\n".join(f.reqs) or f.check), what if f.reason or f.related else escape(what))
        out.print(t)
        if len(c.findings) > 50:
            out.print(f"  ... and {len(c.findings) - 50} more (see --json)")
    counts = r["verdict_counts"]
    out.print("  requirements: " + ", ".join(f"{v} {counts[v]}" for v in VERDICTS))
    rows = [(rid, v) for rid, v in r["requirements"].items()
            if all_requirements or v["verdict"] in ("fail", "inconclusive", "pass")]
    if rows:
        t = Table(show_edge=False, pad_edge=False)
        for col in ("verdict", "events", "requirement"):
            t.add_column(col, overflow="fold")
        for rid, v in rows:
            t.add_row(v["verdict"], str(v["events"]), escape(rid))
        out.print(t)
    if r["divergences"]:
        out.print("  divergences from the reference device (the spec leaves these open): " + escape(", ".join(
            f"{d['command'].removeprefix('VIRTIO_GPU_CMD_')}/{d['check']} x{d['count']}" for d in r["divergences"])))
