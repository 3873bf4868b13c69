"""A fuzz campaign: hypothesis runs the machine against a target in rounds; each new finding is
shrunk to a minimal case, replayed on a fresh device, and saved as a reproducer.

One round hunts one new finding: the first unseen signature a case shows becomes the one
hypothesis shrinks towards (others seen meanwhile are left for later rounds). When the
round ends with it shrunk, the next round starts with a new seed and that signature known,
so the same finding is counted, never shrunk twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis.errors import Flaky, HypothesisException
from hypothesis.stateful import get_state_machine_test

from virtgpu_conform.checker.check.findings import Tally
from virtgpu_conform.checker.check.ledger import Ledger
from virtgpu_conform.checker.devices import affinity
from virtgpu_conform.checker.devices.target import MIGRATION, TOGETHER, Target, TargetError, chains_of_step
from virtgpu_conform.checker.errors import save_traceback
from virtgpu_conform.checker.traces.events import TraceError
from virtgpu_conform.model.adversary import Edges
from virtgpu_conform.model.protocol import Protocol

from .differential import Differ
from .exercised import Exercised
from .machine import DeviceMachine, Failure
from .oracle import CRASH, Observation, Signature
from .pipeline import Pipeline
from .replay import replay
from .step import Step

ROUND_EXAMPLES = 10_000  # cases a round runs at most (a hunt's ends sooner, on a new finding)
RESULT_SCHEMA = "virtgpu-conform/fuzz-result"
RESULT_VERSION = 1


class Stop(BaseException):
    """Time is up. A BaseException, so hypothesis does not take it for a failing case and shrink it."""


def _bug_in(exc: BaseException) -> Optional[Exception]:
    """An exception of the tool's own among what a flaky replay gathered: hypothesis' and the
    campaign's signals (a finding, a stop) are not bugs."""
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            bug = _bug_in(e)
            if bug is not None:
                return bug
        return None
    if isinstance(exc, Exception) and not isinstance(exc, (Failure, HypothesisException)):
        return exc
    return None


def _stop_under(exc: BaseException) -> Optional[Stop]:
    """The Stop a flakiness error was raised over. Hypothesis books a case that a Stop ended as one
    that stopped drawing there; if it had run that far before (a mutation of a known case), it
    calls the two inconsistent and raises this instead: the campaign's end, not a flaky device."""
    seen = set()
    cur: Optional[BaseException] = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, Stop):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


@dataclass
class Found:
    signature: Signature
    message: str
    requirements: tuple[str, ...]
    first_seen: int  # commands sent when it was first seen
    hits: int = 1
    steps: list[Step] = field(default_factory=list)  # the smallest case known so far
    shrunk: bool = False
    reproduced: Optional[bool] = None  # the saved case, replayed on a fresh device, showed it again
    path: Optional[str] = None  # the case's directory
    line: int = 0  # of the request showing it, in the reproducer
    native: list[str] = field(default_factory=list)  # the reproducer in the device's own form (repro.qtest, repro.sh)

    def to_json(self) -> dict:
        s = self.signature
        return {
            "kind": s.kind,
            "command": s.command,
            "check": s.check,
            "basis": s.basis or None,
            "requirements": list(self.requirements),
            "message": self.message,
            "hits": self.hits,
            "first_seen_at_command": self.first_seen,
            "steps": len(self.steps),
            "shrunk": self.shrunk,
            "reproduced": self.reproduced,
            "reproducer": self.path and os.path.join(self.path, "repro.ndjson"),
            "reproducer_line": self.line or None,
            "device_reproducer": [os.path.basename(p) for p in self.native],
        }


