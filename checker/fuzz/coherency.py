"""The coherency oracle: a blob mapped into the host-visible region is one set of bytes, whether the
driver reads them through the region or the renderer copies them out to guest RAM.

It follows little of the renderer on purpose, as renders.py does. A resource's bytes are known:
- for a blob, from a write through the region covering the whole blob where it is mapped (then any
  write there patches them), or from a fenced stream copying a buffer whose bytes are known into it;
- for a buffer, from a TRANSFER_TO_HOST_3D out of its one backing entry (the oracle reads guest RAM
  as the device did), or from a fenced stream copying a blob whose bytes are known into it.
Anything else that may touch them makes them unknown: any other stream, a transfer into a blob, a
copy in an unfenced stream (its work may not be done when it is answered), a reset.

Judged: a read through the region that lies in one mapping of a blob whose bytes are known there (a
write through the region where nothing is mapped changes no blob: unmapped, the range is gone); a
fenced TRANSFER_FROM_HOST_3D of a whole buffer whose bytes are known, into its one backing entry.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from virtgpu_conform.model.codec import Message

from . import virgl

CHECK = "blob-coherency"
LARGEST = 1 << 20  # bytes of a resource the oracle keeps


@dataclass
class _Res:
    size: int
    blob: bool
    data: Optional[bytearray] = None  # every byte, when known
    how: str = ""  # where the known bytes came from, for the finding's message
    backing: Optional[tuple[int, int]] = None  # a buffer's one backing entry (address, length)
    twice: bool = False  # backing attached while attached: where it goes is the device's
    contexts: set = field(default_factory=set)

    def whole_backing(self) -> Optional[int]:
        """The address of the one backing entry when it holds the whole resource, else None."""
        return self.backing[0] if self.backing is not None and self.backing[1] >= self.size else None


@dataclass
class Due:
    """A readback to judge: guest RAM at `addr` must now hold `data`."""

    addr: int
    data: bytes
    rid: int
    how: str


class CoherencyModel:
    def __init__(self, fence_flag: int) -> None:
        self.fence_flag = fence_flag
        self.res: dict[int, _Res] = {}
        self.mapped: dict[int, int] = {}  # blob resource id -> its offset in the region
        self.judged = 0  # reads through the region compared with known bytes
        self.contexts: set = set()  # the contexts created and not destroyed

    # --- commands -------------------------------------------------------------
    def follow(self, req: Message, answer: Optional[str], peek: Callable[[int, int], Optional[bytes]]) -> Optional[Due]:
        """Follow one exchange (`answer`: the answer's type, None when there was none); a readback to
        judge when it made one. `peek` reads guest RAM, where a transfer to the host took its bytes."""
        f: Any = req.fields
        name, rid = req.name, f.get("resource_id")
        ok = answer == "VIRTIO_GPU_RESP_OK_NODATA"
        fenced = bool((f.get("hdr.flags") or 0) & self.fence_flag)
        r = self.res.get(rid) if isinstance(rid, int) else None
        if name == "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB":
            if (
                answer == "VIRTIO_GPU_RESP_OK_MAP_INFO"
                and r is not None
                and r.blob
                and isinstance(f.get("offset"), int)
            ):
                self.mapped[rid] = f["offset"]
            return None
        if not ok:
            return None
        ctx = f.get("hdr.ctx_id")
        if name == "VIRTIO_GPU_CMD_CTX_CREATE":
            self.contexts.add(ctx)
        elif name == "VIRTIO_GPU_CMD_CTX_DESTROY":
            self.contexts.discard(ctx)
            for res in self.res.values():
                res.contexts.discard(ctx)
        elif name == "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB":
            size = f.get("size")
            if isinstance(size, int) and 0 < size <= LARGEST:
                self.res[rid] = _Res(size, blob=True)
        elif name == "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D":
            w = f.get("width")
            one = (f.get("height"), f.get("depth"), f.get("array_size"), f.get("last_level")) == (1, 1, 1, 0)
            plain = f.get("format") == virgl.FORMAT_R8_UNORM  # a byte per element: boxes count bytes
            if f.get("target") == virgl.BUFFER and one and plain and isinstance(w, int) and 0 < w <= LARGEST:
                self.res[rid] = _Res(w, blob=False)
        elif name == "VIRTIO_GPU_CMD_RESOURCE_UNREF":
            self.res.pop(rid, None)
            self.mapped.pop(rid, None)
        elif name == "VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB":
            self.mapped.pop(rid, None)
        elif name == "VIRTIO_GPU_CMD_SUBMIT_3D":
            self._stream(ctx, req.payload or b"", fenced)
        elif r is None:
            return None  # a resource the oracle does not follow
        elif name == "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING":
            e = req.entries
            if r.backing is not None or r.twice:
                r.backing, r.twice = None, True
            elif len(e) == 1:
                addr, length = e[0].get("addr"), e[0].get("length")
                r.backing = (addr, length) if isinstance(addr, int) and isinstance(length, int) else None
        elif name == "VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING":
            r.backing = None
        elif name == "VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE" and ctx in self.contexts:
            r.contexts.add(ctx)
        elif name == "VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE":
            r.contexts.discard(ctx)
        elif name == "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D":
            r.data, r.how = None, ""
            addr = r.whole_backing()
            # in a context without the buffer the renderer refuses it (QEMU answers OK all the same)
            if addr is not None and ctx in r.contexts and not r.blob and self._whole(r, f):
                got = peek(addr, r.size)
                if got is not None and len(got) == r.size:
                    r.data, r.how = bytearray(got), f"carried in from guest RAM at {addr:#x}"
        elif name == "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D":
            addr = r.whole_backing()
            if addr is not None and fenced and not r.blob and r.data is not None and ctx in r.contexts:
                if self._whole(r, f):
                    return Due(addr, bytes(r.data), rid, r.how)
        return None

    @staticmethod
    def _whole(r: _Res, f: Any) -> bool:
        box = (f.get("box.x"), f.get("box.y"), f.get("box.z"), f.get("box.w"), f.get("box.h"), f.get("box.d"))
        return box == (0, 0, 0, r.size, 1, 1) and not f.get("offset") and not f.get("level")

    def _stream(self, ctx, stream: bytes, fenced: bool) -> None:
        """A stream of RESOURCE_COPY_REGIONs between resources the oracle follows (and PIPE_RESOURCE_CREATEs,
        which make new resources) is followed when fenced; anything else makes every resource unknown."""
        words = struct.unpack(f"<{len(stream) // 4}I", stream[: len(stream) // 4 * 4])
        pos, copies = 0, []
        while pos < len(words):
            head = words[pos]
            op, n = head & 0xFF, head >> 16
            body = words[pos + 1 : pos + 1 + n]
            pos += 1 + n
            if op == virgl.RESOURCE_COPY_REGION and len(body) == n == virgl.COPY_REGION_SIZE:
                copies.append(body)
            elif op != virgl.PIPE_RESOURCE_CREATE or len(body) < n:
                return self._forget()
        if len(stream) % 4:
            return self._forget()
        for body in copies:
            self._copy(ctx, body, fenced)

    def _copy(self, ctx, body, fenced: bool) -> None:
        dst_id, dst_level, dst_x, dst_y, dst_z, src_id, src_level, sx, sy, sz, w, h, d = body
        dst, src = self.res.get(dst_id), self.res.get(src_id)
        if dst is None:
            return  # a resource the oracle does not follow: nothing it knows changes
        plain = (dst_level, dst_y, dst_z, src_level, sy, sz, h, d) == (0, 0, 0, 0, 0, 0, 1, 1)
        if src is None or src.data is None or not (fenced and plain and ctx in dst.contexts and ctx in src.contexts):
            dst.data, dst.how = None, ""
            return
        if dst_x + w > dst.size or sx + w > src.size:
            return  # out of bounds: the renderer refuses it
        if dst.data is None and not (dst_x == 0 and w == dst.size):
            return
        if dst.data is None:
            dst.data = bytearray(dst.size)
        dst.data[dst_x : dst_x + w] = src.data[sx : sx + w]
        dst.how = f"copied from resource {src_id}, whose bytes were {src.how}"

    def _forget(self) -> None:
        for r in self.res.values():
            r.data, r.how = None, ""

    def reset(self) -> None:
        self.res.clear()
        self.mapped.clear()
        self.contexts.clear()

    # --- the driver's own accesses to the region ------------------------------------
    def region(self, offset: int, data: bytes, n: int, got: Optional[bytes]) -> Optional[str]:
        """A write of `data` through the region at `offset`, then a read of `n` bytes there (`got`);
        what is wrong with the read, or None."""
        if data:  # the step writes first, then reads
            self._write(offset, data)
        if n and got is not None and len(got) == n:
            return self._read(offset, got)
        return None

    def _over(self, start: int, end: int) -> list[tuple[int, int, _Res]]:
        """The mappings (resource id, offset, resource) the range [start, end) touches."""
        out = []
        for rid, off in self.mapped.items():
            r = self.res.get(rid)
            if r is not None and off < end and start < off + r.size:
                out.append((rid, off, r))
        return out

    def _write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        over = self._over(offset, end)
        if len(over) > 1:  # mappings overlap there (a device that allowed it): which one took it is the device's
            for _, _, r in over:
                r.data, r.how = None, ""
            return
        for _, off, r in over:
            lo, hi = max(offset, off), min(end, off + r.size)
            if r.data is None and (lo, hi) != (off, off + r.size):
                continue
            if r.data is None:
                r.data = bytearray(r.size)
            r.data[lo - off : hi - off] = data[lo - offset : hi - offset]
            r.how = f"written through the host-visible region at offset {off:#x}"

    def _read(self, offset: int, got: bytes) -> Optional[str]:
        over = self._over(offset, offset + len(got))
        if len(over) != 1:
            return None
        rid, off, r = over[0]
        if r.data is None or not (off <= offset and offset + len(got) <= off + r.size):
            return None
        want = bytes(r.data[offset - off : offset - off + len(got)])
        self.judged += 1
        return _differ(
            got,
            want,
            f"read at offset {offset:#x} of the host-visible region, where blob {rid} is mapped at {off:#x},",
            r.how,
        )

    @staticmethod
    def judge(due: Due, got: Optional[bytes]) -> Optional[str]:
        if got is None or len(got) != len(due.data):
            return None
        return _differ(got, due.data, f"read back from resource {due.rid} into guest RAM at {due.addr:#x}", due.how)


def _differ(got: bytes, want: bytes, where: str, how: str) -> Optional[str]:
    if got == want:
        return None
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    i = bad[0]
    return (
        f"{len(bad)} of {len(want)} bytes {where} differ from the resource's bytes, {how}; "
        f"the first, byte {i}: {got[i]:#04x} read, {want[i]:#04x} expected"
    )
