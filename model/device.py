"""The reference device: answers requests from the model, bytes in and bytes out; the embedded fuzz target and oracle."""

from __future__ import annotations

import hashlib
from typing import Optional

from virtgpu_conform.spec.ir import SpecIR

from .codec import Leaves, Message
from .protocol import Breach, Protocol
from .state import Capset, Settings

DEFAULT_MODE = (1024, 768)
EDID_BYTES = 128  # one base EDID block


def default_settings(ir: SpecIR, features: Optional[frozenset[str]] = None) -> Settings:
    """Every feature of the SpecIR offered, one scanout, one capset, a 256 MiB host-visible region."""
    feats = frozenset(f.name for f in ir.features) if features is None else features
    return Settings(
        features=feats,
        num_scanouts=1,
        capsets=(Capset(ir.constant("VIRTIO_GPU_CAPSET_VIRGL2"), 2, 256),),
        blob_alignment=4096 if "VIRTIO_GPU_F_BLOB_ALIGNMENT" in feats else 0,
        host_visible=256 << 20,
    )


def edid_block(scanout: int, width: int, height: int) -> bytes:
    """A base EDID block: the fixed header, a made-up vendor, the preferred size, a valid checksum."""
    body = bytearray(EDID_BYTES)
    body[0:8] = b"\x00\xff\xff\xff\xff\xff\xff\x00"
    body[8:10] = (0x5A4B).to_bytes(2, "big")  # vendor "VGC"-ish, not a registered PNP id
    body[12] = scanout
    body[18:20] = b"\x01\x04"  # EDID 1.4
    body[21], body[22] = min(255, width // 10), min(255, height // 10)  # rough size in cm
    body[127] = (-sum(body[:127])) & 0xFF
    return bytes(body)


class ReferenceDevice:
    """A conformant device made of the model. Where the spec leaves a choice, it takes the rule's `prefer`.

    It processes every command synchronously, so each response follows its request
    and fences complete in submission order on every timeline.
    """

    def __init__(
        self,
        ir: SpecIR,
        settings: Optional[Settings] = None,
        mode: tuple[int, int] = DEFAULT_MODE,
        protocol: Optional[Protocol] = None,
    ):
        self.protocol = protocol or Protocol(ir)
        self.codec = self.protocol.codec
        self.settings = settings or default_settings(ir)
        self.state = self.protocol.new_state(self.settings)
        self.mode = mode
        self.k = ir.constant
        # read on every answer: looked up once (ir.constant scans the list)
        self._fence, self._ring = ir.constant("VIRTIO_GPU_FLAG_FENCE"), ir.constant("VIRTIO_GPU_FLAG_INFO_RING_IDX")

    def config(self) -> bytes:
        """The device configuration space."""
        cfg = self.protocol.ir.config
        vals = {"num_scanouts": self.settings.num_scanouts, "num_capsets": self.settings.num_capsets}
        if "VIRTIO_GPU_F_BLOB_ALIGNMENT" in self.settings.features and "blob_alignment" in {f.name for f in cfg.fields}:
            vals["blob_alignment"] = self.settings.blob_alignment
        return self.codec.layouts[cfg.name].packer.pack(*[vals.get(k, 0) for k in self.codec.layouts[cfg.name].keys])

    def reset(self) -> list[Breach]:
        return self.protocol.reset(self.state)

    def handle(self, data: bytes, queue: str = "controlq", req: Optional[Message] = None) -> bytes:
        """Answer one request (`req`: the same bytes decoded already, by a caller that needed them too)."""
        if req is None:
            req = self.codec.decode_request(data, queue)
        unusable = self.protocol.unusable(req)
        # Judge in the state the request found, before it is booked on its timeline.
        if unusable:
            name = "VIRTIO_GPU_RESP_ERR_UNSPEC"
        else:
            outcome = self.protocol.expect(self.state, req)
            assert outcome is not None, "a usable request is of a known type, and every command has a rule"
            name = outcome.expected
        self.protocol.submit(self.state, req)
        fields, payload = self._body(name, req)
        fields.update(self._header(req))
        out = self.codec.encode(name, fields, payload=payload)
        self.protocol.complete(self.state, req, self.codec.decode_response(out))
        return out

    def _header(self, req: Message) -> dict:
        f: Leaves = req.fields
        flags = f.get("hdr.flags") or 0
        fence, ring = self._fence, self._ring
        out = {"hdr.flags": flags & (fence | ring), "hdr.ctx_id": f.get("hdr.ctx_id") or 0}
        if flags & fence:
            out["hdr.fence_id"] = f.get("hdr.fence_id") or 0
        if flags & ring:
            out["hdr.ring_idx"] = f.get("hdr.ring_idx") or 0
        return out

    def _body(self, name: str, req: Message) -> tuple[dict, bytes]:
        f: Leaves = req.fields
        st = self.state
        if name == "VIRTIO_GPU_RESP_OK_DISPLAY_INFO":
            out = {}
            for i in range(self.settings.num_scanouts):
                out.update(
                    {
                        f"pmodes.{i}.r.width": self.mode[0],
                        f"pmodes.{i}.r.height": self.mode[1],
                        f"pmodes.{i}.enabled": 1,
                    }
                )
            return out, b""
        if name == "VIRTIO_GPU_RESP_OK_EDID":
            block = edid_block(f.get("scanout") or 0, *self.mode)
            return {"size": len(block), "edid": block}, b""
        if name == "VIRTIO_GPU_RESP_OK_CAPSET_INFO":
            c = self.settings.capsets[f["capset_index"]]
            return {"capset_id": c.id, "capset_max_version": c.max_version, "capset_max_size": c.max_size}, b""
        if name == "VIRTIO_GPU_RESP_OK_CAPSET":
            c = next(c for c in self.settings.capsets if c.id == f["capset_id"])
            # opening with the caps' max_version, as virglrenderer's caps do (the fuzz oracle reads it)
            body = hashlib.shake_128(f"capset {c.id} v{f['capset_version']}".encode()).digest(c.max_size)
            return {}, (c.max_version.to_bytes(4, "little") + body[4:])[: c.max_size]
        if name == "VIRTIO_GPU_RESP_OK_RESOURCE_UUID":
            r = st.resources[f["resource_id"]]
            # The same resource keeps the same UUID; a new resource with a recycled id gets a new one.
            uuid = r.uuid or hashlib.sha256(f"{r.id}/{st.commands}".encode()).digest()[:16]
            return {"uuid": uuid}, b""
        if name == "VIRTIO_GPU_RESP_OK_MAP_INFO":
            return {"map_info": self.k("VIRTIO_GPU_MAP_CACHE_CACHED")}, b""
        return {}, b""
