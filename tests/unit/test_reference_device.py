"""The reference device under a hypothesis state machine: valid and invalid sequences, invariants after every step."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from virtgpu_conform.model.device import ReferenceDevice, default_settings
from virtgpu_conform.model.rule import PROFILES
from virtgpu_conform.model.state import KIND_BLOB, overlaps
from virtgpu_conform.spec.load import load_snapshot

IR = load_snapshot()
IDS = st.integers(0, 5)  # few ids, so creates collide and commands hit freed resources
CTXS = st.integers(0, 3)
U32_EDGE = st.sampled_from([0, 1, 31, 32, 33, 63, 64, 65, 0x7FFFFFFF, 0xFFFFFFE0, 0xFFFFFFFF])
SIZES = st.sampled_from([0, 1, 4096, 8192, 12288, 1 << 20])


class DeviceMachine(RuleBasedStateMachine):
    @initialize(num_scanouts=st.integers(1, 3), missing=st.sampled_from([None, None, None, "blob", "virgl", "region"]))
    def boot(self, num_scanouts, missing):
        blob, virgl, region = missing != "blob", missing != "virgl", missing != "region"
        feats = {"VIRTIO_GPU_F_EDID", "VIRTIO_GPU_F_RESOURCE_UUID"}
        feats |= {"VIRTIO_GPU_F_RESOURCE_BLOB", "VIRTIO_GPU_F_BLOB_ALIGNMENT"} if blob else set()
        feats |= {"VIRTIO_GPU_F_VIRGL", "VIRTIO_GPU_F_CONTEXT_INIT"} if virgl else set()
        base = default_settings(IR, frozenset(feats))
        self.dev = ReferenceDevice(
            IR,
            base.__class__(
                base.features, num_scanouts, base.capsets, base.blob_alignment, (1 << 22) if region else None
            ),
        )
        self.codec, self.protocol = self.dev.codec, self.dev.protocol
        self.fence = 0
        self.seen_fences: dict[tuple, int] = {}
        self.freed: set[int] = set()

    def rid(self, data):
        live = sorted(self.dev.state.resources)
        return data.draw(st.one_of(st.sampled_from(live), st.sampled_from(live), IDS) if live else IDS, label="rid")

    def ctx(self, data):
        live = sorted(self.dev.state.contexts)
        return data.draw(st.one_of(st.sampled_from(live), st.sampled_from(live), CTXS) if live else CTXS, label="ctx")

    def send(self, name, fields, fenced=False, ring=None, entries=None, payload=b"", queue="controlq"):
        fields = dict(fields)
        if fenced:
            self.fence += 1
            fields["hdr.flags"] = 1 | (2 if ring is not None else 0)
            fields["hdr.fence_id"] = self.fence
            if ring is not None:
                fields["hdr.ring_idx"] = ring
        data = self.codec.encode(name, fields, entries=entries, payload=payload)
        req = self.codec.decode_request(data, queue)
        before = copy.deepcopy(self.dev.state)
        outcome = self.protocol.expect(before, req)
        resp = self.codec.decode_response(self.dev.handle(data, queue))
        assert resp.problems == [], resp.problems
        allowed = outcome.acceptable(PROFILES["strict"])
        assert allowed is None or resp.name in allowed, (name, resp.name, allowed)
        breaches = [
            b
            for b in self.protocol.judge(before, req, outcome, resp)
            if b.side == "device" and b.basis != "implementation"
        ]
        assert breaches == [], breaches
        if fenced:
            key = ("ring", fields.get("hdr.ctx_id", 0), ring) if ring is not None else ("global",)
            assert resp.fields["hdr.fence_id"] > self.seen_fences.get(key, 0)
            self.seen_fences[key] = resp.fields["hdr.fence_id"]
        if name.endswith("_UNREF") and resp.name.endswith("OK_NODATA"):
            self.freed.add(fields["resource_id"])
        if name.endswith(("CREATE_2D", "CREATE_3D", "CREATE_BLOB")) and "_OK_" in resp.name:
            self.freed.discard(fields["resource_id"])
        return resp

    @rule(
        rid=IDS,
        fmt=st.sampled_from([1, 2, 67, 0, 999]),
        w=st.sampled_from([1, 64, 1024]),
        h=st.sampled_from([1, 64, 768]),
        fenced=st.booleans(),
    )
    def create_2d(self, rid, fmt, w, h, fenced):
        self.send(
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": rid, "format": fmt, "width": w, "height": h}, fenced
        )

    @precondition(lambda self: self.dev.state.contexts)  # host3d blobs come from a context
    @rule(data=st.data(), rid=IDS, pages=st.integers(1, 4))
    def create_mappable_blob(self, data, rid, pages):
        ctx = self.ctx(data)
        self.send(
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB",
            {"resource_id": rid, "blob_mem": 2, "blob_flags": 1, "size": pages * 4096, "hdr.ctx_id": ctx},
        )

    @rule(
        rid=IDS,
        mem=st.integers(0, 4),
        flags=st.sampled_from([0, 1, 3, 8]),
        size=SIZES,
        ctx=CTXS,
        entries=st.integers(0, 2),
    )
    def create_blob(self, rid, mem, flags, size, ctx, entries):
        self.send(
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB",
            {"resource_id": rid, "blob_mem": mem, "blob_flags": flags, "size": size, "hdr.ctx_id": ctx},
            entries=[{"addr": 0x10000 * (i + 1), "length": 4096} for i in range(entries)],
        )

    @precondition(lambda self: self.dev.state.resources)  # ids of live resources, mostly
    @rule(data=st.data(), n=st.integers(0, 3))
    def attach(self, data, n):
        rid = self.rid(data)
        self.send(
            "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
            {"resource_id": rid},
            entries=[{"addr": 0x100000 * (i + 1), "length": 1 << 16} for i in range(n)],
        )

    @precondition(lambda self: self.dev.state.resources)  # ids of live resources, mostly
    @rule(
        data=st.data(),
        name=st.sampled_from(
            [
                "VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING",
                "VIRTIO_GPU_CMD_RESOURCE_UNREF",
                "VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB",
            ]
        ),
    )
    def release(self, data, name):
        """The commands that take back what a resource holds, or the resource itself."""
        self.send(name, {"resource_id": self.rid(data)})

    @precondition(lambda self: self.dev.state.resources)  # ids of live resources, mostly
    @rule(data=st.data(), x=U32_EDGE, w=U32_EDGE, fenced=st.booleans())
    def transfer(self, data, x, w, fenced):
        rid = self.rid(data)
        self.send(
            "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", {"resource_id": rid, "r.x": x, "r.width": w, "r.height": 1}, fenced
        )

    @precondition(lambda self: self.dev.state.resources)  # ids of live resources, mostly
    @rule(data=st.data(), sid=st.integers(0, 4), w=U32_EDGE)
    def set_scanout(self, data, sid, w):
        rid = self.rid(data)
        self.send("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": sid, "resource_id": rid, "r.width": w, "r.height": 1})

    @precondition(lambda self: self.dev.state.resources)  # ids of live resources, mostly
    @rule(data=st.data(), x=U32_EDGE)
    def flush(self, data, x):
        rid = self.rid(data)
        self.send("VIRTIO_GPU_CMD_RESOURCE_FLUSH", {"resource_id": rid, "r.x": x, "r.width": 1, "r.height": 1})

    @precondition(lambda self: self.dev.state.resources)  # ids of live resources, mostly
    @rule(
        data=st.data(),
        page=st.sampled_from([0, 1, 2, 3, 1022, 1023, 1024, (1 << 52) - 1]),
        misalign=st.sampled_from([0, 0, 1]),
    )
    def map_blob(self, data, page, misalign):
        rid = self.rid(data)
        self.send("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", {"resource_id": rid, "offset": page * 4096 + misalign})

    def unmapped_blobs(self):
        return sorted(r.id for r in self.dev.state.resources.values() if r.kind == KIND_BLOB and r.mapped is None)

    @precondition(lambda self: self.unmapped_blobs())
    @rule(data=st.data(), slot=st.integers(0, 7))
    def map_a_blob_like_a_driver(self, data, slot):
        """What a careful driver does: an aligned offset, which may still collide with another mapping."""
        rid = data.draw(st.sampled_from(self.unmapped_blobs()), label="blob")
        self.send("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", {"resource_id": rid, "offset": slot * 8192})

    @rule(ctx=CTXS, init=st.sampled_from([0, 0, 2, 7, 0x102]))
    def ctx_create(self, ctx, init):
        self.send(
            "VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": ctx, "context_init": init, "nlen": 4, "debug_name": b"test"}
        )

    @rule(data=st.data())
    def ctx_destroy(self, data):
        ctx = self.ctx(data)
        self.send("VIRTIO_GPU_CMD_CTX_DESTROY", {"hdr.ctx_id": ctx})

    @precondition(lambda self: self.dev.state.resources)  # ids of live resources, mostly
    @rule(data=st.data(), attach=st.booleans())
    def ctx_resource(self, data, attach):
        ctx, rid = self.ctx(data), self.rid(data)
        name = "VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE" if attach else "VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE"
        self.send(name, {"hdr.ctx_id": ctx, "resource_id": rid})

    @rule(data=st.data(), ring=st.integers(0, 2), size=st.integers(0, 16))
    def submit(self, data, ring, size):
        ctx = self.ctx(data)
        self.send("VIRTIO_GPU_CMD_SUBMIT_3D", {"hdr.ctx_id": ctx}, fenced=True, ring=ring, payload=b"\x00" * size)

    @precondition(lambda self: self.dev.state.resources)  # ids of live resources, mostly
    @rule(data=st.data(), sid=st.integers(0, 3))
    def cursor(self, data, sid):
        rid = self.rid(data)
        self.send("VIRTIO_GPU_CMD_UPDATE_CURSOR", {"resource_id": rid, "pos.scanout_id": sid}, queue="cursorq")

    @rule(which=st.sampled_from(["VIRTIO_GPU_CMD_GET_DISPLAY_INFO", "VIRTIO_GPU_CMD_GET_EDID"]))
    def query(self, which):
        self.send(which, {})

    @rule(data=st.binary(max_size=80))
    def garbage(self, data):
        resp = self.codec.decode_response(self.dev.handle(data))
        assert resp.problems == []
        assert "_RESP_" in resp.name

    @rule()
    def reset(self):
        assert self.dev.reset() == []  # a synchronous device owes no fence at reset
        assert self.dev.state.resources == {} and self.dev.state.contexts == {}
        self.seen_fences.clear()

    @invariant()
    def mappings_are_live_blobs_inside_the_region_and_disjoint(self):
        st_ = self.dev.state
        maps = st_.mappings()
        region = st_.settings.host_visible
        for rid, (off, size) in maps.items():
            assert rid not in self.freed, f"resource {rid} is both freed and mapped"
            assert st_.resources[rid].kind == KIND_BLOB
            assert region is not None and off + size <= region
        items = list(maps.items())
        for i, (a, ma) in enumerate(items):
            for b, mb in items[i + 1 :]:
                assert not overlaps(ma, mb), f"mappings of {a} and {b} overlap"

    @invariant()
    def nothing_outlives_its_owner(self):
        st_ = self.dev.state
        for r in st_.resources.values():
            assert r.contexts <= set(st_.contexts), f"resource {r.id} attached to a destroyed context"
        for tl in st_.timelines.values():
            assert tl.pending == []  # a synchronous device answers every fence at once
        assert all(sid < st_.settings.num_scanouts for sid in st_.scanouts)
        assert 0 not in st_.resources


TestReferenceDevice = pytest.mark.slow(DeviceMachine.TestCase)
TestReferenceDevice.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
