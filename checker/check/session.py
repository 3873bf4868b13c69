"""Checking recorded sessions: which files make a session, the one feed loop, and what a check returns.

`check_trace()` is what the CLI's `check`, the pytest plugin, the tests and the benchmarks call.
A path is one session: a trace file, or a directory holding the logs of one session seen from
several sides (QEMU's log and the guest's tracepoints), merged so that each fills the other's gaps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from typing import Optional, Union

from virtgpu_conform.checker.traces import sources
from virtgpu_conform.checker.traces.events import Exchange, Reset, TraceError, Where
from virtgpu_conform.checker.version import tool_version
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.spec.errors import Error
from virtgpu_conform.spec.ir import SpecIR

from .engine import MAX_CANDIDATES, Checker
from .findings import RESULT_SCHEMA, RESULT_VERSION, VERDICTS, Finding
from .timeline import Timeline

Paths = Union[str, PathLike, Iterable[Union[str, PathLike]]]
# (session label, bytes read so far, bytes in all, exchanges checked so far)
Progress = Callable[[str, int, int, int], None]


class NotConformant(Error, AssertionError):
    """`assert_conformant()` found definite findings, or nothing to check; the message lists them."""


@dataclass
class Recording:
    """One session to check: its trace files (path, format) and the files of its directory left out."""

    label: str
    files: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, *paths: Union[str, PathLike], fmt: Optional[str] = None) -> Recording:
        """These files as one session (merged when there are several), formats detected unless given."""
        files = [(os.fspath(p), fmt or sources.detect(os.fspath(p))) for p in paths]
        files.sort(key=lambda f: f[1] == "guest")  # the device-side source leads
        return cls(" + ".join(p for p, _ in files), files)

    @property
    def size(self) -> int:
        return sum(os.path.getsize(p) for p, _ in self.files)


def plan(paths: Paths, fmt: Optional[str] = None) -> list[Recording]:
    """The sessions `paths` hold: a file is one; a directory is one, its trace files merged."""
    if isinstance(paths, (str, PathLike)):
        paths = [paths]
    out = []
    for path in (os.fspath(p) for p in paths):
        if not os.path.isdir(path):
            out.append(Recording(path, [(path, fmt or sources.detect(path))]))
            continue
        rec = Recording(path)
        kinds: dict[str, str] = {}
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if not os.path.isfile(full):
                continue
            try:
                kind = fmt or sources.detect(full)
            except TraceError:
                rec.skipped.append(f"{name} (not a trace)")
                continue
            if kind in kinds:
                rec.skipped.append(f"{name} (a second {kind} trace; {kinds[kind]} is used)")
                continue
            kinds[kind] = name
            rec.files.append((full, kind))
        if not rec.files:
            raise TraceError(
                Where(path, 0), "the directory holds no trace file this tool reads", "see README.md, 'Checking traces'"
            )
        if "native" in kinds and "qemu" in kinds:
            raise TraceError(
                Where(path, 0), "a native trace and a QEMU log in one session directory", "check them as separate files"
            )
        rec.files.sort(key=lambda f: f[1] == "guest")
        out.append(rec)
    return out


# How to record what a source lacks, per format: the line a user reads when nothing could be checked.
RECORD = {
    "qemu": "QEMU's log needs its command events: run QEMU with -trace 'virtio_gpu*' -D FILE (add -trace "
    "virtqueue_pop -trace virtqueue_fill for its answers, -d guest_errors for its complaints)",
    "guest": "the guest's log needs its virtio_gpu tracepoints: echo 1 > /sys/kernel/tracing/events/virtio_gpu/"
    "enable before the driver probes the device, then save /sys/kernel/tracing/trace",
    "native": "a native trace needs request records after its session record (see docs/trace-format.md)",
}
# Diagnostics that say what a whole source lacks or where it starts: named with the source.
SOURCE_NOTES = frozenset({"no-answers", "late-start", "lost-events"})


def _counted(events: Iterable, counts: dict[str, int], path: str) -> Iterator:
    n = 0
    try:
        for ev in events:
            if type(ev) is Exchange:
                n += 1
            yield ev
    finally:
        counts[path] = n


def feed(
    rec: Recording,
    checker: Checker,
    progress: Optional[Callable[[int], None]] = None,
    timeline: Optional[Timeline] = None,
    counts: Optional[dict[str, int]] = None,
) -> Optional[str]:
    """Every event of the session into the checker, then its end; returns where it stopped when
    interrupted (Ctrl-C keeps what was checked), else None. `counts` hears how many exchanges
    each source gave (of a merged session: before merging)."""
    codec = checker.p.codec
    streams = [sources.READERS[kind](sources.numbered_lines(path, progress), path, codec) for path, kind in rec.files]
    if counts is not None and len(streams) > 1:
        streams = [_counted(s, counts, path) for s, (path, _) in zip(streams, rec.files)]
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


@dataclass
class SessionResult:
    """One checked session: its findings, per-requirement verdicts and what was read."""

    recording: Recording
    checker: Checker
    interrupted: Optional[str] = None
    timeline: Optional[dict] = None
    contributed: dict[str, int] = field(default_factory=dict)  # exchanges each source gave, when merged

    def from_source(self, path: str) -> int:
        """Exchanges the source gave (of a single-source session: the session's)."""
        if len(self.recording.files) == 1:
            return self.checker.exchanges
        return self.contributed.get(path, 0)

    def source_notes(self, path: str) -> list[str]:
        """What the source lacks, or where it starts, as its importer said."""
        return [d.message for d in self.checker.first_diagnostics if d.code in SOURCE_NOTES and d.where.file == path]

    def unchecked_sources(self) -> list[str]:
        """A line for each source nothing could be checked from: what it lacks and how to record it."""
        if self.interrupted:
            return []
        return [
            f"{path}: no command could be read from this {fmt} trace; {RECORD[fmt]}"
            for path, fmt in self.recording.files
            if self.from_source(path) == 0
        ]

    @property
    def label(self) -> str:
        return self.recording.label

    @property
    def findings(self) -> list[Finding]:
        return self.checker.findings

    @property
    def definite(self) -> list[Finding]:
        return [f for f in self.checker.findings if f.definite]

    @property
    def possible(self) -> list[Finding]:
        return [f for f in self.checker.findings if not f.definite]

    @property
    def exchanges(self) -> int:
        return self.checker.exchanges

    def requirements(self) -> dict[str, dict]:
        """Every requirement of the spec with its verdict over the session (see README, 'Checking traces')."""
        return self.checker.verdicts()

    def to_json(self) -> dict:
        c = self.checker
        verdicts = c.verdicts()
        out = {
            "target": self.recording.label,
            "sources": [
                {"file": p, "format": k, "exchanges": self.from_source(p), "notes": self.source_notes(p)}
                for p, k in self.recording.files
            ],
            "skipped_files": self.recording.skipped,
            "interrupted": self.interrupted,
            "exchanges": c.exchanges,
            "unidentified": c.unidentified,
            "commands": dict(sorted(c.commands.items())),
            "max_candidates": c.max_split,
            "uncertain": sorted(set(c.uncertain.values())),
            "diagnostics": {
                "counts": dict(sorted(c.diagnostics.items())),
                "first": [
                    {"at": str(d.where), "level": d.level, "code": d.code, "message": d.message}
                    for d in c.first_diagnostics
                ],
            },
            "findings": [f.to_json() for f in c.findings],
            "divergences": [{"command": k[0], "check": k[1], **v} for k, v in sorted(c.divergences.items())],
            "requirements": verdicts,
            "verdict_counts": {v: sum(1 for r in verdicts.values() if r["verdict"] == v) for v in VERDICTS},
        }
        if self.timeline is not None:
            out["timeline"] = self.timeline
        return out


@dataclass
class CheckResult:
    """What `check_trace()` returns: one SessionResult per session, in the order given."""

    sessions: list[SessionResult]
    profile: str
    spec_version: str
    tool: str = field(default_factory=tool_version)

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.sessions for f in s.findings]

    @property
    def definite(self) -> list[Finding]:
        return [f for f in self.findings if f.definite]

    @property
    def possible(self) -> list[Finding]:
        return [f for f in self.findings if not f.definite]

    @property
    def interrupted(self) -> bool:
        return any(s.interrupted for s in self.sessions)

    def to_json(self) -> dict:
        """The versioned result `check --json` writes (schema virtgpu-conform/check-result, version 1)."""
        sessions = [s.to_json() for s in self.sessions]
        return {
            "schema": RESULT_SCHEMA,
            "version": RESULT_VERSION,
            "tool": self.tool,
            "profile": self.profile,
            "spec_version": self.spec_version,
            "sessions": sessions,
            "totals": {
                "sessions": len(sessions),
                "exchanges": sum(s["exchanges"] for s in sessions),
                "definite": sum(1 for s in sessions for f in s["findings"] if f["definite"]),
                "possible": sum(1 for s in sessions for f in s["findings"] if not f["definite"]),
                "diagnostics": sum(sum(s["diagnostics"]["counts"].values()) for s in sessions),
            },
        }

    def problems(self, possible: bool = False) -> list[str]:
        """Why the sessions are not shown conformant, a line each: nothing checked, an interrupted
        check, each definite finding (and each possible one, with `possible`)."""
        out = []
        for s in self.sessions:
            if s.exchanges == 0:
                out.append(f"{s.label}: nothing was checked (0 exchanges)")
            out += s.unchecked_sources() if s.exchanges else []
            if s.interrupted:
                out.append(f"{s.label}: {s.interrupted}")
            for f in s.findings:
                if f.definite or possible:
                    out.append(describe(f))
        return out

    def assert_conformant(self, possible: bool = False) -> None:
        """Raise NotConformant listing the definite findings (and possible ones, with `possible`);
        a session with nothing checked never passes."""
        lines = self.problems(possible)
        if lines:
            raise NotConformant(
                f"{len(lines)} problem{'s' if len(lines) > 1 else ''} in "
                f"{', '.join(s.label for s in self.sessions)}:\n" + "\n".join(lines)
            )


