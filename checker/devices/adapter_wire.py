"""The adapter protocol's wire: frames, their parsing, and a byte stream with deadlines (both sides use it).

Version 1. Every integer is little-endian. Every frame is

    u32 length        bytes that follow (the type byte and the body), at most 64 MiB
    u8  type
    body

Frames (D = the tool, the driver side; V = the device side):

    HELLO   0x01  D->V  "VGCA" | u16 version | u16 0 | u64 features the driver accepts
                  V->D  "VGCA" | u16 version | u16 0 | u64 features agreed (a subset of the driver's)
                        | u64 host-visible shared memory size (0: none)
                        | u32 n | n x (u32 capset id | u32 max_version | u32 max_size)
                        | config space bytes (the rest, >= 16: virtio_gpu_config as the driver reads it)
                        n is 0 (the capsets are not told) or config's num_capsets (then they are known)
    REQUEST 0x02  D->V  u16 queue (0 controlq, 1 cursorq) | u16 n_out | u16 n_in | u16 0
                        | n_out x (u32 length | bytes)      the driver-readable buffers, in chain order
                        | n_in x u32 size                   the device-writable buffers' sizes
    REPLY   0x03  V->D  u8 status (0 answered, 1 no answer: the device did not complete the chain)
                        | 3 x u8 0 | u32 used length | written bytes: exactly min(used length, sum of sizes)
                        bytes, the start of the device-writable buffers (none when status is 1)
    RESET   0x04  D->V  (empty) the device goes back to its state right after initialisation and
                        answers with a HELLO (features negotiated as for the first)
    ERROR   0x05  V->D  UTF-8 text: the device cannot go on (the tool raises TargetError with it)

The tool speaks first (HELLO), the device answers HELLO; then each REQUEST gets exactly one
REPLY (or ERROR), each RESET exactly one HELLO, in order. End of stream ends the session:
a device program exits when its input closes. A device program on a pipe must write
nothing but frames to its stdout (its log goes to stderr).
"""

from __future__ import annotations

import os
import select
import struct
import time
from collections.abc import Sequence

from virtgpu_conform.spec.errors import Error

MAGIC = b"VGCA"
VERSION = 1
HELLO, REQUEST, REPLY, RESET, ERROR = 0x01, 0x02, 0x03, 0x04, 0x05
FRAME_NAMES = {HELLO: "HELLO", REQUEST: "REQUEST", REPLY: "REPLY", RESET: "RESET", ERROR: "ERROR"}
MAX_FRAME = 64 << 20
ANSWERED, NO_ANSWER = 0, 1
CONFIG_MIN = 16  # events_read, events_clear, num_scanouts, num_capsets

_HELLO_DRIVER = struct.Struct("<4sHHQ")
_HELLO_DEVICE = struct.Struct("<4sHHQQ")
_REQUEST = struct.Struct("<HHHH")
_REPLY = struct.Struct("<B3xI")


class ProtocolError(Error):
    """The other side sent something that is not a frame of this protocol."""


class Timeout(Error):
    pass


class Closed(Error):
    pass


# --- frames -------------------------------------------------------------------
def frame(kind: int, body: bytes = b"") -> bytes:
    return struct.pack("<IB", 1 + len(body), kind) + body


def driver_hello(features: int) -> bytes:
    return frame(HELLO, _HELLO_DRIVER.pack(MAGIC, VERSION, 0, features))


def device_hello(
    features: int, config: bytes, host_visible: int = 0, capsets: Sequence[tuple[int, int, int]] = ()
) -> bytes:
    caps = struct.pack("<I", len(capsets)) + b"".join(struct.pack("<3I", *c) for c in capsets)
    return frame(HELLO, _HELLO_DEVICE.pack(MAGIC, VERSION, 0, features, host_visible) + caps + config)


def request(queue: int, outs: Sequence[bytes], in_sizes: Sequence[int]) -> bytes:
    parts = [_REQUEST.pack(queue, len(outs), len(in_sizes), 0)]
    parts += [struct.pack("<I", len(b)) + bytes(b) for b in outs]
    parts += [struct.pack("<I", n) for n in in_sizes]
    return frame(REQUEST, b"".join(parts))


def reply(status: int, used: int = 0, data: bytes = b"") -> bytes:
    return frame(REPLY, _REPLY.pack(status, used) + data)


def error(text: str) -> bytes:
    return frame(ERROR, text.encode("utf-8", "replace"))


