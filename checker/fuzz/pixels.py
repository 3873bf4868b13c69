"""The pixel oracle: what scanout 0 must show after a transfer and a flush, against the device's screendump.

Guest RAM at PATTERN_BASE holds a fixed pattern (a device target writes it when its QEMU
starts, so a replay finds the same bytes). The oracle follows every exchange the device
accepted: a 2D resource starts black, TRANSFER_TO_HOST_2D copies rows of the pattern through
the resource's backing (row h of the rectangle from `offset + h * stride`, the stride being
the resource's width times 4, as drivers compute `offset`), SET_SCANOUT picks what scanout 0
shows. After a RESOURCE_FLUSH that covers the whole scanout of a resource whose every pixel
is known, the device's screendump must show those pixels. Anything the oracle cannot
follow (a backing outside the pattern, an unknown format, a 3D or blob command accepted, a
request the device could not have read whole, an answer that never came) makes what it
touches unknown, and unknown pixels are never judged. Formats are read from their names:
VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM keeps B, G, R, A in that byte order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from virtgpu_conform.checker.devices.guest_ram import PATTERN, PATTERN_BASE, PATTERN_SIZE
from virtgpu_conform.model.codec import Leaves, Message

MAX_PIXELS = 256 * 256  # larger resources are not followed (their pixels stay unknown)
BPP = 4
CHECK = "pixels"  # the finding's check name (basis informal: the spec describes, it does not prescribe)


def channel_order(ir) -> dict[int, tuple[int, int, int]]:
    """Format value -> byte offsets of R, G, B within a pixel, from the format constants' names."""
    out = {}
    for c in ir.constants:
        m = re.fullmatch(r"VIRTIO_GPU_FORMAT_([RGBAX])8([RGBAX])8([RGBAX])8([RGBAX])8_UNORM", c.name)
        if m:
            order = m.groups()
            out[c.value] = (order.index("R"), order.index("G"), order.index("B"))
    return out


@dataclass
class _Resource:
    width: int
    height: int
    rgb: tuple[int, int, int]
    data: Optional[bytearray]  # None: contents unknown
    backing: Optional[list[tuple[int, int]]] = None


@dataclass
class Mismatch:
    message: str
    differ: int
    of: int


