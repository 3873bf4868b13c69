"""What a rule is (checks on a request, obligations on its response, an effect) and its concrete reading."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Optional

from virtgpu_conform.spec.errors import Error
from virtgpu_conform.spec.ir import SpecIR

from .codec import Codec, Message
from .expr import E, Var, compile_py, evaluate
from .facts import FACTS, UNSEEN, VIA, depends
from .state import State

BASES = ("normative", "spec-text", "informal", "implementation")
PROFILES = {
    "spec": frozenset({"normative", "spec-text"}),
    "strict": frozenset({"normative", "spec-text", "informal"}),
}
ANY_ERROR = "any-error"  # placeholder resolved to every VIRTIO_GPU_RESP_ERR_* of the SpecIR


@dataclass(frozen=True)
class Check:
    """A condition a request must meet in the state it arrives in.

    When it fails, the driver broke the duty `basis` names, and a conformant device
    answers one of `errors` (None: the spec leaves the answer open, OK included).
    `prefer` is the single code the reference device picks; a different code from a
    real device is a divergence, never a violation.
    """

    id: str
    cond: E
    basis: str
    reqs: tuple[str, ...] = ()
    errors: Optional[tuple[str, ...]] = (ANY_ERROR,)
    prefer: Optional[str] = None
    device_basis: Optional[str] = None  # basis of the demand to reject; default: basis
    note: str = ""
    when: Optional[E] = None  # the check applies only where this holds
    # A breach in plain words, for findings: {field} is the request's value, {a|b} the first one given.
    message: str = ""

    @property
    def full(self) -> E:
        return self.cond if self.when is None else self.when.implies(self.cond)

    @property
    def reject_basis(self) -> Optional[str]:
        return None if self.errors is None else (self.device_basis or self.basis)


@dataclass(frozen=True)
class Obligation:
    """A condition on the device's response, over request fields and `resp.*` fields."""

    id: str
    cond: E
    basis: str
    reqs: tuple[str, ...] = ()
    note: str = ""
    when: Optional[E] = None
    on_ok: bool = False  # only for a success response

    @property
    def full(self) -> E:
        return self.cond if self.when is None else self.when.implies(self.cond)


Effect = Callable[[State, Message, Optional[Message]], None]


@dataclass(frozen=True)
class Rule:
    command: str
    family: str  # 2d | blob | 3d | cursor | query
    checks: tuple[Check, ...]
    obligations: tuple[Obligation, ...] = ()
    effect: Optional[Effect] = None
    ok: tuple[str, ...] = ()  # success response types (from the SpecIR)
    ok_basis: str = "informal"  # basis of demanding success when every check holds
    ok_reqs: tuple[str, ...] = ()
    tolerated: tuple[str, ...] = ()  # errors a device may give even to a valid command
    note: str = ""


@dataclass
class Outcome:
    """What the model expects of the device's answer to one request."""

    rule: Rule
    failed: list[Check]
    unknown: list[Check]  # could go either way with the fields known
    values: dict = field(default_factory=dict, repr=False)  # fields and state facts the checks read

    def acceptable(self, profile: frozenset[str] = PROFILES["strict"]) -> Optional[frozenset[str]]:
        """The response types a conformant device may give; None when anything goes."""
        if self.unknown:
            return None  # a candidate split for the checker, not a verdict here
        if not self.failed:
            if self.rule.ok_basis not in profile:
                return None
            return frozenset(self.rule.ok) | frozenset(self.rule.tolerated)
        demanding = self.demanding(profile)
        if not demanding:
            return None
        # a demanding check has errors: without them its reject_basis is None, which no profile holds
        return frozenset(e for c in demanding for e in c.errors or ())

    def demanding(self, profile: frozenset[str]) -> list[Check]:
        """The failed checks whose demand to reject the profile enforces."""
        return [c for c in self.failed if c.reject_basis in profile]

    def duty(self, profile: frozenset[str]) -> tuple[str, tuple[str, ...]]:
        """Basis and requirement IDs of what the device's answer must meet: the demanding
        checks' rejection, or else the rule's success."""
        demanding = self.demanding(profile)
        if demanding:
            basis = demanding[0].reject_basis
            assert basis is not None, "a demanding check's reject_basis is in the profile"
            return basis, tuple(r for c in demanding for r in c.reqs)
        return self.rule.ok_basis, tuple(self.rule.ok_reqs)

    @property
    def expected(self) -> str:
        """The reference device's answer: the first failed check's preferred error, else success.

        Where the answer is open, a check with a `prefer` still rejects: that is the
        reference device's stated choice.
        """
        for c in self.failed:
            if c.prefer is not None:
                return c.prefer
            if c.errors is not None:
                return c.errors[0]
        return self.rule.ok[0]


