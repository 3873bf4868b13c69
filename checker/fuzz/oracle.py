"""The fuzz oracle is `check` itself: each exchange is written as a native record and read back by
the same importer and Checker that a saved reproducer meets, so what the fuzzer reports is what
`virtgpu-conform check` says about the reproducer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from virtgpu_conform.checker.check.engine import Checker
from virtgpu_conform.checker.check.findings import Finding
from virtgpu_conform.checker.devices.target import (
    CONFIG,
    DEVICE_RESET,
    HOST_VISIBLE,
    MIGRATION,
    RESET_HOW,
    TOGETHER,
    Reply,
    chains_of_step,
    config_of_step,
    host_visible_of_step,
)
from virtgpu_conform.checker.traces import native
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.model.rules_common import RING_COMPLETE
from virtgpu_conform.model.state import timeline_key

from . import renders
from .coherency import CHECK as COHERENCY
from .coherency import CoherencyModel
from .differential import answer
from .pixels import CHECK as PIXELS
from .pixels import PixelModel

CRASH, LIVENESS, VIOLATION, DIVERGENCE = "crash", "liveness", "violation", "divergence"
MIGRATED = "migration"  # the device lost or changed state across a migration
# virglrenderer's caps, which open with their max_version (u32)
VIRGL_CAPSETS = ("VIRTIO_GPU_CAPSET_VIRGL", "VIRTIO_GPU_CAPSET_VIRGL2")
GROUPED = frozenset({"malformed-accepted", "malformed-response", "response-buffer-size"})
# Commands that change what a scanout shows: a TOGETHER step holding one leaves the pixel oracle
# unsure which answer came first, so it judges no more pictures in the case.
DISPLAY = frozenset(
    "VIRTIO_GPU_CMD_" + c
    for c in (
        "RESOURCE_CREATE_2D RESOURCE_UNREF SET_SCANOUT RESOURCE_FLUSH TRANSFER_TO_HOST_2D "
        "RESOURCE_ATTACH_BACKING RESOURCE_DETACH_BACKING SET_SCANOUT_BLOB TRANSFER_TO_HOST_3D"
    ).split()
)
# The Linux driver takes an answered fence as signalling every earlier one on its timeline (it keeps
# one ordered timeline, or one per ring): a device answering fences out of order breaks that.
FENCE_ORDER_NOTE = "answered before an earlier fence on the same timeline, which a driver then takes as signalled"


@dataclass(frozen=True)
class Signature:
    """What makes two failing cases the same finding."""

    kind: str  # crash | liveness | violation | migration | divergence
    command: str
    check: str
    basis: str = ""

    def __str__(self) -> str:
        cmd = self.command.removeprefix("VIRTIO_GPU_CMD_") or "any command"
        return f"{self.kind}: {cmd} {self.check}" + (f" [{self.basis}]" if self.basis else "")

    def key(self) -> str:
        return f"{self.kind}-{self.command.removeprefix('VIRTIO_GPU_CMD_').lower() or 'any'}-{self.check}"


@dataclass
class Observation:
    """One device-side finding on one exchange."""

    signature: Signature
    message: str
    line: int  # of the request record in the case's trace
    requirements: tuple[str, ...] = ()


def shared_checks(protocol: Protocol) -> frozenset[str]:
    """Checks and obligations every command has (the header's): one finding whichever command shows it."""
    ids = [{c.id for c in r.checks + r.obligations} for r in protocol.rules.values()]
    return frozenset(set.intersection(*ids)) if ids else frozenset()


class _Sink:
    """What the writer wrote, kept as the strings it wrote (a StringIO's getvalue() at every step
    made a case quadratic)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)


def screen_of(target):
    """The target's screendump when it runs the pixel oracle, else None."""
    return target.screendump if getattr(target, "pixels", False) else None


class Oracle:
    # Screendumps judged per case at most: one costs a monitor round trip and a file, and a display
    # bug shows on the first flush it touches.
    PIXEL_CHECKS = 2

    def __init__(
        self,
        protocol: Protocol,
        session: dict,
        profile: str = "strict",
        name: str = "fuzz-case.ndjson",
        screen=None,
        peek=None,
        exercised=None,
    ):
        """`screen`: the target's screendump, for the pixel oracle (pixels.py); None: no pixels judged.
        `peek`: the target's guest RAM reader, for the render oracle (renders.py)."""
        self.p, self.name = protocol, name
        self.screen, self.peek = screen, peek
        self.renders = renders.RenderModel(protocol.fence_flag) if peek is not None else None
        self.coherency = CoherencyModel(protocol.fence_flag) if peek is not None else None
        self.exercised = exercised  # an Exercised the host keeps over the campaign (exercised.py), or None
        self.pixels = PixelModel(protocol.ir) if screen is not None else None
        self.pixel_checks = 0
        self.ok_nodata = protocol.codec.by_name["VIRTIO_GPU_RESP_OK_NODATA"].code
        self.virgl_capsets = frozenset(protocol.ir.constant(n) for n in VIRGL_CAPSETS)
        self.shared = shared_checks(protocol)
        self.out = _Sink()
        self.checker = Checker(protocol, profile)
        self.checker.divergence_log = []
        self._lines = 0
        self.groups = 0  # TOGETHER steps written
        # Every record the writer writes is read as `check` reads that line of the saved case.
        self.reader = native.Records(name, protocol.codec)
        self.writer = native.Writer(self.out, on_record=self._feed, **session)

    def _feed(self, rec: dict) -> None:
        self._lines += 1
        for ev in self.reader.feed(self._lines, rec):
            self.checker.feed(ev)

    @property
    def state(self):
        return self.checker.cands[0].state

    def step(self, queue: str, outs: Sequence[bytes], ins: Sequence[int], reply: Reply, req=None) -> list[Observation]:
        """`req`: the request decoded already, when the caller has it."""
        if queue == MIGRATION:
            return self._migration(reply)
        if queue == CONFIG:
            return self._config(outs[0], reply)
        if queue == DEVICE_RESET:
            return self._reset(outs[0][0] if outs and outs[0] else 0, reply)
        if queue == TOGETHER:
            return self._together(outs[0], reply)
        if queue == HOST_VISIBLE:
            return self._host_visible(outs[0], reply)
        data = b"".join(outs)
        before = len(self.checker.findings)
        line = self._lines + 1  # of the request record
        if req is None:
            req = self.p.codec.decode_request(data, queue)
        if self.exercised is not None:
            self._exercise(self.state, req, reply)
        # The framing is always written: a replay then sends exactly the same chain.
        rid = self.writer.request(data, queue, framing=(list(map(len, outs)), list(ins)))
        if reply.status == "answered":
            self.writer.response(rid, reply.data)
        else:
            self.writer.no_response(rid, f"{reply.status}: {reply.detail}")
        out = self._device_findings(before, reply, req)
        if self.pixels is not None:
            self._pixels(req, queue, reply, line, out)
        self._render([(req, reply, line)], out)
        self._coherent([(req, reply, line)], out)
        if req.name == "VIRTIO_GPU_CMD_GET_CAPSET" and reply.status == "answered":
            out += self._capset(req, reply.data, line)
        judged = {o.signature.command for o in out if o.signature.kind == VIOLATION}
        log = self.checker.divergence_log
        assert log is not None, "set in __init__"
        for b in log:
            # A driver breaking an implementation-defined rule is the fuzzer's doing; an answer already
            # reported as a violation is not also a divergence.
            if b.side == "device" and not (b.check == "preferred-answer" and b.command in judged):
                cmd = "" if b.check in self.shared else b.command
                out.append(Observation(Signature(DIVERGENCE, cmd, b.check), b.detail, line))
        log.clear()
        if reply.status == "died" and not any(o.signature.kind == CRASH for o in out):
            cmd = req.name or ""
            out.append(Observation(Signature(CRASH, cmd, "device-died"), reply.detail, line))
        twin = reply.twin
        if twin is not None and (twin.status, twin.data) != (reply.status, reply.data):
            cmd = req.name or ""
            said = answer(self.p.codec, queue, reply)
            message = f"answered {said} after a migration; the device not migrated answered {answer(self.p.codec, queue, twin)}"
            out.append(Observation(Signature(MIGRATED, cmd, "answer-changed"), message, line))
        return out

    def _together(self, buf: bytes, reply: Reply) -> list[Observation]:
        """Chains sent together: every request is written, then the answers in the order they came;
        `check` judges each, and the fences' order is judged here."""
        queue, chains = chains_of_step(buf)
        parts = reply.parts or []
        self.groups += 1
        before = len(self.checker.findings)
        sent = []  # (request id, its line, the request decoded, the answer), of the chains sent
        for (outs, ins), part in zip(chains, parts):
            data = b"".join(outs)
            line = self._lines + 1
            rid = self.writer.request(data, queue, framing=(list(map(len, outs)), list(ins)), together=self.groups)
            sent.append((rid, line, self.p.codec.decode_request(data, queue), part))
        came = sorted((x for x in sent if x[3].order is not None), key=lambda x: x[3].order or 0)
        for rid, _, _, part in came:
            self.writer.response(rid, part.data)
        for rid, _, _, part in sent:
            if part.order is None:
                self.writer.no_response(rid, f"{part.status}: {part.detail}")
        by_line = {line: req for _, line, req, _ in sent}
        if self.exercised is not None:
            st = self.state.clone()  # each part judged in the state the ones sent before it leave
            for _, _, req, part in sent:
                self._exercise(st, req, part)
                self.p.submit(st, req)
                ok = self._accepted(part)
                self.p.complete(st, req, None, "VIRTIO_GPU_RESP_OK_NODATA" if ok else "")
        out = self._device_findings(before, reply, by_line=by_line)
        out += self._fence_order(came, sent)
        self._render([(req, part, line) for _, line, req, part in sent], out)
        # answers to chains in flight together came in any order, so guest RAM is not read for them: a later
        # part may have written it already (what the transfers carried is then unknown to the oracle)
        self._coherent([(req, part, line) for _, line, req, part in sent], out, together=True)
        if self.pixels is not None and any(x[2].name in DISPLAY for x in sent):
            self.pixels.lose()
        if reply.status == "died" and not any(o.signature.kind == CRASH for o in out):
            out.append(Observation(Signature(CRASH, "", "device-died"), reply.detail, sent[0][1] if sent else 0))
        return out

    def _fence_order(self, came: list, sent: list) -> list[Observation]:
        """A fenced answer that came while an earlier fence on its timeline was still unanswered:
        one sent before it with a lower fence_id (a lower one sent after it is the driver's own
        disorder, `fence-sequence`, which a device answering in order must not be blamed for)."""
        out = []
        for i, (_, line, req, _) in enumerate(came):
            f = req.fields
            if not self._fenced(req):
                continue
            key = timeline_key(f, self.p.ring_flag)
            answered = {id(x[2]) for x in came[:i]}
            before = next(n for n, x in enumerate(sent) if x[2] is req)
            for _, _, other, _ in sent[:before]:
                g = other.fields
                if (
                    other is not req
                    and id(other) not in answered
                    and self._fenced(other)
                    and timeline_key(g, self.p.ring_flag) == key
                    and g["hdr.fence_id"] < f["hdr.fence_id"]
                ):
                    ring = key[0] == "ring"
                    where = f"ctx {key[1]} ring {key[2]}" if ring else "the global timeline"
                    message = f"fence {f['hdr.fence_id']} on {where} {FENCE_ORDER_NOTE} (fence {g['hdr.fence_id']})"
                    basis, reqs = ("spec-text", (RING_COMPLETE,)) if ring else ("informal", ())
                    out.append(Observation(Signature(VIOLATION, "", "fence-order", basis), message, line, reqs))
                    break
        return out

    def _exercise(self, state, req, reply: Reply) -> None:
        assert self.exercised is not None, "called when kept"
        if self.p.unusable(req):
            return
        answer = None
        if reply.status == "answered" and len(reply.data) >= 4:
            answer = self.p.codec.decode_response(reply.data).name
        self.exercised.note(self.p.expect(state, req), answer)

    def _capset(self, req, data: bytes, line: int) -> list[Observation]:
        """A capset read whole, against what GET_CAPSET_INFO said of it at initialisation: no more
        than its capset_max_size bytes, and (virgl's capsets, whose data opens with the caps'
        max_version) the version GET_CAPSET_INFO gave."""
        settings = self.state.settings
        resp = self.p.codec.decode_response(data)
        info = next((c for c in settings.capsets if c.id == req.fields.get("capset_id")), None)
        if resp.name != "VIRTIO_GPU_RESP_OK_CAPSET" or info is None or not settings.known:
            return []
        body = data[self.p.codec.hdr.size :]
        cmd = "VIRTIO_GPU_CMD_GET_CAPSET"
        if len(body) > info.max_size:
            message = (
                f"{len(body)} bytes of capset {info.id} data; GET_CAPSET_INFO gave capset_max_size {info.max_size}"
            )
            return [Observation(Signature(VIOLATION, cmd, "capset-size", "informal"), message, line)]
        asked = req.fields.get("capset_version")
        valid = isinstance(asked, int) and asked <= info.max_version  # (past it, the model judges the answer)
        if valid and info.id in self.virgl_capsets and len(body) >= 4:
            version = int.from_bytes(body[:4], "little")
            if version != info.max_version:
                message = (
                    f"capset {info.id}'s data says max_version {version}; "
                    f"GET_CAPSET_INFO gave capset_max_version {info.max_version}"
                )
                return [Observation(Signature(VIOLATION, cmd, "capset-version", "informal"), message, line)]
        return []

    def _render(self, exchanges: list, out: list) -> None:
        """Follow the render oracle through exchanges (in the order sent); judge a readback due."""
        if self.renders is None:
            return
        for req, reply, line in exchanges:
            accepted = self._accepted(reply)
            due = self.renders.follow(req, accepted)
            if due is not None:
                got = self.peek(due[0], 4 * due[2])
                self._readback(renders.CHECK, got, renders.judge(due, got), line, out)

    def _coherent(self, exchanges: list, out: list, together: bool = False) -> None:
        """Follow the coherency oracle through exchanges (in the order sent); judge a readback due."""
        if self.coherency is None:
            return
        peek = (lambda addr, n: None) if together else self.peek
        for req, reply, line in exchanges:
            # only OK_NODATA and (to a map) OK_MAP_INFO teach it anything: no answer is decoded for the rest
            name = "VIRTIO_GPU_RESP_OK_NODATA" if self._accepted(reply) else None
            if req.name == "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB" and reply.status == "answered" and len(reply.data) >= 4:
                name = self.p.codec.decode_response(reply.data).name
            due = self.coherency.follow(req, name, peek)
            if due is not None and not together:
                got = self.peek(due.addr, len(due.data))
                self._readback(COHERENCY, got, self.coherency.judge(due, got), line, out)

    def _readback(self, check: str, got: Optional[bytes], wrong: Optional[str], line: int, out: list) -> None:
        """A readback into guest RAM judged by an oracle (`got`: what guest RAM held, None: unreadable)."""
        if self.exercised is not None and got is not None:
            self.exercised.judged(check, wrong is None)
        if wrong is not None:
            cmd = "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D"
            out.append(Observation(Signature(VIOLATION, cmd, check, "informal"), wrong, line))

    def _host_visible(self, out: bytes, reply: Reply) -> list[Observation]:
        """The driver's write and read in the host-visible region: recorded; the read judged by the
        coherency oracle against the bytes of the blob mapped there."""
        offset, data, n = host_visible_of_step(out)
        line = self._lines + 1
        got = reply.data if reply.status == "answered" and len(reply.data) == n else None
        self.writer.host_visible(offset, data, n, got)
        if reply.status == "died":
            return [Observation(Signature(CRASH, "", "device-died"), reply.detail, line)]
        if self.coherency is None or reply.status != "answered":
            return []
        before = self.coherency.judged
        wrong = self.coherency.region(offset, data, n, got)
        if self.exercised is not None and self.coherency.judged > before:
            self.exercised.judged(COHERENCY, wrong is None)
        if wrong is None:
            return []
        return [
            Observation(Signature(VIOLATION, "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", COHERENCY, "informal"), wrong, line)
        ]

    def _accepted(self, reply: Reply) -> bool:
        """Answered OK_NODATA: the device carried the command out."""
        return reply.status == "answered" and int.from_bytes(reply.data[:4], "little") == self.ok_nodata

    def _fenced(self, req) -> bool:
        f = req.fields
        return bool((f.get("hdr.flags") or 0) & self.p.fence_flag) and isinstance(f.get("hdr.fence_id"), int)

    def _migration(self, reply: Reply) -> list[Observation]:
        """The device was moved to a new process: nothing to judge, unless it did not survive."""
        line = self._lines + 1
        if reply.status == "answered":
            self.writer.migration()
            self.pixel_checks = min(self.pixel_checks, self.PIXEL_CHECKS - 1)  # the picture after a move is judged
            return []
        if reply.status == "refused":
            self.writer.migration("refused", reply.detail)
            return []
        self.writer.migration("failed", reply.detail)
        if self.pixels is not None:
            self.pixels.lose()
        return [Observation(Signature(MIGRATED, "", "migration-failed"), reply.detail, line)]

    def _reset(self, flags: int, reply: Reply) -> list[Observation]:
        """A virtio reset mid-case: `check` starts the state over (and closes the fence books)."""
        line = self._lines + 1
        before = len(self.checker.findings)
        self.writer.reset([name for bit, name in RESET_HOW.items() if flags & bit])
        found = self._device_findings(before, reply)
        if self.pixels is not None:
            self.pixels = PixelModel(self.p.ir)
        if self.coherency is not None:
            self.coherency.reset()
        if reply.status == "answered":
            return found
        if self.pixels is not None:
            self.pixels.lose()
        kind, check = (CRASH, "device-died") if reply.status == "died" else (LIVENESS, "reset-failed")
        return [*found, Observation(Signature(kind, "", check), reply.detail, line)]

    def _config(self, out: bytes, reply: Reply) -> list[Observation]:
        """A driver write to the device configuration, judged by `check` from its record."""
        offset, data = config_of_step(out)
        line = self._lines + 1
        if reply.status != "answered":
            self.writer.config(offset, data)
            if self.pixels is not None:
                self.pixels.lose()
            return [Observation(Signature(CRASH, "", "device-died"), reply.detail, line)]
        half = len(reply.data) // 2
        before = len(self.checker.findings)
        if reply.data:
            self.writer.config(offset, data, reply.data[:half], reply.data[half:])
        else:  # the configuration was not read back (a qtest run's answers): the write alone
            self.writer.config(offset, data)
        found = self._device_findings(before, reply)
        twin = reply.twin
        if twin is not None and (twin.status, twin.data[half:]) != (reply.status, reply.data[half:]):
            message = "the configuration read after a write differs from the one of the device not migrated"
            found.append(Observation(Signature(MIGRATED, "", "config-changed"), message, line))
        return found

    def _device_findings(self, before: int, reply: Reply, req=None, by_line=None) -> list[Observation]:
        """What `check` found since `before` findings that is the device's (_observe); `by_line`: the
        request each record line holds, for findings about several requests."""
        seen = (
            self._observe(f, reply, self.shared, by_line.get(f.where.line, req) if by_line else req, self.p.fence_flag)
            for f in self.checker.findings[before:]
        )
        return [o for o in seen if o is not None]

    def _pixels(self, req, queue: str, reply: Reply, line: int, out: list) -> None:
        pixels = self.pixels
        assert pixels is not None, "called when the pixel oracle runs"
        if queue == "cursorq" and reply.status == "answered":
            return  # the cursor queue answers nothing, and the cursor is not part of the scanout's picture
        if reply.status != "answered" or len(reply.data) < 4:
            pixels.lose()  # no answer, or one cut before its type: what the device did is unknown
            return
        accepted = self._accepted(reply)
        if pixels.due(req, accepted) and self.pixel_checks < self.PIXEL_CHECKS:
            shot = self.screen()
            if shot is None:
                return  # no picture to be had at this moment: not judged, and not counted
            self.pixel_checks += 1
            wrong = pixels.check(shot)
            if wrong is not None:
                flush = "VIRTIO_GPU_CMD_RESOURCE_FLUSH"
                # After a migration, the device left behind shows what the move changed.
                other = self.screen(twin=True) if reply.twin is not None else None
                if other is not None and pixels.check(other) is None:
                    message = f"after a migration, {wrong.message}; the device not migrated shows the picture expected"
                    out.append(Observation(Signature(MIGRATED, flush, "picture-changed"), message, line))
                    return
                out.append(Observation(Signature(VIOLATION, flush, PIXELS, "informal"), wrong.message, line))

    @staticmethod
    def _observe(f: Finding, reply: Reply, shared: frozenset[str], req, fence: int = 0) -> Optional[Observation]:
        """The device's definite findings; the driver's are the fuzzer's own doing."""
        if f.side != "device" or not f.definite:
            return None
        if f.check == "no-response":
            kind = CRASH if reply.status == "died" else LIVENESS
            check = "device-died" if kind == CRASH else "no-response"
            cmd = f.command
            if req is not None and req.problems:  # the malformation, not the command, is what the device chokes on
                cmd, check = "", f"{check}-to-{req.problems[0].code}"
            elif kind == LIVENESS and req is not None and (req.fields.get("hdr.flags") or 0) & fence:
                cmd, check = "", "fence-never-answered"  # the answer waits on the fence, whatever the command
            # the message holds the reply's detail already: the trace's no-response record gives it
            return Observation(Signature(kind, cmd, check), f.message, f.where.line)
        # A response-type finding is about the check the request failed, when the message names one shared by all.
        blamed = next((c for c in shared if f.check == "response-type" and f"fails {c}" in f.message), None)
        # The same device habit whatever the command: one finding.
        cmd = "" if f.check in shared or blamed or f.check in GROUPED else f.command
        return Observation(Signature(VIOLATION, cmd, blamed or f.check, f.basis), f.message, f.where.line, f.reqs)

    def text(self) -> str:
        return "".join(self.out.parts)
