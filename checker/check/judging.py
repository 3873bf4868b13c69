"""Judging one exchange: each candidate's completions (the answers a conformant device could have
given, and what the trace shows it gave) with the breaches of either side in each."""

from __future__ import annotations

from typing import Optional

from virtgpu_conform.checker.traces.events import RESET, Exchange
from virtgpu_conform.model.protocol import Breach, Protocol
from virtgpu_conform.model.rule import PROFILES, Outcome

from .explain import answer_names, no_response, short, unknown_fields
from .readings import GUESSES, Candidate, Pair


class Judge:
    def __init__(self, protocol: Protocol, profile: str = "strict"):
        self.p = protocol
        self.profile = PROFILES[profile]
        self.every_response = frozenset(r.name for r in protocol.ir.responses)
        self.errors = protocol.ir.error_responses
        self.later_uncertain: list[tuple[str, str]] = []  # what this exchange makes uncertain for the ones after it
        self.divergences: dict[tuple, dict] = {}  # (command, check) -> count and detail
        self.divergence_log: Optional[list[Breach]] = None  # set by who watches exchange by exchange (the fuzzer)

    def completions(self, cand: Candidate, ex: Exchange) -> list[Pair]:
        """The candidate's readings of the exchange: one per answer the trace allows, each with its breaches."""
        st, req, p = cand.state, ex.req, self.p
        outcome = p.expect(st, req)
        assert outcome is not None, "the engine judges requests of a known type only"
        p.submit(st, req)
        driver = [Breach(outcome.rule.command, c.id, "driver", c.basis, c.reqs, True, c.note) for c in outcome.failed]
        expected_ok = outcome.expected in p.ok_types
        if req.problems:
            driver += self._malformed(outcome.rule.command, "driver", req)
        cramped = ex.resp is not None and ex.resp_room is not None and ex.resp.problems and ex.resp.size >= ex.resp_room
        if cramped:
            # The device filled all the room the driver gave it: the short answer is the driver's doing.
            driver.append(
                Breach(
                    outcome.rule.command,
                    "response-buffer-size",
                    "driver",
                    "informal",
                    (),
                    True,
                    f"the driver gave {ex.resp_room} bytes for the answer; "
                    f"{short(outcome.expected)} needs {p.codec.layout(outcome.expected).size}",
                )
            )
        if ex.resp is not None and ex.answered and p.unusable(req):
            # Nothing sound to act on: any refusal is right, and which one is open.
            malformed = driver[len(outcome.failed) :]
            accepted = ex.resp.name in p.ok_types
            if accepted:
                malformed.append(
                    Breach(
                        outcome.rule.command,
                        "malformed-accepted",
                        "device",
                        "informal",
                        (),
                        True,
                        f"answered {short(ex.resp.name)} to a request it cannot have read whole "
                        f"({'; '.join(str(pr) for pr in req.problems)})",
                    )
                )
                # What the device did with what it read is unknown: later findings must not rest on a guess
                # (this one's does not: it rests on the answer alone).
                self.later_uncertain.append(
                    ("st.", f"the device accepted a request it cannot have read whole at {ex.where}")
                )
            return [self._pair(cand, accepted, malformed, outcome, 0, None)]
        if ex.resp is not None and ex.answered and cramped and ex.resp.name is None:
            return [self._pair(cand, expected_ok, driver, outcome, 0, None)]  # not even a header fitted
        if ex.resp is not None and ex.answered:
            breaches = p.judge(st, req, outcome, ex.resp)
            if ex.resp.problems and not cramped:
                breaches += self._malformed(outcome.rule.command, "device", ex.resp)
            if driver[len(outcome.failed) :]:
                breaches += driver[len(outcome.failed) :]
            if ex.resp_types is not None and ex.resp.name and ex.resp.name not in ex.resp_types:
                breaches.append(
                    Breach(
                        outcome.rule.command,
                        "response-length",
                        "device",
                        "informal",
                        (),
                        True,
                        f"{short(ex.resp.name)} with {'; '.join(ex.evidence) or 'a length that does not fit it'}"
                        f" (a {short(ex.resp.name)} is {self.p.codec.layout(ex.resp.name).size} bytes)",
                    )
                )
            allowed = self._allowed(outcome)
            widest = self._widest(outcome)
            if outcome.unknown and ex.resp.name and widest is not None and ex.resp.name not in widest:
                # What the known failures demand, more failures only widen: no completion helps.
                breaches.append(
                    self._wrong_answer(
                        outcome,
                        True,
                        f"answered {short(ex.resp.name)} to a request that fails "
                        f"{', '.join(c.id for c in outcome.failed)}; a conformant device answers "
                        f"{answer_names(widest, self.errors)}",
                    )
                )
            elif (
                outcome.unknown
                and ex.resp.name
                and (anyway := self._any_completion(outcome, allowed)) is not None
                and ex.resp.name not in anyway
            ):
                # No completion of the unknowns allows this answer: the device's fault whatever they were.
                breaches.append(
                    self._wrong_answer(
                        outcome,
                        True,
                        f"answered {short(ex.resp.name)}; whatever {unknown_fields(outcome)} were, a conformant "
                        f"device answers {answer_names(anyway, self.errors)}",
                    )
                )
            elif outcome.unknown and ex.resp.name and allowed is not None and ex.resp.name not in allowed:
                # No completion is clean: either some unknown field breaks a check, or the device
                # refused a valid request. The trace cannot say which side: a possible finding.
                breaches.append(
                    self._wrong_answer(
                        outcome,
                        False,
                        f"answered {short(ex.resp.name)}; a conformant device answers {answer_names(allowed, self.errors)} "
                        f"unless {unknown_fields(outcome)} break {', '.join(c.id for c in outcome.unknown)}"
                        " (then the driver is at fault)",
                    )
                )
            accepted = ex.resp.name in p.ok_types
            return [self._pair(cand, accepted, breaches, outcome, 0, None)]
        device: list[Breach] = []
        if not ex.answered:
            if ex.unanswered != RESET:  # a reset may drop what is in flight; one it overtook is noted
                device.append(no_response(outcome.rule.command, ex))
            choices = [expected_ok, not expected_ok]
        elif ex.no_body:
            choices = [expected_ok]
        else:
            names = ex.resp_types if ex.resp_types is not None else self.every_response
            allowed = self._allowed(outcome)
            fits = [n for n in names if allowed is None or n in allowed]
            classes = {n in p.ok_types for n in fits}
            if not fits:
                # With checks undecided, either side may be at fault: possible, not definite; unless
                # no completion of the unknowns allows any answer the trace leaves (an OK of the
                # wrong size, say): then the device is at fault whatever they were.
                anyway = self._any_completion(outcome, allowed)
                definite = not outcome.unknown or (anyway is not None and not set(names) & anyway)
                why = (
                    f"; unless {unknown_fields(outcome)} break {', '.join(c.id for c in outcome.unknown)}"
                    " (then the driver is at fault)"
                    if outcome.unknown and not definite
                    else ""
                )
                device.append(
                    self._wrong_answer(
                        outcome,
                        definite,
                        f"answered {answer_names(names, self.errors)} ({'; '.join(ex.evidence) or 'from the trace'}); "
                        f"a conformant device answers {answer_names(anyway if outcome.unknown and definite else allowed, self.errors)}{why}",
                    )
                )
                classes = {n in p.ok_types for n in names} or {expected_ok}
            choices = sorted(classes, key=lambda c: c != expected_ok)
        out = []
        for accepted in dict.fromkeys(choices):
            rank = 0 if accepted == expected_ok else 1
            guess = None if rank == 0 else (ex.where, ("accepted" if accepted else "rejected") + " " + short(req.name))
            out.append(self._pair(cand, accepted, driver + device, outcome, rank, guess))
        return out

    @staticmethod
    def _malformed(command: str, side: str, msg) -> list[Breach]:
        """What was wrong with the bytes themselves (only traces that carry bytes have problems)."""
        return [
            Breach(
                command,
                "malformed-" + ("request" if side == "driver" else "response"),
                side,
                "informal",
                (),
                True,
                str(pr),
            )
            for pr in msg.problems
        ]

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

    def _wrong_answer(self, outcome: Outcome, definite: bool, detail: str) -> Breach:
        """The device's breach for an answer the request did not allow."""
        return Breach(outcome.rule.command, "response-type", "device", *outcome.duty(self.profile), definite, detail)

    def _any_completion(self, outcome: Outcome, allowed: Optional[frozenset[str]]) -> Optional[frozenset[str]]:
        """Every answer some completion of the unknown checks allows (None: any): what they allow
        passing, and failing (failures only widen the errors a device may give)."""
        if allowed is None:
            return None
        if not outcome.unknown:
            return allowed
        failing = Outcome(outcome.rule, outcome.failed + outcome.unknown, [], outcome.values).acceptable(self.profile)
        return None if failing is None else allowed | failing

    def _widest(self, outcome: Outcome) -> Optional[frozenset[str]]:
        """Every answer some completion allows, when the known failures already demand a rejection."""
        if not outcome.demanding(self.profile):
            return None
        return Outcome(outcome.rule, outcome.failed + outcome.unknown, [], outcome.values).acceptable(self.profile)

    def _pair(
        self, cand: Candidate, accepted: bool, breaches: list[Breach], outcome: Outcome, rank: int, guess
    ) -> Pair:
        inside = [b for b in breaches if b.definite and b.basis in self.profile]
        self._diverging(breaches)
        guesses = (cand.guesses + (guess,))[-GUESSES:] if guess else cand.guesses
        return Pair(
            cand,
            accepted,
            inside,
            cand.rank + rank,
            guesses,
            outcome,
            [b for b in breaches if not b.definite],
            not breaches,
            any(b.basis == "implementation" and b.definite for b in breaches),
        )

    def _diverging(self, breaches: list[Breach]) -> None:
        for b in breaches:
            if b.basis == "implementation" and b.definite:
                d = self.divergences.setdefault((b.command, b.check), {"count": 0, "detail": b.detail})
                d["count"] += 1
                if self.divergence_log is not None:  # set by who watches exchange by exchange (the fuzzer)
                    self.divergence_log.append(b)