def _check_magic(body: bytes, size: int, who: str) -> None:
    if len(body) < size:
        raise ProtocolError(f"{who} HELLO is {len(body)} bytes, shorter than its fixed part ({size})")
    magic, version = body[:4], int.from_bytes(body[4:6], "little")
    if magic != MAGIC:
        raise ProtocolError(f"{who} HELLO starts {magic!r}, not the magic {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"{who} speaks adapter protocol version {version}; this side speaks {VERSION}")


def parse_driver_hello(body: bytes) -> int:
    _check_magic(body, _HELLO_DRIVER.size, "the driver's")
    return _HELLO_DRIVER.unpack_from(body)[3]


def parse_device_hello(body: bytes) -> tuple[int, int, list[tuple[int, int, int]], bytes]:
    """(features, host-visible size, capsets, config bytes)."""
    _check_magic(body, _HELLO_DEVICE.size + 4, "the device's")
    _, _, _, features, host_visible = _HELLO_DEVICE.unpack_from(body)
    (n,) = struct.unpack_from("<I", body, _HELLO_DEVICE.size)
    pos = _HELLO_DEVICE.size + 4
    if len(body) < pos + 12 * n:
        raise ProtocolError(f"the device's HELLO announces {n} capsets but ends inside them")
    capsets = [struct.unpack_from("<3I", body, pos + 12 * i) for i in range(n)]
    config = body[pos + 12 * n :]
    if len(config) < CONFIG_MIN:
        raise ProtocolError(
            f"the device's HELLO carries {len(config)} config bytes; virtio-gpu's config has at least {CONFIG_MIN}"
        )
    return features, host_visible, capsets, config


def parse_request(body: bytes) -> tuple[int, list[bytes], list[int]]:
    if len(body) < _REQUEST.size:
        raise ProtocolError(f"REQUEST of {len(body)} bytes, shorter than its fixed part")
    queue, n_out, n_in, _ = _REQUEST.unpack_from(body)
    pos, outs = _REQUEST.size, []
    for i in range(n_out):
        if pos + 4 > len(body):
            raise ProtocolError(f"REQUEST ends inside the length of driver-readable buffer {i}")
        (n,) = struct.unpack_from("<I", body, pos)
        if pos + 4 + n > len(body):
            raise ProtocolError(f"REQUEST ends inside driver-readable buffer {i} ({n} bytes)")
        outs.append(body[pos + 4 : pos + 4 + n])
        pos += 4 + n
    if len(body) - pos != 4 * n_in:
        raise ProtocolError(f"REQUEST has {len(body) - pos} bytes for {n_in} device-writable sizes")
    return queue, outs, list(struct.unpack_from(f"<{n_in}I", body, pos))


def parse_reply(body: bytes, in_sizes: Sequence[int]) -> tuple[int, int, bytes]:
    """(status, used length, written bytes), checked against the request's buffer sizes."""
    if len(body) < _REPLY.size:
        raise ProtocolError(f"REPLY of {len(body)} bytes, shorter than its fixed part ({_REPLY.size})")
    status, used = _REPLY.unpack_from(body)
    data = body[_REPLY.size :]
    if status == NO_ANSWER:
        if data:
            raise ProtocolError(f"REPLY with status 1 (no answer) carries {len(data)} written bytes")
        return status, used, data
    if status != ANSWERED:
        raise ProtocolError(f"REPLY status {status}: not 0 (answered) or 1 (no answer)")
    want = min(used, sum(in_sizes))
    if len(data) != want:
        raise ProtocolError(
            f"REPLY with used length {used} carries {len(data)} written bytes, not {want} "
            f"(the request's device-writable buffers hold {sum(in_sizes)})"
        )
    return status, used, data


# --- one byte stream with deadlines ----------------------------------------
class Stream:
    """Frames over a read fd and a write fd (the same fd for a socket), every wait bounded by a deadline."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd = rfd, wfd
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self._buf = bytearray()

    def write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"the other side did not take {len(view)} more bytes")
            _, ready, _ = select.select([], [self.wfd], [], left)
            if not ready:
                continue
            try:
                n = os.write(self.wfd, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError, OSError) as exc:
                raise Closed(f"writing failed: {exc.strerror or exc}") from None
            view = view[n:]

    def _fill(self, n: int, deadline: float) -> None:
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"waited for {n - len(self._buf)} more bytes")
            ready, _, _ = select.select([self.rfd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.rfd, max(65536, n - len(self._buf)))
            except BlockingIOError:
                continue
            except (ConnectionResetError, OSError) as exc:
                raise Closed(f"reading failed: {exc.strerror or exc}") from None
            if not chunk:
                raise Closed(
                    "end of stream" + (f" inside a frame ({len(self._buf)} bytes of it read)" if self._buf else "")
                )
            self._buf += chunk

    def read_frame(self, deadline: float) -> tuple[int, bytes]:
        self._fill(5, deadline)
        length, kind = struct.unpack_from("<IB", self._buf)
        if length < 1 or length > MAX_FRAME:
            raise ProtocolError(
                f"a frame length of {length} (bytes {bytes(self._buf[:5]).hex()}): not between 1 and {MAX_FRAME}"
            )
        if kind not in FRAME_NAMES:
            raise ProtocolError(
                f"unknown frame type {kind:#04x} (length {length}, first bytes {bytes(self._buf[:16]).hex()})"
            )
        self._fill(4 + length, deadline)
        body = bytes(self._buf[5 : 4 + length])
        del self._buf[: 4 + length]
        return kind, body