class Campaign:
    def __init__(
        self,
        protocol: Protocol,
        make_target: Callable[[Optional[str]], Target],
        profile: str = "strict",
        out: Optional[str] = None,
        seed: int = 0,
        steps: int = 40,
        progress: Optional[Callable[[Campaign], None]] = None,
        hunt: bool = True,
        pipeline: bool = False,
    ):
        """`pipeline`: the target in a sender process of its own (pipeline.py), for one that drives a
        device process; the reference device gains nothing from it."""
        self.protocol, self.make_target, self.profile = protocol, make_target, profile
        self.out, self.seed, self.max_steps, self.progress = out, seed, steps, progress
        self.edges = Edges(protocol)
        self.hunt = hunt  # False: note findings, shrink none (a survey, and what the speed benchmark runs)
        here = affinity.usable()
        if out:
            os.makedirs(out, exist_ok=True)
        # The device's own logs (QEMU's trace, the backend's) go under --out as it runs; without
        # --out they are the target's to remove when it closes.
        live = os.path.join(out, "device") if out else None
        if live:
            os.makedirs(live, exist_ok=True)
        self.live = live
        self.final: Optional[dict] = None
        self.target = Pipeline(make_target, live) if pipeline else make_target(live)
        # where the campaign runs: with a pipeline, the sender's CPU and the ones this process moved to
        self.cpus = sorted(here | affinity.usable())
        self.migrate = self.target.migrates  # cases may migrate the device (until it refuses)
        self.differ = None  # set for a differential run (the target is then a MirrorTarget, maybe piped)
        parts = getattr(self.target, "parts", None)  # a MirrorTarget's, maybe through the pipe
        if parts:
            self.differ = Differ(protocol, parts, profile, out)
        self.found: dict[Signature, Found] = {}
        self.hunting: Optional[Signature] = None
        self.commands = self.cases = self.rounds = self.migrations = 0
        self.steps = 0  # rules hypothesis ran (a scene sends several commands in one)
        self.started = time.monotonic()
        self.deadline: Optional[float] = None
        self.case_budget: Optional[int] = None
        self.stopped = ""  # why the campaign ended early: time, interrupted, ...
        self.native_form: Optional[bool] = None  # whether the device has a reproducer form of its own
        self.notes: list[str] = []  # what the reader should know of how the campaign ended
        self.interrupted = False
        self.flaky: list[str] = []
        self.error: Optional[dict] = None  # a bug in the fuzzer that ended the campaign
        self.tallies: dict[str, Tally] = {}  # per requirement, over every case sent
        self.exercised = Exercised(protocol, profile)  # per rule check, what the device's answers judged
        # Kinds of malformed chain (machine.choke_key) the device stalled or died on ([status, times]),
        # and the ones not sent (see begin_case).
        self.chokes: dict[tuple, list] = {}
        self.skip: frozenset = frozenset()
        self.skipped: dict[tuple, int] = {}
        self._last_progress = 0.0

    # --- called by the machine --------------------------------------------------------
    def begin_case(self) -> None:
        self._stop_if_due()
        self.cases += 1
        if self.hunting is None:
            # Between cases, and never while a finding is shrunk: each case, and every replay of it,
            # runs with one list, so the same choices send the same chains.
            self.skip = self._skippable()
        self.target.reset()

    def end_case(self, oracle) -> None:
        for rid, t in oracle.checker.tallies.items():
            into = self.tallies.setdefault(rid, Tally())
            into.passed += t.passed
            into.failed += t.failed
            into.inconclusive += t.inconclusive

    def stepped(self) -> None:
        self.steps += 1

    def not_sent(self, choke: tuple) -> None:
        self.skipped[choke] = self.skipped.get(choke, 0) + 1

    def choked(self, choke: tuple, status: str) -> None:
        """The device did not answer a malformed chain (`status`: no-answer or died). Twice for the same
        kind, and that kind is not sent again: once may have been a slow moment."""
        seen = self.chokes.setdefault(choke, [status, 0])
        seen[1] += 1
        if not self.hunt and seen[1] == 2:  # nothing is shrunk, so no case has to replay alike: from now on
            self.skip = self._skippable()

    def _skippable(self) -> frozenset:
        return frozenset(k for k, (_, n) in self.chokes.items() if n >= 2)

    def observe(self, machine, obs: list[Observation]) -> None:
        last = machine.steps[-1]
        if last.queue == MIGRATION:
            self.migrations += 1 if self.migrate else 0  # a refused one (refused_migration came first) moved nothing
        elif last.queue == TOGETHER:
            self.commands += len(chains_of_step(last.outs[0])[1])  # each chain a command
        else:
            self.commands += 1
        now = time.monotonic()
        if self.progress and now - self._last_progress > 0.25:
            self._last_progress = now
            self.progress(self)
        for o in obs:
            f = self.found.get(o.signature)
            if f is None:
                f = self.found[o.signature] = Found(
                    o.signature, o.message, o.requirements, self.commands, steps=list(machine.steps), line=o.line
                )
                self._save(f, case=machine.oracle.text())  # as found: an interrupted shrink still leaves one
                if self.hunt and self.out:
                    self._alone(f, machine.steps[-1], machine.oracle.text())
            elif o.signature != self.hunting:
                f.hits += 1
            if self.hunting is None and not f.shrunk and self.hunt:
                self.hunting = o.signature
            if o.signature == self.hunting:
                if len(machine.steps) <= len(f.steps):
                    f.steps = list(machine.steps)  # saved by the replay when the round ends
                raise Failure(str(o.signature))
        self._stop_if_due()

    def refused_migration(self, detail: str) -> None:
        self.migrate = False
        self.notes.append(f"no more migrations: {detail}")

    def _alone(self, f: Found, step: Step, case: str) -> None:
        """Most findings show on the one step that showed them, sent to a fresh device: tried first,
        that spares hypothesis' shrinking (hundreds of cases; on a device that stalls, a timeout
        and a restart each). Otherwise the round shrinks the whole case as before."""
        full = f.steps
        f.steps = [step]
        self._save(f, replay_it=True)
        if f.reproduced:
            f.shrunk = True
            return
        f.steps, f.reproduced, f.native = full, None, []  # the one step's own reproducer is not the case's
        self._save(f, case=case)

    def _stop_if_due(self) -> None:
        if self.interrupted:
            raise Stop("interrupted")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Stop("time")
        if self.case_budget is not None and self.cases >= self.case_budget and self.hunting is None:
            raise Stop("examples")

    # --- the campaign ---------------------------------------------------------------------
    def _start_fresh(self) -> None:
        """After a round a rerun answered differently: a device whose reset can leave state behind (a
        blob's mapping outlives Debian 13's QEMU's virtio reset) gets a new process for every case from
        now on, so a case shows the same thing each time it runs. Seen without it: 3,462 of a 10-minute
        campaign's rounds ended so, each on the finding the previous case's leftovers caused."""
        if self.target.fresh_starts is False:
            self.target.fresh_starts = True
            self.notes.append(
                f"from round {self.rounds + 1} on every case starts a new device process: a rerun of a case "
                "answered differently (state a virtio reset left behind, or timing)"
            )

    def run(self, seconds: Optional[float] = None, examples: Optional[int] = None) -> None:
        if seconds is not None:
            self.deadline = time.monotonic() + seconds
        self.case_budget = examples
        factory = DeviceMachine.bind(self)

        def on_sigint(signum, frame):
            # hypothesis' shrinker can swallow a KeyboardInterrupt; a flag checked at every command cannot be
            self.interrupted = True

        # Ctrl-C, and a SIGTERM (a service manager, `timeout`), stop the campaign the same way: at the
        # next command, keeping what was found.
        previous = (
            {s: signal.signal(s, on_sigint) for s in (signal.SIGINT, signal.SIGTERM)}
            if threading.current_thread() is threading.main_thread()
            else {}
        )
        try:
            while examples is None or self.cases < examples:
                self.rounds += 1
                self.hunting = None
                left = ROUND_EXAMPLES if examples is None else max(1, examples - self.cases)
                config = settings(
                    max_examples=left,
                    stateful_step_count=self.max_steps,
                    database=None,
                    deadline=None,
                    derandomize=False,
                    verbosity=Verbosity.quiet,
                    print_blob=False,
                    report_multiple_bugs=False,
                    phases=(Phase.generate, Phase.shrink),
                    suppress_health_check=list(HealthCheck),
                )
                test = seed(self.seed * 1_000_003 + self.rounds)(get_state_machine_test(factory, settings=config))
                try:
                    test()
                except Failure:
                    assert self.hunting is not None, "a case fails on the finding hunted"
                    f = self.found[self.hunting]
                    f.shrunk = True
                    self._save(f, replay_it=True)
                    if self.progress:
                        self.progress(self)
                    continue
                except Flaky as exc:
                    stop = _stop_under(exc)
                    if stop is not None:
                        raise stop from None
                    bug = _bug_in(exc)
                    if bug is not None:
                        raise bug from exc  # a bug that showed once is still a bug, not a flaky device
                    detail = " ".join(str(exc).split())
                    if "stopped drawing earlier" in detail or "continued to draw" in detail:
                        # Generation reads only the model, so a case that ends elsewhere on a rerun means
                        # the device answered it differently: timing (a stall), or state a reset leaves.
                        detail = (
                            "the device answered a rerun of the same case differently, so hypothesis "
                            "stopped shrinking it; " + detail
                        )
                    self.flaky.append(f"round {self.rounds}: {type(exc).__name__}: {detail[:700]}")
                    self._start_fresh()
                    continue
                if self.deadline is None:
                    break  # a round that found nothing new used the whole budget
                # --time is the campaign's length, not a cap: another round, with another seed
            if examples is not None and self.cases >= examples:
                self.stopped = "examples"
        except Stop as exc:
            self.stopped = str(exc)
        except KeyboardInterrupt:
            self.stopped = "interrupted"
        except (TargetError, TraceError):
            raise  # the CLI says the target cannot run, or which line of a file is broken
        except Exception as exc:  # noqa: BLE001 - a bug in the fuzzer: keep what was found, say where the traceback is
            self.stopped = "internal error"
            self.error = {"type": type(exc).__name__, "message": str(exc), "traceback": save_traceback(exc, self.out)}
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.target.close()
            if self.live:
                try:
                    os.rmdir(self.live)  # a device that logs nothing (the reference) leaves no folder
                except OSError:
                    pass
            if self.stopped not in ("interrupted", "internal error"):
                self._device_reproducers()
            self.final = self.result()  # what the campaign ended with: fuzz-result.json and fuzz() return it
            self.write_result(self.final)

    # --- results ------------------------------------------------------------------------
    def _save(self, f: Found, replay_it: bool = False, case: Optional[str] = None) -> None:
        if not self.out:
            return
        if f.path is None:
            f.path = os.path.join(self.out, f"{len(self.found):03d}-{f.signature.key()}")
            os.makedirs(f.path, exist_ok=True)
        if replay_it:
            # A fresh device with its logs in the case's directory; the saved trace is what it answered.
            obs = self._replay(f, "repro.ndjson")
            shown = [o for o in obs if o.signature == f.signature]
            f.reproduced = bool(shown)
            if shown:
                f.line = shown[0].line
                self._same_death(f, shown[0].message)
        elif case is not None:
            # The case as it ran so far: a native trace that `check` reads and `fuzz --replay` re-sends.
            with open(os.path.join(f.path, "repro.ndjson"), "w") as fh:
                fh.write(case)
        with open(os.path.join(f.path, "finding.json"), "w") as fh:
            json.dump(f.to_json(), fh, indent=1)
        self.write_result()

    def _same_death(self, f: Found, again: str) -> None:
        """A crash whose saved case, on a fresh device, dies of something else (the program's last words
        differ): two causes met under one signature. The finding then says what its reproducer shows,
        and the notes keep the first cause, whose own case was not kept."""
        first, then = _last_words(f.message), _last_words(again)
        if f.signature.kind != CRASH or not first or not then or _masked(first) == _masked(then):
            return  # (without the program's words on both sides there is nothing to tell apart)
        self.notes.append(
            f"{f.signature}: first seen dying with {first!r}; its saved case, on a fresh device, dies with "
            f"{then!r}: two causes under one finding, and only the second one's case is kept"
        )
        f.message = again

    def _replay(self, f: Found, trace: str) -> list[Observation]:
        """Send the finding's case to a fresh device, its trace saved as `trace` in the case's directory
        beside the device's logs, and the case in the device's own form (f.native)."""
        assert f.path is not None, "saved before it is replayed"
        target = self.make_target(f.path)
        try:
            s = f.signature
            about = f"{s.kind}: {s.command or 'any command'} {s.check}: {f.message}"
            obs, f.native = replay(self.protocol, target, f.steps, os.path.join(f.path, trace), self.profile, about)
        finally:
            target.close()
        self.native_form = bool(f.native)
        return obs

    def _device_reproducers(self) -> None:
        """A finding saved as found (a survey's, a hunt's cut short by the time) has no reproducer in
        the device's own form: its smallest case is sent once more, to a fresh device, for one. When
        that shows the finding, its trace is the new repro.ndjson; when not, the case stays as found,
        said not reproduced, with no reproducer of the device's form. Not after Ctrl-C, which asks for
        a quick end."""
        for f in self.found.values():
            if f.native or not f.path or not f.steps:
                continue
            if self.native_form is False:
                return  # the device has no form of its own (the reference, an adapter)
            try:
                obs = self._replay(f, "replay.ndjson")
            except TargetError as exc:
                self.notes.append(f"no reproducer in the device's own form for {f.signature}: {exc}")
                return
            shown = [o for o in obs if o.signature == f.signature]
            f.reproduced = bool(shown)
            if shown:
                os.replace(os.path.join(f.path, "replay.ndjson"), os.path.join(f.path, "repro.ndjson"))
                f.line = shown[0].line
                self._same_death(f, shown[0].message)
            else:
                for path in f.native:
                    os.unlink(path)
                f.native = []
            with open(os.path.join(f.path, "finding.json"), "w") as fh:
                json.dump(f.to_json(), fh, indent=1)

    def result(self) -> dict:
        t = self.target
        return {
            "schema": RESULT_SCHEMA,
            "version": RESULT_VERSION,
            "target": t.name,
            "device": getattr(t, "describe", t.name),
            "seed": self.seed,
            "profile": self.profile,
            "spec_version": self.protocol.ir.version,
            "commands": self.commands,
            "cases": self.cases,
            "rounds": self.rounds,
            "migrations": self.migrations,
            "pipelined": isinstance(t, Pipeline),
            "seconds": round(time.monotonic() - self.started, 3),
            "stopped": self.stopped or None,
            "error": self.error,
            "z3_questions": self.edges.solved,
            "flaky": self.flaky,
            "notes": self.notes,
            "cpus": self.cpus,
            "not_sent": [
                {
                    "device": self.chokes[k][0],
                    "queue": k[0],
                    "problems": list(k[1]),
                    "whole_header": k[2],
                    "answer_room": k[3],
                    "command": k[4],
                    "count": n,
                }
                for k, n in sorted(self.skipped.items(), key=lambda kv: -kv[1])
            ],
            "findings": [f.to_json() for f in sorted(self.found.values(), key=lambda f: f.first_seen)],
            "requirements": self.verdicts(),
            "differential": self.differ.table() if self.differ else None,
            "exercised": self.exercised.to_json(),
        }

    def verdicts(self) -> dict[str, dict]:
        """Per requirement, over the campaign. The fuzzer plays the driver, so a requirement the
        rules read as the driver's duty (a check on the request) is not-applicable here; what the
        device owes (obligations on the answer, what an OK needs) is judged."""
        device_duty = {
            r
            for rule in self.protocol.rules.values()
            for r in (*(r for o in rule.obligations for r in o.reqs), *rule.ok_reqs)
        }
        driver_duty = {r for rule in self.protocol.rules.values() for c in rule.checks for r in c.reqs}
        out = Ledger(self.protocol, self.profile, self.tallies).verdicts()
        for rid in driver_duty - device_duty:
            out[rid] = {
                **out[rid],
                "verdict": "not-applicable",
                "passed": 0,
                "failed": 0,
                "inconclusive": 0,
                "events": 0,
                "first_failure": None,
                "reason": "the rules hold the driver to it, and the fuzzer plays the driver",
            }
        # A device finding citing a requirement fails it, whoever the rule's check is written against
        # (a device executing a request that breaks a driver's rule, say).
        hits: dict[str, int] = {}
        first: dict[str, str] = {}
        for f in self.found.values():
            if f.signature.kind != "divergence":
                for rid in f.requirements:
                    hits[rid] = hits.get(rid, 0) + f.hits
                    if f.path:
                        first.setdefault(rid, os.path.join(f.path, "repro.ndjson"))
        for rid, n in hits.items():
            if rid in out:
                v = out[rid]
                failed = max(v["failed"], n)
                out[rid] = {
                    **v,
                    "verdict": "fail",
                    "failed": failed,
                    "events": max(v["events"], failed),
                    "first_failure": v["first_failure"] or first.get(rid),
                    "reason": None,
                }
        return out

    def write_result(self, doc: Optional[dict] = None) -> None:
        if self.out:
            write_result(self.out, doc or self.result())


def write_result(out: str, doc: dict) -> None:
    """fuzz-result.json in `out`, replaced whole (a reader never sees half of it)."""
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "fuzz-result.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, os.path.join(out, "fuzz-result.json"))


def _last_words(message: str) -> str:
    """The last line a dead device's program wrote, as a crash's message quotes it; "" where the message
    quotes no output of the program."""
    if "(no response: " not in message:
        return ""
    # the message closes the parenthesis its "(no response: ..." opened; the program's output follows "): "
    told = message.removesuffix(")").split("): ", 1)
    lines = [ln.strip() for ln in told[1].splitlines() if ln.strip()] if len(told) == 2 else []
    return lines[-1] if lines else ""


def _masked(words: str) -> str:
    """Last words with their numbers masked: addresses and ids differ from run to run."""
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "#", words)
