"""virtgpu-conform: conformance tooling for virtio-gpu devices and drivers, as a library.

    import virtgpu_conform as vgc

    result = vgc.check_trace("traces/qemu-7.2/fbdev-modetest")   # a recorded session
    result.assert_conformant()                                    # NotConformant lists the findings
    campaign = vgc.fuzz("qemu", time=30, out="fuzz-out")           # drive a real device
    html = vgc.report([result, campaign], format="html")

Every error raised on purpose is a `virtgpu_conform.Error`. The package's parts are
`virtgpu_conform.spec` (the SpecIR), `.model` (the protocol model) and `.checker` (the
engines); the names here are what the CLI, the pytest plugin, the tests and the benchmarks use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from virtgpu_conform.checker.version import __version__
from virtgpu_conform.spec.errors import Error

if TYPE_CHECKING:
    from virtgpu_conform.checker.check.findings import Finding
    from virtgpu_conform.checker.check.session import CheckResult, NotConformant, SessionResult, check_trace
    from virtgpu_conform.checker.devices.target import TargetError
    from virtgpu_conform.checker.fuzz.run import DeviceNotConformant, DeviceSpec, FuzzResult, ReplayResult, fuzz, replay
    from virtgpu_conform.checker.report import report
    from virtgpu_conform.checker.report.results import ResultError
    from virtgpu_conform.checker.traces.events import TraceError
    from virtgpu_conform.spec.errors import SpecSourceError
    from virtgpu_conform.spec.ir import SpecIR
    from virtgpu_conform.spec.load import load_spec

# Imported on first use, so that `import virtgpu_conform.spec` stays as light as the parser needs.
_LAZY = {
    "check_trace": "virtgpu_conform.checker.check.session",
    "CheckResult": "virtgpu_conform.checker.check.session",
    "SessionResult": "virtgpu_conform.checker.check.session",
    "NotConformant": "virtgpu_conform.checker.check.session",
    "Finding": "virtgpu_conform.checker.check.findings",
    "fuzz": "virtgpu_conform.checker.fuzz.run",
    "replay": "virtgpu_conform.checker.fuzz.run",
    "DeviceSpec": "virtgpu_conform.checker.fuzz.run",
    "FuzzResult": "virtgpu_conform.checker.fuzz.run",
    "ReplayResult": "virtgpu_conform.checker.fuzz.run",
    "DeviceNotConformant": "virtgpu_conform.checker.fuzz.run",
    "report": "virtgpu_conform.checker.report",
    "load_spec": "virtgpu_conform.spec.load",
    "SpecIR": "virtgpu_conform.spec.ir",
    "SpecSourceError": "virtgpu_conform.spec.errors",
    "TraceError": "virtgpu_conform.checker.traces.events",
    "TargetError": "virtgpu_conform.checker.devices.target",
    "ResultError": "virtgpu_conform.checker.report.results",
}

__all__ = [
    "Error",
    "__version__",
    "check_trace",
    "CheckResult",
    "SessionResult",
    "NotConformant",
    "Finding",
    "fuzz",
    "replay",
    "DeviceSpec",
    "FuzzResult",
    "ReplayResult",
    "DeviceNotConformant",
    "report",
    "load_spec",
    "SpecIR",
    "SpecSourceError",
    "TraceError",
    "TargetError",
    "ResultError",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'virtgpu_conform' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
