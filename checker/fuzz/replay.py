"""Re-running a saved case: the steps come back out of the native trace itself (bytes, queue, framing)."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence

from virtgpu_conform.checker.devices.qmp import parse_ppm
from virtgpu_conform.checker.devices.qtest_script import replies
from virtgpu_conform.checker.devices.target import (
    CONFIG,
    DEVICE_RESET,
    HOST_VISIBLE,
    MIGRATION,
    RESET_HOW,
    TOGETHER,
    Reply,
    Target,
    config_step,
    host_visible_step,
    together_step,
)
from virtgpu_conform.checker.traces import native
from virtgpu_conform.checker.traces.events import TraceError, Where
from virtgpu_conform.model.codec import Codec
from virtgpu_conform.model.protocol import Protocol

from .oracle import Observation, Oracle, screen_of
from .record import session_header
from .step import Step


def replay(
    protocol: Protocol, target: Target, steps: Sequence[Step], path: str, profile: str = "strict", about: str = ""
) -> tuple[list[Observation], list[str]]:
    """Send `steps` to a fresh target and save the exchanges at `path` as they happen; then the
    session in the device's own form, where it has one (`about` heads it). The observations, and
    the reproducer files written."""
    target.record()
    oracle = Oracle(
        protocol, session_header(protocol.ir, target), profile, name=path, screen=screen_of(target), peek=target.peek
    )
    seen: list[Observation] = []
    with open(path, "w") as out:
        written = 0
        for step in steps:
            reply = target.send(step.queue, step.outs, step.ins)
            seen += oracle.step(step.queue, step.outs, step.ins, reply)
            text = oracle.text()
            out.write(text[written:])
            out.flush()
            written = len(text)
            if reply.status not in ("answered", "refused"):
                break
    return seen, target.write_reproducer(about or f"the case {path}")


def steps_from_trace(path: str, codec: Codec) -> list[Step]:
    """The requests of a native trace, with their framing when it was recorded."""
    room = 4096 + codec.hdr.size  # for any answer but a huge capset: what an unframed request was given
    steps = []
    together: list = []  # ((number, queue), its step, its chains) of each TOGETHER step
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TraceError(Where(path, 0), f"cannot read the case: {exc.strerror}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(
                    Where(path, n),
                    f"not a native trace record ({exc.msg})",
                    "replay takes a repro.ndjson written by `fuzz`",
                ) from None
            if isinstance(rec, dict) and rec.get("kind") == "migration":
                steps.append(Step(MIGRATION, [], [], "migration"))
                continue
            if isinstance(rec, dict) and rec.get("kind") == "reset":
                how = rec.get("how")
                listed = set(how) if isinstance(how, list) else set()
                flags = sum(bit for bit, name in RESET_HOW.items() if name in listed)
                steps.append(Step(DEVICE_RESET, [bytes([flags])], [], "reset"))
                continue
            if isinstance(rec, dict) and rec.get("kind") == "config":
                steps.append(_config_step(rec, path, n, codec))
                continue
            if isinstance(rec, dict) and rec.get("kind") == "host-visible":
                offset, written, length, _ = native.host_visible(rec, Where(path, n))
                steps.append(Step(HOST_VISIBLE, [host_visible_step(offset, written, length)], [], "host-visible"))
                continue
            if not isinstance(rec, dict) or rec.get("kind") != "request":
                continue
            data = rec.get("bytes")
            if not isinstance(data, str):
                raise TraceError(
                    Where(path, n),
                    "a request without 'bytes' cannot be replayed",
                    "replay needs full-fidelity records as `fuzz` writes them",
                )
            try:
                raw = bytes.fromhex(data)
            except ValueError:
                raise TraceError(Where(path, n), "'bytes' is not a hex string") from None
            framing = rec.get("framing")
            queue = rec.get("queue") or "controlq"
            if isinstance(framing, dict):
                outs, pos = [], 0
                for size in framing.get("outs", [len(raw)]):
                    outs.append(raw[pos : pos + size])
                    pos += size
                step = Step(queue, outs, list(framing.get("ins", [])), "replay", framed=True)
            else:
                step = Step(queue, [raw], [room], "replay")
            group = rec.get("together")
            if group is None:
                steps.append(step)
            elif together and together[-1][0] == (group, queue) and steps and steps[-1] is together[-1][1]:
                together[-1][2].append((step.outs, step.ins))
            else:  # the first of requests made available at once: one TOGETHER step carries them
                chains = [(step.outs, step.ins)]
                steps.append(Step(TOGETHER, [], [], "together", framed=True))
                together.append(((group, queue), steps[-1], chains))
    for (_, queue), step, chains in together:
        step.outs = [together_step(queue, chains)]
    if not steps:
        raise TraceError(Where(path, 0), "the file has no request records", "pass a repro.ndjson written by `fuzz`")
    return steps


def _config_step(rec: dict, path: str, n: int, codec: Codec) -> Step:
    write = native.config_write(rec, Where(path, n))
    return Step(CONFIG, [config_step(write.offset, write.data)], [codec.config.size], "config")


def _shots(folder: str):
    """The screendumps repro.sh took (shot-N.ppm), in turn, for the pixel oracle; None: it took none."""
    if not os.path.exists(os.path.join(folder, "seen-1.ppm")) and not os.path.exists(
        os.path.join(folder, "shot-1.ppm")
    ):
        return None
    taken = itertools.count(1)

    def screen(twin: bool = False):
        n = next(taken)
        if twin or not os.path.exists(os.path.join(folder, f"seen-{n}.ppm")):
            return None  # the replay had no picture there either
        try:
            with open(os.path.join(folder, f"shot-{n}.ppm"), "rb") as fh:
                return parse_ppm(fh.read())
        except OSError:
            return None

    return screen


def judge_qtest_run(protocol: Protocol, case: str, folder: str, profile: str = "strict") -> list[Observation]:
    """What a run of a case's repro.sh showed: QEMU's answers to repro.qtest (repro.out in `folder`),
    judged as the case's own were. `case`: the repro.ndjson the script was made from."""
    steps = steps_from_trace(case, protocol.codec)
    if any(s.queue == MIGRATION for s in steps):
        raise TraceError(
            Where(case, 0), "a case with a migration has no qtest script", "replay it with `fuzz --replay`"
        )
    with open(case, encoding="utf-8") as fh:
        head = json.loads(fh.readline())
    session = {k: v for k, v in head.items() if k not in ("kind", "format", "version")}
    text = {}
    for name in ("repro.qtest", "repro.out"):
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text[name] = fh.read()
        except OSError as exc:
            raise TraceError(Where(path, 0), f"cannot read it: {exc.strerror}", "run repro.sh first") from None
    aside = (CONFIG, DEVICE_RESET, HOST_VISIBLE)
    chains = [s for s in steps if s.queue not in aside]
    try:
        answers = iter(replies(text["repro.qtest"], text["repro.out"], [s.ins for s in chains]))
    except ValueError as exc:
        raise TraceError(Where(os.path.join(folder, "repro.qtest"), 0), f"not the script of {case}: {exc}") from None
    oracle = Oracle(protocol, session, profile, name=os.path.join(folder, "repro.out"), screen=_shots(folder))
    seen: list[Observation] = []
    for step in steps:
        # A reset the script made is taken as done (its chains' answers show what it did); a config
        # write's reads and a host-visible read are not picked out of the script, so they are recorded
        # and not judged.
        reply = Reply("answered") if step.queue in aside else next(answers, None)
        if reply is None:
            break  # the run stopped there: QEMU died, or a chain went unanswered (its reply came last)
        seen += oracle.step(step.queue, step.outs, step.ins, reply)
    return seen
