"""The rules read as a generator: z3 solves for request fields at the edge of a check in a concrete state.

For a command, the ids it names and the state they point at, z3 gets every state fact
pinned to its concrete value and solves for the remaining request fields so that one
check holds with no slack (exactly at a limit) or fails by the least margin (one past
it, or by u32/u64 wrap-around), while the other checks hold: each answer isolates one
rule at its boundary. Answers are cached by everything they depend on, so a fuzz
campaign asks z3 once per distinct state shape, not once per command: a known value
that only meets other known values in a comparison (a resource id against 0, a
scanout id against the number of scanouts) counts by that comparison's truth, not by
its value, so a new resource id in the same state asks z3 nothing new.
"""

from __future__ import annotations

from typing import Optional

from .expr import And, Cmp, E, In, Not, Z3Env, boundary, compile_py, solve
from .protocol import Protocol
from .state import State

EDGES = ("satisfy", "violate")
# z3's models depend on what the process asked it before, so the same question can get a different
# (equally valid) answer later. One cache per process and SpecIR keeps every answer the first one:
# a campaign's seed then decides what it sends, and hypothesis replays a case exactly.
_ANSWERS: dict[str, dict[tuple, Optional[dict]]] = {}


class Edges:
    def __init__(self, protocol: Protocol, timeout_ms: int = 200, cache: Optional[dict] = None):
        self.p = protocol
        self.timeout_ms = timeout_ms
        # `cache` is for a caller that must see z3 asked (a test): the process's cache may already
        # hold its answers from whatever ran before.
        self.cache = _ANSWERS.setdefault(protocol.ir.version, {}) if cache is None else cache
        self.solved = 0  # z3 questions actually asked (the rest came from the cache)
        self._shapes: dict[tuple, tuple] = {}

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
        key = self._key(command, check, edge, {**fixed, **facts})
        if key in self.cache:
            return self.cache[key]
        self.solved += 1
        env = Z3Env()
        widths: dict[str, int] = {}
        for c in rule.checks:
            widths.update(c.full.vars())
        known = {**fixed, **facts}
        pins = env.bind(known, widths)
        # The checks a device must enforce (the ones with a demanded error) hold, but the target. One
        # over known values alone is settled already: true adds nothing, and false no field can mend.
        pinned = {n for n, v in known.items() if v is not None}
        others = [
            c.full.z3(env)
            for c in rule.checks
            if c.errors is not None and c.id != check and not c.full.vars().keys() <= pinned
        ]
        free = {n: w for n, w in widths.items() if not n.startswith("st.") and n not in fixed}

        def can_hold() -> list:
            # The others less those that fail on the state alone (no backing yet, say): no field can help them.
            return [o for o in others if solve(pins + [o], self.timeout_ms)[0] == "sat"]

        answer = None
        if check is None:
            r, m = solve(pins + others, self.timeout_ms)
            if r != "sat":
                r, m = solve(pins + can_hold(), self.timeout_ms)
            answer = env.model_values(m, free) if r == "sat" else None
        else:
            target = next(c for c in rule.checks if c.id == check)
            assume = pins + ([target.when.z3(env)] if target.when is not None else [])

            def tries():
                # Isolate the one check if z3 can (the others holding, or those that can); otherwise any
                # edge of it. The joint question is asked only when the first try fails: mostly it does not.
                yield others
                if solve(pins + others, self.timeout_ms)[0] != "sat":
                    yield can_hold()
                yield []

            for chosen in tries():
                models = boundary(
                    target.cond, assume=assume + chosen, env=env, report=free, timeout_ms=self.timeout_ms, edges=(edge,)
                )
                found = models.get(edge)
                if found is not None:
                    answer = {n: found[n] for n in free}
                    break
        self.cache[key] = answer
        return answer

    def _key(self, command: str, check: Optional[str], edge: str, known: dict) -> tuple:
        """What the question depends on. With the known values pinned, a comparison over known values
        alone is a constant, so only its truth matters; the values that meet an unknown field in a
        comparison, or sit in the check aimed at (whose edge z3 measures), matter themselves."""
        names = tuple(sorted(n for n, v in known.items() if v is not None))
        shape = self._shapes.get((command, check, names))
        if shape is None:
            shape = self._shapes[(command, check, names)] = self._shape(command, check, frozenset(names))
        exact, closed = shape
        return (command, check, edge, names, tuple(known[n] for n in exact), tuple(bool(f(known)) for f in closed))

    def _shape(self, command: str, check: Optional[str], pinned: frozenset) -> tuple[tuple, list]:
        exact: set[str] = set()
        closed = []
        for c in self.p.rules[command].checks:
            if c.id == check:
                exact.update(n for n in c.full.vars() if n in pinned)
                continue
            if c.errors is None:
                continue
            for atom in _atoms(c.full):
                names = set(atom.vars())
                if isinstance(atom, (Cmp, In)) and names <= pinned:
                    closed.append(compile_py(atom))
                else:
                    exact.update(names & pinned)
        return tuple(sorted(exact)), closed


def _atoms(expr: E) -> list[E]:
    """The leaves of an expression's boolean structure: comparisons, membership, boolean variables
    (and anything else, kept whole)."""
    if isinstance(expr, (And, Not)):  # Or is an And
        return [a for child in expr.children() for a in _atoms(child)]
    return [expr]
