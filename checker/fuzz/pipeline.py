"""The device's round trips in a process of their own: it sends while this one generates and judges.

A qtest exchange keeps one CPU busy (the tool and QEMU wait on each other in turn), and
generating a command and judging its answer cost more than the exchange. Done one after
the other, the device waits for the fuzzer most of the time. Here a sender process, forked
with the target and pinned with it to the campaign's CPU, takes chains from a pipe (BATCH
a message) and sends them; this process, on the other CPUs, generates and judges each
answer when it arrives, in the order the chains were sent.

Nothing generation reads comes from the device (machine.py), so it may run ahead. What
must see the device at one moment waits for the pipe to drain: a screendump after a
flush, the end of a case. After an answer that never came (a stall, a death) the sender
drops the rest of the case's chains, as the serial machine sends nothing more: the case
cannot be judged past that point.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional, cast

from virtgpu_conform.checker.devices import affinity, scratch
from virtgpu_conform.checker.devices.target import DeviceRefused, Reply, Target, TargetError, flat, unflat
from virtgpu_conform.spec.errors import Error

if TYPE_CHECKING:
    from virtgpu_conform.checker.devices.qemu import QemuTarget

_PR_SET_PDEATHSIG = 1
DROPPED = "dropped"  # the status of a chain the sender did not send: the case was over for the device
TARGET_ERROR = "target-error"  # the status of a chain the target raised TargetError on (an adapter's device)
BATCH = 8  # chains a message carries: a pipe write, and a read of their answers, costs as much as judging one


class SenderFailed(Error, RuntimeError):
    """The sending process hit a bug of the tool's, or exited without a word."""