class CompiledRule:
    """A rule with its conditions compiled to Python and its facts resolved: the fast path."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.checks = [(c, compile_py(c.full), c.full, tuple(c.full.vars())) for c in rule.checks]
        self.obligations = [(o, compile_py(o.full), o.full, tuple(o.full.vars())) for o in rule.obligations]
        # Verdicts reached by z3 over unknown values, by the values the condition reads: a trace
        # that never says its header asks the same question of every command, once.
        self.memo: dict[tuple, Optional[bool]] = {}
        names: set[str] = set()
        for c in rule.checks + rule.obligations:
            names.update(n for n in c.full.vars() if n.startswith("st."))
        self.facts = [(n, FACTS[n][1], depends(n)) for n in sorted(names)]
        # Every value a check reads: with the same values, the checks reach the same verdicts.
        self.check_vars = tuple(sorted({n for c in rule.checks for n in c.full.vars()}))
        self._values = _values_fn(self.facts)
        self.fact_names = tuple(n for n, _, _ in self.facts)
        # The facts alone (with the request's own fields they make `values`) and the values the
        # checks read, as tuples: what the checker's memos are keyed on.
        self.fact_values = _tuple_fn(self.facts, self.fact_names)
        self.check_values = _tuple_fn(self.facts, self.check_vars)
        # Every check at once, for the fast path where every value is known.
        self.all_checks = eval("lambda v: (" + "".join(f"{c.full.py()}, " for c in rule.checks) + ")", {})  # noqa: S307
        self.all_obligations = eval(  # noqa: S307
            "lambda v: (" + "".join(f"{o.full.py()}, " for o in rule.obligations) + ")", {}
        )

    def values(self, state: State, fields: dict) -> dict:
        """The request's fields and the state facts the rule reads; a fact read through an unknown
        field is unknown (None)."""
        return self._values(state, fields)

    def clean(self, state: State, req: Message, resp: Message) -> Optional[dict]:
        """The fast path: the values read, when every value is known, every check holds, the
        answer is the rule's first success type and every obligation holds; else None."""
        return self.clean_values(self.values(state, req.fields), resp)

    def clean_values(self, v: dict, resp: Message) -> Optional[dict]:
        """`clean` from the values already read."""
        if None in v.values() or resp.name != self.rule.ok[0]:
            return None
        try:
            if not all(self.all_checks(v)):
                return None
            if None in resp.fields.values():  # v has none (tested above)
                return None
            both = dict(v)
            both.update(zip(_resp_keys(resp.fields), resp.fields.values()))
            if not all(self.all_obligations(both)):
                return None
        except KeyError:
            return None
        return v

    def evaluate(self, state: State, msg: Message) -> Outcome:
        v = self.values(state, msg.fields)
        if None not in v.values():
            try:
                verdicts = self.all_checks(v)
            except KeyError:
                pass  # a field the source did not carry: take the slow path
            else:
                if all(verdicts):
                    return Outcome(self.rule, [], [], v)
                return Outcome(self.rule, [c for (c, *_), ok in zip(self.checks, verdicts) if not ok], [], v)
        partial = True
        failed, unknown = [], []
        for check, fn, full, names in self.checks:
            ok = self._verdict(check.id, fn, full, names, v, partial)
            if ok is None:
                unknown.append(check)
            elif not ok:
                failed.append(check)
        return Outcome(self.rule, failed, unknown, v)

    def obligations_failed(
        self, state: State, req: Message, resp: Message, values: Optional[dict] = None
    ) -> list[tuple[Obligation, Optional[bool]]]:
        """Obligations the response breaks (False) or may break (None, fields unknown), in the state before it.

        `values` are the ones `evaluate` read for the same request, so facts are not looked up twice.
        """
        v = dict(values) if values else self.values(state, req.fields)
        for k, val in resp.fields.items():
            v["resp." + k] = val
        partial = None in v.values()
        ok_resp = resp.name in self.rule.ok
        out = []
        for ob, fn, full, names in self.obligations:
            if ob.on_ok and not ok_resp:
                continue
            verdict = self._verdict(ob.id, fn, full, names, v, partial)
            if verdict is not True:
                out.append((ob, None if verdict is None else False))
        return out

    def _verdict(self, key: str, fn, full: E, names: tuple, v: dict, partial: bool) -> Optional[bool]:
        """The compiled reading when every value is known; z3 over the unknown ones otherwise."""
        if not partial:
            try:
                return bool(fn(v))
            except KeyError:
                pass  # a field the source did not carry: unknown, like None
        vals = tuple(v.get(n) for n in names)
        if None not in vals:
            return bool(fn(v))
        memo_key = (key, vals)
        if memo_key not in self.memo:
            if len(self.memo) > 4096:
                self.memo.clear()
            self.memo[memo_key] = evaluate(full, v, fn)
        return self.memo[memo_key]


def _values_fn(facts: list) -> Callable[[State, dict], dict]:
    """`values` as one generated function: each set of fields facts are read through is tested
    once, not once per fact (every exchange pays for this)."""
    env, lines = _fact_lines(facts)
    lines.append("    v = dict(fields)")
    for i, (name, _, _) in enumerate(facts):  # in the order the loop this replaces used
        lines.append(f"    v[{name!r}] = f{i}")
    lines.append("    return v")
    return _define("values", env, lines)


