"""How fast `check` runs: commands per second, check time against bare parsing, peak RSS against a small trace.

Generates a display workload (init, then transfer + flush frames, a resource created,
backed and unreferenced every 50 frames, cursor moves) as a native trace (answers by
the reference device) and as a QEMU trace log, at N commands and at N/100 commands.
Every figure is measured in this one run and printed as a ratio where it can be. The
headline is commands (exchanges) checked per second; lines per second are shown beside it
(a QEMU log spends three lines on a command, a native trace two).

    python benchmarks/check_speed.py [--commands 1000000] [--keep DIR]

Peak RSS is measured in a child process per run (resource.getrusage of the child).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from virtgpu_conform.model.device import ReferenceDevice
from virtgpu_conform.spec.load import load_snapshot

W, H = 1024, 768


def workload(n: int):
    """(command, fields, entries, queue) for n commands."""
    yield "VIRTIO_GPU_CMD_GET_DISPLAY_INFO", {}, None, "controlq"
    yield "VIRTIO_GPU_CMD_GET_EDID", {"scanout": 0}, None, "controlq"
    yield (
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D",
        {"resource_id": 1, "format": 1, "width": W, "height": H},
        None,
        "controlq",
    )
    yield (
        "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
        {"resource_id": 1},
        [{"addr": 1 << 20, "length": W * H * 4}],
        "controlq",
    )
    yield (
        "VIRTIO_GPU_CMD_SET_SCANOUT",
        {"scanout_id": 0, "resource_id": 1, "r.width": W, "r.height": H},
        None,
        "controlq",
    )
    done, frame = 5, 0
    rect = {"resource_id": 1, "r.width": W, "r.height": 64}
    while done < n:
        frame += 1
        y = (frame * 64) % H
        yield "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", {**rect, "r.y": y, "offset": y * W * 4}, None, "controlq"
        yield "VIRTIO_GPU_CMD_RESOURCE_FLUSH", {**rect, "r.y": y}, None, "controlq"
        yield "VIRTIO_GPU_CMD_MOVE_CURSOR", {"pos.x": frame % W, "pos.y": frame % H}, None, "cursorq"
        done += 3
        if frame % 50 == 0:
            rid = 2 + frame % 1000
            yield (
                "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D",
                {"resource_id": rid, "format": 1, "width": 64, "height": 64},
                None,
                "controlq",
            )
            yield (
                "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
                {"resource_id": rid},
                [{"addr": 1 << 24, "length": 16384}],
                "controlq",
            )
            yield "VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": rid}, None, "controlq"
            done += 3


_QEMU = {
    "VIRTIO_GPU_CMD_GET_DISPLAY_INFO": lambda f: "virtio_gpu_cmd_get_display_info ",
    "VIRTIO_GPU_CMD_GET_EDID": lambda f: f"virtio_gpu_cmd_get_edid scanout {f['scanout']}",
    "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D": lambda f: (
        f"virtio_gpu_cmd_res_create_2d res {f['resource_id']:#x}, fmt {f['format']:#x}, w {f['width']}, h {f['height']}"
    ),
    "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING": lambda f: f"virtio_gpu_cmd_res_back_attach res {f['resource_id']:#x}",
    "VIRTIO_GPU_CMD_RESOURCE_UNREF": lambda f: f"virtio_gpu_cmd_res_unref res {f['resource_id']:#x}",
    "VIRTIO_GPU_CMD_SET_SCANOUT": lambda f: (
        f"virtio_gpu_cmd_set_scanout id {f['scanout_id']}, res {f['resource_id']:#x}, "
        f"w {f['r.width']}, h {f['r.height']}, x 0, y 0"
    ),
    "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D": lambda f: f"virtio_gpu_cmd_res_xfer_toh_2d res {f['resource_id']:#x}",
    "VIRTIO_GPU_CMD_RESOURCE_FLUSH": lambda f: (
        f"virtio_gpu_cmd_res_flush res {f['resource_id']:#x}, w {f['r.width']}, "
        f"h {f['r.height']}, x 0, y {f.get('r.y', 0)}"
    ),
    "VIRTIO_GPU_CMD_MOVE_CURSOR": lambda f: (
        f"virtio_gpu_update_cursor scanout 0, x {f['pos.x']}, y {f['pos.y']}, move, res 0x0"
    ),
}


# The formats measured, in the order of the paths generate() writes.
FORMATS = (
    ("native", "native", "ndjson"),
    ("qemu", "QEMU log (pops, fills)", "qemu.log"),
    ("qemu", "QEMU log traced the documented way (virtio_gpu* alone)", "gpu-only.log"),
    ("guest", "guest tracepoints, Linux 6.12 (seqno)", "guest.log"),
)


def generate(n: int, native_path: str, qemu_path: str, gpu_only_path: str, guest_path: str) -> None:
    ir = load_snapshot()
    dev = ReferenceDevice(ir)
    codec = dev.codec
    seqno = {"controlq": 0, "cursorq": 0}
    with (
        open(native_path, "w") as nat,
        open(qemu_path, "w") as q,
        open(gpu_only_path, "w") as gq,
        open(guest_path, "w") as g,
    ):
        s = dev.settings
        nat.write(
            json.dumps(
                {
                    "kind": "session",
                    "format": "virtgpu-conform-trace",
                    "version": 1,
                    "spec": ir.version,
                    "features": sorted(s.features),
                    "num_scanouts": s.num_scanouts,
                    "capsets": [[c.id, c.max_version, c.max_size] for c in s.capsets],
                    "blob_alignment": s.blob_alignment,
                    "host_visible": s.host_visible,
                    "from_reset": True,
                    "producer": "benchmarks/check_speed.py",
                }
            )
            + "\n"
        )
        q.write("1000@1700000000.000000:virtio_gpu_features virgl 0\n")
        gq.write("virtio_gpu_features virgl 0\n")
        t = 1700000000.0
        for i, (name, fields, entries, queue) in enumerate(workload(n), 1):
            data = codec.encode(name, fields, entries)
            resp = dev.handle(data, queue)
            h = resp.hex()
            nat.write(
                f'{{"kind":"request","id":{i},"queue":"{queue}","bytes":"{data.hex()}"}}\n'
                f'{{"kind":"response","id":{i},"bytes":"{h}"}}\n'
            )
            vq = "0x5600a0" if queue == "controlq" else "0x5600f8"
            elem = f"0x7f{(i % 64) + 16:02x}00"
            t += 0.000050
            n_out = 0 if queue == "cursorq" else len(resp)
            q.write(
                f"1000@{t:.6f}:virtqueue_pop vq {vq} elem {elem} in_num 1 out_num 1\n"
                f"1000@{t:.6f}:{_QEMU[name](fields)}\n"
                f"1000@{t:.6f}:virtqueue_fill vq {vq} elem {elem} len {n_out} idx {i % 256}\n"
            )
            gq.write(f"{_QEMU[name](fields)}\n")
            seqno[queue] += 1
            qn, vqn = ("control", 0) if queue == "controlq" else ("cursor", 1)
            head = (
                f"vdev=0 vq={vqn} name={qn} type={{:#x}} flags=0x0 fence_id=0 ctx_id=0 num_free=63 seqno={seqno[queue]}"
            )
            answer = int.from_bytes(resp[:4], "little") if queue == "controlq" else 0
            g.write(
                f"  modetest-336     [000] ...1.   {t - 1700000000:.6f}: virtio_gpu_cmd_queue: "
                f"{head.format(codec.by_name[name].code)}\n"
                f"   kworker/0:1-10  [000] .....   {t - 1700000000:.6f}: virtio_gpu_cmd_response: "
                f"{head.format(answer)}\n"
            )


def _child(mode: str, path: str, fmt: str) -> dict:
    """Run one measurement in a fresh process so its peak RSS is its own."""
    code = f"""
