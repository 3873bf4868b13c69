"""Findings put in words: earlier events on the same resource, the plain messages of the commonest
driver mistakes, the known values z3 says force a failure, and names of commands and answers."""

from __future__ import annotations

import re
from collections import deque
from typing import Optional, cast

from virtgpu_conform.checker.traces.events import NO_ANSWER, Exchange, Where
from virtgpu_conform.model.expr import why_false
from virtgpu_conform.model.facts import depends
from virtgpu_conform.model.protocol import Breach, Protocol
from virtgpu_conform.model.rule import Outcome

RELATED = 4  # earlier events remembered per resource
RESOURCES = 4096  # resources remembered at once (bounded: flat memory on traces that cycle through ids)


class History:
    """The latest events on each resource, cited by a finding about it."""

    def __init__(self) -> None:
        self.by_resource: dict[int, deque] = {}

    def clear(self) -> None:
        self.by_resource.clear()

    def remember(self, ex: Exchange, accepted: bool) -> None:
        rid = cast("Optional[int]", ex.req.fields.get("resource_id"))  # an integer leaf
        if rid is None or ex.req.name == "VIRTIO_GPU_CMD_MOVE_CURSOR":
            return
        h = self.by_resource.get(rid)
        if h is None:
            h = self.by_resource[rid] = deque(maxlen=RELATED)
        h.append((ex.where, ex.req.name, accepted))
        if len(self.by_resource) > RESOURCES:
            self.by_resource.pop(next(iter(self.by_resource)))

    def related(self, ex: Exchange) -> list[tuple[Where, str]]:
        rid = cast("Optional[int]", ex.req.fields.get("resource_id"))  # an integer leaf
        if rid is None:
            return []
        return [
            (w, f"{short(name)} of resource {rid}{'' if accepted else ' (rejected)'}")
            for w, name, accepted in self.by_resource.get(rid, ())
        ]


def short(name: Optional[str]) -> str:
    return (name or "?").removeprefix("VIRTIO_GPU_CMD_").removeprefix("VIRTIO_GPU_RESP_")


def answer_names(answers, errors: frozenset[str]) -> str:
    """A set of response names as a reader wants them: OK types by name, many `errors` as 'an error'."""
    if answers is None:
        return "anything"
    answers = sorted(answers)
    errs = [n for n in answers if n in errors]
    oks = [short(n) for n in answers if n not in errors]
    if len(errs) > 3:
        oks.append("an error")
    else:
        oks += [short(n) for n in errs]
    return " or ".join(oks) or "nothing"


def unknown_fields(outcome: Outcome) -> str:
    found = sorted({n for c in outcome.unknown for n in c.full.vars() if outcome.values.get(n) is None})
    # what the trace left out, not the state facts that are unknown because of it
    fields = sorted(
        {n for n in found if not n.startswith("st.")}
        | {d for n in found if n.startswith("st.") for d in depends(n) if outcome.values.get(d) is None}
    )
    return "the values of " + ", ".join(fields or found) if found else "unknown values"


def no_response(command: str, ex: Exchange) -> Breach:
    """The device's breach for a request it never answered; definite when the trace says no answer came."""
    return Breach(
        command,
        "no-response",
        "device",
        "informal",
        (),
        ex.unanswered == NO_ANSWER,
        "the device never answered this request" + (f" ({'; '.join(ex.evidence)})" if ex.evidence else ""),
    )


def _words(p: Protocol) -> dict[tuple[str, str], str]:
    """(command, check) -> the check's message, from the rules (kept on the protocol: read once)."""
    words = p.memo.get("explain/words")
    if words is None:
        words = p.memo["explain/words"] = {
            (rule.command, c.id): c.message for rule in p.rules.values() for c in rule.checks if c.message
        }
    return words


def message(b: Breach, ex: Optional[Exchange], p: Protocol) -> str:
    cmd = short(b.command) if b.command else ""  # "": no command's (a config write, a fence timeline)
    if b.side == "driver":
        text = _words(p).get((b.command, b.check))
        if text and ex is not None:
            f = ex.req.fields
            return f"{cmd}: " + re.sub(r"\{([\w.|]+)\}", lambda m: str(_first(f, m.group(1).split("|"))), text)
        return (f"{cmd}: " if cmd else "") + f"the driver broke {b.check}" + (f": {b.detail}" if b.detail else "")
    return f"{cmd}: {b.detail}" if cmd else b.detail


def _first(fields: dict, keys: list[str]) -> object:
    """The first of the fields a message may name that the request has and the trace gave."""
    return next((fields[k] for k in keys if fields.get(k) is not None), "?")


def symbolic_why(b: Breach, outcome: Outcome) -> str:
    """For a check decided by z3 over unknown fields: the known values that force the failure."""
    check = next((c for c in outcome.rule.checks if c.id == b.check), None)
    if check is None or all(outcome.values.get(n) is not None for n in check.full.vars()):
        return ""
    core = why_false(check.full, outcome.values)
    if not core:
        return ""
    return " (whatever the trace leaves unknown, because " + ", ".join(f"{n}={outcome.values[n]}" for n in core) + ")"