def _tuple_fn(facts: list, names: tuple) -> Callable[[State, dict], tuple]:
    """The values of `names` (fields and facts) as a tuple: what `values` would hold for them,
    without building the dict. Memo keys are made of these."""
    env, lines = _fact_lines([f for f in facts if f[0] in names])
    at = {name: i for i, (name, _, _) in enumerate(f for f in facts if f[0] in names)}
    items = [f"f{at[n]}" if n in at else f"get({n!r})" for n in names]
    lines.append("    return (" + "".join(i + ", " for i in items) + ")")
    return _define("values", env, lines)


def _fact_lines(facts: list) -> tuple[dict, list[str]]:
    """Source computing each fact into f0, f1, ...: None when a field it is read through is unknown.
    Facts read through one lookup (facts.VIA) share one call of it."""
    env: dict = {"UNSEEN": UNSEEN}
    flags: dict[tuple, str] = {}
    lines = ["def values(state, fields):", "    get = fields.get"]
    for deps in dict.fromkeys(deps for _, _, deps in facts):
        flags[deps] = f"u{len(flags)}"
        lines.append(f"    {flags[deps]} = " + (" or ".join(f"get({d!r}) is None" for d in deps) or "False"))
    users: dict = {}  # lookup -> the flags of the facts read through it
    for name, _, deps in facts:
        if name in VIA:
            users.setdefault(VIA[name][0], []).append(flags[deps])
    found: dict = {}
    for lookup, their in users.items():
        o = found[lookup] = f"o{len(found)}"
        env["L" + o] = lookup
        lines.append(f"    {o} = UNSEEN if {' and '.join(dict.fromkeys(their))} else L{o}(state, fields)")
    for i, (name, get, deps) in enumerate(facts):
        if name in VIA:
            lookup, env[f"g{i}"] = VIA[name]
            o = found[lookup]
            lines.append(f"    f{i} = None if {flags[deps]} or {o} is UNSEEN else g{i}({o}, state, fields)")
        else:
            env[f"g{i}"] = get
            lines.append(f"    f{i} = None if {flags[deps]} else g{i}(state, fields)")
    return env, lines


def _define(name: str, env: dict, lines: list[str]):
    exec("\n".join(lines), env)  # noqa: S102 - generated from the rule's own fact names
    return env[name]


_RESP_KEYS: dict[tuple, tuple] = {}


def _resp_keys(fields: dict) -> tuple:
    """`resp.`-prefixed names of a response's fields, computed once per layout."""
    names = tuple(fields)
    hit = _RESP_KEYS.get(names)
    if hit is None:
        hit = _RESP_KEYS[names] = tuple("resp." + k for k in names)
    return hit


class Fields:
    """Rule-side variables for a command's request (and `resp.*` response) fields, typed from the layout."""

    def __init__(self, codec: Codec, struct: str, prefix: str = ""):
        self.widths = codec.layout(struct).widths
        self.prefix = prefix
        self.struct = struct

    def __getitem__(self, key: str) -> E:
        if key not in self.widths:
            raise KeyError(f"{self.struct} has no integer field {key!r}; it has {', '.join(self.widths)}")
        return Var(self.prefix + key, self.widths[key])


class MissingFact(Error, KeyError):
    """The SpecIR lacks a command, struct or constant a rule is written against."""


@dataclass
class Build:
    """What rule definitions read from the SpecIR: constants, fields, feature gates."""

    ir: SpecIR
    codec: Codec
    errors: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        self.errors = tuple(r.name for r in self.ir.responses if r.kind == "error")
        self.requirement_ids = frozenset(r.id for r in self.ir.requirements)

    def k(self, name: str) -> int:
        return self._get(self.ir.constant, name)

    @staticmethod
    def _get(lookup, name):
        try:
            return lookup(name)
        except KeyError as exc:
            raise MissingFact(exc.args[0]) from None

    def values(self, prefix: str) -> tuple[int, ...]:
        return tuple(c.value for c in self.ir.constants if c.name.startswith(prefix))

    def req(self, cmd: str) -> Fields:
        return Fields(self.codec, self._get(self.ir.command, cmd).request)

    def resp(self, response: str) -> Fields:
        return Fields(self.codec, self.codec.layout(response).name, "resp.")

    def resolve(self, rule: Rule) -> Rule:
        """Fill ANY_ERROR and the success types, and drop IDs this SpecIR does not have."""
        keep = lambda ids: tuple(i for i in ids if i in self.requirement_ids)  # noqa: E731
        checks = []
        for c in rule.checks:
            errs = (
                None
                if c.errors is None
                else tuple(e for x in c.errors for e in (self.errors if x == ANY_ERROR else (x,)))
            )
            checks.append(replace(c, errors=errs, reqs=keep(c.reqs)))
        obs = tuple(replace(o, reqs=keep(o.reqs)) for o in rule.obligations)
        ok = rule.ok or self.ir.command(rule.command).responses
        return replace(rule, checks=tuple(checks), obligations=obs, ok=ok, ok_reqs=keep(rule.ok_reqs))
