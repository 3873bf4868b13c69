"""The streaming checker: the model's rules applied exchange by exchange over a bounded set of candidate states.

Where the trace does not say how the device answered, each candidate splits into the
completions a conformant device could have given (accepted: the command's effect
applies; rejected: it does not). Later evidence prunes them: a candidate whose
history is no longer conformant is dropped while a conformant one remains. A
finding is definite only when no candidate and no completion is conformant and no
candidate was dropped for room; otherwise it is possible, with what the trace leaves open.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from virtgpu_conform.model.coverage import NOT_CHECKABLE
from virtgpu_conform.model.expr import compile_py, why_false
from virtgpu_conform.model.facts import depends
from virtgpu_conform.model.protocol import Breach, Protocol
from virtgpu_conform.model.rule import PROFILES, Outcome
from virtgpu_conform.model.state import Capset, Settings, State

from .findings import Finding, Tally
from virtgpu_conform.checker.traces.events import NO_ANSWER, RESET, Diagnostic, Exchange, Reset, Session, Where

MAX_CANDIDATES = 8
_SELECTORS = ("resource_id", "scanout_id", "pos.scanout_id")  # fields an effect finds its object by
_CTX_SELECTOR = "hdr.ctx_id"  # ... and, for the CTX_* commands, the context in the header
_RELATED = 4  # earlier events remembered per resource for explanations
_GUESSES = 3  # assumed answers remembered per candidate for explanations
_SETTLED = 4096  # remembered verdicts of exchanges that broke nothing (bounded: flat memory)
_CLEAN_MEMO = 8192  # remembered outcomes of the clean path (bounded: flat memory)
# the state facts an effect with an unknown selector may have made wrong
# (no fact reads scanouts or the cursor, so an unnamed scanout leaves every fact as it was)
_TOUCHES = {"resource_id": ("st.res.", "st.map."), "hdr.ctx_id": ("st.ctx.", "st.res.in_ctx"),
            "scanout_id": (), "pos.scanout_id": ()}


@dataclass
class Candidate:
    state: State
    rank: int = 0  # answers assumed that differ from the reference device's
    guesses: tuple[tuple[Where, str], ...] = ()  # the latest such assumptions, for messages


@dataclass
class _Pair:
    cand: Candidate
    accepted: bool  # the completion: did the device carry the command out
    breaches: list[Breach]  # in profile, definite
    rank: int
    guesses: tuple[tuple[Where, str], ...]
    outcome: Outcome
    open_: list[Breach] = field(default_factory=list)  # could not be decided (unknown fields)
    quiet: bool = False  # nothing broken at all, not even outside the profile
    diverges: bool = False  # some breach is a divergence (counted as one whatever becomes of the pair)


def settings_from(session: Session) -> Settings:
    """Settings for the model. Unless the trace states all of them, they are all unknown to the
    rules (a guessed num_scanouts or capset list would let a definite finding rest on a guess)."""
    known = (session.features is not None and session.num_scanouts is not None
             and (session.capsets is not None or session.num_capsets == 0))
    caps = tuple(Capset(*c) for c in (session.capsets or ()))
    hv = session.host_visible
    return Settings(features=session.features or frozenset(), num_scanouts=session.num_scanouts or 1, known=known,
                    capsets=caps, blob_alignment=session.blob_alignment or 0, host_visible=hv if hv else None)


# Device findings that read nothing of the state: an uncertain state does not make them possible.
_STATELESS = frozenset({"no-response", "malformed-accepted"})


class Checker:
    def __init__(self, protocol: Protocol, profile: str = "strict", max_candidates: int = MAX_CANDIDATES,
                 fast: bool = True):
        """`fast=False`: every exchange takes the general path (no remembered verdicts, no clean
        path): the same findings, marks and readings, slower; what the fast paths are tested against."""
        self.fast = fast
        self.p = protocol
        self.profile = PROFILES[profile]
        self.profile_name = profile
        self.max_candidates = max_candidates
        self.ir = protocol.ir
        self.reqs = {r.id: r for r in self.ir.requirements}
        self.every_response = frozenset(r.name for r in self.ir.responses)
        self.findings: list[Finding] = []
        self.divergences: dict[tuple, dict] = {}
        self.divergence_log: Optional[list[Breach]] = None
        self.tallies: dict[str, Tally] = {}
        self.diagnostics: dict[str, int] = {}
        self.first_diagnostics: list[Diagnostic] = []
        self.exchanges = 0
        self.unidentified = 0
        self.commands: dict[str, int] = {}
        self.max_split = 1
        self.session = Session(Where("", 0))
        # why definite findings resting on some state facts are downgraded, until the next reset:
        # fact prefix ("st." for all of them) -> the reason
        self.uncertain: dict[str, str] = {}
        self.later_uncertain: list[tuple[str, str]] = []  # what this exchange makes uncertain for the ones after it
        # resource id -> recent events on it: (where, command, accepted), put in words when a finding cites them
        self.history: dict[int, deque] = {}
        self.when_fns: dict[int, object] = protocol.memo.setdefault("engine/when", {})
        self.fast_tally: dict[tuple, tuple] = protocol.memo.setdefault(f"engine/tally/{profile}", {})
        self.cited: dict[str, list] = {}  # command -> its checks that cite requirements and the profile enforces
        # (command, values the checks read, what the trace says of the answer) -> how a candidate's
        # completions came out: ((accepted, rank), ...), the tallies it passes and leaves inconclusive
        # (None when it broke something), whether it broke something in the profile; see _settle
        self.settled: dict[tuple, tuple] = {}
        # (request, response, state facts) -> the tallies a clean exchange passes, or None when it is
        # not clean; see _clean. The messages are decoded once per distinct bytes and never changed.
        self.clean_memo: dict[tuple, tuple] = {}
        self.selectors: dict[str, tuple] = {}  # command -> (its rule, the fields its effect finds objects by)
        self.cands = [Candidate(self._fresh_state(Settings(known=False), known_start=False))]

    # --- events --------------------------------------------------------------
    def feed(self, ev) -> None:
        if ev.__class__ is Exchange or isinstance(ev, Exchange):
            self.exchange(ev)
        elif isinstance(ev, Reset):
            self.reset(ev)
        elif isinstance(ev, Session):
            self.start(ev)
        elif isinstance(ev, Diagnostic):
            if ev.level == "error":  # an unreadable line may have been a command that changed the state
                self.uncertain.setdefault("st.", f"{ev.where} could not be read ({ev.code})")
            self.diagnostics[ev.code] = self.diagnostics.get(ev.code, 0) + 1
            if len(self.first_diagnostics) < 200:
                self.first_diagnostics.append(ev)

    def start(self, s: Session) -> None:
        self.session = s
        settings = settings_from(s)
        self.cands = [Candidate(self._fresh_state(settings, known_start=bool(s.from_reset)))]
        self.uncertain = {}

    def _fresh_state(self, settings: Settings, known_start: bool) -> State:
        st = self.p.new_state(settings)
        if not known_start:
            # The trace may begin after initialisation: what the driver read at start-up is not
            # known, and resources and contexts may exist that the trace never shows created.
            st.display_info_read = st.edid_read = None
            st.complete = False
        return st

    def reset(self, ev: Reset) -> None:
        why = self.uncertain.get("st.", "") or ("" if len(self.cands) == 1 else "several readings of the trace")
        for b in self.p.reset(self.cands[0].state):
            self._finding(b, not why, why, ev.where, None, None, [])
        settings = self.cands[0].state.settings
        self.cands = [Candidate(self._fresh_state(settings, ev.known_start))]
        self.uncertain = {}
        self.history.clear()

    def finish(self) -> None:
        for b in self.p.finish(self.cands[0].state):
            why = self.uncertain.get("st.", "")
            self._finding(b, len(self.cands) == 1 and not why, why,
                          Where(self.session.where.file, 0), None, None, [])

    # --- one exchange -----------------------------------------------------------
    def exchange(self, ex: Exchange) -> None:
        self.exchanges += 1
        ex.index = self.exchanges
        req = ex.req
        rule = self.p.compiled.get(req.name) if req.name else None
        if rule is None:
            self.unidentified += 1
            refused = ex.resp is not None and ex.answered and ex.resp.name is not None and ex.resp.name not in self.p.ok_types
            if not refused:  # a command the device refused changed nothing; any other may have
                self.uncertain.setdefault("st.", f"an exchange of unknown command at {ex.where} may have changed the state")
            if not ex.answered and ex.unanswered != RESET and "informal" in self.profile:
                # An unknown type, or a chain too short to hold one, is still a request: the device
                # must answer it (an error) like any other, or the driver waits for ever.
                b = _no_response(req.name or "", ex)
                self._finding(b, b.definite, "" if b.definite else ex.unanswered, ex.where, ex, None, [])
            return
        name = req.name
        self.commands[name] = self.commands.get(name, 0) + 1
        keys = None
        if not self.fast:
            pass
        elif ex.resp is None and not req.problems:
            # Exchanges the trace gives no response bytes for (a QEMU log: a written length, no
            # header) miss the clean path, yet repeat: the same command, the same values read by
            # its checks and the same evidence of the answer decide a candidate's completions,
            # their marks and no breach. The verdict of one that broke nothing is replayed for
            # the next like it, candidate by candidate.
            if len(self.cands) == 1:
                vals = rule.check_values(self.cands[0].state, req.fields)
                key = (name, vals, ex.resp_types, ex.answered, ex.unanswered, ex.no_body)
                hit = self.settled.get(key)
                if hit is not None and hit[1] is not None:  # (its only candidate is the primary: it must be quiet)
                    if len(hit[0]) == 1:
                        return self._replay(ex, hit)
                    if self._replay_split(ex, [hit]):
                        return
                keys = [(key, vals)]
            else:
                keys = []
                for cand in self.cands:
                    vals = rule.check_values(cand.state, req.fields)
                    keys.append(((name, vals, ex.resp_types, ex.answered, ex.unanswered, ex.no_body), vals))
                hits = [self.settled.get(k) for k, _ in keys]
                if None not in hits and self._replay_split(ex, hits):
                    return
        elif len(self.cands) == 1 and ex.resp is not None and self._clean(ex, rule):
            return
        pairs: list[_Pair] = []
        groups: list[list[_Pair]] = []  # per candidate, its completions
        for cand in self.cands:
            groups.append(self._completions(cand, ex))
            pairs.extend(groups[-1])
        clean = [q for q in pairs if not q.breaches]
        primary = min(pairs, key=lambda q: q.rank)
        proven: set[tuple[str, str]] = set()  # (side, check) reported definite
        if not clean:
            # Definite only what every reading breaks; a side only some readings blame stays possible.
            every = set.intersection(*({(b.side, b.check) for b in q.breaches} for q in pairs))
            proven = self._report(ex, primary, every, alt=None, others=pairs)
        elif primary.breaches:
            self._report(ex, primary, set(), alt=min(clean, key=lambda q: q.rank), others=pairs)
        if primary.open_:
            self._report_open(ex, primary)
        for prefix, why in self.later_uncertain:
            self.uncertain.setdefault(prefix, why)
        self.later_uncertain.clear()
        marks = self._tally(ex, primary, proven)
        self._remember(ex, primary.accepted)
        self._advance(ex, clean or pairs)
        if keys is not None:
            self._settle(ex, rule, keys, groups, primary, marks)

    def _settle(self, ex: Exchange, rule, keys: list, groups: list, primary: _Pair, marks: dict) -> None:
        """Remember how each candidate's completions came out: their answers and ranks, whether
        they broke something in the profile (then a clean reading drops them), and the marks of a
        candidate that broke nothing at all (it may be the primary). Not a candidate with a
        divergence: replaying it would not count it."""
        for (key, vals), got in zip(keys, groups):
            q = got[0]  # a candidate's completions share its outcome and its breaches
            if q.diverges or vals != tuple(map(q.outcome.values.get, rule.check_vars)):
                continue
            passed = inconclusive = None
            if q.quiet:
                mine = marks if any(g is primary for g in got) else self._marks(ex, q, set())
                passed = tuple(self._t(r) for r, lv in mine.items() if lv == 0)
                inconclusive = tuple(self._t(r) for r, lv in mine.items() if lv == 1)
            if len(self.settled) >= _SETTLED:
                self.settled.clear()
            self.settled[key] = (tuple((g.accepted, g.rank - g.cand.rank) for g in got), passed, inconclusive,
                                 not q.breaches)

    def _replay(self, ex: Exchange, hit: tuple) -> None:
        """What the general path does for an exchange that broke nothing, from its remembered
        verdict: one candidate, one completion, no copy."""
        ((accepted, rank),), passed, inconclusive, _ = hit
        cand = self.cands[0]
        st = cand.state
        self.p.submit(st, ex.req)
        for t in passed:
            t.passed += 1
        for t in inconclusive:
            t.inconclusive += 1
        self._remember(ex, accepted)
        guesses = cand.guesses
        if rank:
            guess = (ex.where, ("accepted" if accepted else "rejected") + " " + _short(ex.req.name))
            guesses = (guesses + (guess,))[-_GUESSES:]
        if accepted:
            self._apply(ex, st)
        else:
            self.p.complete(st, ex.req, None, "")
        if guesses is not cand.guesses or cand.rank:
            self.cands = [Candidate(st, 0, guesses)]

    def _replay_split(self, ex: Exchange, hits: list) -> bool:
        """The general path from the remembered completions of every candidate, when the primary
        (the first of the least rank) broke nothing: nothing is reported, the candidates split and
        fold as they did, the readings that broke something are dropped. False (and nothing done)
        when the primary's candidate broke something: the general path must say what."""
        req = ex.req
        primary = None
        for cand, hit in zip(self.cands, hits):
            for accepted, rank in hit[0]:
                if primary is None or cand.rank + rank < primary[0]:
                    primary = (cand.rank + rank, accepted, hit)
        _, accepted, hit = primary
        if hit[1] is None:
            return False
        clean: list[_Pair] = []
        for cand, (choices, _, _, fine) in zip(self.cands, hits):
            self.p.submit(cand.state, req)
            if not fine:
                continue
            for accepted_, rank in choices:
                guesses = cand.guesses
                if rank:
                    guess = (ex.where, ("accepted" if accepted_ else "rejected") + " " + _short(req.name))
                    guesses = (guesses + (guess,))[-_GUESSES:]
                clean.append(_Pair(cand, accepted_, [], cand.rank + rank, guesses, None))
        for t in hit[1]:
            t.passed += 1
        for t in hit[2]:
            t.inconclusive += 1
        self._remember(ex, accepted)
        self._advance(ex, clean)
        return True

    def _clean(self, ex: Exchange, rule) -> bool:
        """Full-fidelity traces spend most exchanges here: one reading, every value known, nothing
        broken on either side. Anything else takes the general path below."""
        resp, req = ex.resp, ex.req
        if resp is None or not ex.answered or ex.resp_types is not None or req.problems or resp.problems:
            return False
        st = self.cands[0].state
        # Whether it is clean, and which requirements it passes, follows from the request's fields,
        # the facts and the response alone: a display workload repeats the same few of those.
        facts = rule.fact_values(st, req.fields)
        key = (id(req), id(resp), facts)
        hit = self.clean_memo.get(key)
        if hit is None:
            v = dict(req.fields)
            v.update(zip(rule.fact_names, facts))
            v = rule.clean_values(v, resp)
            passed = None if v is None else tuple(self._t(r) for r in self._clean_reqs(rule.rule, v, True))
            if len(self.clean_memo) >= _CLEAN_MEMO:
                self.clean_memo.clear()
            hit = self.clean_memo[key] = (req, resp, passed)  # holding the messages keeps their ids theirs
        passed = hit[2]
        if passed is None:
            return False
        self.p.submit(st, req)
        try:
            self.p.complete(st, req, resp)
        except (TypeError, KeyError, ValueError):
            self.uncertain.setdefault("st.", f"{_short(req.name)} at {ex.where} has fields the model needs unknown")
        for t in passed:
            t.passed += 1
        if "resource_id" in req.fields:
            self._remember(ex, True)
        return True

    def _completions(self, cand: Candidate, ex: Exchange) -> list[_Pair]:
        st, req, p = cand.state, ex.req, self.p
        outcome = p.expect(st, req)
        p.submit(st, req)
        driver = [Breach(outcome.rule.command, c.id, "driver", c.basis, c.reqs, True, c.note)
                  for c in outcome.failed]
        expected_ok = outcome.expected in p.ok_types
        if req.problems:
            driver += self._malformed(outcome.rule.command, "driver", req)
        cramped = ex.resp is not None and ex.resp_room is not None and ex.resp.problems and ex.resp.size >= ex.resp_room
        if cramped:
            # The device filled all the room the driver gave it: the short answer is the driver's doing.
            driver.append(Breach(outcome.rule.command, "response-buffer-size", "driver", "informal", (), True,
                                 f"the driver gave {ex.resp_room} bytes for the answer; "
                                 f"{_short(outcome.expected)} needs {p.codec.layout(outcome.expected).size}"))
        if ex.resp is not None and ex.answered and p.unusable(req):
            # Nothing sound to act on: any refusal is right, and which one is open.
            malformed = driver[len(outcome.failed):]
            accepted = ex.resp.name in p.ok_types
            if accepted:
                malformed.append(Breach(outcome.rule.command, "malformed-accepted", "device", "informal", (), True,
                                        f"answered {_short(ex.resp.name)} to a request it cannot have read whole "
                                        f"({'; '.join(str(pr) for pr in req.problems)})"))
                # What the device did with what it read is unknown: later findings must not rest on a guess
                # (this one's does not: it rests on the answer alone).
                self.later_uncertain.append(("st.", f"the device accepted a request it cannot have read whole at {ex.where}"))
            return [self._pair(cand, accepted, malformed, outcome, 0, None)]
        if ex.resp is not None and ex.answered and cramped and ex.resp.name is None:
            return [self._pair(cand, expected_ok, driver, outcome, 0, None)]  # not even a header fitted
        if ex.resp is not None and ex.answered:
            breaches = p.judge(st, req, outcome, ex.resp)
            if ex.resp.problems and not cramped:
                breaches += self._malformed(outcome.rule.command, "device", ex.resp)
            if driver[len(outcome.failed):]:
                breaches += driver[len(outcome.failed):]
            if ex.resp_types is not None and ex.resp.name and ex.resp.name not in ex.resp_types:
                breaches.append(Breach(outcome.rule.command, "response-length", "device", "informal", (), True,
                                       f"{_short(ex.resp.name)} with {'; '.join(ex.evidence) or 'a length that does not fit it'}"
                                       f" (a {_short(ex.resp.name)} is {self.p.codec.layout(ex.resp.name).size} bytes)"))
            allowed = self._allowed(outcome)
            widest = self._widest(outcome)
            if outcome.unknown and ex.resp.name and widest is not None and ex.resp.name not in widest:
                # What the known failures demand, more failures only widen: no completion helps.
                breaches.append(Breach(outcome.rule.command, "response-type", "device",
                                       *outcome.duty(self.profile), True,
                                       f"answered {_short(ex.resp.name)} to a request that fails "
                                       f"{', '.join(c.id for c in outcome.failed)}; a conformant device answers "
                                       f"{_names(widest)}"))
            elif outcome.unknown and ex.resp.name and allowed is not None and ex.resp.name not in allowed:
                # No completion is clean: either some unknown field breaks a check, or the device
                # refused a valid request. The trace cannot say which side: a possible finding.
                breaches.append(Breach(outcome.rule.command, "response-type", "device", *outcome.duty(self.profile), False,
                                       f"answered {_short(ex.resp.name)}; a conformant device answers {_names(allowed)} "
                                       f"unless {_unknown_fields(outcome)} break {', '.join(c.id for c in outcome.unknown)}"
                                       " (then the driver is at fault)"))
            accepted = ex.resp.name in p.ok_types
            return [self._pair(cand, accepted, breaches, outcome, 0, None)]
        device: list[Breach] = []
        if not ex.answered:
            if ex.unanswered != RESET:  # a reset may drop what is in flight; one it overtook is noted
                device.append(_no_response(outcome.rule.command, ex))
            choices = [expected_ok, not expected_ok]
        elif ex.no_body:
            choices = [expected_ok]
        else:
            names = ex.resp_types if ex.resp_types is not None else self.every_response
            allowed = self._allowed(outcome)
            fits = [n for n in names if allowed is None or n in allowed]
            classes = {n in p.ok_types for n in fits}
            if not fits:
                # With checks undecided, either side may be at fault: possible, not definite.
                why = (f"; unless {_unknown_fields(outcome)} break {', '.join(c.id for c in outcome.unknown)}"
                       " (then the driver is at fault)" if outcome.unknown else "")
                device.append(Breach(outcome.rule.command, "response-type", "device", *outcome.duty(self.profile),
                                     not outcome.unknown,
                                     f"answered {_names(names)} ({'; '.join(ex.evidence) or 'from the trace'}); "
                                     f"a conformant device answers {_names(allowed)}{why}"))
                classes = {n in p.ok_types for n in names} or {expected_ok}
            choices = sorted(classes, key=lambda c: c != expected_ok)
        out = []
        for accepted in dict.fromkeys(choices):
            rank = 0 if accepted == expected_ok else 1
            guess = None if rank == 0 else (ex.where, ("accepted" if accepted else "rejected") + " " + _short(req.name))
            out.append(self._pair(cand, accepted, driver + device, outcome, rank, guess))
        return out

    @staticmethod
    def _malformed(command: str, side: str, msg) -> list[Breach]:
        """What was wrong with the bytes themselves (only traces that carry bytes have problems)."""
        return [Breach(command, "malformed-" + ("request" if side == "driver" else "response"), side, "informal",
                       (), True, str(pr)) for pr in msg.problems]

    def _allowed(self, outcome: Outcome) -> Optional[frozenset[str]]:
        """The answers of the clean completions: unknown checks the profile enforces pass (else the
        driver is at fault), unknown checks outside it may fail. None: anything."""
        if not outcome.unknown:
            return outcome.acceptable(self.profile)
        base = Outcome(outcome.rule, outcome.failed, [], outcome.values).acceptable(self.profile)
        for c in outcome.unknown:
            if c.basis in self.profile or base is None:
                continue
            alt = Outcome(outcome.rule, outcome.failed + [c], [], outcome.values).acceptable(self.profile)
            base = None if alt is None else base | alt
        return base

    def _widest(self, outcome: Outcome) -> Optional[frozenset[str]]:
        """Every answer some completion allows, when the known failures already demand a rejection."""
        if not outcome.demanding(self.profile):
            return None
        return Outcome(outcome.rule, outcome.failed + outcome.unknown, [], outcome.values).acceptable(self.profile)

    def _pair(self, cand: Candidate, accepted: bool, breaches: list[Breach], outcome: Outcome,
              rank: int, guess) -> _Pair:
        inside = [b for b in breaches if b.definite and b.basis in self.profile]
        self._divergences(breaches)
        guesses = (cand.guesses + (guess,))[-_GUESSES:] if guess else cand.guesses
        return _Pair(cand, accepted, inside, cand.rank + rank, guesses, outcome,
                     [b for b in breaches if not b.definite], not breaches,
                     any(b.basis == "implementation" and b.definite for b in breaches))

    def _advance(self, ex: Exchange, pairs: list[_Pair]) -> None:
        if len(pairs) == 1:  # the common case: one reading, no copy
            q = pairs[0]
            if q.accepted:
                self._apply(ex, q.cand.state)
            else:
                self.p.complete(q.cand.state, ex.req, None, "")
            self.cands = [Candidate(q.cand.state, 0, q.guesses)]
            return
        pairs = sorted(pairs, key=lambda q: q.rank)
        nxt: list[Candidate] = []
        left: dict[int, int] = {}  # candidate -> its pairs not yet advanced
        for q in pairs:
            left[id(q.cand)] = left.get(id(q.cand), 0) + 1
        for q in pairs:
            n = left[id(q.cand)] = left[id(q.cand)] - 1
            # The candidate's last pair takes its state (nothing reads the old one after this), the others a copy.
            st = q.cand.state if n == 0 else q.cand.state.clone()
            if q.accepted:
                self._apply(ex, st)
            else:
                self.p.complete(st, ex.req, None, "")
            if any(c.state == st for c in nxt):
                continue
            nxt.append(Candidate(st, q.rank, q.guesses))
        if len(nxt) > self.max_candidates:
            self.uncertain.setdefault("st.", (
                f"more than {self.max_candidates} readings of what the trace leaves unsaid by {ex.where}; "
                "the least likely were dropped"))
            nxt = nxt[: self.max_candidates]
        self.max_split = max(self.max_split, len(nxt))
        base = min(c.rank for c in nxt)
        for c in nxt:
            c.rank -= base
        self.cands = nxt

    def _apply(self, ex: Exchange, st: State) -> None:
        req = ex.req
        sel = self.selectors.get(req.name)
        if sel is None:
            sel = self.selectors[req.name] = (self.p.rules[req.name], _SELECTORS + (
                (_CTX_SELECTOR,) if "_CMD_CTX_" in req.name else ()))
        rule, keys = sel
        if rule.effect:
            fields = req.fields
            for k in keys:
                if fields.get(k, 0) is None:  # in the request, and unknown
                    return self._unnamed(ex, st, [k for k in keys if fields.get(k, 0) is None])
        try:
            # An answer too short to name its type was accepted all the same (the pair says so).
            resp = ex.resp if ex.resp is not None and ex.resp.name is not None else None
            self.p.complete(st, req, resp, next(iter(rule.ok)))
        except (TypeError, KeyError, ValueError):
            self.uncertain.setdefault("st.", f"{_short(req.name)} at {ex.where} has fields the model needs unknown")

    def _unnamed(self, ex: Exchange, st: State, unnamed: list[str]) -> None:
        for k in unnamed:
            for prefix in _TOUCHES[k]:
                self.uncertain.setdefault(prefix, f"{_short(ex.req.name)} at {ex.where} changed an object "
                                                  f"the trace does not name ({k} unknown)")
        self.p.complete(st, ex.req, None, "")  # books the fence; the effect cannot be applied

    # --- findings ------------------------------------------------------------
    def _report(self, ex: Exchange, primary: _Pair, every: set, alt: Optional[_Pair], others: list) -> set:
        """Report the primary reading's breaches; returns the (side, check) pairs reported definite."""
        reason, proven = "", set()
        if alt is not None:
            differ = [g for g in alt.guesses if g not in primary.guesses]
            reason = ("conformant if the device " + " and ".join(f"{what} at {w}" for w, what in differ)
                      + " (the trace does not show those answers)" if differ else
                      "another completion of what the trace leaves unsaid is conformant")
        elif self.uncertain:
            why = [r for pre, r in self.uncertain.items() if any(k.startswith(pre) for k in primary.outcome.values)]
            if why:
                # What an uncertain state leaves unknown is the verdict of checks that read it; an answer
                # that never came, or an OK to a request that cannot be read, rests on the exchange alone.
                every, reason = {k for k in every if k[1] in _STATELESS}, why[0]
        for b in primary.breaches:
            key = (b.side, b.check)
            if key in every:
                proven.add(key)
                self._finding(b, True, "", ex.where, ex, primary, self._related(ex))
            else:
                instead = sorted({f"{x.side} {x.check}" for q in others for x in q.breaches} - {f"{b.side} {b.check}"})
                self._finding(b, False, reason or "another reading of what the trace leaves unsaid breaks "
                              + (", ".join(instead) or "something else") + " instead", ex.where, ex, primary,
                              self._related(ex))
        return proven

    def _report_open(self, ex: Exchange, primary: _Pair) -> None:
        for b in primary.open_:
            if b.basis not in self.profile:
                continue
            if b.check == "response-type":
                self._finding(b, False, "the trace does not show the fields that decide which side is at fault",
                              ex.where, ex, primary, self._related(ex))
            elif b.check == "no-response":
                self._finding(b, False, ex.unanswered, ex.where, ex, primary, self._related(ex))

    def _finding(self, b: Breach, definite: bool, reason: str, where: Where, ex: Optional[Exchange],
                 pair: Optional[_Pair], related: list) -> None:
        spec = []
        for rid in b.reqs:
            r = self.reqs.get(rid)
            if r is not None:
                spec.append((r.loc.file, r.loc.line))
        msg = _message(b, ex)
        if definite and pair is not None and b.side == "driver":
            msg += self._symbolic_why(b, pair.outcome)
        self.findings.append(Finding(definite, b.side, b.command, b.check, b.basis, b.reqs, where,
                                     ex.index if ex else 0, msg, reason, ex.resp_where if ex else None,
                                     list(ex.also) if ex else [], related, spec))

    def _symbolic_why(self, b: Breach, outcome: Outcome) -> str:
        """For a check decided by z3 over unknown fields: the known values that force the failure."""
        check = next((c for c in outcome.rule.checks if c.id == b.check), None)
        if check is None or all(outcome.values.get(n) is not None for n in check.full.vars()):
            return ""
        core = why_false(check.full, outcome.values)
        if not core:
            return ""
        return " (whatever the trace leaves unknown, because " + ", ".join(
            f"{n}={outcome.values[n]}" for n in core) + ")"

    def _divergences(self, breaches: list[Breach]) -> None:
        for b in breaches:
            if b.basis == "implementation" and b.definite:
                d = self.divergences.setdefault((b.command, b.check), {"count": 0, "detail": b.detail})
                d["count"] += 1
                if self.divergence_log is not None:  # set by who watches exchange by exchange (the fuzzer)
                    self.divergence_log.append(b)

    def _related(self, ex: Exchange) -> list[tuple[Where, str]]:
        rid = ex.req.fields.get("resource_id")
        if rid is None:
            return []
        return [(w, f"{_short(name)} of resource {rid}{'' if accepted else ' (rejected)'}")
                for w, name, accepted in self.history.get(rid, ())]

    def _remember(self, ex: Exchange, accepted: bool) -> None:
        rid = ex.req.fields.get("resource_id")
        if rid is None or ex.req.name in ("VIRTIO_GPU_CMD_MOVE_CURSOR",):
            return
        h = self.history.get(rid)
        if h is None:
            h = self.history[rid] = deque(maxlen=_RELATED)
        h.append((ex.where, ex.req.name, accepted))
        if len(self.history) > 4096:  # bounded: keeps memory flat on traces that cycle through ids
            self.history.pop(next(iter(self.history)))

    # --- per-requirement verdicts ---------------------------------------------------
    def _tally(self, ex: Exchange, primary: _Pair, proven: set) -> dict[str, int]:
        """One mark per requirement the exchange exercised: fail over inconclusive over pass.
        Returns the marks: requirement -> 0 pass, 1 inconclusive, 2 fail."""
        marks = self._marks(ex, primary, proven)
        for r, level in marks.items():
            t = self._t(r)
            if level == 2:
                t.failed += 1
                t.first_fail = t.first_fail or ex.where
            elif level == 1:
                t.inconclusive += 1
            else:
                t.passed += 1
        return marks

    def _marks(self, ex: Exchange, primary: _Pair, proven: set) -> dict[str, int]:
        """The marks `_tally` counts, counting none."""
        out = primary.outcome
        rule = out.rule
        if not (out.failed or out.unknown or primary.breaches or primary.open_) and None not in out.values.values():
            # the common case, every value known and nothing broken: the `when`s that held decide
            return dict.fromkeys(self._clean_reqs(rule, out.values, ex.resp is not None), 0)
        failed = {c.id for c in out.failed}
        unknown = {c.id for c in out.unknown}
        bad = {(b.check, r) for b in primary.breaches for r in b.reqs}
        marks: dict[str, int] = {}  # requirement -> 0 pass, 1 inconclusive, 2 fail

        def mark(r: str, level: int) -> None:
            if marks.get(r, -1) < level:
                marks[r] = level

        cited = self.cited.get(rule.command)
        if cited is None:
            cited = self.cited[rule.command] = [c for c in rule.checks if c.reqs and c.basis in self.profile]
        for c in cited:
            if c.id in failed:
                for r in c.reqs:
                    mark(r, 2 if ("driver", c.id) in proven and (c.id, r) in bad else 1)
            elif c.id in unknown:
                for r in c.reqs:
                    mark(r, 1)
            elif c.when is None or self._holds(c, out.values):
                for r in c.reqs:
                    mark(r, 0)
        for b in primary.breaches:
            if b.side == "device":
                for r in b.reqs:
                    mark(r, 2 if (b.side, b.check) in proven else 1)
        for b in primary.open_:
            for r in b.reqs:
                mark(r, 1)
        if ex.resp is not None:
            for ob in rule.obligations:
                if ob.basis in self.profile and (ob.when is None or self._holds(ob, out.values)):
                    for r in ob.reqs:
                        mark(r, 0)
        return marks

    def _clean_reqs(self, rule, values: dict, answered: bool) -> tuple[str, ...]:
        """The requirements a clean exchange passes; one compiled call reads every `when`."""
        key = (rule.command, answered)
        fast = self.fast_tally.get(key)
        if fast is None:
            items = [c for c in rule.checks if c.reqs and c.basis in self.profile]
            if answered:
                items += [o for o in rule.obligations if o.reqs and o.basis in self.profile]
            fn = eval("lambda v: (" + "".join(f"{i.when.py() if i.when is not None else 'True'}, " for i in items)
                      + ")", {})  # noqa: S307 - generated from our own expression nodes
            fast = self.fast_tally[key] = (fn, items, {})
        fn, items, by_holds = fast
        holds = fn(values)
        reqs = by_holds.get(holds)
        if reqs is None:
            reqs = by_holds[holds] = tuple(dict.fromkeys(r for i, h in zip(items, holds) if h for r in i.reqs))
        return reqs

    def _holds(self, item, values: dict) -> bool:
        """Whether a check's or obligation's `when` held; unknown counts as held (it may have applied)."""
        hit = self.when_fns.get(id(item))
        if hit is None:
            hit = self.when_fns[id(item)] = (compile_py(item.when), tuple(item.when.vars()))
        fn, names = hit
        if any(values.get(n) is None for n in names):
            return True
        return bool(fn(values))

    def _t(self, rid: str) -> Tally:
        t = self.tallies.get(rid)
        if t is None:
            t = self.tallies[rid] = Tally()
        return t

    def verdicts(self) -> dict[str, dict]:
        """Every requirement of the SpecIR with its verdict over the whole trace."""
        cited: dict[str, set[str]] = {}
        for rule in self.p.rules.values():
            for item in (*rule.checks, *rule.obligations):
                for r in item.reqs:
                    cited.setdefault(r, set()).add(item.basis)
            for r in rule.ok_reqs:
                cited.setdefault(r, set()).add(rule.ok_basis)
        out = {}
        for req in self.ir.requirements:
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
            out[req.id] = {"verdict": v, "events": t.events, "passed": t.passed, "failed": t.failed,
                           "inconclusive": t.inconclusive, "reason": reason or None,
                           "first_failure": str(t.first_fail) if t.first_fail else None}
        return out


