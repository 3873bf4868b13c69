"""The machine's rules for the 3D half: contexts rendering through real virgl streams, and commands in
flight together, whose fenced answers a device may give after later ones (DeviceMachine mixes these in).

A device offering VIRTIO_GPU_F_VIRGL gets, besides the commands every rule may draw: whole scenes
(a context, a 3D texture backed and attached, a stream that clears it, its readback) and groups of
valid commands made available at once, most of them fenced. SUBMIT_3D carries streams from virgl.py
that make the renderer work on the case's own resources; `wild` and `edge` still send any bytes, and
a stream whose last command claims more dwords than there are is one of the malformed ones.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis.stateful import precondition, rule

from virtgpu_conform.checker.devices.guest_ram import PATTERN_BASE, PATTERN_SIZE
from virtgpu_conform.checker.devices.target import (
    HOST_VISIBLE,
    MOST_TOGETHER,
    TOGETHER,
    Reply,
    chains_of_step,
    host_visible_step,
    together_step,
)
from virtgpu_conform.model.state import KIND_3D

from . import virgl
from .choices import ENTROPY, FEW, Among, Bytes, Choices, Ints, OneOf
from .step import Step

THREE_D = "VIRTIO_GPU_F_VIRGL"
BLOB = "VIRTIO_GPU_F_RESOURCE_BLOB"
HOST3D, MAPPABLE = 2, 1  # VIRTIO_GPU_BLOB_MEM_HOST3D, VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE
PAGE = 4096
BLOB_SIZE = Among((PAGE, 2 * PAGE, 16 * PAGE))
# where a blob is mapped: the region's start, a page inside, its last pages, past its end, off a page
WHERE = Among(("start", "inside", "last", "over-end", "past-end", "unaligned"))
# what follows the map: nothing, an unmap, an unref while mapped, the same blob mapped again, another
# blob mapped at the same offset, or an unmap and a map again
AFTER = Among(("none", "unmap", "unref", "map-again", "overlap", "remap"))
# bytes through the mapped blob for the coherency oracle: none, out to guest RAM, in from it, or
# written where it was while unmapped (coherency.py)
PROBE = Among(("none", "out", "in", "gone"))
SEED = Ints(0, (1 << 32) - 1)
CONTEXT_INIT = "VIRTIO_GPU_F_CONTEXT_INIT"
RING = Ints(0, 3)  # the rings a group's fences go on: a context's first few
# A scene's texture is read back past the pixel pattern, which 2D transfers read (up to 256x256 texels).
RAM_3D = PATTERN_BASE + PATTERN_SIZE
U64 = (1 << 64) - 1
# Commands a group in flight draws from: the 3D ones, weighted to SUBMIT_3D, and queries.
IN_FLIGHT = Among(
    (
        "VIRTIO_GPU_CMD_SUBMIT_3D",
        "VIRTIO_GPU_CMD_SUBMIT_3D",
        "VIRTIO_GPU_CMD_SUBMIT_3D",
        "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D",
        "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D",
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D",
        "VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE",
        "VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE",
        "VIRTIO_GPU_CMD_CTX_CREATE",
        "VIRTIO_GPU_CMD_CTX_DESTROY",
        "VIRTIO_GPU_CMD_GET_CAPSET",
        "VIRTIO_GPU_CMD_GET_CAPSET_INFO",
    )
)
GROUP = Ints(2, MOST_TOGETHER)
FORMAT = Among(virgl.FORMATS)
TARGET = Among((virgl.TEXTURE_2D,) * 3 + virgl.TARGETS)
BIND = Among(virgl.BINDS)
CHANNEL = Ints(0, 255)
SMALL = Ints(1, 4)
TOGETHER_TOO = Among((True, False))  # a scene's fenced commands in flight together, or one by one
STREAM = Ints(0, 5)
JUNK = Bytes(0, 64)
BROKEN = OneOf(JUNK, "cut")  # any bytes, or a real stream whose last command claims a dword too many


def _3d(machine: Any) -> bool:
    return THREE_D in machine.model.state.settings.features


def _mappable(machine: Any) -> bool:
    """Blobs the host maps: VIRGL (HOST3D blobs come from a context's stream) and RESOURCE_BLOB, and a
    host-visible region the driver found."""
    s = machine.model.state.settings
    return THREE_D in s.features and BLOB in s.features and bool(s.host_visible)


class Rules3D:
    """Mixed into DeviceMachine: what it reads of the machine is named in these methods."""

    # --- building -----------------------------------------------------------------------
    def _fenced_header(self: Any, data: Choices, fixed: dict) -> dict:
        """Most commands of a group in flight are fenced, on the next sequence number of their
        timeline: with CONTEXT_INIT, half of them on one of their context's first rings."""
        if not data.draw(Ints(0, 3)):
            return {"hdr.flags": 0}
        st = self.model.state
        if CONTEXT_INIT in st.settings.features and data.draw(Ints(0, 1)):
            ring = data.draw(RING)
            tl = st.timelines.get(("ring", fixed.get("hdr.ctx_id", 0), ring))
            last = (tl.last_submitted or 0) if tl is not None else 0
            flags = self.vocab.fence | self.vocab.ir.constant("VIRTIO_GPU_FLAG_INFO_RING_IDX")
            return {"hdr.flags": flags, "hdr.fence_id": (last + 1) & U64, "hdr.ring_idx": ring}
        return {"hdr.flags": self.vocab.fence, "hdr.fence_id": (self._last_global_fence() + 1) & U64}

    def _last_global_fence(self: Any) -> int:
        """The highest fence_id sent on the global timeline (0: none yet)."""
        timelines = self.model.state.timelines
        return max((t.last_submitted or 0 for k, t in timelines.items() if k[0] == "global"), default=0)

    def _fields_3d(self: Any, data: Choices, cmd: str, fields: dict) -> None:
        """Valid values in the renderer's vocabulary where the spec's layout leaves them open."""
        st = self.model.state
        if cmd == "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D":
            fields.update(
                {
                    "target": data.draw(TARGET),
                    "format": data.draw(FORMAT),
                    "bind": data.draw(BIND),
                    "depth": 1,
                    "array_size": 1,
                    "last_level": 0,
                    "nr_samples": 0,
                    "flags": 0,
                }
            )
            if fields["target"] == virgl.BUFFER:
                fields["height"] = 1
        elif cmd == "VIRTIO_GPU_CMD_CTX_CREATE":
            # with CONTEXT_INIT, half the contexts name a capset the device has (their rings then count)
            known = st.settings.known and st.settings.capsets and CONTEXT_INIT in st.settings.features
            fields["context_init"] = data.draw(Among(st.settings.capsets)).id if known and data.draw(SMALL) > 2 else 0
        elif cmd == "VIRTIO_GPU_CMD_GET_CAPSET" and st.settings.known and st.settings.capsets:
            cs = data.draw(Among(st.settings.capsets))
            fields.update({"capset_id": cs.id, "capset_version": data.draw(Ints(0, cs.max_version))})
        elif cmd in ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D", "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D"):
            r = st.resources.get(fields.get("resource_id"))
            if r is not None and r.kind == KIND_3D and r.width:
                fields.update(
                    {"box.x": 0, "box.y": 0, "box.z": 0, "box.w": r.width, "box.h": r.height or 1, "box.d": 1}
                )
                fields.update({"offset": 0, "level": 0, "stride": r.width * 4, "layer_stride": 0})

    def _stream(self: Any, data: Choices, fields: dict) -> bytes:
        """A virgl stream working on the resources attached to the command's context."""
        ctx = fields.get("hdr.ctx_id")
        mine = sorted(
            (rid, r)
            for rid, r in self.model.state.resources.items()
            if r.kind == KIND_3D and ctx in r.contexts and r.width
        )
        what = data.draw(STREAM)
        sub = data.draw(SMALL)
        if not mine or what == 0:
            return virgl.create_sub_ctx(sub) + virgl.set_sub_ctx(sub) + virgl.destroy_sub_ctx(sub)
        rid, r = data.draw(Among(mine))
        if what <= 2:
            rgba = [data.draw(CHANNEL) / 255 for _ in range(4)]
            return virgl.clear_scene(rid, r.format, rgba, sub=sub, surface=data.draw(SMALL))
        if what == 3:
            other, o = data.draw(Among(mine))
            w, h = min(r.width, o.width), min(r.height or 1, o.height or 1)
            return virgl.copy_region(other, (0, 0, 0), rid, (0, 0, 0, w, h, 1))
        if what == 4:
            w = min(r.width, 16)
            return virgl.inline_write(rid, (0, 0, 0, w, 1, 1), data.draw(Bytes(4 * w, 4 * w)), stride=4 * w)
        return b""

    def _broken_stream(self: Any, data: Choices) -> bytes:
        got = data.draw(BROKEN)
        if got != "cut":
            return got
        whole = virgl.clear(
            [data.draw(CHANNEL) / 255 for _ in range(4)]
        )  # the header says CLEAR_SIZE dwords; one is missing
        return whole[:-4]

    # --- sending a group -----------------------------------------------------------------
    def _send_together(
        self: Any, queue: str, built: list[tuple[bytes, int]], how: str, predicted: bool = False
    ) -> None:
        """Chains made available at once, each predicted in the order sent (a device works through
        a queue in order; only its answers may come out of order); `predicted`: already, as built."""
        chains = []
        for raw, room in built:
            if not predicted:
                req = self.vocab.codec.decode_request(raw, queue)
                self.model.handle(raw, queue, req)
                self._named(req)
            chains.append(([raw], [room]))
        if self.gone or self.failure is not None:
            return
        step = Step(TOGETHER, [together_step(queue, chains)], [], how)
        if self._dispatch(step, None, None):
            self._collect(wait=True)

    def _differ_parts(self: Any, step, before, replies: list[Reply]) -> None:
        """A differential run compares each chain of a group, in the state the ones before it left."""
        queue, chains = chains_of_step(step.outs[0])
        codec, protocol = self.vocab.codec, self.host.protocol
        st = before
        for k, (outs, _) in enumerate(chains):
            parts = [r.parts[k] if r.parts and k < len(r.parts) else Reply("dropped") for r in replies]
            req = codec.decode_request(b"".join(outs), queue)
            self.host.differ.compare(st, req, queue, parts, self.oracle.text())
            st = st.clone()
            protocol.submit(st, req)
            lead = parts[0]
            protocol.complete(st, req, codec.decode_response(lead.data) if lead.status == "answered" else None)

    # --- the rules --------------------------------------------------------------------------
    @precondition(_3d)
    @rule(raw=FEW)
    def scene3d(self: Any, raw):
        """A context rendering into a 3D texture: created, backed, attached, cleared by a virgl
        stream and read back into its backing, the fenced commands half the time in flight together."""
        data = Choices(raw)
        self.host.stepped()
        ctx = max(self.contexts, default=0) + 1
        rid = self._next_id()
        w, h = data.draw(self.vocab.sizes), data.draw(self.vocab.sizes)
        fmt = data.draw(FORMAT)
        rgba = [data.draw(CHANNEL) / 255 for _ in range(4)]
        last = max((t.last_submitted or 0 for t in self.model.state.timelines.values()), default=0)
        fenced = [{"hdr.flags": self.vocab.fence, "hdr.fence_id": (last + i) & U64} for i in (1, 2)]
        plan = [
            ("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": ctx}, None, b""),
            (
                "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D",
                {
                    "resource_id": rid,
                    "target": virgl.TEXTURE_2D,
                    "format": fmt,
                    "bind": virgl.BIND_RENDER_TARGET | virgl.BIND_SAMPLER_VIEW,
                    "width": w,
                    "height": h,
                    "depth": 1,
                    "array_size": 1,
                },
                None,
                b"",
            ),
            (
                "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
                {"resource_id": rid},
                [{"addr": RAM_3D, "length": w * h * 4}],
                b"",
            ),
            ("VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE", {"hdr.ctx_id": ctx, "resource_id": rid}, None, b""),
            ("VIRTIO_GPU_CMD_SUBMIT_3D", {"hdr.ctx_id": ctx, **fenced[0]}, None, virgl.clear_scene(rid, fmt, rgba)),
            (
                "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D",
                {
                    "hdr.ctx_id": ctx,
                    **fenced[1],
                    "resource_id": rid,
                    "box.w": w,
                    "box.h": h,
                    "box.d": 1,
                    "stride": w * 4,
                },
                None,
                b"",
            ),
        ]
        built = [
            (cmd, self.vocab.codec.encode(cmd, fields, entries, payload)) for cmd, fields, entries, payload in plan
        ]
        together = data.draw(TOGETHER_TOO)
        lone = built[:3] if together else built
        for cmd, raw_ in lone:
            self._send(
                Step(
                    "controlq", [raw_], [self.vocab.answer_size[cmd]], f"scene3d {cmd.removeprefix('VIRTIO_GPU_CMD_')}"
                )
            )
        if together:
            self._send_together("controlq", [(r, self.vocab.answer_size[c]) for c, r in built[3:]], "scene3d together")

    @precondition(_3d)
    @rule(raw=ENTROPY)
    def together(self: Any, raw):
        """Two to eight valid commands in flight at once, most of them fenced, on the case's contexts."""
        data = Choices(raw)
        self.host.stepped()
        built = []
        self.fencing = True
        try:
            for _ in range(data.draw(GROUP)):
                cmd = data.draw(IN_FLIGHT)
                raw_, _ = self._message(data, cmd, "valid")
                built.append((raw_, self.vocab.answer_size[cmd]))
                # predicted now: the next command's valid fields read the state this one leaves
                req = self.vocab.codec.decode_request(raw_, "controlq")
                self.model.handle(raw_, "controlq", req)
                self._named(req)
        finally:
            self.fencing = False
        self._send_together("controlq", built, f"together {len(built)}", predicted=True)

    @precondition(_mappable)
    @rule(raw=FEW)
    def blob_scene(self: Any, raw):
        """A blob the host maps, made as Mesa's virgl driver makes one: a context's stream creates a
        buffer under a blob id, RESOURCE_CREATE_BLOB (HOST3D, MAPPABLE) takes it, RESOURCE_MAP_BLOB puts
        it in the host-visible region at one of its edges; then an unmap, an unref while mapped, a second
        map of it or of another blob at the same offset."""
        data = Choices(raw)
        self.host.stepped()
        region = self.model.state.settings.host_visible
        ctx = max(self.contexts, default=0) + 1
        size = data.draw(BLOB_SIZE)
        offsets = {
            "start": 0,
            "inside": PAGE * (1 + data.draw(SMALL)),
            "last": max(0, region - size),
            "over-end": max(0, region - PAGE),
            "past-end": region,
            "unaligned": 100,
        }
        offset = offsets[data.draw(WHERE)]
        plan: list[tuple[str, dict, Any, bytes]] = [("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": ctx}, None, b"")]
        # the scene's ids, one after the other: the machine learns of a name only once it is sent
        ids = itertools.count(self._next_id())

        def blob() -> int:
            rid = next(ids)
            stream = virgl.pipe_buffer(size, rid)  # the resource id doubles as the blob id: unique in the case
            plan.append(("VIRTIO_GPU_CMD_SUBMIT_3D", {"hdr.ctx_id": ctx}, None, stream))
            fields = {"hdr.ctx_id": ctx, "resource_id": rid, "blob_mem": HOST3D, "blob_flags": MAPPABLE}
            plan.append(("VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB", {**fields, "blob_id": rid, "size": size}, [], b""))
            return rid

        def mapping(rid: int) -> None:
            plan.append(("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", {"resource_id": rid, "offset": offset}, None, b""))

        first = blob()
        mapping(first)
        # the probes need the driver's own way into the region; a target without it gets the scene alone
        probe = data.draw(PROBE) if self.host.target.host_visible_io else "none"
        after = data.draw(AFTER) if probe == "none" else "none"
        if after in ("unmap", "remap"):
            plan.append(("VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB", {"resource_id": first}, None, b""))
        if after == "unref":
            plan.append(("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": first}, None, b""))
        if after in ("map-again", "remap"):
            mapping(first)
        if after == "overlap":
            mapping(blob())
        steps = [self._blob_step(*p) for p in plan]
        if probe != "none":
            steps += self._coherency_probe(data, probe, ctx, first, size, offset, next(ids))
        for step in steps:
            self._send(step)

    def _blob_step(self: Any, cmd: str, fields: dict, entries: Any, payload: bytes) -> Step:
        raw_ = self.vocab.codec.encode(cmd, fields, entries, payload)
        name = cmd.removeprefix("VIRTIO_GPU_CMD_")
        return Step("controlq", [raw_], [self.vocab.answer_size[cmd]], f"blob_scene {name}")

    def _coherency_probe(
        self: Any, data: Choices, probe: str, ctx: int, blob: int, size: int, offset: int, buf: int
    ) -> list:
        """Bytes through the mapped blob, for the coherency oracle (coherency.py). out: written through the
        region, copied by the renderer into a buffer with guest backing and read back into guest RAM;
        in: carried from guest RAM (the pixel pattern) into a buffer, copied into the blob and read through
        the region; gone: written, unmapped, other bytes written where it was, mapped again and read."""
        bytes_ = random.Random(data.draw(SEED)).randbytes(size)
        last = self._last_global_fence()
        fence = iter({"hdr.flags": self.vocab.fence, "hdr.fence_id": (last + i) & U64} for i in range(1, 4))

        def region(write: bytes = b"", read: int = 0) -> Step:
            what = " ".join(w for w, n in (("write", len(write)), ("read", read)) if n)
            return Step(HOST_VISIBLE, [host_visible_step(offset, write, read)], [], f"blob_scene host-visible {what}")

        steps = []
        if probe == "gone":
            again = {"resource_id": blob, "offset": offset}
            steps.append(region(bytes_))
            steps.append(self._blob_step("VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB", {"resource_id": blob}, None, b""))
            steps.append(region(bytes(b ^ 0xFF for b in bytes_)))
            steps.append(self._blob_step("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", again, None, b""))
            return [*steps, region(read=size)]
        attach = {"hdr.ctx_id": ctx}
        box = {"box.w": size, "box.h": 1, "box.d": 1}
        created = {"resource_id": buf, "target": virgl.BUFFER, "format": virgl.FORMAT_R8_UNORM}
        created |= {"bind": virgl.BIND_VERTEX_BUFFER, "width": size, "height": 1, "depth": 1, "array_size": 1}
        ram = RAM_3D if probe == "out" else PATTERN_BASE  # "in" carries the pattern: a transfer only reads it
        plan = [
            ("VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE", {**attach, "resource_id": blob}, None, b""),
            ("VIRTIO_GPU_CMD_RESOURCE_CREATE_3D", created, None, b""),
            ("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", {"resource_id": buf}, [{"addr": ram, "length": size}], b""),
            ("VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE", {**attach, "resource_id": buf}, None, b""),
        ]
        whole = (0, 0, 0, size, 1, 1)
        if probe == "out":
            steps = [self._blob_step(*p) for p in plan] + [region(bytes_)]
            copy = virgl.copy_region(buf, (0, 0, 0), blob, whole)
            submit = {**attach, **next(fence)}  # the fences in the order sent
            back = {**attach, **next(fence), "resource_id": buf, **box}
            plan = [
                ("VIRTIO_GPU_CMD_SUBMIT_3D", submit, None, copy),
                ("VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D", back, None, b""),
            ]
            return steps + [self._blob_step(*p) for p in plan] + [region(read=size)]
        copy = virgl.copy_region(blob, (0, 0, 0), buf, whole)
        plan += [
            ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D", {**attach, **next(fence), "resource_id": buf, **box}, None, b""),
            ("VIRTIO_GPU_CMD_SUBMIT_3D", {**attach, **next(fence)}, None, copy),
        ]
        return [self._blob_step(*p) for p in plan] + [region(read=size)]
