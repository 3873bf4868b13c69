"""A third-party device (a crosvm/rutabaga harness, a hardware model) as a target, behind the adapter protocol
on a pipe (a program this target starts) or a unix socket; the wire is in adapter_wire.py."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import Optional, Union

from virtgpu_conform.model.codec import Leaves, codec_for
from virtgpu_conform.spec.ir import SpecIR

from . import scratch
from .adapter_wire import (
    ERROR,
    FRAME_NAMES,
    HELLO,
    NO_ANSWER,
    REPLY,
    RESET,
    Closed,
    ProtocolError,
    Stream,
    Timeout,
    driver_hello,
    frame,
    parse_device_hello,
    parse_reply,
    request,
)
from .children import Child, tail
from .target import QUEUES, TOGETHER, Reply, Target, TargetError, feature_bits, in_turn, settings_from_config


class AdapterTarget(Target):
    """A device behind the adapter protocol: a program this target starts (and always kills), or a unix socket.

    A request not answered within `timeout` seconds is Reply("no-answer") and the connection is
    given up (a late answer would be taken for the next one's); `reset()` then starts the program
    again (or reconnects). A program that exits, or a socket that closes, is Reply("died").
    Anything that is not this protocol raises TargetError saying what was wrong.
    """

    def __init__(
        self,
        ir: SpecIR,
        command: Union[str, Sequence[str], None] = None,
        socket_path: Optional[str] = None,
        features: Optional[frozenset[str]] = None,
        timeout: float = 2.0,
        start_timeout: float = 10.0,
        log_path: Optional[str] = None,
        name: str = "adapter",
    ):
        super().__init__(name)
        if (command is None) == (socket_path is None):
            raise ValueError("give exactly one of command (a program to start) and socket_path")
        self.ir, self.timeout, self.start_timeout = ir, timeout, start_timeout
        self.command = shlex.split(command) if isinstance(command, str) else (list(command) if command else None)
        self.socket_path = socket_path
        self.logs = "" if log_path else scratch.make("adapter")  # the program's stderr, unless asked to keep it
        self.log_path = log_path or os.path.join(self.logs, "device-stderr.log")
        self.want = features if features is not None else frozenset(f.name for f in ir.features)
        self.child: Optional[Child] = None
        self.sock: Optional[socket.socket] = None
        self.stream: Optional[Stream] = None
        self.broken = ""  # why the stream cannot be trusted any more ('' while it can)
        self.starts = 0
        self.describe = " ".join(map(shlex.quote, self.command)) if self.command else f"unix socket {socket_path}"
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- connection -------------------------------------------------------------------
    def _start(self) -> None:
        self.broken = ""
        self.starts += 1
        try:
            if self.command:
                with open(self.log_path, "ab") as log:
                    try:
                        self.child = Child(
                            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, bufsize=0
                        )
                    except OSError as exc:
                        raise TargetError(f"cannot start the device program {self.describe}: {exc}") from None
                stdout, stdin = self.child.proc.stdout, self.child.proc.stdin
                assert stdout is not None and stdin is not None, "opened with PIPE"
                self.stream = Stream(stdout.fileno(), stdin.fileno())
            else:
                self.sock = self._connect()
                self.stream = Stream(self.sock.fileno(), self.sock.fileno())
            self._hello(lambda: driver_hello(feature_bits(self.ir, self.want)), "HELLO")
        except BaseException:
            self._disconnect()
            raise

    def _connect(self) -> socket.socket:
        assert self.socket_path is not None, "no command, so a socket (__init__ checks one is given)"
        deadline = time.monotonic() + self.start_timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.socket_path)
                return s
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                s.close()
                if time.monotonic() > deadline:
                    raise TargetError(f"nothing accepts connections on {self.socket_path}: {exc.strerror}") from None
                time.sleep(0.02)

    def _hello(self, make_frame, what: str) -> None:
        """Send HELLO or RESET and take the device's HELLO: its features and config become `settings`."""
        deadline = time.monotonic() + self.start_timeout
        stream = self.stream
        assert stream is not None, "connected: by _start, or checked by reset"
        try:
            stream.write(make_frame(), deadline)
            kind, body = stream.read_frame(deadline)
            if kind == ERROR:
                raise TargetError(f"{self.describe} refused {what}: {body.decode('utf-8', 'replace')}")
            if kind != HELLO:
                raise ProtocolError(f"the device answered {what} with a {FRAME_NAMES[kind]} frame, not HELLO")
            agreed, host_visible, capsets, config = parse_device_hello(body)
        except (Timeout, Closed) as exc:
            raise TargetError(
                f"{self.describe} gave no HELLO in answer to {what} within "
                f"{self.start_timeout:g} s ({exc}){self._gone()}"
            ) from None
        except ProtocolError as exc:
            raise TargetError(f"{self.describe} does not speak the adapter protocol: {exc}") from None
        offered = feature_bits(self.ir, self.want)
        if agreed & ~offered & 0xFFFFFF:
            raise TargetError(
                f"{self.describe} agreed to feature bits {agreed & ~offered:#x} the driver did not accept"
            )
        cfg: Leaves = codec_for(self.ir).decode_config(config)
        num_capsets = cfg.get("num_capsets") or 0
        if capsets and len(capsets) != num_capsets:
            raise TargetError(
                f"{self.describe} does not speak the adapter protocol: its HELLO lists "
                f"{len(capsets)} capsets; its config says num_capsets {num_capsets}"
            )
        self.settings = settings_from_config(self.ir, agreed, config, capsets, host_visible)
        self.config = config

    def _gone(self) -> str:
        """What is known about a device that stopped talking: its exit status and the end of its stderr."""
        if self.child is None:
            return ""
        if self.child.alive and not self.child.wait(0.2):
            return ""
        log = tail(self.log_path, 400).strip()
        return f"; the program exited (status {self.child.returncode})" + (f": {log}" if log else "")

    # --- the Target interface -------------------------------------------------------------
    def send(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> Reply:
        if self.stream is None:
            return Reply("died", detail="the target is closed")
        if self.broken:
            return Reply("no-answer", detail=f"the connection is given up: {self.broken}; reset() first")
        if queue == TOGETHER:  # the adapter protocol takes one chain at a time
            return in_turn(self.send, outs[0])
        if queue not in QUEUES:  # a step on no queue the protocol has no frame for (host_visible_io is False)
            return Reply("refused", detail=f"the adapter protocol has no {queue} step")
        try:
            self.stream.write(request(QUEUES[queue], outs, in_sizes), time.monotonic() + self.timeout)
            kind, body = self.stream.read_frame(time.monotonic() + self.timeout)
            if kind == ERROR:
                self.broken = "the device sent ERROR"
                raise TargetError(f"{self.describe} stopped with an error: {body.decode('utf-8', 'replace')}")
            if kind != REPLY:
                raise ProtocolError(f"a {FRAME_NAMES[kind]} frame in answer to REQUEST, not REPLY")
            status, used, data = parse_reply(body, in_sizes)
        except Timeout as exc:
            self.broken = f"no REPLY within {self.timeout:g} s"
            gone = self._gone()
            if gone:
                return Reply("died", detail=f"{self.describe}: no REPLY{gone}")
            return Reply("no-answer", detail=f"{self.describe}: {self.broken} ({exc})")
        except Closed as exc:
            self.broken = str(exc)
            return Reply("died", detail=f"{self.describe}: {exc}{self._gone()}")
        except ProtocolError as exc:
            self.broken = str(exc)
            raise TargetError(f"{self.describe} broke the adapter protocol: {exc}") from None
        if status == NO_ANSWER:
            return Reply("no-answer", detail="the device reports that it did not complete the chain")
        total = sum(in_sizes)
        return Reply(
            "answered", data, detail=f"used length {used} exceeds the buffers ({total})" if used > total else ""
        )

    def reset(self) -> None:
        """RESET and the device's new HELLO; a new program (or connection) when the last one died, hung or failed."""
        if self.stream is not None and not self.broken and (self.child is None or self.child.alive):
            try:
                self._hello(lambda: frame(RESET), "RESET")
                return
            except TargetError:
                pass
        self._disconnect()
        self._start()

    def close(self) -> None:
        """End the session (the program exits at end of input, or is killed) and remove the log folder
        this target made."""
        self._disconnect()
        scratch.remove(self.logs)
        self.logs = ""

    def _disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.child is not None:
            stdin = self.child.proc.stdin
            assert stdin is not None, "opened with PIPE"
            try:
                stdin.close()  # a well-behaved program exits at end of input
            except (OSError, ValueError):
                pass
            self.child.wait(0.5)
            self.child.stop(grace=1.0)  # it had its end of input; a second more after SIGTERM
            self.child = None
        self.stream = None