def describe(f: Finding) -> str:
    """One finding in one line of plain text: where, how sure, whose fault, what."""
    reqs = f" [{', '.join(f.reqs)}]" if f.reqs else ""
    why = f" (possible: {f.reason})" if f.reason else ""
    return (
        f"{f.where}: {'definite' if f.definite else 'possible'} {f.side} finding, {f.basis} {f.check}{reqs}: "
        f"{f.message}{why}"
    )


def protocol_for(spec: Union[SpecIR, Protocol, str, PathLike, None]) -> Protocol:
    """The model for a spec: the embedded snapshot (None), a SpecIR, a spec checkout or chapter file."""
    from pathlib import Path

    from virtgpu_conform.spec.load import load_snapshot, load_spec

    if isinstance(spec, Protocol):
        return spec
    if spec is None:
        ir = load_snapshot()
    elif isinstance(spec, SpecIR):
        ir = spec
    else:
        ir = load_spec(Path(os.fspath(spec)))
    cached = _PROTOCOLS.get(id(ir))
    if cached is None or cached.ir is not ir:
        cached = _PROTOCOLS[id(ir)] = Protocol(ir)
    return cached


_PROTOCOLS: dict[int, Protocol] = {}


def _ticker(rec: Recording, checker: Checker, progress: Progress) -> Callable[[int], None]:
    total, done = rec.size, [0]

    def tick(chars: int) -> None:
        done[0] += chars
        progress(rec.label, done[0], total, checker.exchanges)

    return tick


