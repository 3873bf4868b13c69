"""Helper processes (a vhost-user backend, an adapter device program) that never outlive the tool.

The same protection as QEMU's in qtest.py: PR_SET_PDEATHSIG (the kernel sends the child SIGTERM
when the process that started it dies, even by SIGKILL), a process group of its own (a terminal's
Ctrl-C reaches the tool, which decides), and on close and at exit SIGTERM of that group, SIGKILL
only if it has not exited after a grace period.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import weakref
from collections.abc import Sequence
from typing import Optional

from .qtest import GRACE, starter, stop_group

_LIVE: weakref.WeakSet[Child] = weakref.WeakSet()


class Child:
    def __init__(self, argv: Sequence[str], cpus=None, **popen_kw):
        self.argv = list(argv)
        self.proc = subprocess.Popen(self.argv, preexec_fn=starter(cpus), **popen_kw)
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def wait(self, timeout: float) -> bool:
        """True when the child exited within `timeout` seconds."""
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, grace: float = GRACE) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; reaped, pipes closed."""
        stop_group(self.proc, grace)
        _LIVE.discard(self)


def tail(path: str, limit: int = 2000) -> str:
    """The end of a log file, for error messages ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


@atexit.register
def _stop_all() -> None:
    for c in list(_LIVE):
        c.stop()
