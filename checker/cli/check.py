"""`virtgpu-conform check TRACE...`: was what the trace shows conformant? Findings, verdicts, JSON."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import click
from rich.markup import escape
from rich.table import Table

from virtgpu_conform.checker.check.engine import MAX_CANDIDATES
from virtgpu_conform.checker.check.findings import VERDICTS
from virtgpu_conform.checker.check.session import (
    CheckResult,
    Recording,
    SessionResult,
    check_session,
    plan,
    protocol_for,
)
from virtgpu_conform.checker.traces import sources
from virtgpu_conform.checker.traces.events import TraceError

from . import console
from .console import EXIT_FINDINGS, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE

_PROGRESS_BYTES = 8 << 20  # files smaller than this finish before a progress bar is worth drawing


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(sources.FORMATS), help="Force the trace format (default: detected).")
@click.option(
    "--profile",
    type=click.Choice(["strict", "spec"]),
    default="strict",
    show_default=True,
    help="strict: normative + spec-text + informal rules; spec: only what the spec states in upper case.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the result (versioned JSON) here.")
@click.option(
    "--candidates",
    type=click.IntRange(1, 256),
    default=MAX_CANDIDATES,
    show_default=True,
    help="Readings of what the trace leaves unsaid kept at once; beyond it, definite findings become possible.",
)
@click.option("--all-requirements", is_flag=True, help="List every requirement, also those not exercised.")
@click.option(
    "--report",
    "report_fmt",
    type=click.Choice(("json", "md", "html", "junit", "sarif", "text")),
    help="Also write a spec-compliance report (as `virtgpu-conform report` renders it) to -o FILE.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where --report writes.")
@click.option(
    "--follow",
    is_flag=True,
    help="Check one trace as it grows (a running VM's QEMU log, or a tracefs pipe with --format): each finding "
    "is printed as it is made, with a live status line; Ctrl-C ends it with the summary (and --json).",
)
@click.option("--spec-dir", type=click.Path(), help="With --report: a virtio-spec checkout to quote requirements from.")
def check(
    traces: tuple[str, ...],
    fmt: Optional[str],
    profile: str,
    json_path: Optional[str],
    candidates: int,
    all_requirements: bool,
    report_fmt: Optional[str],
    output: Optional[str],
    spec_dir: Optional[str],
    follow: bool,
) -> None:
    """Check captured traces against the protocol model.

    TRACE is a QEMU trace log, a guest tracepoint log, a native NDJSON trace, or a
    directory holding the logs of one session (QEMU's and the guest's), which are
    merged so that each fills the other's gaps.

    Exits 0 when nothing was found, 1 on definite findings, 3 when every finding is
    only possible (the trace leaves the verdict open), 2 on unusable input (also a
    trace nothing could be checked from). A closed stdout (| head) stops the printing
    and leaves the exit code as it would have been.
    """
    if follow:
        if len(traces) != 1 or os.path.isdir(traces[0]) or report_fmt:
            raise click.UsageError("--follow checks one growing file or pipe (no directory, no --report)")
        _follow(traces[0], fmt, profile, candidates, json_path)
    if report_fmt and not output:
        raise click.UsageError("--report needs -o FILE (stdout carries the check's own summary)")
    if output and not report_fmt:
        raise click.UsageError("-o is where --report writes; add --report FORMAT")
    try:
        recordings = plan(traces, fmt)
    except TraceError as exc:
        console.err.print(str(exc), markup=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    protocol = protocol_for(None)
    result = CheckResult([], profile, protocol.ir.version)
    for rec in recordings:
        s = _with_progress(rec, protocol, profile, candidates, timeline=bool(json_path or report_fmt))
        result.sessions.append(s)
        _print(s, all_requirements)
        if s.interrupted:
            break
    doc = result.to_json()
    if json_path:
        try:
            with open(json_path, "w") as f:
                json.dump(doc, f, indent=1)
        except OSError as exc:
            console.err.print(f"{json_path}: cannot write the result: {exc.strerror}", markup=False)
            sys.exit(EXIT_USAGE)
    if report_fmt:
        assert output is not None, "--report needs -o (checked above)"
        _write_report(doc, json_path or "<check>", report_fmt, output, spec_dir)
    if result.interrupted:
        sys.exit(130)
    # Nothing checked is never a pass: a source that gave no exchange is unusable input.
    unchecked = [line for s in result.sessions for line in s.unchecked_sources()]
    for line in unchecked:
        console.err.print(f"check: {line}", markup=False, soft_wrap=True)
    if unchecked:
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_FINDINGS if result.definite else EXIT_INCONCLUSIVE if result.possible else EXIT_OK)


def _follow(path: str, fmt: Optional[str], profile: str, candidates: int, json_path: Optional[str]) -> None:
    """--follow: findings as they are made and a live status line, until Ctrl-C (or SIGTERM)."""
    import signal
    import time

    from rich.live import Live
    from rich.text import Text

    from virtgpu_conform.checker.check.session import describe, follow_session

    stopping = []

    def stop_on(signum, frame) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, stop_on) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    live = (
        Live(Text(""), console=console.err, refresh_per_second=4, transient=True) if console.err.is_terminal else None
    )

    def status(c) -> Text:
        definite = sum(f.definite for f in c.findings)
        return Text(
            f"following {path}: {c.exchanges:,} exchanges ({c.exchanges / max(time.monotonic() - started, 1e-9):,.0f}/s), "
            f"{definite} definite, {len(c.findings) - definite} possible findings; Ctrl-C ends it"
        )

    last = [0.0]

    def seen(c, f) -> None:
        console.out.print(describe(f), markup=False, soft_wrap=True)

    def stop() -> bool:
        return bool(stopping)

    def tick(c) -> None:
        now = time.monotonic()
        if live is not None and now - last[0] > 0.25:
            last[0] = now
            live.update(status(c))

    if live is not None:
        live.start()
    try:
        protocol = protocol_for(None)
        s = follow_session(path, protocol, profile, stop, seen, fmt, candidates, tick=tick)
    except TraceError as exc:
        console.err.print(str(exc), markup=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    finally:
        if live is not None:
            live.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result = CheckResult([s], profile, protocol.ir.version)
    _print(s, False)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result.to_json(), fh, indent=1)
    unchecked = s.unchecked_sources()
    for line in unchecked:
        console.err.print(f"check: {line}", markup=False, soft_wrap=True)
    # Ctrl-C is how a follow ends: the exit code is the verdict, as for a whole trace.
    sys.exit(
        EXIT_USAGE
        if unchecked
        else EXIT_FINDINGS
        if result.definite
        else EXIT_INCONCLUSIVE
        if result.possible
        else EXIT_OK
    )


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


def _with_progress(rec: Recording, protocol, profile: str, candidates: int, timeline: bool) -> SessionResult:
    if not console.err.is_terminal or rec.size < _PROGRESS_BYTES:
        return check_session(rec, protocol, profile, candidates, timeline)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console.err,
        transient=True,
    ) as bar:
        task = bar.add_task(f"checking {rec.label}", total=rec.size, rate="")

        def progress(label: str, done: int, total: int, exchanges: int) -> None:
            bar.update(task, completed=done, rate=f"{exchanges:,} exchanges")

        return check_session(rec, protocol, profile, candidates, timeline, progress=progress)


def _print(s: SessionResult, all_requirements: bool) -> None:
    out = console.out
    c, target, r = s.checker, s.recording, s.to_json()
    kinds = " + ".join(k for _, k in target.files)
    out.print(f"[bold]{escape(target.label)}[/] ({kinds}{', merged' if len(target.files) > 1 else ''})")
    cmds = ", ".join(
        f"{k.removeprefix('VIRTIO_GPU_CMD_')} {v}" for k, v in sorted(c.commands.items(), key=lambda x: -x[1])
    )
    out.print(f"  {c.exchanges} exchanges ({c.unidentified} of unknown command); {escape(cmds)}")
    if r["interrupted"]:
        out.print(f"  [yellow]{r['interrupted']}: the results below cover what was read[/]")
    for skipped in target.skipped:
        out.print(f"  skipped: {escape(skipped)}")
    if c.diagnostics:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(c.diagnostics.items()))
        out.print(f"  lines skipped or noted: {counts}")
        for d in c.first_diagnostics[:5]:
            out.print(f"    {escape(str(d))}", soft_wrap=True)
    if c.max_split > 1:
        out.print(f"  up to {c.max_split} readings of what the trace leaves unsaid were kept at once")
    for why in sorted(set(c.uncertain.values())):
        out.print(
            f"  [yellow]left unknown by the trace, so findings that read it are at most possible: {escape(why)}[/]"
        )
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
            t.add_row(
                escape(str(f.where)),
                "definite" if f.definite else "possible",
                f.side,
                f.basis,
                escape("\n".join(f.reqs) or f.check),
                what if f.reason or f.related else escape(what),
            )
        out.print(t)
        if len(c.findings) > 50:
            out.print(f"  ... and {len(c.findings) - 50} more (see --json)")
    counts = r["verdict_counts"]
    out.print("  requirements: " + ", ".join(f"{v} {counts[v]}" for v in VERDICTS))
    rows = [
        (rid, v)
        for rid, v in r["requirements"].items()
        if all_requirements or v["verdict"] in ("fail", "inconclusive", "pass")
    ]
    if rows:
        t = Table(show_edge=False, pad_edge=False)
        for col in ("verdict", "events", "requirement"):
            t.add_column(col, overflow="fold")
        for rid, v in rows:
            t.add_row(v["verdict"], str(v["events"]), escape(rid))
        out.print(t)
    if r["divergences"]:
        out.print(
            "  divergences from the reference device (the spec leaves these open): "
            + escape(
                ", ".join(
                    f"{d['command'].removeprefix('VIRTIO_GPU_CMD_')}/{d['check']} x{d['count']}"
                    for d in r["divergences"]
                )
            )
        )
