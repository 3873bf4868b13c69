"""The streaming checker: the model's rules applied exchange by exchange over a bounded set of candidate states.

Where the trace does not say how the device answered, each candidate splits into the
completions a conformant device could have given (accepted: the command's effect
applies; rejected: it does not). Later evidence prunes them: a candidate whose
history is no longer conformant is dropped while a conformant one remains. A
finding is definite only when no candidate and no completion is conformant and no
candidate was dropped for room; otherwise it is possible, with what the trace leaves open.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Optional

from virtgpu_conform.checker.traces.events import RESET, ConfigWrite, Diagnostic, Exchange, Reset, Session, Where
from virtgpu_conform.model.protocol import Breach, Protocol
from virtgpu_conform.model.rule import PROFILES
from virtgpu_conform.model.state import Capset, Settings, State

from .explain import History, message, no_response, short, symbolic_why
from .findings import Finding, Tally
from .judging import Judge
from .ledger import FAIL, PASS, Ledger
from .memo import FastPaths
from .readings import Candidate, Pair

MAX_CANDIDATES = 8
_SELECTORS = ("resource_id", "scanout_id", "pos.scanout_id")  # fields an effect finds its object by
_CTX_SELECTOR = "hdr.ctx_id"  # ... and, for the CTX_* commands, the context in the header
# the state facts an effect with an unknown selector may have made wrong
# (no fact reads scanouts or the cursor, so an unnamed scanout leaves every fact as it was)
_TOUCHES = {
    "resource_id": ("st.res.", "st.map."),
    "hdr.ctx_id": ("st.ctx.", "st.res.in_ctx"),
    "scanout_id": (),
    "pos.scanout_id": (),
}


def settings_from(session: Session) -> Settings:
    """Settings for the model. Unless the trace states all of them, they are all unknown to the
    rules (a guessed num_scanouts or capset list would let a definite finding rest on a guess)."""
    known = (
        session.features is not None
        and session.num_scanouts is not None
        and (session.capsets is not None or session.num_capsets == 0)
    )
    caps = tuple(Capset(*c) for c in (session.capsets or ()))
    hv = session.host_visible
    return Settings(
        features=session.features or frozenset(),
        num_scanouts=session.num_scanouts or 1,
        known=known,
        capsets=caps,
        blob_alignment=session.blob_alignment or 0,
        host_visible=hv if hv else None,
    )


# Device findings that read nothing of the state: an uncertain state does not make them possible.
_STATELESS = frozenset({"no-response", "malformed-accepted"})


class Checker:
    """Feeds on a trace's events (session facts, exchanges, resets, diagnostics) and keeps its
    readings of the device's state, the findings, and the requirement ledger."""

    def __init__(
        self, protocol: Protocol, profile: str = "strict", max_candidates: int = MAX_CANDIDATES, fast: bool = True
    ):
        """`fast=False`: every exchange takes the general path (no remembered verdicts, no clean
        path): the same findings, marks and readings, slower; what the fast paths are tested against."""
        self.p = protocol
        self.profile = PROFILES[profile]
        self.profile_name = profile
        self.max_candidates = max_candidates
        self.ir = protocol.ir
        self.reqs = {r.id: r for r in self.ir.requirements}
        self.judge = Judge(protocol, profile)
        self.ledger = Ledger(protocol, profile)
        self.history = History()
        self.fast_paths: Optional[FastPaths] = FastPaths(self) if fast else None
        self.findings: list[Finding] = []
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
        self.selectors: dict[str, tuple] = {}  # command -> (its rule, the fields its effect finds objects by)
        self.cands = [Candidate(self._fresh_state(Settings(known=False), known_start=False))]

    @property
    def divergences(self) -> dict[tuple, dict]:
        """Answers the spec leaves open that differ from the reference device's: (command, check) -> count, detail."""
        return self.judge.divergences

    @property
    def divergence_log(self) -> Optional[list[Breach]]:
        return self.judge.divergence_log

    @divergence_log.setter
    def divergence_log(self, log: Optional[list[Breach]]) -> None:
        self.judge.divergence_log = log

    @property
    def tallies(self) -> dict[str, Tally]:
        return self.ledger.tallies

    def verdicts(self) -> dict[str, dict]:
        """Every requirement of the SpecIR with its verdict over the whole trace."""
        return self.ledger.verdicts()

    # --- events --------------------------------------------------------------
    def feed(self, ev) -> None:
        if ev.__class__ is Exchange or isinstance(ev, Exchange):
            self.exchange(ev)
        elif isinstance(ev, Reset):
            self.reset(ev)
        elif isinstance(ev, ConfigWrite):
            self.config_write(ev)
        elif isinstance(ev, Session):
            self.start(ev)
        elif isinstance(ev, Diagnostic):
            if ev.level == "error":  # an unreadable line may have been a command that changed the state
                self.uncertain.setdefault("st.", f"{ev.where} could not be read ({ev.code})")
            self._note(ev)

    def _note(self, ev: Diagnostic) -> None:
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

    def config_write(self, ev: ConfigWrite) -> None:
        """A driver write to the device configuration: judged on its own, the command state untouched."""
        breaches, exercised = self.p.config_write(ev.offset, ev.data, ev.before, ev.read)
        failed = {r for b in breaches for r in b.reqs}
        for rid in exercised:
            self.ledger.count(rid, FAIL if rid in failed else PASS, ev.where)
        for b in breaches:
            if b.basis in self.profile:
                self._finding(b, b.definite, "", ev.where, None, None, [])

    def finish(self) -> None:
        for b in self.p.finish(self.cands[0].state):
            why = self.uncertain.get("st.", "")
            self._finding(b, len(self.cands) == 1 and not why, why, Where(self.session.where.file, 0), None, None, [])

    # --- one exchange -----------------------------------------------------------
    def exchange(self, ex: Exchange) -> None:
        self.exchanges += 1
        ex.index = self.exchanges
        req = ex.req
        rule = self.p.compiled.get(req.name) if req.name else None
        if rule is None:
            self.unidentified += 1
            if ex.untraced:
                self._note(Diagnostic(ex.where, "info", "no-event", ex.untraced))
            refused = (
                ex.resp is not None and ex.answered and ex.resp.name is not None and ex.resp.name not in self.p.ok_types
            )
            if not refused:  # a command the device refused changed nothing; any other may have
                self.uncertain.setdefault(
                    "st.", f"an exchange of unknown command at {ex.where} may have changed the state"
                )
            if not ex.answered and ex.unanswered != RESET and "informal" in self.profile:
                # An unknown type, or a chain too short to hold one, is still a request: the device
                # must answer it (an error) like any other, or the driver waits for ever.
                b = no_response(req.name or "", ex)
                self._finding(b, b.definite, "" if b.definite else ex.unanswered, ex.where, ex, None, [])
            return
        name = req.name
        assert name is not None, "a request with a rule has a name"
        self.commands[name] = self.commands.get(name, 0) + 1
        keys = None
        fast = self.fast_paths
        if fast is not None and not req.problems:
            if ex.resp is not None and len(self.cands) == 1 and fast.clean(ex, rule):
                return
            if ex.resp is None or not ex.resp.problems:
                # no answer bytes (a QEMU log), or an answer to a request with fields unknown (a guest log)
                done, keys = fast.replayed(ex, rule)
                if done:
                    return
        pairs: list[Pair] = []
        groups: list[list[Pair]] = []  # per candidate, its completions
        for cand in self.cands:
            groups.append(self.judge.completions(cand, ex))
            pairs.extend(groups[-1])
        clean = [q for q in pairs if not q.breaches]
        primary = min(pairs, key=lambda q: q.rank)
        proven: set[tuple[str, str]] = set()  # (side, check) reported definite
        if not clean:
            # Definite what every reading breaks; and where every reading blames one side, if by
            # different rules, that side is at fault all the same (one finding, naming the others).
            every = set.intersection(*({(b.side, b.check) for b in q.breaches} for q in pairs))
            blamed = set.intersection(*({b.side for b in q.breaches} for q in pairs))
            proven = self._report(ex, primary, every, alt=None, others=pairs, blamed=blamed)
        elif primary.breaches:
            self._report(ex, primary, set(), alt=min(clean, key=lambda q: q.rank), others=pairs)
        if primary.open_:
            self._report_open(ex, primary)
        for prefix, why in self.judge.later_uncertain:
            self.uncertain.setdefault(prefix, why)
        self.judge.later_uncertain.clear()
        marks = self.ledger.tally(ex, primary, proven)
        self.history.remember(ex, primary.accepted)
        self.advance(ex, clean or pairs)
        if keys is not None:
            assert self.fast_paths is not None, "keys come from the fast paths"
            self.fast_paths.settle(ex, rule, keys, groups, primary, marks)

    def advance(self, ex: Exchange, pairs: list[Pair]) -> None:
        """The candidates after the exchange: one per reading kept, the least likely dropped past the limit."""
        if len(pairs) == 1:  # the common case: one reading, no copy
            q = pairs[0]
            if q.accepted:
                self.apply(ex, q.cand.state)
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
                self.apply(ex, st)
            else:
                self.p.complete(st, ex.req, None, "")
            if any(c.state == st for c in nxt):
                continue
            nxt.append(Candidate(st, q.rank, q.guesses))
        if len(nxt) > self.max_candidates:
            self.uncertain.setdefault(
                "st.",
                (
                    f"more than {self.max_candidates} readings of what the trace leaves unsaid by {ex.where}; "
                    "the least likely were dropped"
                ),
            )
            nxt = nxt[: self.max_candidates]
        self.max_split = max(self.max_split, len(nxt))
        base = min(c.rank for c in nxt)
        for c in nxt:
            c.rank -= base
        self.cands = nxt

    def apply(self, ex: Exchange, st: State) -> None:
        """The command's effect on one reading's state, as an accepted command has it."""
        req = ex.req
        name = req.name
        assert name is not None, "only a request of a known type is applied"
        sel = self.selectors.get(name)
        if sel is None:
            sel = self.selectors[name] = (
                self.p.rules[name],
                _SELECTORS + ((_CTX_SELECTOR,) if "_CMD_CTX_" in name else ()),
            )
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
            self.uncertain.setdefault("st.", f"{short(req.name)} at {ex.where} has fields the model needs unknown")

    def _unnamed(self, ex: Exchange, st: State, unnamed: list[str]) -> None:
        for k in unnamed:
            for prefix in _TOUCHES[k]:
                self.uncertain.setdefault(
                    prefix,
                    f"{short(ex.req.name)} at {ex.where} changed an object the trace does not name ({k} unknown)",
                )
        self.p.complete(st, ex.req, None, "")  # books the fence; the effect cannot be applied

    # --- findings ------------------------------------------------------------
    def _report(
        self,
        ex: Exchange,
        primary: Pair,
        every: set,
        alt: Optional[Pair],
        others: list,
        blamed: Set[str] = frozenset(),
    ) -> set:
        """Report the primary reading's breaches; returns the (side, check) pairs reported definite.
        `blamed`: sides every reading breaks some rule of (alone, they make a definite finding)."""
        reason, proven = "", set()
        if alt is not None:
            differ = [g for g in alt.guesses if g not in primary.guesses]
            reason = (
                "conformant if the device "
                + " and ".join(f"{what} at {w}" for w, what in differ)
                + " (the trace does not show those answers)"
                if differ
                else "another completion of what the trace leaves unsaid is conformant"
            )
        elif self.uncertain:
            assert primary.outcome is not None, "a reported reading was judged"
            why = [r for pre, r in self.uncertain.items() if any(k.startswith(pre) for k in primary.outcome.values)]
            if why:
                # What an uncertain state leaves unknown is the verdict of checks that read it; an answer
                # that never came, or an OK to a request that cannot be read, rests on the exchange alone.
                every, reason = {k for k in every if k[1] in _STATELESS}, why[0]
                blamed = frozenset()
        sides = {s for s, _ in every}  # sides a shared breach already proves
        for b in primary.breaches:
            key = (b.side, b.check)
            if key in every:
                proven.add(key)
                self._finding(b, True, "", ex.where, ex, primary, self.history.related(ex))
            elif b.side in blamed and b.side not in sides:
                # Which rule it broke depends on the reading, so the requirement's verdict stays
                # inconclusive (not in `proven`); that its side is at fault does not.
                sides.add(b.side)
                others_ = sorted({x.check for q in others for x in q.breaches if x.side == b.side} - {b.check})
                also = f" (every reading of what the trace leaves unsaid blames the {b.side}: in another, {', '.join(others_)})"
                self._finding(b, True, "", ex.where, ex, primary, self.history.related(ex), also)
            else:
                instead = sorted({f"{x.side} {x.check}" for q in others for x in q.breaches} - {f"{b.side} {b.check}"})
                self._finding(
                    b,
                    False,
                    reason
                    or "another reading of what the trace leaves unsaid breaks "
                    + (", ".join(instead) or "something else")
                    + " instead",
                    ex.where,
                    ex,
                    primary,
                    self.history.related(ex),
                )
        return proven

    def _report_open(self, ex: Exchange, primary: Pair) -> None:
        for b in primary.open_:
            if b.basis not in self.profile:
                continue
            if b.check == "response-type":
                self._finding(
                    b,
                    False,
                    "the trace does not show the fields that decide which side is at fault",
                    ex.where,
                    ex,
                    primary,
                    self.history.related(ex),
                )
            elif b.check == "no-response":
                self._finding(b, False, ex.unanswered, ex.where, ex, primary, self.history.related(ex))

    def _finding(
        self,
        b: Breach,
        definite: bool,
        reason: str,
        where: Where,
        ex: Optional[Exchange],
        pair: Optional[Pair],
        related: list,
        also: str = "",
    ) -> None:
        spec = []
        for rid in b.reqs:
            r = self.reqs.get(rid)
            if r is not None:
                spec.append((r.loc.file, r.loc.line))
        msg = message(b, ex, self.p)
        if definite and pair is not None and b.side == "driver" and not also:
            assert pair.outcome is not None, "a reported reading was judged"
            msg += symbolic_why(b, pair.outcome)
        msg += also
        self.findings.append(
            Finding(
                definite,
                b.side,
                b.command,
                b.check,
                b.basis,
                b.reqs,
                where,
                ex.index if ex else 0,
                msg,
                reason,
                ex.resp_where if ex else None,
                list(ex.also) if ex else [],
                related,
                spec,
            )
        )
