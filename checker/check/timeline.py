"""What a report draws over a trace: when each resource lived, what each scanout showed, when
fences were asked for.

Read from the checker's own state after each exchange (its leading reading), so a create
the device refused draws nothing. Bounded like the checker: the first LIMIT lifetimes of
each kind are kept and the rest counted; fences go into a fixed number of bins that
widen as the trace grows.
"""

from __future__ import annotations

from typing import Optional

LIMIT = 300
BINS = 120
CREATES = frozenset(
    {"VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D", "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB"}
)
SCANOUTS = frozenset({"VIRTIO_GPU_CMD_SET_SCANOUT", "VIRTIO_GPU_CMD_SET_SCANOUT_BLOB"})
KINDS = {1: "2d", 2: "3d", 3: "blob"}


class Timeline:
    def __init__(self) -> None:
        self.spans: dict[str, list[dict]] = {"resource": [], "scanout": []}
        self.dropped = {"resource": 0, "scanout": 0}
        self.open_res: dict[int, dict] = {}
        self.open_scan: dict[int, dict] = {}
        self.width = 1  # exchanges per fence bin
        self.fences = [0] * BINS

    def after(self, ex, state) -> None:
        """Called once the checker has taken `ex`; `state` is its leading reading."""
        f = ex.req.fields
        if (f.get("hdr.flags") or 0) & 1:
            self._fence(ex.index)
        name = ex.req.name
        if name in CREATES:
            rid = f.get("resource_id")
            res = state.resources.get(rid)
            if res is not None and rid not in self.open_res:
                label = (
                    f"{KINDS.get(res.kind, '?')} {res.width}x{res.height}" if res.width else KINDS.get(res.kind, "?")
                )
                self._open("resource", self.open_res, rid, ex.index, {"resource": rid, "what": label})
        elif name == "VIRTIO_GPU_CMD_RESOURCE_UNREF":
            rid = f.get("resource_id")
            if rid in self.open_res and rid not in state.resources:
                self.open_res.pop(rid)["to"] = ex.index
        elif name in SCANOUTS:
            sid = f.get("scanout_id")
            shown = state.scanouts.get(sid)
            rid = shown.resource_id if shown is not None else 0
            cur = self.open_scan.get(sid)
            if cur is not None and cur["resource"] != rid:
                self.open_scan.pop(sid)["to"] = ex.index
                cur = None
            if cur is None and rid:
                self._open("scanout", self.open_scan, sid, ex.index, {"scanout": sid, "resource": rid})

    def reset(self, index: int) -> None:
        for spans in (self.open_res, self.open_scan):
            for span in spans.values():
                span["to"] = index
            spans.clear()

    def _open(self, kind: str, opened: dict, key: int, index: int, span: dict) -> None:
        if len(self.spans[kind]) >= LIMIT:
            self.dropped[kind] += 1
            return
        span.update({"from": index, "to": None})
        self.spans[kind].append(span)
        opened[key] = span

    def _fence(self, index: int) -> None:
        while index >= self.width * BINS:  # halve the resolution, keep the memory
            self.fences = [self.fences[i] + self.fences[i + 1] for i in range(0, BINS, 2)] + [0] * (BINS // 2)
            self.width *= 2
        self.fences[index // self.width] += 1

    def to_json(self, exchanges: int) -> Optional[dict]:
        if not exchanges:
            return None
        return {
            "exchanges": exchanges,
            "resources": self.spans["resource"],
            "scanouts": self.spans["scanout"],
            "dropped": self.dropped,
            "fence_bin_width": self.width,
            "fences": self.fences[: exchanges // self.width + 1],
        }
