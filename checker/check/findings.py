"""What a check produces: findings with their provenance, per-requirement verdicts, and the versioned JSON result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from virtgpu_conform.checker.traces.events import Where

RESULT_SCHEMA = "virtgpu-conform/check-result"
RESULT_VERSION = 1
VERDICTS = ("fail", "inconclusive", "pass", "not-applicable", "not-exercised")


@dataclass
class Finding:
    definite: bool
    side: str  # driver | device
    command: str
    check: str  # the rule's check id (or response-type, no-response, ...)
    basis: str
    reqs: tuple[str, ...]
    where: Where
    index: int  # the exchange's number in its session
    message: str
    reason: str = ""  # for a possible finding: what the trace leaves open
    resp_where: Optional[Where] = None
    also: list[Where] = field(default_factory=list)
    related: list[tuple[Where, str]] = field(default_factory=list)  # earlier events that explain it
    spec: list[tuple[str, int]] = field(default_factory=list)  # (spec file, line) of each requirement

    def to_json(self) -> dict:
        return {
            "definite": self.definite,
            "side": self.side,
            "command": self.command,
            "check": self.check,
            "basis": self.basis,
            "requirements": list(self.reqs),
            "file": self.where.file,
            "line": self.where.line,
            "event": self.index,
            "message": self.message,
            "reason": self.reason or None,
            "response_at": str(self.resp_where) if self.resp_where else None,
            "also_at": [str(w) for w in self.also],
            "related": [{"at": str(w), "what": what} for w, what in self.related],
            "spec": [{"file": f, "line": n} for f, n in self.spec],
        }


@dataclass
class Tally:
    """How often one requirement was exercised, and how."""

    passed: int = 0
    failed: int = 0
    inconclusive: int = 0
    first_fail: Optional[Where] = None

    def verdict(self) -> Optional[str]:
        if self.failed:
            return "fail"
        if self.inconclusive:
            return "inconclusive"
        if self.passed:
            return "pass"
        return None

    @property
    def events(self) -> int:
        return self.passed + self.failed + self.inconclusive
