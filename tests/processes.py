"""Helpers for tests about child processes: is a pid alive, and does a tool's child die with it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone: it has exited and only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def assert_children_die_with_tool(child: str, count: int, what: str) -> None:
    """Run `child` (Python that starts its processes, prints their pids on one line, then sleeps),
    kill it with SIGKILL and then SIGINT, and require every pid it printed to be gone soon after.
    The child's temp dir is a fresh one (short: unix socket paths live there): after SIGINT (the
    tool's Ctrl-C) nothing of the tool's may be left in it; after SIGKILL nothing can clean up, and
    the test removes it."""
    for how in (signal.SIGKILL, signal.SIGINT):
        temp = Path(tempfile.mkdtemp(prefix="vgc-test-"))
        try:
            p = subprocess.Popen(
                [sys.executable, "-c", child],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "TMPDIR": str(temp)},
            )
            pids = [int(x) for x in p.stdout.readline().split()]
            assert len(pids) == count and all(alive(pid) for pid in pids), pids
            p.send_signal(how)
            p.wait(timeout=20)
            assert all(gone(pid) for pid in pids), f"{what} ({pids}) outlived its tool after signal {how}"
            if how == signal.SIGINT:
                left = sorted(x.name for x in temp.iterdir())
                assert left == [], f"the tool left {left} in its temp dir after Ctrl-C"
        finally:
            shutil.rmtree(temp, ignore_errors=True)
