"""A QMP client for the one thing the fuzzer asks QEMU's monitor: a screendump of the scanout."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from typing import Optional

from virtgpu_conform.spec.errors import Error


class QmpError(Error):
    pass


class Qmp:
    """QEMU's monitor on a unix socket (`-qmp unix:PATH,server=on,wait=off`), connected on first use."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.path, self.timeout = path, timeout
        self.sock: Optional[socket.socket] = None
        self._buf = b""
        self.last_ppm = b""

    def argv(self) -> list[str]:
        return ["-qmp", f"unix:{self.path},server=on,wait=off"]

    def _connect(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
                break
            except OSError as exc:
                s.close()
                if time.monotonic() > deadline:
                    raise QmpError(f"cannot connect to QEMU's monitor at {self.path}: {exc.strerror}") from None
                time.sleep(0.005)
        self.sock = s
        self._reply()  # the greeting
        self.execute("qmp_capabilities")

    def _reply(self) -> dict:
        assert self.sock is not None, "read once connected"
        while True:
            while b"\n" not in self._buf:
                try:
                    chunk = self.sock.recv(65536)
                except OSError as exc:
                    raise QmpError(f"QEMU's monitor did not answer: {exc}") from None
                if not chunk:
                    raise QmpError("QEMU's monitor closed the connection")
                self._buf += chunk
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                msg = json.loads(line)
            except ValueError:
                raise QmpError(f"QEMU's monitor sent {line[:80]!r}") from None
            if "event" not in msg:  # asynchronous events are not answers
                return msg

    def execute(self, command: str, **arguments) -> dict:
        if self.sock is None:
            self._connect()
        assert self.sock is not None, "connected above"
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        reply = self._reply()
        if "error" in reply:
            raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return", {})

    def screendump(self) -> Optional[tuple[int, int, bytes]]:
        """(width, height, RGB bytes) of what the console shows, or None when it cannot be read."""
        fd, path = tempfile.mkstemp(prefix="shot-", suffix=".ppm", dir=os.path.dirname(self.path))
        os.close(fd)
        try:
            self.execute("screendump", filename=path)
            with open(path, "rb") as f:
                self.last_ppm = f.read()  # as QEMU wrote it, for a reproducer to compare with
            return parse_ppm(self.last_ppm)
        finally:
            os.unlink(path)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        try:  # QEMU removes its own socket as it exits, perhaps just now (a retired QEMU told to go)
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def parse_ppm(data: bytes) -> Optional[tuple[int, int, bytes]]:
    """(width, height, RGB bytes) of a binary PPM (P6, maxval 255), as QEMU's screendump writes it.

    QEMU 7.2 writes each row padded to a multiple of 4 bytes (its line buffer's stride), which
    no PPM reader expects: a body of exactly that size is read row by row without the padding."""
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+255\s", data)
    if not m:
        return None
    w, h = int(m.group(1)), int(m.group(2))
    body = data[m.end() :]
    row, padded = 3 * w, (3 * w + 3) & ~3
    if padded != row and len(body) == padded * h:
        body = b"".join(body[y * padded : y * padded + row] for y in range(h))
    body = body[: row * h]
    return (w, h, body) if len(body) == row * h else None
