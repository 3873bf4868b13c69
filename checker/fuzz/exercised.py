"""Which rule checks a device's answers have judged: per check, how often a request failed it and the
device's answer then held it (an answer the check allows), broke it, or met a check that leaves the
answer open; per rule family (2d, 3d, blob, cursor, query), how many of its checks were ever judged
past the feature gate (a device without the feature refuses the command at its gate, and that
judges the gate alone), and how many exchanges went past the gate or were refused at it.

A campaign keeps one for its whole run, over every case and every device it drives (the leader's
answers, in a differential run), so anyone can see which checks of which family a device has met.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.model.rule import PROFILES, Outcome

GATE = "feature-gate"  # the check a command fails where its feature was not negotiated


@dataclass
class _Count:
    held: int = 0
    broken: int = 0
    open: int = 0


@dataclass
class Exercised:
    protocol: Protocol
    profile: str = "strict"
    checks: dict = field(default_factory=dict)  # (command, check id) -> _Count
    exchanges: dict = field(default_factory=dict)  # command -> exchanges past its feature gate
    gated: dict = field(default_factory=dict)  # command -> exchanges refused at its feature gate
    oracles: dict = field(default_factory=dict)  # oracle check (render-readback, blob-coherency) -> _Count

    def judged(self, check: str, held: bool) -> None:
        """One judgement of an oracle that reads the device beyond its answers (guest RAM, the region)."""
        n = self.oracles.setdefault(check, _Count())
        if held:
            n.held += 1
        else:
            n.broken += 1

    def note(self, outcome: Optional[Outcome], answer: Optional[str]) -> None:
        """One exchange: the model's outcome for its request in the state it met, and the name of the
        device's answer (None: no answer, or one of no known type)."""
        if outcome is None:
            return
        command = outcome.rule.command
        failed = outcome.failed
        if any(c.id == GATE for c in failed):
            # refused at the feature gate (a 2D device asked 3D): only the gate is judged, not the command
            self.gated[command] = self.gated.get(command, 0) + 1
            failed = [c for c in failed if c.id == GATE]
        else:
            self.exchanges[command] = self.exchanges.get(command, 0) + 1
        if not failed or answer is None:
            return
        allowed = outcome.acceptable(PROFILES[self.profile])
        for c in failed:
            n = self.checks.get((command, c.id))
            if n is None:
                n = self.checks[(command, c.id)] = _Count()
            if allowed is None or c.errors is None:
                n.open += 1
            elif answer in allowed:
                n.held += 1
            else:
                n.broken += 1

    def to_json(self) -> dict:
        families: dict[str, dict] = {}
        for rule in self.protocol.rules.values():
            fam = families.setdefault(rule.family, {"checks": 0, "judged": 0, "exchanges": 0, "gated": 0})
            fam["checks"] += len(rule.checks)
            fam["exchanges"] += self.exchanges.get(rule.command, 0)
            fam["gated"] += self.gated.get(rule.command, 0)
            fam["judged"] += sum(1 for c in rule.checks if c.id != GATE and (rule.command, c.id) in self.checks)
        rows = [
            {
                "command": cmd,
                "family": self.protocol.rules[cmd].family,
                "check": check,
                "held": n.held,
                "broken": n.broken,
                "open": n.open,
            }
            for (cmd, check), n in sorted(self.checks.items())
        ]
        oracles = {k: {"held": n.held, "broken": n.broken} for k, n in sorted(self.oracles.items())}
        return {"families": families, "checks": rows, **({"oracles": oracles} if oracles else {})}
