"""The device side of the adapter protocol, serving the embedded reference device: an example to copy.

    python -m virtgpu_conform.checker.devices.adapter_serve              # frames on stdin/stdout
    python -m virtgpu_conform.checker.devices.adapter_serve --socket P   # a unix socket, one session per connection

`serve()` takes any Target, so a harness written in Python can wrap its own device the same way.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import BinaryIO, Optional

from virtgpu_conform.model.codec import codec_for
from virtgpu_conform.model.state import Settings
from virtgpu_conform.spec.ir import SpecIR

from . import adapter_wire as ap
from .target import ReferenceTarget, Target, feature_bits

QUEUE_NAMES = {0: "controlq", 1: "cursorq"}


def config_bytes(ir: SpecIR, s: Settings) -> bytes:
    """virtio_gpu_config as the device's settings fill it (the codec lays it out from the SpecIR)."""
    align = s.blob_alignment if "VIRTIO_GPU_F_BLOB_ALIGNMENT" in s.features else 0
    return codec_for(ir).encode_config(
        {"num_scanouts": s.num_scanouts, "num_capsets": s.num_capsets, "blob_alignment": align}
    )


def _read_exact(f: BinaryIO, n: int) -> Optional[bytes]:
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            if data:
                raise ap.ProtocolError(f"end of stream inside a frame ({len(data)} of {n} bytes)")
            return None
        data += chunk
    return data


def read_frame(f: BinaryIO) -> Optional[tuple[int, bytes]]:
    """The next frame, or None at end of stream (blocking: the device side has no deadlines)."""
    head = _read_exact(f, 5)
    if head is None:
        return None
    length, kind = struct.unpack("<IB", head)
    if not 1 <= length <= ap.MAX_FRAME:
        raise ap.ProtocolError(f"a frame length of {length}")
    body = _read_exact(f, length - 1) if length > 1 else b""
    if body is None:
        raise ap.ProtocolError("end of stream inside a frame")
    return kind, body


def serve(
    ir: SpecIR,
    rfile: BinaryIO,
    wfile: BinaryIO,
    make: Callable[[frozenset[str]], Target],
    offered: Optional[frozenset[str]] = None,
) -> None:
    """One session: HELLO, then REQUEST/RESET until end of stream. `make(features)` builds the device."""
    offered = offered if offered is not None else frozenset(f.name for f in ir.features)
    target: Optional[Target] = None

    def put(data: bytes) -> None:
        wfile.write(data)
        wfile.flush()

    def hello() -> None:
        assert target is not None, "said after HELLO made the device"
        s = target.settings
        put(
            ap.device_hello(
                feature_bits(ir, s.features),
                config_bytes(ir, s),
                s.host_visible or 0,
                [(c.id, c.max_version, c.max_size) for c in s.capsets] if s.known else (),
            )
        )

    try:
        while True:
            got = read_frame(rfile)
            if got is None:
                return
            kind, body = got
            if kind == ap.HELLO:
                want = ap.parse_driver_hello(body)
                target = make(frozenset(f.name for f in ir.features if f.name in offered and want >> f.bit & 1))
                hello()
            elif target is None:
                put(ap.error(f"frame type {kind:#04x} before HELLO"))
                return
            elif kind == ap.RESET:
                target.reset()
                hello()
            elif kind == ap.REQUEST:
                queue, outs, in_sizes = ap.parse_request(body)
                if queue not in QUEUE_NAMES:
                    put(ap.error(f"no queue {queue}: virtio-gpu has controlq (0) and cursorq (1)"))
                    return
                r = target.send(QUEUE_NAMES[queue], outs, in_sizes)
                if r.status == "answered":
                    data = r.data[: sum(in_sizes)]
                    put(ap.reply(ap.ANSWERED, len(data), data))
                elif r.status == "no-answer":
                    put(ap.reply(ap.NO_ANSWER))
                else:  # the device is gone: so is this side
                    return
            else:
                put(ap.error(f"frame type {kind:#04x} is not one the driver sends"))
                return
    except ap.ProtocolError as exc:
        put(ap.error(f"not the adapter protocol: {exc}"))
    finally:
        if target is not None:
            target.close()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m virtgpu_conform.checker.devices.adapter_serve",
        description="Serve the embedded reference device over the adapter protocol.",
    )
    p.add_argument("--socket", metavar="PATH", help="listen on this unix socket (default: stdin/stdout)")
    p.add_argument("--once", action="store_true", help="with --socket: serve one connection, then exit")
    p.add_argument("--features", metavar="NAMES", help="comma-separated feature names to offer (default: all)")
    args = p.parse_args(argv)

    from virtgpu_conform.spec.load import load_snapshot

    ir = load_snapshot()
    offered = frozenset(n for n in args.features.split(",") if n) if args.features is not None else None
    unknown = (offered or frozenset()) - {f.name for f in ir.features}
    if unknown:
        p.error(f"unknown features: {', '.join(sorted(unknown))}")

    def make(features: frozenset[str]) -> Target:
        return ReferenceTarget(ir, features)

    if args.socket is None:
        # stdout carries frames only: anything else printed goes to stderr
        out = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        serve(ir, sys.stdin.buffer, out, make, offered)
        return 0
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(args.socket)
        listener.listen(1)
        while True:
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as rf, conn.makefile("wb") as wf:
                try:
                    serve(ir, rf, wf, make, offered)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            if args.once:
                return 0


if __name__ == "__main__":
    sys.exit(main())
