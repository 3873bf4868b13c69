"""How fast `fuzz` drives a device: commands per second against QEMU, against a bare qtest loop, and
against the embedded reference device, all measured in this one run.

    python benchmarks/fuzz_speed.py [--seconds 20] [--qemu qemu-system-x86_64] [--cpu auto]

The bare loop sends a fixed display workload (create, attach backing, set scanout, transfer,
flush, unref) through the same virtio-pci driver over qtest, with nothing generated and
nothing checked: what the device and the qtest round trips cost alone. It runs twice: with
this process and QEMU on one CPU, as `fuzz` runs them by default (--cpu), and wherever the
kernel puts them. The ratio is taken against the faster of the two. The fuzz figures are
campaigns that generate, send and check but shrink nothing (`fuzz --survey`), so they measure
the steady state rather than whichever findings a seed happens to hit first. They run as
`fuzz` does: serially on the one CPU (`--no-pipeline`), and pipelined (the default on two
or more CPUs: a sender process and QEMU on that CPU, generating and judging on the others).

The QEMU surveys do not migrate (`--no-migrate`), but one more serial survey that does (the
default), for what the migration oracle costs.

The survey against the reference device is what generating and judging cost with next to
no device: one process doing them can feed a pipeline no faster than that, whatever the
device, so reference / bare is the best ratio a pipelined fuzzer of this design reaches here.

The reference survey also times its judging (Oracle.step) and its device, the rest being
generation; with the bare exchange, that is the work one command costs whichever process does
it, and spread over every usable CPU with nothing lost the rate cannot pass CPUs / that work.

The hypothesis figure is what hypothesis itself costs: a RuleBasedStateMachine under the
campaign's settings whose one rule draws one number and does nothing else. With the
campaign's commands per rule, it bounds the ratio any hypothesis-driven fuzzer of this
shape can reach against the bare loop, before it generates, sends or checks anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from virtgpu_conform.checker.devices import affinity
from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.devices.target import ReferenceTarget
from virtgpu_conform.checker.fuzz.campaign import Campaign
from virtgpu_conform.checker.fuzz.oracle import Oracle
from virtgpu_conform.checker.fuzz.pipeline import Pipeline
from virtgpu_conform.checker.fuzz.run import DeviceSpec, fuzz
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.spec.load import load_snapshot


def workload(codec):
    e = codec.encode
    rect = {"resource_id": 1, "r.width": 64, "r.height": 64}
    return [
        ("controlq", e("VIRTIO_GPU_CMD_GET_DISPLAY_INFO"), 408),
        (
            "controlq",
            e("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 64, "height": 64}),
            24,
        ),
        (
            "controlq",
            e(
                "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
                {"resource_id": 1},
                [{"addr": 0x1000000, "length": 64 * 64 * 4}],
            ),
            24,
        ),
        ("controlq", e("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0, **rect}), 24),
        ("controlq", e("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", rect), 24),
        ("controlq", e("VIRTIO_GPU_CMD_RESOURCE_FLUSH", rect), 24),
        ("controlq", e("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0}), 24),
        ("controlq", e("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": 1}), 24),
    ]


def bare(ir, codec, seconds: float, qemu: str) -> float:
    steps = workload(codec)
    with QemuTarget(ir, qemu=qemu) as t:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for queue, data, size in steps:
                r = t.send(queue, [data], [size])
                assert r.status == "answered", r
            n += len(steps)
        return n / (time.perf_counter() - t0)


def survey(device: DeviceSpec, seconds: float, pipeline: bool = False) -> tuple[float, Campaign]:
    """A survey as `fuzz --survey` runs it (this process is pinned already: cpu="any" keeps it so)."""
    t0 = time.perf_counter()
    result = fuzz(device, time=seconds, seed=1, survey=True, pipeline=pipeline, cpu="any")
    assert result.campaign is not None
    return result.commands / (time.perf_counter() - t0), result.campaign


class Timed:
    """Seconds spent in a function, wrapped in place for one block: what the reference survey spends
    judging (Oracle.step) and in the reference device (its send), the rest being generation."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.seconds = owner, name, 0.0
        self.original = getattr(owner, name)

    def __enter__(self):
        original = self.original

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t

        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)


