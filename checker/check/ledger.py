"""The requirement ledger: one mark per requirement an exchange exercised (fail over inconclusive
over pass), their tallies, and each requirement's verdict over a whole trace or campaign."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from virtgpu_conform.model.coverage import NOT_CHECKABLE
from virtgpu_conform.model.expr import compile_py
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.model.rule import PROFILES

from .findings import Tally

if TYPE_CHECKING:
    from virtgpu_conform.checker.traces.events import Exchange

    from .readings import Pair

PASS, INCONCLUSIVE, FAIL = 0, 1, 2


class Ledger:
    def __init__(self, protocol: Protocol, profile: str = "strict", tallies: Optional[dict[str, Tally]] = None):
        self.p = protocol
        self.profile = PROFILES[profile]
        self.profile_name = profile
        self.tallies: dict[str, Tally] = tallies if tallies is not None else {}
        # compiled `when`s and per-command check lists, shared by every reader of this protocol
        self.when_fns: dict[int, tuple[Callable[[dict], Any], tuple[str, ...]]] = protocol.memo.setdefault(
            "engine/when", {}
        )
        self.fast_tally: dict[tuple, tuple] = protocol.memo.setdefault(f"engine/tally/{profile}", {})
        self.cited: dict[str, list] = {}  # command -> its checks that cite requirements and the profile enforces

    def t(self, rid: str) -> Tally:
        t = self.tallies.get(rid)
        if t is None:
            t = self.tallies[rid] = Tally()
        return t

    def tally(self, ex: Exchange, primary: Pair, proven: set) -> dict[str, int]:
        """Count the marks of one exchange's leading reading; returns them (requirement -> level)."""
        marks = self.marks(ex, primary, proven)
        for r, level in marks.items():
            self.count(r, level, ex.where)
        return marks

    def count(self, rid: str, level: int, where) -> None:
        """One mark of `rid` (PASS, INCONCLUSIVE or FAIL), made at `where`."""
        t = self.t(rid)
        if level == FAIL:
            t.failed += 1
            t.first_fail = t.first_fail or where
        elif level == INCONCLUSIVE:
            t.inconclusive += 1
        else:
            t.passed += 1

    def marks(self, ex: Exchange, primary: Pair, proven: set) -> dict[str, int]:
        """The marks `tally` counts, counting none."""
        out = primary.outcome
        assert out is not None, "the primary reading of a judged exchange"
        rule = out.rule
        if not (out.failed or out.unknown or primary.breaches or primary.open_) and None not in out.values.values():
            # the common case, every value known and nothing broken: the `when`s that held decide
            clean = dict.fromkeys(self.clean_reqs(rule, out.values, ex.resp is not None), PASS)
            return self._unseen(ex, rule, out.values, clean)
        failed = {c.id for c in out.failed}
        unknown = {c.id for c in out.unknown}
        bad = {(b.check, r) for b in primary.breaches for r in b.reqs}
        marks: dict[str, int] = {}

        def mark(r: str, level: int) -> None:
            if marks.get(r, -1) < level:
                marks[r] = level

        cited = self.cited.get(rule.command)
        if cited is None:
            cited = self.cited[rule.command] = [c for c in rule.checks if c.reqs and c.basis in self.profile]
        for c in cited:
            if c.id in failed:
                for r in c.reqs:
                    mark(r, FAIL if ("driver", c.id) in proven and (c.id, r) in bad else INCONCLUSIVE)
            elif c.id in unknown:
                for r in c.reqs:
                    mark(r, INCONCLUSIVE)
            elif c.when is None or self.holds(c, out.values):
                for r in c.reqs:
                    mark(r, PASS)
        for b in primary.breaches:
            if b.side == "device":
                for r in b.reqs:
                    mark(r, FAIL if (b.side, b.check) in proven else INCONCLUSIVE)
        for b in primary.open_:
            for r in b.reqs:
                mark(r, INCONCLUSIVE)
        if ex.resp is not None:
            for ob in rule.obligations:
                if ob.basis in self.profile and (ob.when is None or self.holds(ob, out.values)):
                    for r in ob.reqs:
                        mark(r, PASS)
        return self._unseen(ex, rule, out.values, marks)

    def _unseen(self, ex: Exchange, rule, values: dict, marks: dict[str, int]) -> dict[str, int]:
        """An answer the trace does not show (QEMU's log has a length at most; traced the documented
        way, nothing): what the device owed in it was exercised and cannot be judged, inconclusive."""
        if ex.resp is None and ex.answered and not ex.no_body:
            for ob in rule.obligations:
                if ob.basis in self.profile and (ob.when is None or self.holds(ob, values)):
                    for r in ob.reqs:
                        marks[r] = max(marks.get(r, INCONCLUSIVE), INCONCLUSIVE)
        return marks

    def clean_reqs(self, rule, values: dict, answered: bool) -> tuple[str, ...]:
        """The requirements a clean exchange passes; one compiled call reads every `when`."""
        key = (rule.command, answered)
        fast = self.fast_tally.get(key)
        if fast is None:
            items = [c for c in rule.checks if c.reqs and c.basis in self.profile]
            if answered:
                items += [o for o in rule.obligations if o.reqs and o.basis in self.profile]
            source = "lambda v: (" + "".join(f"{i.when.py() if i.when is not None else 'True'}, " for i in items) + ")"
            fn = eval(source, {})  # noqa: S307 - generated from our own expression nodes
            fast = self.fast_tally[key] = (fn, items, {})
        fn, items, by_holds = fast
        holds = fn(values)
        reqs = by_holds.get(holds)
        if reqs is None:
            reqs = by_holds[holds] = tuple(dict.fromkeys(r for i, h in zip(items, holds) if h for r in i.reqs))
        return reqs

    def holds(self, item, values: dict) -> bool:
        """Whether a check's or obligation's `when` held; unknown counts as held (it may have applied)."""
        hit = self.when_fns.get(id(item))
        if hit is None:
            hit = self.when_fns[id(item)] = (compile_py(item.when), tuple(item.when.vars()))
        fn, names = hit
        if any(values.get(n) is None for n in names):
            return True
        return bool(fn(values))

    def verdicts(self) -> dict[str, dict]:
        """Every requirement of the SpecIR with its verdict over what was tallied."""
        cited: dict[str, set[str]] = {}
        for rule in self.p.rules.values():
            for item in rule.checks + rule.obligations:
                for r in item.reqs:
                    cited.setdefault(r, set()).add(item.basis)
            for r in rule.ok_reqs:
                cited.setdefault(r, set()).add(rule.ok_basis)
        out = {}
        for req in self.p.ir.requirements:
            t = self.tallies.get(req.id, Tally())
            v = t.verdict()
            reason = ""
            if v is None:
                if req.id in NOT_CHECKABLE:
                    v, reason = "not-applicable", NOT_CHECKABLE[req.id]
                elif req.id in cited and not cited[req.id] & self.profile:
                    v, reason = "not-applicable", f"its rules' basis is outside the {self.profile_name} profile"
                else:
                    v = "not-exercised"
            out[req.id] = {
                "verdict": v,
                "events": t.events,
                "passed": t.passed,
                "failed": t.failed,
                "inconclusive": t.inconclusive,
                "reason": reason or None,
                "first_failure": str(t.first_fail) if t.first_fail else None,
            }
        return out