def _serve(conn, make_target: Callable[[Optional[str]], Target], log_dir: Optional[str]) -> None:
    # Dies with the campaign however it dies; QEMU, started here, dies with this process in turn.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the campaign's to handle
    target = None
    try:
        try:
            target = make_target(log_dir)
        except TargetError as exc:
            _say(conn, ("target-error", str(exc), getattr(exc, "reason", "")))  # a DeviceRefused's reason
            return
        if not _say(
            conn,
            (
                "ready",
                target.name,
                target.settings,
                getattr(target, "describe", target.name),
                bool(getattr(target, "pixels", False)),
                getattr(target, "parts", None),
                target.migrates,
                target.config_writes,
                target.resets,
                target.host_visible_io,
            ),
        ):
            return
        over = False  # the device did not answer a chain of this case
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return  # the campaign is gone
            op = msg[0]
            if op == "send":
                answers: list[tuple] = []
                for queue, outs, in_sizes in msg[1]:
                    if over:
                        answers.append((flat(Reply(DROPPED)), None))
                        continue
                    try:
                        r = target.send(queue, outs, in_sizes)
                    except TargetError as exc:  # a device program broke the protocol: the campaign ends there
                        answers.append((flat(Reply(TARGET_ERROR, detail=str(exc))), None))
                        over = True
                        continue
                    over = r.status not in ("answered", "refused")
                    last = getattr(target, "last", None)
                    answers.append((flat(r), last and [flat(x) for x in last]))
                reply: tuple = ("answers", answers)
            elif op == "reset":
                over = False
                try:
                    target.reset()
                    reply = ("reset", target.settings)
                except TargetError as exc:
                    reply = ("target-error", str(exc))
            elif op == "peek":
                reply = ("peek", target.peek(msg[1], msg[2]))
            elif op == "screen":
                # asked for only of a target that runs the pixel oracle (`pixels`): a QEMU target
                reply = ("screen", cast("QemuTarget", target).screendump(twin=msg[1]))
            else:  # close
                return
            if not _say(conn, reply):
                return
    except BaseException as exc:  # noqa: BLE001 - a bug: the campaign reports it with this traceback
        _say(conn, ("bug", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        if target is not None:
            target.close()
        conn.close()


def _say(conn, msg: tuple) -> bool:
    """False when the campaign is gone: nobody is left to tell."""
    try:
        conn.send(msg)
        return True
    except OSError:
        return False


class Pipeline(Target):
    """A target in a sender process. `submit` queues a chain; `next_reply` gives the answers in order."""

    def __init__(self, make_target: Callable[[Optional[str]], Target], log_dir: Optional[str] = None):
        ctx = multiprocessing.get_context("fork")
        scratch.root()  # the sender's folders go in this process's, which it removes whatever becomes of the sender
        self.conn, child = ctx.Pipe()
        # Forked here, it starts on the CPU this process is pinned to, and its QEMU with it.
        self.proc = ctx.Process(
            target=_serve, args=(child, make_target, log_dir), daemon=True, name="virtgpu-conform sender"
        )
        self.proc.start()
        child.close()
        self.pending = 0  # chains submitted and not yet answered
        self._batch: list[tuple] = []  # chains not yet sent down the pipe
        self._messages = 0  # batches sent whose answers have not come
        self._ready: deque = deque()  # answers come and not yet taken
        self.want_screen = False  # the next screendump is of a flush the machine drained the pipe for
        self.last: list[Reply] = []  # a MirrorTarget's answers from each of its targets, for the last reply
        self._moved: Optional[set] = None
        self.failed: Optional[SenderFailed] = None
        hello = self._recv()
        if hello[0] == "target-error":
            self._join()
            if hello[2]:
                raise DeviceRefused(hello[1], hello[2])
            raise TargetError(hello[1])
        (
            _,
            name,
            settings,
            self.describe,
            self.pixels,
            self.parts,
            self.migrates,
            self.config_writes,
            self.resets,
            self.host_visible_io,
        ) = hello
        super().__init__(name, settings)
        away = affinity.elsewhere()
        if away:
            # The sender and the device keep the pinned CPU; generating and judging take the others.
            self._moved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, away)

    def _recv(self):
        if self.failed is not None:
            raise self.failed  # the same words for every later use (hypothesis retries a failing case)
        try:
            msg = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            self.failed = SenderFailed(
                f"the process sending to the device exited (exit code {self.proc.exitcode}) without a word"
            )
            raise self.failed from None
        if msg[0] == "bug":
            self.failed = SenderFailed(f"the process sending to the device failed: {msg[1]}\n{msg[2]}")
            raise self.failed
        return msg

    # --- pipelined use ---------------------------------------------------------------
    def _post(self, msg: tuple) -> None:
        if self.failed is not None:
            raise self.failed
        try:
            self.conn.send(msg)
        except OSError:
            # The sender is gone: what it said last (a bug's traceback) is still in the pipe.
            while True:
                self._recv()

    def submit(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> None:
        self._batch.append((queue, list(outs), list(in_sizes)))
        self.pending += 1
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            self._post(("send", self._batch))
            self._batch = []
            self._messages += 1

    def next_reply(self, wait: bool) -> Optional[Reply]:
        """The answer to the oldest chain not yet answered; None when `wait` is False and it has not come."""
        if not self.pending:
            return None
        if wait:
            self._flush()
        while not self._ready:
            if not self._messages or (not wait and not self.conn.poll()):
                return None
            self._take()
        self.pending -= 1
        reply, last = self._ready.popleft()
        r = unflat(reply)
        if r.status == TARGET_ERROR:
            raise TargetError(r.detail)
        self.last = [unflat(x) for x in last] if last else []
        return r

    def _take(self):
        """Read one message: answers are queued for next_reply, a reset's acknowledgement is booked,
        a reset that failed is raised; anything else is returned."""
        msg = self._recv()
        if msg[0] == "answers":
            self._ready.extend(msg[1])
            self._messages -= 1
        elif msg[0] == "reset":
            self.settings = msg[1]
        elif msg[0] == "target-error":
            raise TargetError(msg[1])
        else:
            return msg
        return None

    # --- the Target interface, for whoever needs one answer now --------------------------------
    def send(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> Reply:
        if self.pending:
            raise RuntimeError("a synchronous send with chains still in the pipe")
        self.submit(queue, outs, in_sizes)
        reply = self.next_reply(wait=True)
        assert reply is not None, "waiting, the chain just submitted is answered"
        return reply

    def reset(self) -> None:
        """Queued like a chain: the sender resets the device between two cases' chains. Answers no
        case will judge now (one ended by an exception) are read and dropped first, so that the next
        answer is the next chain's. A device that cannot be restarted shows as a TargetError later."""
        failed = None
        while self.pending:
            try:
                self.next_reply(wait=True)
            except TargetError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
        self._post(("reset",))

    def screendump(self, twin: bool = False):
        """Only when asked for (`want_screen`, by a machine that drained the pipe for this flush):
        otherwise whether a picture could be taken would depend on how soon answers came. The
        twin's (after a migration) comes right after the moved device's, the pipe still drained."""
        wanted, self.want_screen = self.want_screen or twin, False
        if not wanted or self.pending:
            return None
        self._post(("screen", twin))
        while True:
            msg = self._take()
            if msg is not None:
                return msg[1]

    def peek(self, addr: int, size: int) -> Optional[bytes]:
        """Guest RAM, once every chain sent has been answered (None before: it would depend on timing)."""
        if self.pending:
            return None
        self._flush()
        self._post(("peek", addr, size))
        while True:
            msg = self._take()
            if msg is not None:
                return msg[1]

    def _join(self) -> None:
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)

    def close(self) -> None:
        if self._moved is not None:
            os.sched_setaffinity(0, self._moved)
            self._moved = None
        if self.proc.is_alive():
            try:
                self.conn.send(("close",))
            except OSError:
                pass
        self._join()
        self.conn.close()