def hypothesis_floor(seconds: float, steps: int) -> float:
    """Rule steps per second of a state machine that only draws."""
    count = [0]

    class Idle(RuleBasedStateMachine):
        @rule(data=st.data())
        def one(self, data):
            data.draw(st.integers(0, 1 << 32))
            count[0] += 1

    config = settings(
        max_examples=20,
        stateful_step_count=steps,
        database=None,
        deadline=None,
        verbosity=Verbosity.quiet,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run_state_machine_as_test(Idle, settings=config)
    return count[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--cpu", default="auto", help="as fuzz --cpu")
    a = ap.parse_args()
    ir = load_snapshot()
    p = Protocol(ir)
    cpu = affinity.choose(a.cpu)
    rate_free = bare(ir, p.codec, a.seconds, a.qemu)
    with affinity.pinned(cpu):
        rate_pinned = bare(ir, p.codec, a.seconds, a.qemu)
        qemu = DeviceSpec("qemu", qemu=a.qemu, timeout=0.5, pixels=False, migrate=False)
        rate_serial, cs = survey(qemu, a.seconds)
        rate_moving, cm = survey(dataclasses.replace(qemu, migrate=True), a.seconds)
        rate_qemu, cq = survey(qemu, a.seconds, pipeline=cpu is not None)
        with Timed(Oracle, "step") as judging, Timed(ReferenceTarget, "send") as device:
            t0 = time.perf_counter()
            rate_ref, cr = survey(DeviceSpec("reference"), a.seconds)
            spent = time.perf_counter() - t0
        floor = hypothesis_floor(a.seconds, cq.max_steps)
    rate_bare = max(rate_free, rate_pinned)
    per_step = cq.commands / max(cq.steps, 1)
    bound = 1 / (1 + rate_bare / (floor * per_step))
    where = "no pinning" if cpu is None else f"CPU {cpu}"
    print(f"{'':36} {'commands/s':>11}")
    print(f"{'bare qtest loop, one CPU':36} {rate_pinned:>11,.0f}   ({where})")
    print(f"{'bare qtest loop, any CPU':36} {rate_free:>11,.0f}")
    print(
        f"{'fuzz survey against QEMU, serial':36} {rate_serial:>11,.0f}   ({cs.cases} cases, {len(cs.found)} findings)"
    )
    print(
        f"{'fuzz survey against QEMU, migrating':36} {rate_moving:>11,.0f}   ({cm.cases} cases, "
        f"{cm.migrations} migrations: {rate_moving / rate_serial:.2f} of serial without)"
    )
    piped = isinstance(cq.target, Pipeline)
    print(
        f"{'fuzz survey against QEMU, ' + ('pipelined' if piped else 'serial'):36} {rate_qemu:>11,.0f}   "
        f"({cq.cases} cases, {len(cq.found)} findings{'' if piped else '; serial again: one CPU, no pipeline'})"
    )
    print(
        f"{'fuzz survey against reference':36} {rate_ref:>11,.0f}   ({cr.cases} cases: generating and judging, "
        f"next to no device)"
    )
    print(
        f"{'hypothesis alone (rule steps/s)':36} {floor:>11,.0f}   (a rule that only draws; "
        f"the campaign sends {per_step:.2f} commands a rule)"
    )
    print(
        f"fuzz against QEMU / bare loop: {rate_qemu / rate_bare:.2f} (target: at least 0.80); "
        f"serial: {rate_serial / rate_bare:.2f}; pipelined / serial: {rate_qemu / rate_serial:.2f}"
    )
    print(
        f"generating and judging in one process cap a pipelined fuzzer at {rate_ref / rate_bare:.2f} of the bare "
        "loop: reference / bare"
    )
    print(f"hypothesis' own cost alone caps that ratio at {bound:.2f}: bare / (bare + hypothesis per command)")
    # The work one command costs, whichever process does it: generating it (hypothesis, z3, the model's
    # prediction), the qtest exchange, and judging the answer. Spread over every usable CPU without a
    # moment's loss, the rate still cannot pass CPUs / total.
    n = max(cr.commands, 1)
    judge, gen = judging.seconds / n, (spent - judging.seconds - device.seconds) / n
    exchange = 1 / rate_bare
    cpus = len(affinity.usable())
    best = min(cpus / (gen + exchange + judge), rate_bare)
    print(
        f"a command's work: generating {gen * 1e6:.0f} us + exchange {exchange * 1e6:.0f} us + judging "
        f"{judge * 1e6:.0f} us; on {cpus} CPU{'s' if cpus != 1 else ''} no division of it passes "
        f"{best / rate_bare:.2f} of the bare loop"
    )


if __name__ == "__main__":
    main()
