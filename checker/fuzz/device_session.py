"""One device under test, run the way hypothesis runs any stateful test: the pytest plugin's device
tests. Unlike a campaign (rounds, budgets, every finding), a check fails on the first finding the
device fails on, and hypothesis shrinks it and keeps it in its example database, so any process
that checks the same device, on this machine or another sharing the database, replays it first."""

from __future__ import annotations

import hashlib
import os
import shlex
from typing import Any, Optional

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import ExampleDatabase
from hypothesis.stateful import run_state_machine_as_test

from virtgpu_conform.checker.check.session import protocol_for
from virtgpu_conform.model.adversary import Edges
from virtgpu_conform.model.protocol import Protocol

from .differential import Differ
from .machine import DeviceMachine, Failure
from .oracle import Observation, Oracle, Signature
from .run import FAILING, DeviceSpec


class DeviceSession:
    """A device started once, reset before every case; `check()` runs hypothesis against it."""

    differ: Optional[Differ] = None  # a device test drives one device
    skip: frozenset = frozenset()

    def __init__(
        self,
        device: DeviceSpec,
        out: str,
        profile: str = "strict",
        database: Optional[ExampleDatabase] = None,
        protocol: Optional[Protocol] = None,
    ):
        self.device, self.out, self.profile, self.database = device, out, profile, database
        self.protocol = protocol or protocol_for(None)
        self.edges = Edges(self.protocol)
        self.target = device.factory(self.protocol.ir)(None)
        self.migrate = self.target.migrates
        self.hunting: Optional[Signature] = None
        self.cases = self.commands = 0
        self.reproducer: Optional[str] = None

    # --- the machine's host -------------------------------------------------------------
    def begin_case(self) -> None:
        self.cases += 1
        self.target.reset()

    def end_case(self, oracle: Oracle) -> None:
        pass

    def stepped(self) -> None:
        pass

    def not_sent(self, choke: tuple) -> None:
        pass

    def choked(self, choke: tuple, status: str) -> None:
        pass

    def refused_migration(self, detail: str) -> None:
        self.migrate = False

    def observe(self, machine: DeviceMachine, obs: list[Observation]) -> None:
        __tracebackhide__ = True  # pytest shows the finding, not the plugin's frames
        self.commands += 1
        for o in obs:
            if o.signature.kind not in FAILING:
                continue
            if self.hunting is None:
                self.hunting = o.signature  # shrink towards this one, as a campaign's round does
            if o.signature != self.hunting:
                continue
            # Written at every failing run: the last is hypothesis' replay of the shrunk case.
            folder = os.path.join(self.out, o.signature.key())
            os.makedirs(folder, exist_ok=True)
            self.reproducer = os.path.join(folder, "repro.ndjson")
            with open(self.reproducer, "w") as fh:
                fh.write(machine.oracle.text())
            raise Failure(
                f"{self.device.kind} device: {o.signature}: {o.message}\n"
                f"  requirements: {', '.join(o.requirements) or '-'}\n"
                f"  the case, as a native trace (line {o.line}): {self.reproducer}\n"
                f"  replay it: virtgpu-conform fuzz --replay {self.reproducer} "
                f"{' '.join(map(shlex.quote, self.device.cli_args()))}"
            )

    # --- running -------------------------------------------------------------------------
    def key(self) -> str:
        """What tells this device from others of its kind in the example database."""
        return hashlib.sha256(repr(self.device).encode()).hexdigest()[:12]

    def check(self, max_examples: int = 100, steps: int = 20, generate: bool = True) -> None:
        """Run up to `max_examples` cases of up to `steps` rule steps; raise Failure (an
        AssertionError, shrunk by hypothesis) on the first finding the device fails on. Cases the
        example database holds for this device run first; `generate=False` runs only those."""
        __tracebackhide__ = True
        phases = [Phase.explicit, Phase.reuse] + ([Phase.generate] if generate else []) + [Phase.shrink]
        database: dict[str, Any] = {"database": self.database} if self.database is not None else {}
        config = settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=phases,
            report_multiple_bugs=False,
            **database,
        )
        self.hunting = None
        try:
            run_state_machine_as_test(DeviceMachine.bind(self, self.key()), settings=config)
        except Failure as exc:
            # The finding and hypothesis' shrunk steps, without the machine's frames in between.
            shown = Failure(str(exc))
            shown.__notes__ = list(getattr(exc, "__notes__", []))
            raise shown from None

    def close(self) -> None:
        self.target.close()