import json, resource, sys, time
from virtgpu_conform.checker.check.session import Recording, check_session, protocol_for
from virtgpu_conform.checker.traces import sources
p = protocol_for(None)
t0 = time.perf_counter()
events = lines = 0
if {mode!r} == "parse":
    for ev in sources.events({path!r}, {fmt!r}, p.codec):
        events += 1
else:
    s = check_session(Recording.of({path!r}, fmt={fmt!r}), p)
    events = s.exchanges
    findings = len(s.findings)
dt = time.perf_counter() - t0
with open({path!r}, "rb") as f:
    lines = sum(1 for _ in f)
out = dict(seconds=dt, events=events, lines=lines, rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
if {mode!r} == "check":
    out["findings"] = findings
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write the generated traces here and keep them")
    a = ap.parse_args()
    tmp = a.keep or tempfile.mkdtemp(prefix="vgc-bench-")
    os.makedirs(tmp, exist_ok=True)
    small = max(1000, a.commands // 100)
    paths = {}
    t0 = time.perf_counter()
    for n in (small, a.commands):
        paths[n] = tuple(os.path.join(tmp, f"trace-{n}.{ext}") for _, _, ext in FORMATS)
        generate(n, *paths[n])
    print(f"generated {a.commands:,} and {small:,} commands in {time.perf_counter() - t0:.0f} s ({tmp})")
    try:
        _measure(a, paths, small)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _measure(a, paths: dict, small: int) -> None:
    for idx, (fmt, what, _) in enumerate(FORMATS):
        big, little = paths[a.commands][idx], paths[small][idx]
        parse = _child("parse", big, fmt)
        full = _child("check", big, fmt)
        tiny = _child("check", little, fmt)
        print(
            f"\n{what}, {a.commands:,} commands ({full['lines']:,} lines, "
            f"{os.path.getsize(big) / 1e6:.0f} MB): {full['findings']} findings"
        )
        print(
            f"  check: {full['seconds']:.1f} s = {full['events'] / full['seconds']:,.0f} commands/s "
            f"({full['lines'] / full['seconds']:,.0f} lines/s)"
        )
        print(
            f"  bare parse: {parse['seconds']:.1f} s ({full['events'] / parse['seconds']:,.0f} commands/s); "
            f"check / parse = {full['seconds'] / parse['seconds']:.2f}x (target <= 3x)"
        )
        print(
            f"  peak RSS: {full['rss_kb'] / 1024:.0f} MB at {a.commands:,} commands vs {tiny['rss_kb'] / 1024:.0f} MB "
            f"at {small:,}: ratio {full['rss_kb'] / tiny['rss_kb']:.2f} (flat = 1.0)"
        )


if __name__ == "__main__":
    main()