def _short(name: Optional[str]) -> str:
    return (name or "?").removeprefix("VIRTIO_GPU_CMD_").removeprefix("VIRTIO_GPU_RESP_")


def _names(names) -> str:
    if names is None:
        return "anything"
    names = sorted(names)
    errs = [n for n in names if "_RESP_ERR_" in n]
    oks = [_short(n) for n in names if "_RESP_ERR_" not in n]
    if len(errs) > 3:
        oks.append("an error")
    else:
        oks += [_short(n) for n in errs]
    return " or ".join(oks) or "nothing"


def _unknown_fields(outcome: Outcome) -> str:
    names = sorted({n for c in outcome.unknown for n in c.full.vars() if outcome.values.get(n) is None})
    # what the trace left out, not the state facts that are unknown because of it
    fields = sorted({n for n in names if not n.startswith("st.")}
                    | {d for n in names if n.startswith("st.") for d in depends(n) if outcome.values.get(d) is None})
    return "the values of " + ", ".join(fields or names) if names else "unknown values"


_PLAIN = {
    "resource-exists": "resource {resource_id} does not exist (never created, or already unreferenced)",
    "resource-id-free": "resource {resource_id} already exists; create needs an unused id",
    "resource-id-nonzero": "resource id 0 cannot be created",
    "backing-attached": "resource {resource_id} has no backing pages attached; the transfer has nothing to copy",
    "rect-inside-resource": "the rectangle {r.width}x{r.height}+{r.x}+{r.y} reaches outside resource {resource_id}",
    "scanout-id": "scanout {scanout_id|scanout|pos.scanout_id} does not exist (num_scanouts is smaller)",
}


def _no_response(command: str, ex: Exchange) -> Breach:
    """The device's breach for a request it never answered; definite when the trace says no answer came."""
    return Breach(command, "no-response", "device", "informal", (), ex.unanswered == NO_ANSWER,
                  "the device never answered this request" + (f" ({'; '.join(ex.evidence)})" if ex.evidence else ""))


def _message(b: Breach, ex: Optional[Exchange]) -> str:
    cmd = _short(b.command)
    if b.side == "driver":
        text = _PLAIN.get(b.check)
        if text and ex is not None:
            f = ex.req.fields
            return f"{cmd}: " + re.sub(r"\{([\w.|]+)\}", lambda m: str(_first(f, m.group(1).split("|"))), text)
        return f"{cmd}: the driver broke {b.check}" + (f": {b.detail}" if b.detail else "")
    return f"{cmd}: {b.detail}" if cmd else b.detail


def _first(fields: dict, keys: list[str]) -> object:
    """The first of the fields a message may name that the request has and the trace gave."""
    return next((fields[k] for k in keys if fields.get(k) is not None), "?")
