"""The rules read by z3: boundary cases for generation, and a proof that no command's demands contradict."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations
from typing import Optional

import z3

from .expr import E, Z3Env, boundary, solve
from .facts import F, S, axioms
from .protocol import Protocol
from .rule import Check, Obligation, Rule


def assumptions(p: Protocol) -> E:
    """Reachable-state axioms plus the config ranges the SpecIR states (e.g. num_scanouts 1..16)."""
    cfg = p.ir.config
    # the config's stated range, else the scanout arrays' size
    hi = next((f.value_max for f in cfg.fields if f.name == "num_scanouts"), None) or p.ir.constant(
        "VIRTIO_GPU_MAX_SCANOUTS"
    )
    out = axioms(hi)
    lo_align = next((f.value_min for f in cfg.fields if f.name == "blob_alignment"), None)
    if lo_align:
        out = out & F("VIRTIO_GPU_F_BLOB_ALIGNMENT").implies(S("st.blob_alignment").uge(lo_align))
    return out


def boundaries(p: Protocol, rule: Rule, item: Check | Obligation) -> dict[str, Optional[dict]]:
    """A model of `item` at its edge and one just past it, under the state axioms.

    Both models make the item's guard (`when`) true, so the edge is one a request
    really reaches, not a vacuous pass.
    """
    env = Z3Env()
    assume = [assumptions(p).z3(env)] + ([item.when.z3(env)] if item.when is not None else [])
    # The models also name the guard's variables, so they replay on `full`.
    return boundary(item.cond, assume=assume, env=env, report=item.full.vars())


def every_condition(p: Protocol) -> Iterator[tuple[Rule, Check | Obligation]]:
    for rule in p.rules.values():
        for item in rule.checks + rule.obligations:
            yield rule, item


@dataclass
class Conflict:
    """Two checks one request can fail together whose demanded answers share no response type."""

    command: str
    first: Check
    second: Check
    witness: dict = field(repr=False)

    def __str__(self) -> str:
        def side(c: Check) -> str:
            return f"{c.id} [{', '.join(c.reqs) or c.basis}] wants {c.prefer}"

        return f"{self.command}: {side(self.first)}; {side(self.second)}"


@dataclass
class Proof:
    reading: str  # conformant: every error the rule accepts | preferred: only the rule's preferred code
    valid_exists: dict[str, str]  # command -> sat/unsat/unknown: can a request pass every check?
    contradictions: dict[str, Optional[dict]]  # command -> witness where no answer meets every demand
    conflicts: list[Conflict]
    unknown: list[str]

    @property
    def holds(self) -> bool:
        return not self.contradictions and not self.unknown and all(v == "sat" for v in self.valid_exists.values())


def _demand(c: Check, reading: str) -> Optional[tuple[str, ...]]:
    if c.errors is None:
        return None
    if reading == "preferred":
        return (c.prefer or c.errors[0],)
    return c.errors


# A proof runs once, not on the hot path: a loaded machine must not turn a question z3 settles
# in milliseconds into 'unknown'.
PROOF_TIMEOUT_MS = 60_000


def prove(p: Protocol, reading: str = "conformant") -> Proof:
    """For every command and every state shape, some response meets every demand of the rule.

    Each failed check demands an answer from its error set; a request that passes every
    check demands success (or a tolerated error). The response is one of the SpecIR's
    response types, so "no answer fits" expands to a finite conjunction z3 decides.
    """
    codes = [r.name for r in p.ir.responses]
    valid: dict[str, str] = {}
    contra: dict[str, Optional[dict]] = {}
    unknown: list[str] = []
    conflicts: list[Conflict] = []
    for name, rule in p.rules.items():
        env = Z3Env()
        base = [assumptions(p).z3(env)]
        holds = {c.id: c.full.z3(env) for c in rule.checks}
        r, _ = solve(base + list(holds.values()), PROOF_TIMEOUT_MS)
        valid[name] = r
        demands = [(holds[c.id], set(d)) for c in rule.checks if (d := _demand(c, reading)) is not None]
        ok = set(rule.ok) | set(rule.tolerated)
        all_pass = z3.And(*holds.values()) if holds else z3.BoolVal(True)

        def meets(code: str, demands=demands, rule=rule, all_pass=all_pass, ok=ok):
            parts = [z3.Implies(z3.Not(h), z3.BoolVal(code in errs)) for h, errs in demands]
            if rule.ok_basis != "implementation":
                parts.append(z3.Implies(all_pass, z3.BoolVal(code in ok)))
            return z3.And(*parts) if parts else z3.BoolVal(True)

        r, m = solve(base + [z3.Not(meets(code)) for code in codes], PROOF_TIMEOUT_MS)
        if r == "sat":
            contra[name] = env.model_values(m, {n: w for c in rule.checks for n, w in c.full.vars().items()})
        elif r == "unknown":
            unknown.append(name)
        for a, b in combinations([c for c in rule.checks if _demand(c, reading) is not None], 2):
            da, db = _demand(a, reading), _demand(b, reading)
            assert da is not None and db is not None, "both have a demand (filtered above)"
            if set(da) & set(db):
                continue
            r, m = solve(base + [z3.Not(holds[a.id]), z3.Not(holds[b.id])], PROOF_TIMEOUT_MS)
            if r == "sat":
                conflicts.append(Conflict(name, a, b, env.model_values(m, {**a.full.vars(), **b.full.vars()})))
            elif r == "unknown":
                unknown.append(f"{name}: {a.id} / {b.id}")
    return Proof(reading, valid, contra, conflicts, unknown)
