"""Fuzzing as a library: the devices a campaign can drive, named the way users think of them,
`fuzz()` to run a campaign and `replay()` to re-run a saved case. The CLI's `fuzz` and the
pytest plugin call these."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

from virtgpu_conform.checker.check.session import protocol_for
from virtgpu_conform.checker.devices import affinity
from virtgpu_conform.checker.devices.target import MIGRATION, DeviceRefused, Target
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.spec.errors import Error
from virtgpu_conform.spec.ir import SpecIR

if TYPE_CHECKING:  # the campaign pulls in hypothesis: not at the CLI's start
    from .campaign import Campaign
    from .oracle import Observation

KINDS = ("reference", "qemu", "vhost-user-gpu", "vhost-device-gpu", "adapter")
QEMU_HOSTED = ("qemu", "vhost-user-gpu", "vhost-device-gpu")  # kinds QEMU runs (its frontend, for the vhost-user ones)
VHOST_USER = ("vhost-user-gpu", "vhost-device-gpu")
FAILING = ("violation", "crash", "liveness", "migration")  # kinds a device fails on; divergences are reported only
MakeTarget = Callable[[Optional[str]], Target]


class DeviceNotConformant(Error, AssertionError):
    """`FuzzResult.assert_conformant()` found violations, crashes or answers that never came."""


GL_TIMEOUT = 2.0  # seconds a GL device's answer may take: a fenced command waits for the software renderer


def default_timeout(kind: str, gl: bool) -> float:
    """Seconds to wait for an answer: 0.2, or GL_TIMEOUT where virglrenderer renders (rust-vmm's
    backend uses it for 2D too, and starts it at the first request)."""
    return GL_TIMEOUT if gl or kind == "vhost-device-gpu" else 0.2


@dataclass(frozen=True)
class DeviceSpec:
    """A device to fuzz. `kind`: reference (the model's own, embedded), qemu (QEMU's virtio-gpu-pci),
    vhost-user-gpu (QEMU's separate backend behind vhost-user-gpu-pci), vhost-device-gpu (rust-vmm's
    backend on rutabaga, behind the same frontend) or adapter (a program or unix socket speaking the
    adapter protocol). The rest applies to the kinds it names; "qemu" in a comment names all three
    that QEMU runs."""

    kind: str = "reference"
    qemu: str = "qemu-system-x86_64"  # qemu, vhost-user-gpu: the binary
    qemu_args: tuple[str, ...] = ()  # qemu, vhost-user-gpu: extra arguments (-L DIR for an unpacked QEMU)
    device_opts: str = ""  # qemu: virtio-gpu-pci properties, e.g. "edid=off,max_outputs=2"
    backend: Optional[str] = (
        None  # vhost-user-gpu, vhost-device-gpu: the backend program (default: Debian's, the cached build)
    )
    adapter: Optional[str] = None  # adapter: the program to start ("PROGRAM ARGS")
    adapter_socket: Optional[str] = None  # adapter: a unix socket to connect to instead
    timeout: Optional[float] = None  # seconds to wait for one answer, longer is a liveness finding (default_timeout)
    pixels: bool = True  # the pixel oracle, on QEMU-hosted targets
    migrate: bool = True  # qemu: cases may move the device to a new QEMU mid-case (migration.py)
    features: Optional[frozenset[str]] = None  # feature names the driver accepts (default: all)
    gl: bool = False  # qemu, vhost-user-gpu: the 3D (virgl) device, rendering in software
    suite: str = ""  # qemu, vhost-user-gpu: the Debian suite `qemu` was unpacked from (names the target)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown device kind {self.kind!r}: one of {', '.join(KINDS)}")
        if self.kind == "adapter" and not (self.adapter or self.adapter_socket):
            raise ValueError("an adapter device needs adapter='PROGRAM ARGS' or adapter_socket=PATH")
        if self.gl and self.kind not in QEMU_HOSTED:
            raise ValueError(f"gl is for the {', '.join(QEMU_HOSTED)} targets, not {self.kind}")
        if self.timeout is None:
            object.__setattr__(self, "timeout", default_timeout(self.kind, self.gl))

    @property
    def name(self) -> str:
        return self.kind + (f"@{self.suite}" if self.suite else "") + ("-gl" if self.gl else "")

    def cli_args(self) -> list[str]:
        """The `virtgpu-conform fuzz` options that name this device."""
        out = ["--target", self.kind + (f"@{self.suite}" if self.suite else "")]
        if self.kind in QEMU_HOSTED:
            if self.qemu != DeviceSpec.qemu and not self.suite:
                out += ["--qemu", self.qemu]
            out += [f"--qemu-arg={a}" for a in self.qemu_args]
            if self.gl:
                out.append("--gl")
        if self.kind == "qemu" and self.device_opts:
            out += ["--device-opts", self.device_opts]
        if self.kind in VHOST_USER and self.backend:
            out += ["--backend", self.backend]
        if self.kind == "adapter":
            out += ["--adapter", self.adapter] if self.adapter else ["--adapter-socket", str(self.adapter_socket)]
        if self.timeout != default_timeout(self.kind, self.gl):
            out += ["--timeout", f"{self.timeout:g}"]
        if not self.pixels and self.kind != "reference":
            out.append("--no-pixels")
        if not self.migrate and self.kind == "qemu":
            out.append("--no-migrate")
        return out

    def factory(self, ir: SpecIR, features: Optional[frozenset[str]] = None) -> MakeTarget:
        """A function building a fresh target, its logs in the directory it is given (or its own)."""
        want = features if features is not None else self.features
        timeout = (
            self.timeout if self.timeout is not None else default_timeout(self.kind, self.gl)
        )  # set by __post_init__

        def make(log_dir: Optional[str]) -> Target:
            def at(name: str) -> Optional[str]:
                return os.path.join(log_dir, name) if log_dir else None

            if self.kind == "reference":
                from virtgpu_conform.checker.devices.target import ReferenceTarget

                return ReferenceTarget(ir, want)
            if self.kind == "qemu":
                from virtgpu_conform.checker.devices.qemu import QemuTarget

                device = "virtio-gpu-pci" + (f",{self.device_opts}" if self.device_opts else "")
                return QemuTarget(
                    ir,
                    want,
                    qemu=self.qemu,
                    device=device,
                    log_path=at("qemu-trace.log"),
                    qtest_log=at("qtest.log"),
                    timeout=timeout,
                    extra=self.qemu_args,
                    pixels=self.pixels,
                    migrate=self.migrate,
                    gl=self.gl,
                    name=self.name,
                )
            if self.kind in VHOST_USER:
                from virtgpu_conform.checker.devices.vhost_device_gpu import VhostDeviceGpuTarget
                from virtgpu_conform.checker.devices.vhost_user import SPARES, VhostUserGpuTarget

                made = VhostDeviceGpuTarget if self.kind == "vhost-device-gpu" else VhostUserGpuTarget
                # a campaign's own target is reset for every case; one for a saved case's replay is used once
                return made(
                    ir,
                    want,
                    qemu=self.qemu,
                    extra=self.qemu_args,
                    log_path=at("qemu-trace.log"),
                    qtest_log=at("qtest.log"),
                    backend_log=at("backend.log"),
                    timeout=timeout,
                    spares=0 if log_dir else SPARES,
                    pixels=self.pixels,
                    backend=self.backend,
                    gl=self.gl,
                    name=self.name,
                )
            from virtgpu_conform.checker.devices.adapter import AdapterTarget

            return AdapterTarget(
                ir,
                command=self.adapter,
                features=want,
                socket_path=self.adapter_socket,
                log_path=at("device-stderr.log"),
                timeout=timeout,
            )

        return make


Devices = Union[str, DeviceSpec, Sequence[Union[str, DeviceSpec]]]


def devices_of(target: Devices) -> list[DeviceSpec]:
    items = [target] if isinstance(target, (str, DeviceSpec)) else list(target)
    out = [DeviceSpec(t) if isinstance(t, str) else t for t in items]
    if not out:
        raise ValueError("no device to fuzz")
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ValueError(f"a device named twice ({', '.join(names)}): a differential run takes each once")
    return out


def target_factory(devices: Sequence[DeviceSpec], ir: SpecIR) -> MakeTarget:
    """What a campaign starts: the one device, or for several a MirrorTarget that sends every chain
    to each (the first leads), all negotiated down to the features every one of them agreed to."""
    if len(devices) == 1:
        return devices[0].factory(ir)
    from .differential import MirrorTarget

    def build(log_dir: Optional[str], features: Optional[frozenset[str]]) -> list[Target]:
        built: list[Target] = []
        try:
            for d in devices:
                sub = os.path.join(log_dir, d.name) if log_dir else None
                if sub:
                    os.makedirs(sub, exist_ok=True)
                built.append(
                    d.factory(
                        ir, features if features is not None else (built[0].settings.features if built else None)
                    )(sub)
                )
        except BaseException:
            for b in built:
                b.close()
            raise
        return built

    def make(log_dir: Optional[str]) -> Target:
        built = build(log_dir, None)
        # Every target must see the same device: what they all agreed to, or a request one of
        # them may refuse for a feature it lacks would show up as a divergence.
        common = frozenset.intersection(*(b.settings.features for b in built))
        if any(b.settings.features != common for b in built):
            for b in built:
                b.close()
            built = build(log_dir, common)
        return MirrorTarget(built)

    return make


@dataclass
class FuzzResult:
    """A finished (or stopped) campaign: its `fuzz-result.json` document and where it was written."""

    doc: dict
    out: Optional[str]
    campaign: Optional[Campaign] = field(default=None, repr=False)

    @property
    def findings(self) -> list[dict]:
        return self.doc["findings"]

    @property
    def failing(self) -> list[dict]:
        """Findings the device fails on (violation, crash, liveness); divergences are not."""
        return [f for f in self.findings if f["kind"] in FAILING]

    @property
    def commands(self) -> int:
        return self.doc["commands"]

    def to_json(self) -> dict:
        return self.doc

    def assert_conformant(self) -> None:
        """Raise DeviceNotConformant listing each failing finding with its reproducer; a campaign that
        sent nothing, or stopped on a bug in the tool, never passes."""
        lines = [
            f"{f['kind']}: {f['command'] or 'any command'} {f['check']}: {f['message']}"
            + (f" (reproducer: {f['reproducer']})" if f["reproducer"] else "")
            for f in self.failing
        ]
        if self.doc["commands"] == 0:
            lines.append("nothing was sent to the device")
        if self.doc["error"]:
            lines.append(
                f"the campaign stopped on a bug in the tool: {self.doc['error']['type']}: "
                f"{self.doc['error']['message']}"
            )
        if lines:
            raise DeviceNotConformant(
                f"{self.doc['target']}: {len(lines)} problem{'s' if len(lines) > 1 else ''}:\n" + "\n".join(lines)
            )


def fuzz(
    target: Devices = "reference",
    time: Optional[float] = None,
    examples: Optional[int] = None,
    seed: int = 0,
    steps: int = 40,
    out: Optional[str] = None,
    profile: str = "strict",
    survey: bool = False,
    pipeline: Optional[bool] = None,
    cpu: str = "auto",
    spec: Union[SpecIR, Protocol, None] = None,
    progress: Optional[Callable[[Campaign], None]] = None,
    started: Optional[Callable[[Campaign], None]] = None,
) -> FuzzResult:
    """Drive a device with model-guided command sequences for `time` seconds or `examples` cases
    (60 s when neither is given).

    `target`: a kind ("qemu"), a DeviceSpec, or several for a differential run. `out`: where
    findings, reproducers and `fuzz-result.json` go (nothing is written without it). `survey`:
    note findings, shrink none. `pipeline`: send from a process of its own (default: for a
    survey of a device process when two CPUs are usable). `cpu`: the CPU for the tool and the
    device ("auto", a number, or "any"). Raises TargetError when the device cannot run here.
    Ctrl-C stops the campaign and keeps what was found (`doc["stopped"] == "interrupted"`).
    """
    from .campaign import Campaign

    devices = devices_of(target)
    protocol = protocol_for(spec)
    pin = affinity.choose(cpu)
    if time is None and examples is None:
        time = 60.0
    if pipeline is None:  # before pinning narrows what this process may use
        pipeline = survey and any(d.kind != "reference" for d in devices) and len(affinity.usable()) >= 2
    with affinity.pinned(pin):  # before any target starts: its processes inherit the CPU
        try:
            camp = Campaign(
                protocol,
                target_factory(devices, protocol.ir),
                profile=profile,
                out=out,
                seed=seed,
                steps=steps,
                progress=progress,
                pipeline=pipeline,
                hunt=not survey,
            )
        except DeviceRefused as exc:
            return FuzzResult(refused_result(devices, protocol, seed, profile, exc, out), out, None)
        if started is not None:
            started(camp)
        camp.run(seconds=time, examples=examples)
    return FuzzResult(camp.final or camp.result(), out, camp)


def refused_result(
    devices: Sequence[DeviceSpec], protocol: Protocol, seed: int, profile: str, exc: DeviceRefused, out: Optional[str]
) -> dict:
    """The result of a campaign whose device would not be made as configured: nothing was sent, and
    the refusal (the device program's own words) is what there is to know."""
    from .campaign import RESULT_SCHEMA, RESULT_VERSION, write_result

    doc = {
        "schema": RESULT_SCHEMA,
        "version": RESULT_VERSION,
        "target": "+".join(d.name for d in devices),
        "device": str(exc).split("\n", 1)[0],
        "seed": seed,
        "profile": profile,
        "spec_version": protocol.ir.version,
        "commands": 0,
        "cases": 0,
        "rounds": 0,
        "migrations": 0,
        "pipelined": False,
        "seconds": 0.0,
        "stopped": "refused",
        "error": None,
        "z3_questions": 0,
        "flaky": [],
        "notes": [f"the device refuses to be made as configured: {exc.reason}"],
        "cpus": [],
        "not_sent": [],
        "findings": [],
        "requirements": {},
        "differential": None,
    }
    if out:
        write_result(out, doc)
    return doc


@dataclass
class ReplayResult:
    """A saved case sent again: what the oracle saw, and the new trace of it."""

    steps: int
    trace: str
    observations: list[Observation]
    reproducer: list[str] = field(default_factory=list)  # in the device's own form: repro.qtest, repro.sh
    migrations: int = 0  # of the steps, those that moved the device to a new process

    @property
    def failing(self) -> list[Observation]:
        return [o for o in self.observations if o.signature.kind in FAILING]


def replay(
    case: str,
    target: Union[str, DeviceSpec] = "reference",
    out: Optional[str] = None,
    profile: str = "strict",
    cpu: str = "auto",
    spec: Union[SpecIR, Protocol, None] = None,
) -> ReplayResult:
    """Re-run a saved case (a `repro.ndjson`) on a fresh device; its new trace and the device's logs go
    to `out` (default: the case's own directory) as `replay.ndjson`."""
    from .replay import replay as send_again
    from .replay import steps_from_trace

    device = DeviceSpec(target) if isinstance(target, str) else target
    protocol = protocol_for(spec)
    steps = steps_from_trace(case, protocol.codec)
    dest = out or os.path.dirname(os.path.abspath(case))
    os.makedirs(dest, exist_ok=True)
    with affinity.pinned(affinity.choose(cpu)):
        t = device.factory(protocol.ir)(dest)
        try:
            trace = os.path.join(dest, "replay.ndjson")
            obs, native = send_again(protocol, t, steps, trace, profile, f"fuzz --replay {os.path.abspath(case)}")
        finally:
            t.close()
    return ReplayResult(len(steps), trace, obs, native, sum(s.queue == MIGRATION for s in steps))
