"""Adversarial command sequences: a hypothesis RuleBasedStateMachine built from the model.

Every command of the model is reachable from four rules: `valid` (a request the model
accepts in the current state, to reach deep states), `edge` (z3's values exactly at a
check's limit or one past it, in the state the request meets), `wild` (any bytes the
layout allows) and `framing` (the same messages cut, padded, split across descriptors,
answered into a too-small buffer, or with a garbage type). `scene` builds a whole
display in one go: a backed resource on a scanout, transferred and flushed.

Ids come from what the machine itself named (live, freed, never-created, 0, u32 max),
never from the device's answers, so generation does not depend on the device and
hypothesis can shrink a failing case reproducibly. Which ids are live, and which
fields make a request valid or put it on an edge, reads the model's predicted state.
"""

from __future__ import annotations

import functools
import sys
import typing
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, cast

from hypothesis import strategies as st
from hypothesis.errors import StopTest
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from virtgpu_conform.checker.devices.target import (
    CONFIG,
    DEVICE_RESET,
    EARLY_NOTIFY,
    HOST_VISIBLE,
    MIGRATION,
    PENDING,
    RESET_HOW,
    TOGETHER,
    Target,
    config_step,
)
from virtgpu_conform.model.adversary import Edges
from virtgpu_conform.model.codec import PAYLOAD_LENGTH, Codec
from virtgpu_conform.model.device import ReferenceDevice
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.model.strategies import leaves
from virtgpu_conform.spec.ir import SpecIR

from .choices import ENTROPY, FEW, Among, Bytes, Choices, Fields, Ints, Lists, OneOf, conjecture_draw
from .differential import Differ, MirrorTarget
from .oracle import Observation, Oracle, screen_of
from .pipeline import DROPPED, Pipeline
from .pixels import PATTERN_BASE, PixelModel
from .record import session_header
from .renders import RenderModel
from .rules_3d import Rules3D
from .step import Step

U32, U64 = (1 << 32) - 1, (1 << 64) - 1
# guest RAM past the rings and the chain scratch area: backing pages live here, over the pixel pattern
RAM_BACKING = PATTERN_BASE
FRAMINGS = ("truncate", "oversize", "split", "small-answer", "garbage-type", "no-answer-buffer")
SIZES = (1, 2, 16, 64, 256)
AHEAD = 16  # chains in the pipe before the answers that came are judged: two batches (pipeline.BATCH)
# One `moving` rule in MIGRATE_TOP + 1 moves the device to a new process (a migration); the others
# send valid commands. The top value migrates, so a shrunk case (smaller bytes) keeps a migration
# only where it needs one. A migration costs what some 40 commands do, and the twin doubles every
# send after it (benchmarks/fuzz_speed.py): at this rate about one case in ten migrates.
MIGRATE_TOP = 39
# One `configure` rule in CONFIG_TOP + 1 writes the device configuration: a handful of fields, whose
# every write a few cases find, while commands are where devices differ.
CONFIG_TOP = 7
# One `restart` rule in RESET_TOP + 1 resets the device mid-case (what follows starts over).
RESET_TOP = 15
# transfers between a 3D resource and guest RAM, where the coherency oracle reads guest RAM
GUEST_RAM_3D = frozenset({"VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D", "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D"})
# steps on no queue: nothing the model predicts an answer to
ASIDE = (MIGRATION, CONFIG, DEVICE_RESET, HOST_VISIBLE)
# Backing entries in one RESOURCE_ATTACH_BACKING: the spec sets no limit; QEMU refuses more than 16384.
MANY_ENTRIES = (16384, 16385)


class Failure(AssertionError):
    """The case shows the finding the campaign is hunting: hypothesis shrinks it."""


# Choices are built once per distinct argument and reused, never per command.
@functools.lru_cache(maxsize=4096)
def _ints(lo: int, hi: int) -> Ints:
    return Ints(lo, hi)


@functools.lru_cache(maxsize=4096)
def _among(values: tuple) -> Among:
    return Among(values)


@functools.lru_cache(maxsize=64)
def _scanout(n: int, most: int) -> OneOf:
    """A scanout id: one the device has, or one past them, the protocol's most, u32 max."""
    return OneOf(Ints(0, n - 1), Among([n, most, U32]))


@functools.lru_cache(maxsize=1024)
def _bad_entries(need: int) -> Lists:
    # An entry's length is a u32: a resource of 4 GiB or more needs more than one entry can say,
    # and "one past" is then the field's top.
    return Lists(
        Fields(
            addr=OneOf(RAM_BACKING, Among([0, U64 - 4095, 1 << 40])),
            length=OneOf(need, Among([0, need - 1, min(need + 1, U32), U32])),
        ),
        3,
    )


