"""The checker's fast paths: verdicts remembered and replayed where a trace repeats itself.

Full-fidelity traces spend most exchanges on the clean path: one reading, every value known,
nothing broken. Exchanges a trace gives no answer bytes for (a QEMU log) miss it, yet repeat:
the same command, the same values its checks read and the same evidence of the answer decide a
candidate's completions, their marks and no breach, so the verdict of one that broke nothing
is replayed for the next like it. Both give exactly what the general path gives
(`Checker(fast=False)` takes only the general path; the tests compare the two).
"""

from __future__ import annotations

import typing
from typing import Optional

from virtgpu_conform.checker.traces.events import Exchange
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.model.state import State

from .explain import History, short
from .ledger import Ledger
from .readings import GUESSES, Candidate, Pair

SETTLED = 4096  # remembered verdicts of exchanges that broke nothing (bounded: flat memory)
CLEAN = 8192  # remembered outcomes of the clean path (bounded: flat memory)


class Checking(typing.Protocol):
    """What the fast paths read and advance of the checker they serve."""

    p: Protocol
    cands: list[Candidate]
    ledger: Ledger
    history: History
    uncertain: dict[str, str]

    def apply(self, ex: Exchange, st: State) -> None: ...

    def advance(self, ex: Exchange, pairs: list[Pair]) -> None: ...


