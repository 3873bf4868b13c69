"""Differential runs: every generated chain goes to several targets, and where their answers differ
the model says whether the spec leaves that open or which of them breaks which requirement.

The first target leads: its answers decide how the model's state moves on and so what the
machine generates next; the others get the same chains in the same order. Each row of the
table is one (command, answer, answer, ...) pattern with its count, the verdict, and the
case where it was first seen (a native trace of the lead target's side).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from virtgpu_conform.checker.devices.target import Reply, Target
from virtgpu_conform.model.codec import Message
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.model.rule import PROFILES

GONE = "gone"  # a follower's answer after it died or stalled in this case: nothing was sent to it
UNSENT = (GONE, "dropped")  # answers no device gave: not compared


class MirrorTarget(Target):
    def __init__(self, targets: Sequence[Target]):
        lead = targets[0]
        super().__init__("+".join(t.name for t in targets), lead.settings)
        self.targets = list(targets)
        self.migrates = all(t.migrates for t in targets)
        self.config_writes = all(t.config_writes for t in targets)
        self.resets = all(t.resets for t in targets)
        self.host_visible_io = lead.host_visible_io  # the leader's region is the one judged; the others get the same
        self.describe = " | ".join(getattr(t, "describe", t.name) for t in targets)
        self.last: list[Reply] = []
        # A follower that died or stalled gets nothing more until the next case: each chain sent to a
        # QEMU on its way out would cost a timeout, and tell nothing (it is said once, where it happened).
        self.gone: dict[int, Reply] = {}

    @property
    def parts(self) -> list[str]:
        return [t.name for t in self.targets]

    def send(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> Reply:
        self.last = []
        for i, t in enumerate(self.targets):
            gone = self.gone.get(i)
            r = Reply(GONE, detail=f"as before: {gone.detail}") if gone else t.send(queue, outs, in_sizes)
            if gone is None and r.status not in ("answered", "refused"):
                self.gone[i] = r
            self.last.append(r)
        return self.last[0]

    def peek(self, addr: int, size: int) -> Optional[bytes]:
        return self.targets[0].peek(addr, size)  # the leader's: the oracle judges the leader

    def reset(self) -> None:
        self.gone = {}
        for t in self.targets:
            t.reset()
        self.settings = self.targets[0].settings

    def record(self) -> None:
        self.gone = {}
        for t in self.targets:
            t.record()
        self.settings = self.targets[0].settings

    def write_reproducer(self, about: str) -> list[str]:
        return [path for t in self.targets for path in t.write_reproducer(about)]

    def close(self) -> None:
        for t in self.targets:
            t.close()


def answer(codec, queue: str, r: Reply) -> str:
    """One word for what a target did with a chain."""
    if r.status != "answered":
        return r.status
    if not r.data:
        return "nothing written" if queue == "cursorq" else "empty"
    name = codec.decode_response(r.data).name
    return name.removeprefix("VIRTIO_GPU_RESP_") if name else f"type {int.from_bytes(r.data[:4], 'little'):#x}"


@dataclass
class Row:
    command: str
    answers: tuple[str, ...]
    verdict: str  # open | violation
    why: str
    requirements: tuple[str, ...] = ()
    basis: str = ""
    count: int = 0
    first: Optional[str] = None  # a trace of the first case that showed it

    def to_json(self, names: Sequence[str]) -> dict:
        return {
            "command": self.command,
            "answers": dict(zip(names, self.answers)),
            "verdict": self.verdict,
            "why": self.why,
            "requirements": list(self.requirements),
            "basis": self.basis or None,
            "count": self.count,
            "first_case": self.first,
        }


@dataclass
class Differ:
    protocol: Protocol
    names: list[str]
    profile: str = "strict"
    out: Optional[str] = None
    rows: dict[tuple, Row] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # answers are tabled by their short names (OK_NODATA, ERR_UNSPEC)
        ir = self.protocol.ir
        self.errors = frozenset(n.removeprefix("VIRTIO_GPU_RESP_") for n in ir.error_responses)
        self.typed = self.errors | {n.removeprefix("VIRTIO_GPU_RESP_") for n in ir.ok_responses}

    def compare(self, state, req: Message, queue: str, replies: list[Reply], case_text: str) -> None:
        if any(r.status in UNSENT for r in replies):
            return  # a target that got nothing (it died earlier in the case) has no answer to compare
        codec = self.protocol.codec
        answers = tuple(answer(codec, queue, r) for r in replies)
        if len(set(answers)) == 1:
            return
        cmd = (req.name or "").removeprefix("VIRTIO_GPU_CMD_") or "unknown command"
        key = (cmd, answers)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = self._judge(state, req, cmd, answers)
            if self.out:
                d = os.path.join(self.out, "differential")
                os.makedirs(d, exist_ok=True)
                row.first = os.path.join(d, f"{len(self.rows):03d}.ndjson")
                with open(row.first, "w") as fh:
                    fh.write(case_text)
        row.count += 1

    def _judge(self, state, req: Message, cmd: str, answers: tuple[str, ...]) -> Row:
        if self.protocol.unusable(req):
            # Nothing sound to act on: any refusal is right; success or silence is not.
            why = "; ".join(str(p) for p in req.problems) or "unknown command type"
            bad = [n for n, a in zip(self.names, answers) if a not in self.errors]
            if not bad:
                return Row(cmd, answers, "open", f"each answer refuses a request that cannot be read ({why})")
            return Row(
                cmd,
                answers,
                "violation",
                f"{', '.join(bad)} does not refuse a request that cannot be read ({why})",
                basis="informal",
            )
        outcome = self.protocol.expect(state, req)
        assert outcome is not None, "a usable request is of a known type, which has a rule"
        allowed = outcome.acceptable(PROFILES[self.profile])
        typed = [a for a in answers if a in self.typed]
        if allowed is None:
            return Row(cmd, answers, "open", "the spec leaves the answer open here")
        short = {a.removeprefix("VIRTIO_GPU_RESP_") for a in allowed}
        errors = self.errors
        said = ", ".join(sorted(short - errors) + (["any error"] if errors <= short else sorted(short & errors)))
        wrong = [n for n, a in zip(self.names, answers) if a in typed and a not in short]
        silent = [n for n, a in zip(self.names, answers) if a not in typed]
        if not wrong and not silent:
            return Row(cmd, answers, "open", f"each answer is allowed ({said})")
        basis, reqs = outcome.duty(PROFILES[self.profile])
        failed = ", ".join(c.id for c in outcome.failed) or "no check (a valid request)"
        who = ", ".join(wrong + silent)
        return Row(
            cmd,
            answers,
            "violation",
            f"{who} answers outside {said} (request fails: {failed})",
            tuple(reqs),
            basis or "",
        )

    def table(self) -> list[dict]:
        return [r.to_json(self.names) for r in sorted(self.rows.values(), key=lambda r: (r.command, -r.count))]
