"""One chain the fuzzer sends: its queue, the driver-readable buffers, the device-writable sizes, and how it was made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Step:
    queue: str
    outs: list[bytes]
    ins: list[int]
    how: str  # valid | edge CHECK EDGE | wild | framing KIND | scene
    framed: bool = False  # framing is part of the case and must be replayed as it was

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "queue": self.queue,
            "outs": [b.hex() for b in self.outs],
            "ins": self.ins,
            "how": self.how,
        }
        if self.framed:
            out["framed"] = True
        return out

    @classmethod
    def from_json(cls, d: dict) -> Step:
        return cls(
            d["queue"], [bytes.fromhex(h) for h in d["outs"]], list(d["ins"]), d.get("how", ""), bool(d.get("framed"))
        )
