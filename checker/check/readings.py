"""The checker's readings of a trace: candidate states, and each candidate's completions of one exchange."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from virtgpu_conform.checker.traces.events import Where
from virtgpu_conform.model.protocol import Breach
from virtgpu_conform.model.rule import Outcome
from virtgpu_conform.model.state import State

GUESSES = 3  # assumed answers remembered per candidate, for messages


@dataclass
class Candidate:
    state: State
    rank: int = 0  # answers assumed that differ from the reference device's
    guesses: tuple[tuple[Where, str], ...] = ()  # the latest such assumptions, for messages


@dataclass
class Pair:
    cand: Candidate
    accepted: bool  # the completion: did the device carry the command out
    breaches: list[Breach]  # in profile, definite
    rank: int
    guesses: tuple[tuple[Where, str], ...]
    outcome: Optional[Outcome]  # None on a clean reading the fast paths replayed (memo.py) rather than judged
    open_: list[Breach] = field(default_factory=list)  # could not be decided (unknown fields)
    quiet: bool = False  # nothing broken at all, not even outside the profile
    diverges: bool = False  # some breach is a divergence (counted as one whatever becomes of the pair)