class PixelModel:
    """Follows one device from its reset; `check(shot)` judges a screendump after a flush."""

    def __init__(self, ir) -> None:
        self.order = channel_order(ir)
        self.resources: dict[int, _Resource] = {}
        self.scanout: Optional[tuple[int, tuple[int, int, int, int]]] = None  # resource id, rect
        self.lost = False  # something happened that the oracle cannot follow: nothing more is judged

    def due(self, req: Message, accepted: bool) -> bool:
        """Follow one exchange (`accepted`: answered OK_NODATA); True when the device must now
        show a known picture: call `check` with its screendump."""
        if self.lost:
            return False
        name = req.name
        f: Leaves = req.fields
        entries: list[Leaves] = req.entries
        if req.problems and accepted:
            self.lost = True  # what the device made of a request it could not read whole is unknown
            return False
        if not accepted:
            return False  # a refusal changes nothing
        rid: Any = f.get("resource_id")  # None for a command without one
        if name == "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D":
            w, h = f.get("width") or 0, f.get("height") or 0
            fmt: Any = f.get("format")  # None (unknown) is no format the oracle knows
            known = fmt in self.order and 0 < w * h <= MAX_PIXELS
            self.resources[rid] = _Resource(
                w, h, self.order.get(fmt, (0, 1, 2)), bytearray(w * h * BPP) if known else None
            )
        elif name == "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING" and rid in self.resources:
            self.resources[rid].backing = [(e.get("addr") or 0, e.get("length") or 0) for e in entries]
        elif name == "VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING" and rid in self.resources:
            self.resources[rid].backing = None
        elif name == "VIRTIO_GPU_CMD_RESOURCE_UNREF":
            self.resources.pop(rid, None)
            if self.scanout and self.scanout[0] == rid:
                self.scanout = None
        elif name == "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D" and rid in self.resources:
            self._transfer(self.resources[rid], f)
        elif name == "VIRTIO_GPU_CMD_SET_SCANOUT" and (f.get("scanout_id") or 0) == 0:
            rx, ry, rw, rh = (f.get(k) or 0 for k in ("r.x", "r.y", "r.width", "r.height"))
            self.scanout = (rid, (rx, ry, rw, rh)) if rid else None
        elif name == "VIRTIO_GPU_CMD_RESOURCE_FLUSH":
            return self._covers(rid, f)
        elif name not in (
            "VIRTIO_GPU_CMD_GET_DISPLAY_INFO",
            "VIRTIO_GPU_CMD_GET_EDID",
            "VIRTIO_GPU_CMD_GET_CAPSET_INFO",
            "VIRTIO_GPU_CMD_GET_CAPSET",
            "VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID",
            "VIRTIO_GPU_CMD_UPDATE_CURSOR",
            "VIRTIO_GPU_CMD_MOVE_CURSOR",
        ):
            self.lost = True  # 3D, blobs, contexts, scanout blobs: beyond what this oracle follows
        return False

    def lose(self) -> None:
        """An answer that never came, or a device that died: what it did is unknown."""
        self.lost = True

    def _transfer(self, r: _Resource, f: dict) -> None:
        if r.data is None:
            return
        x, y, w, h = (f.get(k) or 0 for k in ("r.x", "r.y", "r.width", "r.height"))
        offset = f.get("offset") or 0
        if x + w > r.width or y + h > r.height:
            r.data = None  # a device that accepts a rectangle past the edge did something unknown
            return
        stride = r.width * BPP
        for row in range(h):
            src = self._backing_bytes(r, offset + row * stride, w * BPP)
            if src is None:
                r.data = None
                return
            at = ((y + row) * r.width + x) * BPP
            r.data[at : at + w * BPP] = src

    @staticmethod
    def _backing_bytes(r: _Resource, start: int, n: int) -> Optional[bytes]:
        """`n` bytes at offset `start` of the backing, when all of them lie in the pattern."""
        out = b""
        pos = 0
        for addr, length in r.backing or ():
            lo, hi = max(start, pos), min(start + n, pos + length)
            if lo < hi:
                a = addr + lo - pos
                if not (PATTERN_BASE <= a and a + hi - lo <= PATTERN_BASE + PATTERN_SIZE):
                    return None
                out += PATTERN[a - PATTERN_BASE : a - PATTERN_BASE + hi - lo]
            pos += length
        return out if len(out) == n else None

    def _covers(self, rid, f: dict) -> bool:
        if self.scanout is None or self.scanout[0] != rid:
            return False
        r = self.resources.get(rid)
        sx, sy, sw, sh = self.scanout[1]
        fx, fy, fw, fh = (f.get(k) or 0 for k in ("r.x", "r.y", "r.width", "r.height"))
        return (
            r is not None
            and r.data is not None
            and sw > 0
            and sh > 0
            and sx + sw <= r.width
            and sy + sh <= r.height
            and fx <= sx
            and fy <= sy
            and fx + fw >= sx + sw
            and fy + fh >= sy + sh
        )

    def expected(self) -> tuple[int, int, bytes]:
        """(width, height, RGB bytes) scanout 0 must show."""
        assert self.scanout is not None, "called when a flush was due, so scanout 0 shows a resource"
        rid, (sx, sy, sw, sh) = self.scanout
        r = self.resources[rid]
        assert r.data is not None, "called when a flush was due, so every pixel is known"
        ri, gi, bi = r.rgb
        out = bytearray()
        for y in range(sy, sy + sh):
            row = r.data[(y * r.width + sx) * BPP : (y * r.width + sx + sw) * BPP]
            for p in range(0, len(row), BPP):
                out += bytes((row[p + ri], row[p + gi], row[p + bi]))
        return sw, sh, bytes(out)

    def check(self, shot: Optional[tuple[int, int, bytes]]) -> Optional[Mismatch]:
        """A Mismatch when the screendump is not the expected picture (None: it is, or no shot)."""
        if shot is None:
            return None
        w, h, want = self.expected()
        sw, sh, got = shot
        if (sw, sh) != (w, h):
            return Mismatch(
                f"scanout 0 shows a {sw}x{sh} picture, the {w}x{h} scanout rectangle was expected", w * h, w * h
            )
        bad = [i for i in range(w * h) if got[3 * i : 3 * i + 3] != want[3 * i : 3 * i + 3]]
        if not bad:
            return None
        i = bad[0]
        return Mismatch(
            f"{len(bad)} of {w * h} pixels of scanout 0 differ from what was transferred and flushed; "
            f"first at ({i % w},{i // w}): #{got[3 * i : 3 * i + 3].hex()} shown, "
            f"#{want[3 * i : 3 * i + 3].hex()} expected",
            len(bad),
            w * h,
        )
