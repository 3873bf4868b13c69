"""The rules read as a generator: z3 solves for request fields at the edge of a check in a concrete state.

For a command, the ids it names and the state they point at, z3 gets every state fact
pinned to its concrete value and solves for the remaining request fields so that one
check holds with no slack (exactly at a limit) or fails by the least margin (one past
it, or by u32/u64 wrap-around), while the other checks hold: each answer isolates one
rule at its boundary. Answers are cached by everything they depend on, so a fuzz
campaign asks z3 once per distinct state shape, not once per command.
"""

from __future__ import annotations

from typing import Optional

from .expr import Z3Env, boundary, solve
from .protocol import Protocol
from .state import State

EDGES = ("satisfy", "violate")
# z3's models depend on what the process asked it before, so the same question can get a different
# (equally valid) answer later. One cache per process and SpecIR keeps every answer the first one:
# a campaign's seed then decides what it sends, and hypothesis replays a case exactly.
_ANSWERS: dict[str, dict[tuple, Optional[dict]]] = {}


class Edges:
    def __init__(self, protocol: Protocol, timeout_ms: int = 200):
        self.p = protocol
        self.timeout_ms = timeout_ms
        self.cache = _ANSWERS.setdefault(protocol.ir.version, {})
        self.solved = 0  # z3 questions actually asked (the rest came from the cache)

    def targets(self, command: str) -> list[tuple[str, str]]:
        """(check id, edge) pairs worth aiming at for `command`: checks over a request field."""
        rule = self.p.rules[command]
        return [(c.id, e) for c in rule.checks if any(not n.startswith("st.") for n in c.cond.vars()) for e in EDGES]

    def valid(self, state: State, command: str, fixed: dict) -> Optional[dict]:
        """Request fields (beyond `fixed`) that pass every check the device must enforce."""
        return self._ask(state, command, fixed, None, "satisfy")

    def edge(self, state: State, command: str, fixed: dict, check: str, edge: str) -> Optional[dict]:
        """Request fields that put `check` exactly at its edge ("satisfy") or one past it ("violate")."""
        return self._ask(state, command, fixed, check, edge)

    def _ask(self, state: State, command: str, fixed: dict, check: Optional[str], edge: str) -> Optional[dict]:
        compiled = self.p.compiled[command]
        rule = compiled.rule
        facts = {k: v for k, v in compiled.values(state, fixed).items() if k.startswith("st.") and v is not None}
        key = (command, check, edge, tuple(sorted(fixed.items())), tuple(sorted(facts.items())))
        if key in self.cache:
            return self.cache[key]
        self.solved += 1
        env = Z3Env()
        widths: dict[str, int] = {}
        for c in rule.checks:
            widths.update(c.full.vars())
        pins = env.bind({**fixed, **facts}, widths)
        # The checks a device must enforce (the ones with a demanded error) hold, but the target.
        others = [c.full.z3(env) for c in rule.checks if c.errors is not None and c.id != check]
        if solve(pins + others, self.timeout_ms)[0] != "sat":
            # Some check fails on the state alone (no backing yet, say): no field can help it.
            others = [o for o in others if solve(pins + [o], self.timeout_ms)[0] == "sat"]
        free = {n: w for n, w in widths.items() if not n.startswith("st.") and n not in fixed}
        answer = None
        if check is None:
            r, m = solve(pins + others, self.timeout_ms)
            answer = env.model_values(m, free) if r == "sat" else None
        else:
            target = next(c for c in rule.checks if c.id == check)
            assume = pins + ([target.when.z3(env)] if target.when is not None else [])
            for extra in (others, []):  # isolate the one check if z3 can; otherwise any edge of it
                models = boundary(target.cond, assume=assume + extra, env=env, report=free, timeout_ms=self.timeout_ms)
                if models.get(edge) is not None:
                    answer = {n: models[edge][n] for n in free}
                    break
        self.cache[key] = answer
        return answer
