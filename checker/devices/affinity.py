"""One CPU for the fuzzer and the device processes it drives (QEMU, a vhost-user backend).

A qtest exchange is a ping-pong between two processes that each wait for the other. On
two otherwise idle CPUs every hop wakes a sleeping CPU, and the exchange costs several
times what it costs when both processes share one CPU (benchmarks/fuzz_speed.py prints
both). Pinning this process before it starts its devices puts them on the same CPU:
children inherit the affinity at fork.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional


def choose(spec: str) -> Optional[int]:
    """The CPU `--cpu` names: a number, `auto` (the last CPU this process may run on, which
    takes fewer interrupts than CPU 0 on most machines) or `any` (no pinning: None)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if spec == "any" or len(allowed) < 2:
        return None
    if spec == "auto":
        return allowed[-1]
    try:
        cpu = int(spec)
    except ValueError:
        raise ValueError(f"--cpu takes a CPU number, 'auto' or 'any', not {spec!r}") from None
    if cpu not in allowed:
        raise ValueError(f"CPU {cpu} is not one this process may use (allowed: {format_cpus(allowed)})")
    return cpu


def usable() -> set:
    """The CPUs this process may run on."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def format_cpus(cpus) -> str:
    return ",".join(map(str, sorted(cpus)))


_BEFORE: list[set] = []  # the affinity each open `pinned` block replaced


@contextmanager
def pinned(cpu: Optional[int]) -> Iterator[Optional[int]]:
    """Run the block, and whatever it starts, on `cpu` (None: as before); the old affinity comes back after."""
    if cpu is None:
        yield None
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    _BEFORE.append(before)
    try:
        yield cpu
    finally:
        _BEFORE.pop()
        os.sched_setaffinity(0, before)


def elsewhere() -> Optional[set]:
    """CPUs a process started ahead of use (a spare QEMU) may start on so that it does not take
    time from this pinned process: the ones pinning left out. None when not pinned."""
    if not _BEFORE:
        return None
    rest = _BEFORE[-1] - os.sched_getaffinity(0)
    return rest or None


def move(pid: int, cpus: set) -> None:
    """Every thread of process `pid` onto `cpus` (threads it makes later inherit it)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return  # gone: whoever uses it will find out
    for tid in tasks:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # a thread that has just exited
