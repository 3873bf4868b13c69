"""Moving a QEMU device to a new process mid-session, and the device left behind as its twin.

The source saves the machine over its monitor (`migrate` to an `exec:` pipe into a file); a
new QEMU with the same command line and `-incoming` loads it, and the driver goes on with its
queues as they were. The source, stopped in `postmigrate`, still answers its queues with the
state it had: sent the same chains from then on, it is the device that was not migrated, and
an answer that differs is what the migration changed.
"""

from __future__ import annotations

import copy
import shlex
import time
from dataclasses import dataclass, replace
from typing import Optional

from virtgpu_conform.spec.errors import Error

from .qmp import Qmp, QmpError
from .qtest import QemuProcess
from .virtio_pci import VirtioPci

POLL = 0.002  # seconds between a migration's status queries


class MigrationFailed(Error):
    """The save or the load did not complete; the message says which and QEMU's words."""


class MigrationRefused(MigrationFailed):
    """QEMU will not migrate this machine at all (a migration blocker: a device option, a backend)."""


def save(qmp: Qmp, path: str, timeout: float) -> None:
    """Write the source machine's state to `path`."""
    try:
        qmp.execute("migrate", uri=f"exec:cat > {shlex.quote(path)}")
    except QmpError as exc:
        raise MigrationRefused(f"QEMU refuses to migrate this machine: {exc}") from None
    _wait(qmp, timeout, "saving")


def load(qmp: Qmp, q: QemuProcess, timeout: float) -> None:
    """Wait for the QEMU started with `-incoming` to have loaded the state."""
    try:
        _wait(qmp, timeout, "loading", q)
    except QmpError as exc:
        if not q.alive:
            raise MigrationFailed(f"the new QEMU exited while loading the state: {q.stderr_tail().strip()}") from None
        raise MigrationFailed(f"the new QEMU's monitor: {exc}") from None


def _wait(qmp: Qmp, timeout: float, doing: str, q: Optional[QemuProcess] = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = qmp.execute("query-migrate")
        state = status.get("status")
        if state == "completed":
            return
        if state == "failed":
            raise MigrationFailed(f"{doing} the state failed: {status.get('error-desc', 'QEMU gave no reason')}")
        if q is not None and not q.alive:
            raise MigrationFailed(f"the new QEMU exited while {doing} the state: {q.stderr_tail().strip()}")
        if time.monotonic() > deadline:
            raise MigrationFailed(f"{doing} the state took over {timeout:g} s (status {state!r})")
        time.sleep(POLL)


@dataclass
class Twin:
    """The source device after a migration: its QEMU, a copy of the driver's view of its queues."""

    q: QemuProcess
    pci: VirtioPci
    qmp: Optional[Qmp]

    @classmethod
    def of(cls, q: QemuProcess, pci: VirtioPci, qmp: Optional[Qmp]) -> Twin:
        view = copy.copy(pci)
        view.q = q
        view.queues = {i: replace(qd) for i, qd in pci.queues.items()}  # its indices move on apart
        return cls(q, view, qmp)

    def stop(self) -> None:
        self.q.stop()
        if self.qmp is not None:
            self.qmp.close()
