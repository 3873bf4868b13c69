"""The render oracle: what a 3D texture holds after a virgl stream cleared it, read back through
TRANSFER_FROM_HOST_3D into its backing in guest RAM, where the oracle reads it.

It follows little of the renderer on purpose: a texture's contents are known only right after a
stream's CLEAR of the framebuffer whose one colour buffer is a surface of the whole texture; any other
work on it (a copy, an inline write, a transfer to the host, a stream it cannot read) makes them
unknown, and nothing is judged. A readback is judged when it is fenced, made in a context the texture is attached to, and covers
the whole texture, packed (stride = width x 4), into the one backing entry attached once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

from virtgpu_conform.model.codec import Message

from . import virgl

CHECK = "render-readback"


@dataclass
class _Texture:
    width: int
    height: int
    fmt: int
    backing: Optional[tuple[int, int]] = None  # (address, length) of a one-entry backing
    texel: Optional[bytes] = None  # what every texel holds, when known
    contexts: set = field(default_factory=set)
    twice: bool = False  # backing was attached while attached: the oracle no longer knows where it is


@dataclass
class _Sub:
    surfaces: dict = field(default_factory=dict)  # surface handle -> resource id
    cbuf: Optional[int] = None  # the framebuffer's one colour buffer's surface handle


class RenderModel:
    def __init__(self, fence_flag: int) -> None:
        self.fence_flag = fence_flag
        self.textures: dict[int, _Texture] = {}
        self.subs: dict[tuple[int, int], _Sub] = {}  # (ctx, sub-context) -> its objects
        self.current: dict[int, int] = {}  # ctx -> the sub-context its stream works in

    def follow(self, req: Message, accepted: bool) -> Optional[tuple[int, bytes, int]]:
        """Follow one exchange; (address, expected texel, count) when the readback it made must
        now be in guest RAM."""
        f: Any = req.fields
        name, rid = req.name, f.get("resource_id")
        if not accepted:
            return None
        if name == "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D":
            w, h = f.get("width") or 0, f.get("height") or 0
            if f.get("target") == virgl.TEXTURE_2D and f.get("format") in virgl.FORMATS and 0 < w * h <= 1 << 20:
                self.textures[rid] = _Texture(w, h, f["format"])
        elif name == "VIRTIO_GPU_CMD_RESOURCE_UNREF":
            self.textures.pop(rid, None)
        elif name == "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING" and rid in self.textures:
            if self.textures[rid].backing is not None:  # backing attached twice: where it goes is the device's
                self.textures[rid].backing = None
                self.textures[rid].twice = True
                return None
            if self.textures[rid].twice:
                return None
            e = req.entries
            addr, length = (e[0].get("addr"), e[0].get("length")) if len(e) == 1 else (None, None)
            ok = isinstance(addr, int) and isinstance(length, int)
            self.textures[rid].backing = (addr, length) if ok else None  # type: ignore[assignment]
        elif name == "VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING" and rid in self.textures:
            self.textures[rid].backing = None
        elif name == "VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE" and rid in self.textures:
            self.textures[rid].contexts.add(f.get("hdr.ctx_id"))
        elif name == "VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE" and rid in self.textures:
            self.textures[rid].contexts.discard(f.get("hdr.ctx_id"))
        elif name == "VIRTIO_GPU_CMD_CTX_DESTROY":
            ctx = f.get("hdr.ctx_id")
            self.subs = {k: v for k, v in self.subs.items() if k[0] != ctx}
            self.current.pop(ctx, None)
        elif name == "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D" and rid in self.textures:
            self.textures[rid].texel = None
        elif name == "VIRTIO_GPU_CMD_SUBMIT_3D":
            self._stream(f.get("hdr.ctx_id"), req.payload or b"")
        elif name == "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D" and rid in self.textures:
            if f.get("hdr.ctx_id") not in self.textures[rid].contexts:
                return None  # a context that does not hold the texture: whether it may read it is the renderer's
            return self._readback(self.textures[rid], f)
        return None

    def _readback(self, t: _Texture, f: Any) -> Optional[tuple[int, bytes, int]]:
        whole = (f.get("box.x"), f.get("box.y"), f.get("box.z"), f.get("box.w"), f.get("box.h"), f.get("box.d"))
        packed = f.get("stride") in (0, t.width * 4) and not f.get("offset") and not f.get("level")
        # Only a fenced readback must have landed when answered: the device may answer others early.
        if (
            not (f.get("hdr.flags") or 0) & self.fence_flag
            or t.texel is None
            or t.backing is None
            or whole != (0, 0, 0, t.width, t.height, 1)
            or not packed
        ):
            return None
        if t.backing[1] < t.width * t.height * 4:
            return None
        return t.backing[0], t.texel, t.width * t.height

    def _stream(self, ctx, stream: bytes) -> None:
        """Follow the commands of a stream the encoder writes; anything else makes the context's
        textures unknown."""
        words = struct.unpack(f"<{len(stream) // 4}I", stream[: len(stream) // 4 * 4])
        pos = 0
        while pos < len(words):
            head = words[pos]
            op, obj, n = head & 0xFF, head >> 8 & 0xFF, head >> 16
            body = words[pos + 1 : pos + 1 + n]
            pos += 1 + n
            if len(body) < n or not self._command(ctx, op, obj, body):
                self._forget(ctx)
                return
        if len(stream) % 4:
            self._forget(ctx)

    def _command(self, ctx, op: int, obj: int, body) -> bool:
        sub = self.subs.setdefault((ctx, self.current.get(ctx, 0)), _Sub())
        if op == virgl.CREATE_SUB_CTX and len(body) == 1:
            if (ctx, body[0]) in self.subs or body[0] == 0:
                return False  # the renderer keeps the one there, with its objects: not followed
            self.subs[(ctx, body[0])] = _Sub()
        elif op == virgl.SET_SUB_CTX and len(body) == 1:
            self.current[ctx] = body[0]
        elif op == virgl.DESTROY_SUB_CTX and len(body) == 1:
            self.subs.pop((ctx, body[0]), None)
        elif op == virgl.CREATE_OBJECT and obj == virgl.OBJECT_SURFACE and len(body) == virgl.SURFACE_SIZE:
            handle, rid, fmt, level, layers = body
            if handle in sub.surfaces:
                return False  # a handle in use: the renderer refuses it, and the context is in error
            t = self.textures.get(rid)
            ok = t is not None and ctx in t.contexts and fmt == t.fmt and level == 0 and layers == 0
            sub.surfaces[handle] = rid if ok else None
        elif op == virgl.SET_FRAMEBUFFER_STATE and len(body) >= 2 and len(body) == 2 + body[0]:
            sub.cbuf = body[2] if body[0] == 1 and body[1] == 0 else None
        elif op == virgl.CLEAR and len(body) == virgl.CLEAR_SIZE:
            rid = sub.surfaces.get(sub.cbuf) if sub.cbuf is not None else None
            if rid is None or not body[0] & virgl.CLEAR_COLOR0:
                return False
            rgba = struct.unpack("<4f", struct.pack("<4I", *body[1:5]))
            self.textures[rid].texel = virgl.pixel(self.textures[rid].fmt, rgba)
        else:
            return False
        return True

    def _forget(self, ctx) -> None:
        for t in self.textures.values():
            if ctx in t.contexts:
                t.texel = None


def judge(expected: tuple[int, bytes, int], got: Optional[bytes]) -> Optional[str]:
    """What is wrong with the readback `got` (None: nothing, or it could not be read)."""
    addr, texel, count = expected
    if got is None:
        return None
    n = len(texel)
    bad = [i for i in range(count) if got[4 * i : 4 * i + n] != texel]
    if not bad:
        return None
    i = bad[0]
    return (
        f"{len(bad)} of {count} texels read back at {addr:#x} differ from the colour the stream cleared the "
        f"texture to; the first, texel {i}: {got[4 * i : 4 * i + n].hex()} read, {texel.hex()} expected"
    )
