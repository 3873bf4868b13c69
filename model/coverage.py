"""Which requirements of the SpecIR the rules enforce, and why the others cannot be checked from command traffic."""

from __future__ import annotations

from dataclasses import dataclass

from virtgpu_conform.spec.ir import Requirement

from .protocol import EVENTS_READ_RO, Protocol
from .rules_common import RING_COMPLETE

_TRANSPORT = "a transport-level duty (config space, PCI capabilities), not visible in command traffic"
_PERMISSION = "a permission: no traffic can break it"
_TIMING = "about when processing ends inside the device, which request/response traffic does not show"

# Requirement ID -> why no rule can check it from the commands and responses alone.
NOT_CHECKABLE: dict[str, str] = {
    "events/VIRTIO_GPU_EVENT_DISPLAY/driver-SHOULD": "reacts to a config-change interrupt, which command traces do not carry",
    "events/VIRTIO_GPU_EVENT_DISPLAY/device-SHOULD": "reacts to a config-change interrupt, which command traces do not carry",
    "device-requirements-device-initialization/driver/driver-MAY": _PERMISSION,
    "device-requirements-device-initialization/driver/driver-SHOULD": "shared memory regions are discovered through PCI capabilities, not commands",
    "device-requirements-device-initialization/shmid/device-MUST": _TRANSPORT,
    "device-requirements-device-operation-command-lifecycle-and-fencing/device/device-MAY": _PERMISSION,
    "device-requirements-device-operation-command-lifecycle-and-fencing/device/device-MUST": _TIMING,
    "device-operation-controlq/VIRTIO_GPU_CMD_SET_SCANOUT_BLOB/driver-MAY": _PERMISSION,
    "device-operation-controlq-3d/VIRTIO_GPU_CMD_CTX_CREATE/device-MUST.2": "the SUBMIT_3D stream is opaque to the spec; only the capset's renderer can judge it",
}

# Requirements enforced by the protocol's bookkeeping rather than a per-command check.
BOOKKEEPING = {
    RING_COMPLETE: "fence timelines: ring-timeline-completion (Protocol.finish)",
    EVENTS_READ_RO: "config writes: config-events-read (Protocol.config_write)",
}


@dataclass(frozen=True)
class Row:
    requirement: Requirement
    status: str  # enforced | not-checkable | uncovered
    by: tuple[str, ...]  # "check-id: COMMAND, ..." for each check, obligation or success demand citing it
    reason: str = ""


def coverage(p: Protocol) -> list[Row]:
    cites: dict[str, dict[str, list[str]]] = {}  # requirement -> check id -> commands

    def cite(rid: str, what: str, command: str) -> None:
        cites.setdefault(rid, {}).setdefault(what, []).append(command.removeprefix("VIRTIO_GPU_CMD_"))

    for rule in p.rules.values():
        for item in rule.checks + rule.obligations:
            for rid in item.reqs:
                cite(rid, item.id, rule.command)
        for rid in rule.ok_reqs:
            cite(rid, "success", rule.command)
    every = len(p.rules)

    def render(rid: str) -> tuple[str, ...]:
        out = [
            f"{what}: " + ("every command" if len(cmds) == every else ", ".join(cmds))
            for what, cmds in cites.get(rid, {}).items()
        ]
        if rid in BOOKKEEPING:
            out.append(BOOKKEEPING[rid])
        return tuple(out)

    rows = []
    for req in p.ir.requirements:
        by = render(req.id)
        if by:
            rows.append(Row(req, "enforced", by))
        elif req.id in NOT_CHECKABLE:
            rows.append(Row(req, "not-checkable", (), NOT_CHECKABLE[req.id]))
        else:
            rows.append(Row(req, "uncovered", (), "no rule cites it and no reason is recorded"))
    return rows


def counts(rows: list[Row]) -> dict[str, dict[str, int]]:
    """status -> basis -> count."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        by_basis = out.setdefault(r.status, {})
        by_basis[r.requirement.basis] = by_basis.get(r.requirement.basis, 0) + 1
    return out
