"""The protocol model: every command's rule, built from one SpecIR, and how a request and its response are judged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, cast

from virtgpu_conform.spec.errors import Error
from virtgpu_conform.spec.ir import SpecIR

from . import rules_2d, rules_3d, rules_blob, rules_cursor, rules_query
from .codec import Codec, Leaves, Message, codec_for
from .rule import Build, CompiledRule, MissingFact, Outcome, Rule
from .rules_common import RING_COMPLETE
from .state import Settings, State, timeline_key

FAMILIES = (rules_2d, rules_query, rules_blob, rules_3d, rules_cursor)
LADDER = ("normative", "spec-text", "informal")
# Request problems that leave a device nothing sound to act on: it refuses, with any error.
UNUSABLE = frozenset(
    {"short-buffer", "entries-truncated", "payload-truncated", "wrong-queue"}
)  # each step adds one basis to the profile


EVENTS_READ_RO = "device-configuration-fields/events_read/driver-MUST-NOT"


class ModelError(Error):
    """The SpecIR and the rules do not fit together (e.g. a spec too old for the rules)."""


@dataclass(frozen=True)
class Breach:
    """A rule broken by one side, before the checker adds provenance (file, line, event)."""

    command: str
    check: str
    side: str  # driver | device
    basis: str  # normative | spec-text | informal | implementation (a divergence, never a violation)
    reqs: tuple[str, ...]
    definite: bool  # False: some completion of the unknown fields would be conformant
    detail: str


class Protocol:
    def __init__(self, ir: SpecIR):
        self.ir = ir
        self.codec: Codec = codec_for(ir)
        b = Build(ir, self.codec)
        try:
            built = [b.resolve(r) for fam in FAMILIES for r in fam.rules(b)]
        except (MissingFact, KeyError) as exc:  # a struct field or constant an older chapter lacks
            raise ModelError(
                f"the rules need something SpecIR {ir.version} does not have ({exc.args[0]}); "
                "use a v1.2 or later chapter, or the embedded snapshot"
            ) from None
        self.rules: dict[str, Rule] = {r.command: r for r in built}
        missing = [c.name for c in ir.commands if c.name not in self.rules]
        if missing:
            raise ModelError(f"no rule for {', '.join(missing)}: the SpecIR has commands the model does not know")
        self.compiled = {n: CompiledRule(r) for n, r in self.rules.items()}
        self.fence_flag = ir.constant("VIRTIO_GPU_FLAG_FENCE")
        self.ring_flag = ir.constant("VIRTIO_GPU_FLAG_INFO_RING_IDX")
        self.capset_id_mask = ir.constant("VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK")
        self.ok_types = ir.ok_responses
        # Functions compiled from the rules by their readers, kept here so that every reader of this
        # protocol shares them (the fuzzer starts a checker for every case).
        self.memo: dict[str, dict] = {}

    def new_state(self, settings: Optional[Settings] = None) -> State:
        return State(settings or Settings(), self.ring_flag, self.capset_id_mask)

    # --- one request ----------------------------------------------------------
    @staticmethod
    def unusable(req: Message) -> bool:
        return req.name is None or any(pr.code in UNUSABLE for pr in req.problems)

    def expect(self, state: State, req: Message) -> Optional[Outcome]:
        """What the device may answer; None for a request of unknown type."""
        rule = self.compiled.get(req.name) if req.name else None
        return rule.evaluate(state, req) if rule else None

    def submit(self, state: State, req: Message) -> None:
        """Book a request on its fence timeline when it is sent."""
        state.commands += 1
        f: Leaves = req.fields
        flags = f.get("hdr.flags")
        if flags is not None and flags & self.fence_flag and f.get("hdr.fence_id") is not None:
            tl = state.timeline(timeline_key(f, self.ring_flag))
            tl.pending.append(f["hdr.fence_id"])
            tl.last_submitted = f["hdr.fence_id"]

    def complete(self, state: State, req: Message, resp: Optional[Message], resp_name: Optional[str] = None) -> None:
        """Apply the command's effect if the device answered success, and close its fence."""
        name = resp.name if resp is not None else resp_name
        rule = self.rules.get(req.name or "")
        if rule and rule.effect and name in self.ok_types:
            rule.effect(state, req, resp)
        f: Leaves = req.fields
        flags = f.get("hdr.flags")
        if flags is not None and flags & self.fence_flag:
            tl = state.timeline(timeline_key(f, self.ring_flag))
            fid = f.get("hdr.fence_id")
            if fid in tl.pending:
                tl.pending.remove(fid)
            if fid is not None and (tl.last_completed is None or fid > tl.last_completed):
                tl.last_completed = fid

    def reset(self, state: State) -> list[Breach]:
        """A device reset: close the books on fences, then clear everything."""
        owed = self.finish(state)
        state.reset()
        return owed

    def finish(self, state: State) -> list[Breach]:
        """Fences a ring timeline still owes: an earlier sequence number left unanswered after a later one."""
        out = []
        for key, tl in state.timelines.items():
            if key[0] != "ring" or tl.last_completed is None:
                continue
            for fid in tl.pending:
                if fid < tl.last_completed:
                    out.append(
                        Breach(
                            "",
                            "ring-timeline-completion",
                            "device",
                            "spec-text",
                            (RING_COMPLETE,),
                            True,
                            f"fence {fid} on ctx {key[1]} ring {key[2]} was never answered although "
                            f"fence {tl.last_completed} on the same timeline completed",
                        )
                    )
        return out

    # --- the device configuration ---------------------------------------------
    def config_write(
        self, offset: int, data: bytes, before: Optional[bytes], after: Optional[bytes]
    ) -> tuple[list[Breach], tuple[str, ...]]:
        """A driver write of `data` at `offset` of the device configuration, with the configuration
        read before and after it: what it breaks, and the requirements it exercised."""
        lay, out = self.codec.config, []
        hit = [k for k, o, n in zip(lay.keys, lay.offsets, lay.sizes) if o < offset + len(data) and offset < o + n]
        exercised = (EVENTS_READ_RO,)
        if "events_read" in hit:
            out.append(
                Breach("", "config-events-read", "driver", "normative", exercised, True, "the driver wrote events_read")
            )
        if after is None:
            return out, exercised
        now = {k: v for k, v in self.codec.decode_config(after).items() if isinstance(v, int)}
        clear = self.codec.written_config(offset, data).get("events_clear")
        if "events_clear" in hit and "events_read" in now and isinstance(clear, int):
            cleared = clear & now["events_read"]
            if cleared:
                out.append(
                    Breach(
                        "",
                        "events-clear",
                        "device",
                        "spec-text",
                        (),
                        True,
                        f"events_read still has bits {cleared:#x} after the driver wrote them to events_clear",
                    )
                )
        if before is not None:
            was = {k: v for k, v in self.codec.decode_config(before).items() if isinstance(v, int)}
            for key in ("num_scanouts", "num_capsets", "blob_alignment"):
                if key in hit and key in was and now.get(key) != was[key]:
                    out.append(
                        Breach(
                            "",
                            "config-read-only",
                            "device",
                            "informal",
                            (),
                            True,
                            f"a driver write changed {key} from {was[key]} to {now.get(key)}",
                        )
                    )
        return out, exercised

    # --- judging --------------------------------------------------------------
    def judge(self, state: State, req: Message, outcome: Outcome, resp: Message) -> list[Breach]:
        """What the request and the response break, by side and basis (profiles filter later)."""
        rule = outcome.rule
        out = [Breach(rule.command, c.id, "driver", c.basis, c.reqs, True, c.note) for c in outcome.failed]
        name = resp.name
        if name is None:
            hdr_type = cast("Optional[int]", resp.fields.get("hdr.type"))  # an integer leaf
            out.append(
                Breach(
                    rule.command,
                    "response-type",
                    "device",
                    "informal",
                    (),
                    True,
                    f"the response's type is not a virtio-gpu response ({hdr_type})",
                )
            )
            return out
        widest = outcome.acceptable(frozenset(LADDER))
        # A narrower profile accepts at least what a wider one does, so one look settles the common case.
        steps = range(len(LADDER)) if widest is not None and name not in widest else ()
        for step in steps:
            profile = frozenset(LADDER[: step + 1])
            allowed = outcome.acceptable(profile)
            if allowed is not None and name not in allowed:
                demanding = outcome.demanding(profile)
                _, reqs = outcome.duty(profile)
                why = (
                    f"{name} to a request that fails {', '.join(c.id for c in demanding)}"
                    if demanding
                    else f"{name} to a valid request; expected {' or '.join(sorted(allowed))}"
                )
                out.append(Breach(rule.command, "response-type", "device", LADDER[step], reqs, True, why))
                break
        else:
            if not outcome.unknown and name != outcome.expected:
                out.append(
                    Breach(
                        rule.command,
                        "preferred-answer",
                        "device",
                        "implementation",
                        (),
                        True,
                        f"answered {name}; the reference device answers {outcome.expected}",
                    )
                )
        for ob, verdict in self.compiled[rule.command].obligations_failed(state, req, resp, outcome.values):
            out.append(Breach(rule.command, ob.id, "device", ob.basis, ob.reqs, verdict is False, ob.note))
        return out