@functools.lru_cache(maxsize=64)
def _wide(size: int) -> OneOf:
    """Any value of a `size`-byte field, often one at an edge: a wild value read from the rule's bytes."""
    top = (1 << (8 * size)) - 1
    return OneOf(Ints(0, top), top, Ints(1, 64), Among([1 << i for i in range(8 * size)]), Ints(max(0, top - 64), top))


def _leaf_choices(lay) -> Fields:
    """Every leaf of a layout from the rule's bytes, as strategies.leaves gives them from hypothesis."""
    parts: dict[str, object] = {}
    for key, size, is_bytes in zip(lay.keys, lay.sizes, lay.is_bytes):
        if key in lay.padding:
            parts[key] = bytes(size) if is_bytes else 0
        else:
            parts[key] = Bytes(size, size) if is_bytes else _wide(size)
    return Fields(**parts)


WILD_FROM = Ints(0, 3)  # 3: hypothesis' own strategies give the values, else the rule's bytes


def _choose(data, branches: list):
    """One of `branches` (values, or tuples to pick among), shrinking towards the first, as st.one_of does."""
    b = branches[data.draw(_ints(0, len(branches) - 1))]
    return data.draw(_among(b)) if isinstance(b, tuple) else b


PAYLOAD = Bytes(0, 64)
EXTRA = Bytes(1, 64)
CUT = Ints(0, 0xFFFF)
EDGE_X = Ints(1, 2)
PART = Ints(0, 1)
RECT_COMMANDS = Among(
    ["VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", "VIRTIO_GPU_CMD_RESOURCE_FLUSH", "VIRTIO_GPU_CMD_SET_SCANOUT"]
)  # where a framing cuts, reduced modulo what there is to cut
BURST = Ints(0, 7)  # more valid commands after the first, while the rule's bytes last
PER_COMMAND = 16  # bytes a command reads, about (more with a payload): a burst stops when fewer are left


def choke_key(step: Step, req, header: int) -> Optional[tuple]:
    """What a malformed chain is, as far as a device choking on it goes: its queue, what is wrong
    with it, whether the header is whole, whether there is room for an answer, and its command.
    None for a well-formed request: whether a device stalls on one depends on its state."""
    if not req.problems:
        return None
    whole = sum(map(len, step.outs)) >= header  # the request header's size
    return (
        step.queue,
        tuple(sorted({p.code for p in req.problems})),
        whole,
        bool(step.ins),
        req.name if whole else None,
    )  # a cut header's type is a guess at best


@dataclass(frozen=True)
class Vocabulary:
    """What the machine reads off the protocol once: commands, their queues and answer sizes, the
    choices built from them. One per protocol, shared by every machine bound to it."""

    codec: Codec
    ir: SpecIR
    protocol: Protocol
    ok_nodata: bytes
    commands: tuple
    queue_of: dict
    formats: tuple
    fence: int
    max_scanouts: int
    answer_size: dict
    any_command: Among
    pool: Among
    sizes: Among
    format_of: Among
    wild_fields: dict
    wild_choices: dict
    counts: frozenset


# Commands that create what they name, and whose id must be free to succeed.
CREATES = frozenset(
    {"VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D", "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB"}
)
# The display path weighs more among valid commands: it is where devices keep state.
COMMON = (
    "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D",
    "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
    "VIRTIO_GPU_CMD_SET_SCANOUT",
    "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D",
    "VIRTIO_GPU_CMD_RESOURCE_FLUSH",
)
_VOCABULARIES: dict[int, Vocabulary] = {}


def vocabulary(p: Protocol) -> Vocabulary:
    v = _VOCABULARIES.get(id(p))
    if v is not None and v.protocol is p:
        return v
    codec, ir = p.codec, p.ir
    commands = tuple(sorted(p.rules))
    answer_size = {}
    for name, r in p.rules.items():
        size = max([codec.hdr.size] + [codec.layout(ok).size for ok in r.ok])
        answer_size[name] = size + (4096 if name == "VIRTIO_GPU_CMD_GET_CAPSET" else 0)
    weighted = commands + tuple(c for c in COMMON if c in p.rules) * 2
    formats = tuple(c.value for c in ir.constants if c.name.startswith("VIRTIO_GPU_FORMAT_"))
    v = _VOCABULARIES[id(p)] = Vocabulary(
        codec=codec,
        ir=ir,
        protocol=p,
        ok_nodata=codec.by_name["VIRTIO_GPU_RESP_OK_NODATA"].code.to_bytes(4, "little"),
        commands=commands,
        queue_of={c.name: c.queue for c in ir.commands},
        formats=formats,
        fence=ir.constant("VIRTIO_GPU_FLAG_FENCE"),
        max_scanouts=ir.constant("VIRTIO_GPU_MAX_SCANOUTS"),
        answer_size=answer_size,
        any_command=_among(commands),
        pool=_among(weighted),
        sizes=_among(SIZES),
        format_of=_among(formats),
        wild_fields={c: leaves(codec.layout(c)) for c in commands},
        wild_choices={c: _leaf_choices(codec.layout(c)) for c in commands},
        # Counts the encoder fills in from what follows; a wrong one is a framing case, not a field value.
        counts=frozenset({s.trailing.count_field for s in ir.structs if s.trailing} | set(PAYLOAD_LENGTH.values())),
    )
    return v