class FastPaths:
    def __init__(self, checker: Checking):
        self.c = checker
        # (command, values the checks read, what the trace says of the answer) -> how a candidate's
        # completions came out: ((accepted, rank), ...), the tallies it passes and leaves inconclusive
        # (None when it broke something), whether it broke something in the profile; see settle
        self.settled: dict[tuple, tuple] = {}
        # (request, response, state facts) -> the tallies a clean exchange passes, or None when it is
        # not clean. The messages are decoded once per distinct bytes and never changed.
        self.clean_memo: dict[tuple, tuple] = {}

    def replayed(self, ex: Exchange, rule) -> tuple[bool, Optional[list]]:
        """(True, None) when a remembered verdict decided the exchange; else (False, the keys to
        remember the general path's verdict under)."""
        c, name = self.c, ex.req.name
        tail: tuple = (ex.resp_types, ex.answered, ex.unanswered, ex.no_body)
        resp = ex.resp
        if resp is not None:
            # The answer's type and fields, and every value an obligation on it may read: the
            # request's fields and the rule's facts (the checks' own values are `vals`).
            tail = (resp.name, tuple(resp.fields.values()), tuple(ex.req.fields.values()), ex.resp_room, ex.answered)
        if len(c.cands) == 1:
            st = c.cands[0].state
            vals = rule.check_values(st, ex.req.fields)
            key = (name, vals, *tail) if resp is None else (name, vals, rule.fact_values(st, ex.req.fields), *tail)
            hit = self.settled.get(key)
            if hit is not None and hit[1] is not None:  # (its only candidate is the primary: it must be quiet)
                if len(hit[0]) == 1:
                    self._replay(ex, hit)
                    return True, None
                if self._replay_split(ex, [hit]):
                    return True, None
            return False, [(key, vals)]
        keys: list[tuple[tuple, tuple]] = []
        for cand in c.cands:
            vals = rule.check_values(cand.state, ex.req.fields)
            if resp is None:
                keys.append(((name, vals, *tail), vals))
            else:
                keys.append(((name, vals, rule.fact_values(cand.state, ex.req.fields), *tail), vals))
        hits = [self.settled.get(k) for k, _ in keys]
        if None not in hits and self._replay_split(ex, hits):
            return True, None
        return False, keys

    def settle(self, ex: Exchange, rule, keys: list, groups: list, primary: Pair, marks: dict) -> None:
        """Remember how each candidate's completions came out: their answers and ranks, whether
        they broke something in the profile (then a clean reading drops them), and the marks of a
        candidate that broke nothing at all (it may be the primary). Not a candidate with a
        divergence: replaying it would not count it."""
        ledger = self.c.ledger
        for (key, vals), got in zip(keys, groups):
            q = got[0]  # a candidate's completions share its outcome and its breaches
            assert q.outcome is not None, "the completions of the general path were judged"
            if q.diverges or vals != tuple(map(q.outcome.values.get, rule.check_vars)):
                continue
            passed = inconclusive = None
            if q.quiet:
                mine = marks if any(g is primary for g in got) else ledger.marks(ex, q, set())
                passed = tuple(ledger.t(r) for r, lv in mine.items() if lv == 0)
                inconclusive = tuple(ledger.t(r) for r, lv in mine.items() if lv == 1)
            if len(self.settled) >= SETTLED:
                self.settled.clear()
            self.settled[key] = (
                tuple((g.accepted, g.rank - g.cand.rank) for g in got),
                passed,
                inconclusive,
                not q.breaches,
            )

    def _replay(self, ex: Exchange, hit: tuple) -> None:
        """What the general path does for an exchange that broke nothing, from its remembered
        verdict: one candidate, one completion, no copy."""
        c = self.c
        ((accepted, rank),), passed, inconclusive, _ = hit
        cand = c.cands[0]
        st = cand.state
        c.p.submit(st, ex.req)
        for t in passed:
            t.passed += 1
        for t in inconclusive:
            t.inconclusive += 1
        c.history.remember(ex, accepted)
        guesses = cand.guesses
        if rank:
            guess = (ex.where, ("accepted" if accepted else "rejected") + " " + short(ex.req.name))
            guesses = (guesses + (guess,))[-GUESSES:]
        if accepted:
            c.apply(ex, st)
        else:
            c.p.complete(st, ex.req, None, "")
        if guesses is not cand.guesses or cand.rank:
            c.cands = [Candidate(st, 0, guesses)]

    def _replay_split(self, ex: Exchange, hits: list) -> bool:
        """The general path from the remembered completions of every candidate, when the primary
        (the first of the least rank) broke nothing: nothing is reported, the candidates split and
        fold as they did, the readings that broke something are dropped. False (and nothing done)
        when the primary's candidate broke something: the general path must say what."""
        c, req = self.c, ex.req
        primary: Optional[tuple[int, bool, tuple]] = None
        for cand, hit in zip(c.cands, hits):
            for accepted, rank in hit[0]:
                if primary is None or cand.rank + rank < primary[0]:
                    primary = (cand.rank + rank, accepted, hit)
        assert primary is not None, "there is a candidate, and each has a completion"
        _, accepted, hit = primary
        if hit[1] is None:
            return False
        clean: list[Pair] = []
        for cand, (choices, _, _, fine) in zip(c.cands, hits):
            c.p.submit(cand.state, req)
            if not fine:
                continue
            for accepted_, rank in choices:
                guesses = cand.guesses
                if rank:
                    guess = (ex.where, ("accepted" if accepted_ else "rejected") + " " + short(req.name))
                    guesses = (guesses + (guess,))[-GUESSES:]
                clean.append(Pair(cand, accepted_, [], cand.rank + rank, guesses, None))
        for t in hit[1]:
            t.passed += 1
        for t in hit[2]:
            t.inconclusive += 1
        c.history.remember(ex, accepted)
        c.advance(ex, clean)
        return True

    def clean(self, ex: Exchange, rule) -> bool:
        """An exchange with one reading, every value known and nothing broken on either side, done;
        False for anything else (the general path then takes it)."""
        c = self.c
        resp, req = ex.resp, ex.req
        if resp is None or not ex.answered or ex.resp_types is not None or req.problems or resp.problems:
            return False
        st = c.cands[0].state
        # Whether it is clean, and which requirements it passes, follows from the request's fields,
        # the facts and the response alone: a display workload repeats the same few of those.
        facts = rule.fact_values(st, req.fields)
        key = (id(req), id(resp), facts)
        hit = self.clean_memo.get(key)
        if hit is None:
            v = dict(req.fields)
            v.update(zip(rule.fact_names, facts))
            v = rule.clean_values(v, resp)
            passed = None if v is None else tuple(c.ledger.t(r) for r in c.ledger.clean_reqs(rule.rule, v, True))
            if len(self.clean_memo) >= CLEAN:
                self.clean_memo.clear()
            hit = self.clean_memo[key] = (req, resp, passed)  # holding the messages keeps their ids theirs
        passed = hit[2]
        if passed is None:
            return False
        c.p.submit(st, req)
        try:
            c.p.complete(st, req, resp)
        except (TypeError, KeyError, ValueError):
            c.uncertain.setdefault("st.", f"{short(req.name)} at {ex.where} has fields the model needs unknown")
        for t in passed:
            t.passed += 1
        if "resource_id" in req.fields:
            c.history.remember(ex, True)
        return True