def follow_session(
    path: str,
    protocol: Protocol,
    profile: str,
    stop: Callable[[], bool],
    seen: Callable[[Checker, Finding], None],
    fmt: Optional[str] = None,
    candidates: int = MAX_CANDIDATES,
    tick: Optional[Callable[[Checker], None]] = None,
) -> SessionResult:
    """Check a trace that is still being written (or a pipe), as it grows: `seen` hears each finding
    as it is made, `tick` each event, `stop()` ends it (the exchanges still waiting for their
    answers are then judged as a trace's end judges them)."""
    if fmt is None:
        if not os.path.isfile(path):
            raise TraceError(
                Where(path, 0),
                "a pipe's format cannot be told without reading it",
                "give --format qemu, guest or native",
            )
        while fmt is None:  # a log the VM has only just opened: wait for its first lines
            try:
                fmt = sources.detect(path)
            except TraceError:
                if stop():
                    raise
                time.sleep(0.2)
    rec = Recording(path, [(path, fmt)])
    checker = Checker(protocol, profile, candidates)
    shown = 0
    for ev in sources.READERS[fmt](
        sources.Follow(path, stop, tick=None if tick is None else lambda: tick(checker)), path, protocol.codec
    ):
        checker.feed(ev)
        while shown < len(checker.findings):
            seen(checker, checker.findings[shown])
            shown += 1
    checker.finish()
    for f in checker.findings[shown:]:
        seen(checker, f)
    return SessionResult(rec, checker)


def check_session(
    rec: Recording,
    protocol: Protocol,
    profile: str = "strict",
    candidates: int = MAX_CANDIDATES,
    timeline: bool = False,
    fast: bool = True,
    progress: Optional[Progress] = None,
) -> SessionResult:
    checker = Checker(protocol, profile, candidates, fast=fast)
    tl = Timeline() if timeline else None
    counts: dict[str, int] = {}
    stopped = feed(rec, checker, None if progress is None else _ticker(rec, checker, progress), tl, counts)
    return SessionResult(rec, checker, stopped, tl.to_json(checker.exchanges) if tl is not None else None, counts)


def check_trace(
    paths: Paths,
    profile: str = "strict",
    spec: Union[SpecIR, Protocol, str, PathLike, None] = None,
    format: Optional[str] = None,
    candidates: int = MAX_CANDIDATES,
    timeline: bool = False,
    fast: bool = True,
    progress: Optional[Progress] = None,
) -> CheckResult:
    """Check recorded sessions against the protocol model.

    `paths`: a trace file or session directory, or several (each one session). `profile`:
    "strict" (normative, spec-text and informal rules) or "spec". `spec`: the embedded v1.4
    snapshot by default, or a SpecIR from `load_spec()`, or a spec checkout to load. `format`
    forces "native", "qemu" or "guest". `candidates`: readings of what a trace leaves unsaid
    kept at once. `timeline`: also record what a report draws. `fast=False` takes the checker's
    general path for every exchange (the same results, slower; for testing the fast paths).

    Raises TraceError (an Error) for input that cannot be used at all; broken lines inside a
    trace are diagnostics in the result. Ctrl-C stops the check: the result covers what was read
    and says so (`interrupted`), and sessions after it are not checked.
    """
    protocol = protocol_for(spec)
    results = []
    for rec in plan(paths, format):
        results.append(check_session(rec, protocol, profile, candidates, timeline, fast, progress))
        if results[-1].interrupted:
            break
    return CheckResult(results, profile, protocol.ir.version)