class Host(typing.Protocol):
    """What a machine needs from whoever runs it (a fuzz campaign, the pytest plugin's device
    session): the device and its model, and where each case, step and answer is accounted."""

    protocol: Protocol
    target: Target
    profile: str
    edges: Edges
    differ: Optional[Differ]
    skip: frozenset  # kinds of malformed chain (choke_key) not to send
    migrate: bool  # cases may move the device to a new process (the target migrates and has not refused)

    def begin_case(self) -> None: ...

    def end_case(self, oracle: Oracle) -> None: ...

    def stepped(self) -> None:
        """A rule ran (it may send several commands)."""

    def not_sent(self, choke: tuple) -> None:
        """A chain of a kind in `skip` was not sent."""

    def choked(self, choke: tuple, status: str) -> None:
        """The device did not answer a malformed chain: no-answer or died."""

    def observe(self, machine: DeviceMachine, obs: list[Observation]) -> None:
        """What the oracle made of one answer; raises Failure for a finding the host hunts."""

    def refused_migration(self, detail: str) -> None:
        """The machine cannot be migrated at all: no more MIGRATION steps (sets `migrate` false)."""


class DeviceMachine(Rules3D, RuleBasedStateMachine):
    """The machine, unbound: `bind(host)` makes the class hypothesis runs against one host's target."""

    host: ClassVar[Host]
    vocab: ClassVar[Vocabulary]
    pipe: ClassVar[Optional[Pipeline]]

    @classmethod
    def bind(cls, host: Host, key: str = "") -> type[DeviceMachine]:
        """A machine class for `host`, named for its target (and `key`, what tells this device from
        others of its kind): hypothesis' example database keys saved cases by that name, so every
        process that binds the same device replays the cases another one saved."""
        pipe = host.target if isinstance(host.target, Pipeline) else None
        name = f"DeviceMachine_{host.target.name}" + (f"_{key}" if key else "")
        return type(
            name.replace("-", "_"),
            (cls,),
            {"host": host, "vocab": vocabulary(host.protocol), "pipe": pipe, "__module__": cls.__module__},
        )

    def __init__(self) -> None:
        super().__init__()
        self.handling = sys.exc_info()[1]
        self.host.begin_case()
        self.oracle = Oracle(
            self.host.protocol,
            session_header(self.vocab.ir, self.host.target),
            self.host.profile,
            screen=screen_of(self.host.target),
            peek=self.host.target.peek,
            exercised=getattr(self.host, "exercised", None),
        )
        # What the model predicts, not what the device answered, steers generation: a case then
        # draws the same way however the device behaves, so hypothesis can replay and shrink it.
        self.model = ReferenceDevice(self.vocab.ir, self.host.target.settings, protocol=self.host.protocol)
        self.steps: list[Step] = []
        self.named: list[int] = []  # every resource id a create named, live or not
        self.contexts: list[int] = []
        self.gone = False  # the device died or a queue stalled: later steps cannot be judged
        self.migrated = False  # a case moves the device once at most
        self.inflight: deque = deque()  # (step, request, choke) sent down the pipe, not yet judged
        self.fencing = False  # building a group in flight: most commands fenced (rules_3d.py)
        self.failure: Optional[Failure] = None  # the hunted finding, seen in a pipelined case
        # The pixel oracle's books kept from the model's predicted answers: which flush to wait for.
        self.shadow = PixelModel(self.vocab.ir) if self.pipe is not None and self.oracle.pixels is not None else None
        # ... and the render oracle's: which readback to drain the pipe for (renders.py)
        self.render_shadow = RenderModel(self.vocab.fence) if self.pipe is not None else None

    def teardown(self):
        # A stop, or a bug: the case ends unjudged. (Not whatever the caller of the campaign was
        # handling when it began: that was there in __init__ already.) A case that ran out of
        # hypothesis' data is judged as far as it went, as the serial machine judged it as it went.
        exc = sys.exc_info()[1]
        unwinding = exc not in (None, self.handling) and not isinstance(exc, StopTest)
        try:
            if self.pipe is not None:
                self._collect(wait=True, judge=not unwinding)
        finally:
            self.host.end_case(self.oracle)
        if self.failure is not None and not unwinding:
            raise self.failure

    # --- ids ------------------------------------------------------------------
    def _next_id(self) -> int:
        return max((r for r in self.named if r < U32), default=0) + 1

    def _resource_id(self, data, fresh: bool) -> int:
        live = sorted(self.model.state.resources)
        nxt = self._next_id()
        if fresh:
            return _choose(data, [nxt, nxt, (0, U32, *live)])
        choices: list = [tuple(live)] * 3 if live else []
        freed = tuple(r for r in self.named if r not in self.model.state.resources)
        if freed:
            choices.append(freed)
        return _choose(data, choices + [0, nxt, U32])

    def _ids(self, data, cmd: str, fresh: bool) -> dict:
        keys = self.vocab.codec.layout(cmd).keys
        out = {}
        if "resource_id" in keys:
            out["resource_id"] = self._resource_id(data, fresh and cmd in CREATES)
        n = max(self.model.state.settings.num_scanouts, 1)
        for k in ("scanout_id", "scanout", "pos.scanout_id"):
            if k in keys:
                out[k] = data.draw(_scanout(n, self.vocab.max_scanouts) if not fresh else _ints(0, n - 1))
        ctx = data.draw(_among((0, *self.contexts, max(self.contexts, default=0) + 1)))
        out["hdr.ctx_id"] = ctx
        return out

    def _header(self, data, fixed: dict) -> dict:
        if self.fencing:
            return self._fenced_header(data, fixed)
        if not data.draw(_ints(0, 7)) == 0:
            return {"hdr.flags": 0}
        last = max((t.last_submitted or 0 for t in self.model.state.timelines.values()), default=0)
        return {"hdr.flags": self.vocab.fence, "hdr.fence_id": data.draw(_among(((last + 1) & U64, last, 0, U64)))}

    # --- building one request ------------------------------------------------------
    def _natural(self, data, cmd: str, fixed: dict) -> dict:
        lay = self.vocab.codec.layout(cmd)
        out = {}
        for key, _size, is_bytes in zip(lay.keys, lay.sizes, lay.is_bytes):
            if key.startswith("hdr.") or key in lay.padding or key in fixed or is_bytes or key in self.vocab.counts:
                continue
            if key in ("width", "height"):
                out[key] = data.draw(self.vocab.sizes)
            elif key == "format":
                out[key] = data.draw(self.vocab.format_of)
            else:
                out[key] = data.draw(_ints(0, 64))
        return out

    def _rect_for(self, cmd: str, fields: dict) -> None:
        """A valid request's rectangle covers its resource: the common case real drivers send."""
        rid: Any = fields.get("resource_id")  # None (a command without one) names no resource
        r = self.model.state.resources.get(rid)
        if r is not None and "r.width" in self.vocab.codec.layout(cmd).keys:
            fields.update({"r.x": 0, "r.y": 0, "r.width": r.width, "r.height": r.height, "offset": 0})

    def _entries(self, data, cmd: str, fields: dict, valid: bool) -> Optional[list]:
        s = self.vocab.ir.struct(self.vocab.codec.layout(cmd).name)
        if not s.trailing:
            return None
        rid: Any = fields.get("resource_id")  # None (a command without one) names no resource
        r = self.model.state.resources.get(rid)
        need = min(U32, max(4096, (r.width * r.height * 4) if r is not None and r.width else 4096))
        if valid:
            return [{"addr": RAM_BACKING, "length": need}]
        return data.draw(_bad_entries(need))

    def _payload(self, data, cmd: str, how: str, fields: dict) -> bytes:
        if cmd == "VIRTIO_GPU_CMD_SUBMIT_3D":  # a virgl stream: one that works, or a broken one
            return self._stream(data, fields) if how == "valid" else self._broken_stream(data)
        lay = self.vocab.codec.layout(cmd)
        if lay.name in PAYLOAD_LENGTH or lay.flexible:
            return data.draw(PAYLOAD)
        return b""

    def _message(self, data, cmd: str, how: str) -> tuple[bytes, str]:
        fixed = self._ids(data, cmd, fresh=how == "valid")
        fields = {**self._header(data, fixed), **self._natural(data, cmd, fixed), **fixed}
        state = self.model.state
        label = how
        if how == "valid":
            self._rect_for(cmd, fields)
            self._fields_3d(data, cmd, fields)
            outcome = self.host.protocol.expect(state, self.vocab.codec.partial(cmd, fields, []))
            # z3 only when the drawn fields fail a check the device must enforce
            if outcome is not None and any(c.errors is not None for c in outcome.failed):
                fix = self.host.edges.valid(state, cmd, fixed)
                if fix:
                    fields.update({k: v for k, v in fix.items() if k not in fixed})
        elif how == "edge":
            targets = self.host.edges.targets(cmd)
            if targets:
                check, edge = data.draw(_among(tuple(targets)))
                got = self.host.edges.edge(state, cmd, fixed, check, edge)
                if got:
                    fields.update({k: v for k, v in got.items() if k not in self.vocab.counts})
                    label = f"edge {check} {edge}"
        elif how == "wild":
            source = (
                self.vocab.wild_fields
                if data.data is not None and data.draw(WILD_FROM) == 3
                else self.vocab.wild_choices
            )
            fields = {**data.draw(source[cmd]), **fixed}
        entries = self._entries(data, cmd, fields, how == "valid")
        fields.pop("hdr.type", None)
        if entries is not None and how == "wild":
            trailing = self.vocab.ir.struct(self.vocab.codec.layout(cmd).name).trailing
            assert trailing is not None, "entries are drawn for a struct that has them"
            fields.pop(trailing.count_field, None)
        return self.vocab.codec.encode(cmd, fields, entries, self._payload(data, cmd, how, fields)), label

    # --- sending -------------------------------------------------------------------------
    def _send(self, step: Step) -> None:
        if step.queue in ASIDE:
            self._aside(step)
            return
        # The prediction and the names steer generation, so they advance whatever the device did:
        # a case whose device stalled on one run and not on its replay still draws the same.
        data = b"".join(step.outs)
        req = self.vocab.codec.decode_request(data, step.queue)
        predicted = self.model.handle(data, step.queue, req)
        self._named(req)
        if self.gone or self.failure is not None:
            return  # after a death or a stall nothing more can be judged in this case
        choke = choke_key(step, req, self.vocab.codec.hdr.size)
        if choke is not None and choke in self.host.skip:
            # The device is known to stall or die on this kind of malformed chain: sending it again
            # would cost a timeout and a restart and show nothing new.
            self.host.not_sent(choke)
            return
        if not self._dispatch(step, req, choke):
            return
        assert self.pipe is not None, "dispatched down the pipe"
        due = self._screen_due(step.queue, req, predicted)
        if self.render_shadow is not None and self.render_shadow.follow(req, predicted[:4] == self.vocab.ok_nodata):
            due = True  # the readback is judged with nothing else in flight: its data has landed
        if step.how.startswith("blob_scene") and req.name in GUEST_RAM_3D:
            due = True  # the coherency oracle reads guest RAM at this transfer: nothing else may be in flight
        if due or len(self.inflight) >= AHEAD:
            self.pipe.want_screen = due
            self._collect(wait=due)
            self.pipe.want_screen = False

    def _aside(self, step: Step) -> None:
        """A migration, a config write (the command state must not change) or a reset (it starts
        over). Piped, it is judged before anything after it is built (the oracle's budget of
        pictures stays current)."""
        if step.queue == DEVICE_RESET:  # the prediction starts over whatever the device does
            self.model.state = self.host.protocol.new_state(self.host.target.settings)
            if self.shadow is not None:
                self.shadow = PixelModel(self.vocab.ir)
            if self.render_shadow is not None:
                self.render_shadow = RenderModel(self.vocab.fence)
        if not (self.gone or self.failure is not None) and self._dispatch(step, None, None):
            self._collect(wait=True)

    def _dispatch(self, step: Step, req, choke) -> bool:
        """Send the step and judge its answer now, or (True) put it down the pipe to be judged later."""
        if self.pipe is None:
            self._judge(step, req, choke, self.host.target.send(step.queue, step.outs, step.ins))
            return False
        self.pipe.submit(step.queue, step.outs, step.ins)
        self.inflight.append((step, req, choke))
        return True

    def _judge(self, step: Step, req, choke, reply) -> None:
        differ = self.host.differ if step.queue not in ASIDE else None
        before = self.oracle.state.clone() if differ is not None else None
        self.steps.append(step)
        obs = self.oracle.step(step.queue, step.outs, step.ins, reply, req)
        if differ is not None:
            # a differential run's target mirrors several (maybe through the pipe): each one's answer
            mirror = cast("MirrorTarget | Pipeline", self.host.target)
            if step.queue == TOGETHER:
                self._differ_parts(step, before, mirror.last)
            else:
                differ.compare(before, req, step.queue, mirror.last, self.oracle.text())
        if reply.status == "refused":  # a step aside the device cannot take (no region there): nothing lost
            if step.queue == MIGRATION:
                self.host.refused_migration(reply.detail)
        elif reply.status != "answered":
            self.gone = True
            if choke is not None:
                self.host.choked(choke, reply.status)
        self.host.observe(self, obs)

    def _collect(self, wait: bool, judge: bool = True) -> None:
        """Judge the answers that have come (`wait`: all of them), in the order their chains went."""
        while self.inflight:
            assert self.pipe is not None, "chains are in flight down a pipeline only"
            reply = self.pipe.next_reply(wait)
            if reply is None:
                return
            step, req, choke = self.inflight.popleft()
            if reply.status == DROPPED or self.failure is not None or not judge:
                continue  # past the case's end for the device, or past the finding hunted
            try:
                self._judge(step, req, choke, reply)
            except Failure as exc:
                # Raised at teardown: a case then draws the same however late its answers come,
                # so hypothesis can replay and shrink it.
                self.failure = exc

    def _screen_due(self, queue: str, req, predicted: bytes) -> bool:
        """A flush the pixel oracle will judge, by the model's prediction of the answers: the pipe
        drains so that its screendump shows the device right after it. (Where the device answered
        otherwise, the oracle may find a flush due that was not waited for: it is not judged.)"""
        if self.shadow is None or queue == "cursorq":
            return False
        due = self.shadow.due(req, predicted[:4] == self.vocab.ok_nodata)
        return due and self.oracle.pixel_checks < self.oracle.PIXEL_CHECKS

    def _named(self, req) -> None:
        if req.name in CREATES and req.fields.get("resource_id") is not None:
            self.named.append(req.fields["resource_id"])
        if req.name == "VIRTIO_GPU_CMD_CTX_CREATE":
            self.contexts.append(req.fields.get("hdr.ctx_id") or 0)

    def _one(self, data, how: str, pool: Optional[Among] = None) -> None:
        cmd = data.draw(pool or self.vocab.any_command)
        raw, label = self._message(data, cmd, how)
        q = self.vocab.queue_of.get(cmd) or "controlq"
        self._send(Step(q, [raw], [self.vocab.answer_size[cmd]], f"{label} {cmd.removeprefix('VIRTIO_GPU_CMD_')}"))

    # --- the rules ------------------------------------------------------------------------
    def _burst(self, data: Choices, one) -> None:
        """Up to eight commands, as many as the rule's bytes stretch to: a hypothesis step costs
        more than building, predicting and checking a command."""
        self.host.stepped()
        more = data.draw(BURST)
        one(data)
        while more and data.left() >= PER_COMMAND:
            more -= 1
            one(data)

    @rule(raw=ENTROPY)
    def valid(self, raw):
        self._burst(Choices(raw), lambda d: self._one(d, "valid", self.vocab.pool))

    @rule(raw=ENTROPY)
    def edge(self, raw):
        self._burst(Choices(raw), lambda d: self._one(d, "edge"))

    @rule(raw=ENTROPY, data=st.data())
    def wild(self, raw, data):
        """Any field values: from the rule's bytes, or (one time in four) from hypothesis' own
        strategies for the layout's leaves, which cost ten times as much."""
        self._burst(Choices(raw, conjecture_draw(data)), lambda d: self._one(d, "wild"))

    @rule(raw=FEW)
    def scene(self, raw):
        """A backed resource on scanout 0, transferred and flushed: the state a display is in."""
        data = Choices(raw)
        self.host.stepped()
        rid = self._next_id()
        w, h = data.draw(self.vocab.sizes), data.draw(self.vocab.sizes)
        rect = {"resource_id": rid, "r.width": w, "r.height": h}
        # The transfer, and what the scanout shows: the whole resource, or a part of it (the pixel
        # oracle's test of the transfer's offset and of the scanout's own origin).
        part, view = dict(rect), dict(rect)
        if data.draw(PART):
            x, y = data.draw(_ints(0, w - 1)), data.draw(_ints(0, h - 1))
            part.update(
                {
                    "r.x": x,
                    "r.y": y,
                    "r.width": data.draw(_ints(1, w - x)),
                    "r.height": data.draw(_ints(1, h - y)),
                    "offset": (y * w + x) * 4,
                }
            )
        if data.draw(PART):
            # A display panned over a larger framebuffer shows the rest of it from (x, y): half the time
            # that, else any part (a device may refuse small ones: QEMU wants 16 pixels each way).
            x, y = data.draw(_ints(0, w - 1)), data.draw(_ints(0, h - 1))
            rest = data.draw(PART)
            view.update(
                {
                    "r.x": x,
                    "r.y": y,
                    "r.width": w - x if rest else data.draw(_ints(1, w - x)),
                    "r.height": h - y if rest else data.draw(_ints(1, h - y)),
                }
            )
        if not self.model.state.display_info_read:
            self._send(
                Step(
                    "controlq",
                    [self.vocab.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")],
                    [self.vocab.answer_size["VIRTIO_GPU_CMD_GET_DISPLAY_INFO"]],
                    "scene GET_DISPLAY_INFO",
                )
            )
        for cmd, fields, entries in (
            (
                "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D",
                {"resource_id": rid, "format": self.vocab.formats[0], "width": w, "height": h},
                None,
            ),
            (
                "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
                {"resource_id": rid},
                [{"addr": RAM_BACKING, "length": max(4096, w * h * 4)}],
            ),
            ("VIRTIO_GPU_CMD_SET_SCANOUT", {**view, "scanout_id": 0}, None),
            ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", part, None),
            ("VIRTIO_GPU_CMD_RESOURCE_FLUSH", rect, None),
        ):
            self._send(
                Step(
                    "controlq",
                    [self.vocab.codec.encode(cmd, fields, entries)],
                    [self.vocab.answer_size[cmd]],
                    f"scene {cmd.removeprefix('VIRTIO_GPU_CMD_')}",
                )
            )

    # --- the classic mistakes, each enabled when the predicted state has what it needs -------
    def _mistakes(self) -> list[tuple[str, int]]:
        """(mistake, resource id) pairs the state allows: what devices keep getting wrong."""
        st_ = self.model.state
        out: list[tuple[str, int]] = []
        shown = {s.resource_id for s in st_.scanouts.values() if s.resource_id}
        for rid, r in sorted(st_.resources.items()):
            if rid in shown:
                out.append(("unref-on-scanout", rid))
            if r.backing is not None:
                out += [("attach-twice", rid), ("transfer-after-detach", rid)]
            if r.mapped is not None:
                out.append(("unref-mapped", rid))
            if r.width:
                out.append(("rect-past-edge", rid))
                if r.backing is None and r.width * r.height * 4 <= MANY_ENTRIES[-1] * 4096:
                    out.append(("many-entries", rid))
        out += [("use-after-unref", rid) for rid in self.named if rid not in st_.resources]
        return out

    @precondition(lambda self: bool(self._mistakes()))
    @rule(raw=FEW)
    def mistake(self, raw):
        """Unref a resource a scanout shows or a mapped blob, attach backing twice, transfer after
        detaching it, use an id after unref, a rectangle one past the resource's edge or wrapped,
        backing in as many entries as a device allows, or one more."""
        data = Choices(raw)
        self.host.stepped()
        kind, rid = data.draw(Among(self._mistakes()))
        r = self.model.state.resources.get(rid)
        res = {"resource_id": rid}
        whole = {**res, "r.width": r.width, "r.height": r.height} if r is not None else res
        if kind in ("unref-on-scanout", "unref-mapped"):
            plan = [("VIRTIO_GPU_CMD_RESOURCE_UNREF", res, None)]
        elif kind == "attach-twice":
            plan = [("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", res, [{"addr": RAM_BACKING, "length": 4096}])]
        elif kind == "transfer-after-detach":
            plan = [
                ("VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING", res, None),
                ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", whole, None),
                ("VIRTIO_GPU_CMD_RESOURCE_FLUSH", whole, None),
            ]
        elif kind == "many-entries":
            n = data.draw(_among(MANY_ENTRIES))
            size = -(-r.width * r.height * 4 // n)  # the resource's bytes over n contiguous entries
            entries = [{"addr": RAM_BACKING + i * size, "length": size} for i in range(n)]
            plan = [("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", res, entries)]
        elif kind == "rect-past-edge":
            x = data.draw(EDGE_X)  # one past the right edge, or wrapped round u32
            past = {**whole, "r.x": r.width - whole["r.width"] + 1 if x == 1 else U32, "r.width": whole["r.width"]}
            plan = [(data.draw(RECT_COMMANDS), past, None)]
        else:  # use-after-unref
            plan = [(data.draw(RECT_COMMANDS), {**res, "r.width": 16, "r.height": 16}, None)]
        for cmd, fields, entries in plan:
            if cmd == "VIRTIO_GPU_CMD_SET_SCANOUT":
                fields = {**fields, "scanout_id": 0}
            self._send(
                Step(
                    self.vocab.queue_of.get(cmd) or "controlq",
                    [self.vocab.codec.encode(cmd, fields, entries)],
                    [self.vocab.answer_size[cmd]],
                    f"mistake {kind} {cmd.removeprefix('VIRTIO_GPU_CMD_')}",
                )
            )

    @precondition(lambda self: self.host.migrate and not self.migrated)
    @rule(raw=ENTROPY)
    def moving(self, raw):
        """Valid commands, or (one time in MIGRATE_TOP + 1) the device saved and restored in a new process
        mid-case, after which the case goes on: what it held must have survived (oracle.py)."""
        data = Choices(raw)
        if data.draw(_ints(0, MIGRATE_TOP)) != MIGRATE_TOP:
            self._burst(data, lambda d: self._one(d, "valid", self.vocab.pool))
            return
        self.host.stepped()
        self.migrated = True
        self._send(Step(MIGRATION, [], [], "migration"))
        # What the display holds is what a move most easily loses: flush what scanout 0 shows, for
        # the pixel oracle to compare with the device left behind.
        shown = self.model.state.scanouts.get(0)
        if shown is not None and shown.resource_id and shown.blob is None:
            x, y, w, h = shown.rect
            cmd = "VIRTIO_GPU_CMD_RESOURCE_FLUSH"
            fields = {"resource_id": shown.resource_id, "r.x": x, "r.y": y, "r.width": w, "r.height": h}
            self._send(
                Step("controlq", [self.vocab.codec.encode(cmd, fields)], [self.vocab.answer_size[cmd]], "moving FLUSH")
            )

    def _rarely(self, data: Choices, top: int) -> bool:
        """One time in top + 1 (the top value: a shrunk case keeps it only where it needs it), True;
        otherwise a valid command is sent instead, and False."""
        if data.draw(_ints(0, top)) != top:
            self._one(data, "valid", self.vocab.pool)
            return False
        self.host.stepped()
        return True

    @precondition(lambda self: self.host.target.config_writes)
    @rule(raw=FEW)
    def configure(self, raw):
        """Now and then (CONFIG_TOP + 1) a driver write to the device configuration: events_clear (the
        one field the driver may write), or a field it must not (events_read) or that only the device
        sets, whole or in part; else a valid command."""
        data = Choices(raw)
        if not self._rarely(data, CONFIG_TOP):
            return
        lay = self.vocab.codec.config
        key = data.draw(_among(lay.keys))
        at, size = lay.offsets[lay.keys.index(key)], lay.size_of(key)
        width = data.draw(_among(tuple(n for n in (4, 2, 1) if n <= size)))
        at += data.draw(_ints(0, size - width)) // width * width
        value = data.draw(_wide(width))
        out = config_step(at, value.to_bytes(width, "little"))
        self._send(Step(CONFIG, [out], [lay.size], f"config {key}"))

    @precondition(lambda self: self.host.target.resets)
    @rule(raw=FEW)
    def restart(self, raw):
        """Now and then (RESET_TOP + 1) a virtio reset mid-case, maybe with a chain on each queue
        kicked in the same breath (pending when the reset comes) and the queues kicked before they
        are set up again; the device must start over as fresh as after boot. Else a valid command."""
        data = Choices(raw)
        if not self._rarely(data, RESET_TOP):
            return
        flags = data.draw(_ints(0, PENDING | EARLY_NOTIFY))
        how = "+".join(name for bit, name in RESET_HOW.items() if flags & bit)
        self._send(Step(DEVICE_RESET, [bytes([flags])], [], f"reset {how}".strip()))

    @rule(raw=ENTROPY)
    def framing(self, raw):
        self._burst(Choices(raw), self._framed)

    def _framed(self, data: Choices) -> None:
        # The framing's own choices first, so that they come from drawn bytes, not the zeros past them.
        kind = data.draw(_among(FRAMINGS))
        cut = data.draw(CUT)
        cmd = data.draw(self.vocab.any_command)
        raw, _ = self._message(data, cmd, "valid")
        q = self.vocab.queue_of.get(cmd) or "controlq"
        outs, ins = [raw], [self.vocab.answer_size[cmd]]
        if kind == "truncate":
            outs = [raw[: cut % len(raw)]] if len(raw) > 1 else [b""]
        elif kind == "oversize":
            outs = [raw + data.draw(EXTRA)]
        elif kind == "split":
            cut = 1 + cut % max(1, len(raw) - 1)
            outs = [raw[:cut], raw[cut:]] if cut < len(raw) else [raw[:1], raw[1:]]
        elif kind == "small-answer":
            # at least one byte: a zero-sized buffer is a virtio error that breaks the whole device
            ins = [1 + cut % max(1, self.vocab.answer_size[cmd] - 1)]
        elif kind == "garbage-type":
            outs = [data.draw(_ints(0, U32)).to_bytes(4, "little") + raw[4:]]
        elif kind == "no-answer-buffer":
            ins = []
        outs = [o for o in outs if o] or [bytes(1)]
        self._send(Step(q, outs, ins, f"framing {kind} {cmd.removeprefix('VIRTIO_GPU_CMD_')}", framed=True))
