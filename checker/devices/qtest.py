"""QEMU under qtest: the process (always stopped, even when this one dies) and the qtest text protocol."""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import select
import signal
import subprocess
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

from virtgpu_conform.spec.errors import Error

_LIVE: weakref.WeakSet[QemuProcess] = weakref.WeakSet()
_PR_SET_PDEATHSIG = 1


class QemuGone(Error):
    """QEMU exited or stopped answering; `log` holds the tail of what it printed."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


def exit_status(code) -> str:
    """A child's exit status in words: 'status 1', 'status -11, SIGSEGV' (killed by a signal)."""
    if code is None:
        return "status unknown: still exiting"
    if code < 0:
        try:
            return f"status {code}, {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"status {code}"


GRACE = 3.0  # seconds a child has to exit on SIGTERM before it is killed


def stop_group(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """Stop a child started with `_die_with_parent` (its own process group): SIGTERM, then SIGKILL if it
    has not exited within `grace` seconds; reap it, close its pipes. A QEMU stopped with SIGTERM goes
    through its own exit path (what it writes at exit is written: a gcov build's coverage counters,
    say); one killed outright runs none of it."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
        pass
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            try:
                f.close()
            except (OSError, ValueError):
                pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _die_with_parent(cpus=None) -> None:  # runs in the child between fork and exec
    # The kernel sends the child SIGTERM when the process that started it dies, however it dies
    # (a crash, SIGKILL): no QEMU outlives the tool, and it still leaves by its own exit path.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # Ctrl-C in a terminal reaches us, not QEMU: we decide when it goes
    if cpus:
        os.sched_setaffinity(0, cpus)


def starter(cpus=None):
    """The preexec function for a child: `cpus`, when given, are where it starts (a spare QEMU
    starts away from the CPU the tool works on, and is moved there when it is used)."""
    return functools.partial(_die_with_parent, cpus) if cpus else _die_with_parent


@dataclass(frozen=True)
class Poll:
    """In a recorded session: the driver polled `line` (a used ring's index) until the device answered."""

    line: str


@dataclass(frozen=True)
class Shot:
    """In a recorded session: a screendump of the console was taken here."""


Script = list[Union[str, Poll, Shot]]


class QemuProcess:
    """One QEMU with the qtest protocol on stdio. Use as a context manager.

    `script`, when a list, receives every command sent and a Poll where the driver waited for an
    answer: the session as a reproducer in qtest's own form (qtest_script.py).
    """

    def __init__(self, argv: Sequence[str], timeout: float = 5.0, env: Optional[dict] = None, cpus=None):
        self.argv = list(argv)
        self.timeout = timeout
        self.irqs: list[str] = []
        self.script: Optional[Script] = None
        self._buf = b""
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=starter(cpus),
            env=env,
        )
        _LIVE.add(self)

    def __enter__(self) -> QemuProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = GRACE) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (see stop_group)."""
        stop_group(self.proc, grace)
        _LIVE.discard(self)

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return ""
        stderr = self.proc.stderr
        assert stderr is not None, "opened with PIPE"
        try:
            return stderr.read().decode("utf-8", "replace")[-2000:]
        except (OSError, ValueError):
            return ""

    # --- the qtest protocol --------------------------------------------------
    def cmd(self, line: str, keep: bool = True) -> Optional[str]:
        """Send one qtest command and return the value after OK (None when there is none).
        `keep`: the command goes into `script` (a poll's reads do not: the Poll stands for them)."""
        return self.cmds([line], keep)[0]

    def cmds(self, lines: Sequence[str], keep: bool = True) -> list[Optional[str]]:
        """Send qtest commands in one write and return each one's value: QEMU reads them in one
        turn of its main loop, before any bottom half a command scheduled runs."""
        line = lines[0]
        if keep and self.script is not None:
            self.script.extend(lines)
        stdin = self.proc.stdin
        assert stdin is not None, "opened with PIPE"
        try:
            stdin.write("".join(ln + "\n" for ln in lines).encode())
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            try:  # the pipe breaks as QEMU dies: wait a moment for how it died (a GL QEMU may take longer)
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            raise QemuGone(
                f"QEMU exited ({exit_status(self.proc.poll())}) before {line.split()[0]}", self.stderr_tail()
            ) from None
        return [self._answer(ln) for ln in lines]

    def _answer(self, line: str) -> Optional[str]:
        while True:
            reply = self._readline()
            if reply.startswith("IRQ"):
                self.irqs.append(reply)
                continue
            if reply.startswith("OK"):
                parts = reply.split(None, 1)
                return parts[1] if len(parts) > 1 else None
            raise QemuGone(f"qtest answered {reply!r} to {line[:60]!r}")

    def _readline(self) -> str:
        deadline = time.monotonic() + self.timeout
        stdout = self.proc.stdout
        assert stdout is not None, "opened with PIPE"
        fd = stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QemuGone(f"QEMU did not answer within {self.timeout:g} s (hung?)")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise QemuGone(f"QEMU exited ({exit_status(self.proc.wait())})", self.stderr_tail())
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").strip()

    def _value(self, line: str, keep: bool = True) -> str:
        """The value a reading command answers ("OK <value>")."""
        value = self.cmd(line, keep)
        assert value is not None, f"qtest answered {line.split()[0]} with no value"
        return value

    def outl(self, addr: int, val: int) -> None:
        self.cmd(f"outl {addr:#x} {val:#x}")

    def inl(self, addr: int) -> int:
        return int(self._value(f"inl {addr:#x}"), 16)

    def read_int(self, size: int, addr: int) -> int:
        return int(self._value(_read_int(size, addr)), 16)

    def poll_int(self, size: int, addr: int) -> int:
        """read_int, for a loop waiting on the device: marked once in `script` by polled(), not kept per read."""
        return int(self._value(_read_int(size, addr), keep=False), 16)

    def polled(self, size: int, addr: int) -> None:
        if self.script is not None:
            self.script.append(Poll(_read_int(size, addr)))

    def write_int(self, size: int, addr: int, val: int) -> None:
        self.cmd(write_command(size, addr, val))

    def memread(self, addr: int, n: int) -> bytes:
        if n == 0:
            return b""
        return bytes.fromhex(self._value(f"read {addr:#x} {n:#x}")[2:])

    def memwrite(self, addr: int, data: bytes) -> None:
        if data:
            self.cmd(f"write {addr:#x} {len(data):#x} 0x{data.hex()}")


def write_command(size: int, addr: int, val: int) -> str:
    return f"write{'bwlq'[size.bit_length() - 1]} {addr:#x} {val:#x}"


def _read_int(size: int, addr: int) -> str:
    return f"read{'bwlq'[size.bit_length() - 1]} {addr:#x}"


@atexit.register
def _stop_all() -> None:
    live = list(_LIVE)
    for q in live:  # all told at once: they exit side by side, not one grace after another
        _signal_group(q.proc, signal.SIGTERM)
    for q in live:
        q.stop()
