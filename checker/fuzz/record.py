"""Running command sequences on a target and saving them as native traces that `check` reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO

from virtgpu_conform.checker.devices.target import Reply, Target
from virtgpu_conform.checker.traces.native import Writer
from virtgpu_conform.spec.ir import SpecIR


def session_header(ir: SpecIR, target: Target) -> dict:
    s = target.settings
    head = {
        "spec": ir.version,
        "features": sorted(s.features),
        "num_scanouts": s.num_scanouts,
        "num_capsets": s.num_capsets,
        "blob_alignment": s.blob_alignment,
        "host_visible": s.host_visible or 0,
        "from_reset": True,
        "producer": f"virtgpu-conform fuzz --target {target.name}",
    }
    if s.known:
        head["capsets"] = [[c.id, c.max_version, c.max_size] for c in s.capsets]
    return head


def record(ir: SpecIR, target: Target, steps: Iterable[tuple[str, bytes, int]], out: IO[str]) -> list[Reply]:
    """Send each (queue, request bytes, response buffer size) and write request and answer as they happen."""
    w = Writer(out, **session_header(ir, target))
    replies = []
    for queue, data, size in steps:
        rid = w.request(data, queue)
        r = target.send(queue, [data], [size])
        replies.append(r)
        if r.status == "answered":
            w.response(rid, r.data)
        else:
            w.no_response(rid, f"{r.status}: {r.detail}")
        out.flush()
        if r.status == "died":
            break
    return replies
