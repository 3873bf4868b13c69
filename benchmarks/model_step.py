"""Cost of one model step: concrete (every field known) against symbolic (some field unknown, z3 decides).

Both are measured in the same run on the same command sequence, and reported as
microseconds per step and as their ratio (the machines are noisy; the ratio is
the figure to compare across runs).
"""

from __future__ import annotations

import argparse
import statistics
import time

from virtgpu_conform.model.device import ReferenceDevice
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.spec.load import load_snapshot


def workload(dev: ReferenceDevice) -> list[tuple[bytes, str]]:
    """A driver's bread and butter: create, back, fill, show, flush, plus blob mapping, 64 resources."""
    c, out = dev.codec, []

    def add(name, queue="controlq", entries=None, **f):
        out.append((c.encode(name, {k.replace("__", "."): v for k, v in f.items()}, entries=entries), queue))

    add("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")
    add("VIRTIO_GPU_CMD_GET_EDID")
    add("VIRTIO_GPU_CMD_CTX_CREATE", hdr__ctx_id=1, nlen=4, debug_name=b"mesa")
    for rid in range(1, 65):
        add("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", resource_id=rid, format=1, width=1024, height=768)
        add("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", resource_id=rid, entries=[{"addr": rid << 24, "length": 3 << 20}])
        add(
            "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D",
            resource_id=rid,
            r__width=1024,
            r__height=768,
            hdr__flags=1,
            hdr__fence_id=rid,
        )
        add("VIRTIO_GPU_CMD_SET_SCANOUT", resource_id=rid, r__width=1024, r__height=768)
        add("VIRTIO_GPU_CMD_RESOURCE_FLUSH", resource_id=rid, r__width=1024, r__height=768)
        add(
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB",
            resource_id=1000 + rid,
            blob_mem=2,
            blob_flags=1,
            size=1 << 16,
            hdr__ctx_id=1,
        )
        add("VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", resource_id=1000 + rid, offset=rid << 16)
        add("VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB", resource_id=1000 + rid)
        add("VIRTIO_GPU_CMD_MOVE_CURSOR", "cursorq", pos__x=rid)
    return out


def run(rounds: int) -> dict:
    ir = load_snapshot()
    dev = ReferenceDevice(ir)
    reqs = workload(dev)
    # Responses from the reference device itself, so every step has an answer to judge.
    pairs = [(dev.codec.decode_request(b, q), dev.codec.decode_response(dev.handle(b, q))) for b, q in reqs]
    p = Protocol(ir)

    def replay(blank: set[str]) -> float:
        st = p.new_state(dev.settings)
        t0 = time.perf_counter()
        for req, resp in pairs:
            if blank and req.name in ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", "VIRTIO_GPU_CMD_RESOURCE_FLUSH"):
                req = type(req)(
                    req.kind,
                    req.name,
                    req.struct,
                    {k: (None if k in blank else v) for k, v in req.fields.items()},
                    req.entries,
                    req.payload,
                    req.problems,
                    req.size,
                )
            outcome = p.expect(st, req)
            p.judge(st, req, outcome, resp)
            p.submit(st, req)
            p.complete(st, req, resp)
        return time.perf_counter() - t0

    steps = len(pairs)
    symbolic_steps = sum(
        1 for r, _ in pairs if r.name in ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", "VIRTIO_GPU_CMD_RESOURCE_FLUSH")
    )
    conc, mixed = [], []
    for _ in range(rounds):
        conc.append(replay(set()))
        # The QEMU trace log gives no rect for these two; their rect checks go to z3.
        mixed.append(replay({"r.x", "r.width"}))
    c_us = statistics.median(conc) / steps * 1e6
    # Per symbolic step: the extra time of the mixed run spread over the steps that went symbolic.
    s_us = (statistics.median(mixed) - statistics.median(conc)) / symbolic_steps * 1e6 + c_us
    return {
        "steps": steps,
        "symbolic_steps": symbolic_steps,
        "concrete_us": c_us,
        "symbolic_us": s_us,
        "ratio": s_us / c_us,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    r = run(ap.parse_args().rounds)
    print(f"{r['steps']} steps per replay, {r['symbolic_steps']} of them with unknown rect fields")
    print(f"concrete step (expect + judge + apply): {r['concrete_us']:.1f} us (median of rounds)")
    print(f"symbolic step (z3 over the unknown fields): {r['symbolic_us']:.0f} us")
    print(f"symbolic / concrete: {r['ratio']:.0f}x")


if __name__ == "__main__":
    main()
