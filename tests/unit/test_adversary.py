"""The rules read as a generator (model/adversary.py): z3's edge values do what they claim in the
state they were asked for, and a question that differs only in a value the rules compare to
constants (a resource id) is answered from the cache, still correctly."""

import pytest

from virtgpu_conform.model.adversary import Edges
from virtgpu_conform.model.device import ReferenceDevice
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.spec.load import load_snapshot

W, H = 64, 32


@pytest.fixture(scope="module")
def protocol():
    return Protocol(load_snapshot())


def _display(p: Protocol) -> ReferenceDevice:
    """Two resources of the same size, both backed; resource 1 on scanout 0."""
    dev = ReferenceDevice(p.ir, protocol=p)
    e = p.codec.encode
    dev.handle(e("VIRTIO_GPU_CMD_GET_DISPLAY_INFO"))
    dev.handle(e("VIRTIO_GPU_CMD_GET_EDID", {"scanout": 0}))
    for rid in (1, 2):
        dev.handle(e("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": rid, "format": 1, "width": W, "height": H}))
        dev.handle(
            e(
                "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
                {"resource_id": rid},
                [{"addr": 0x100000 * rid, "length": W * H * 4}],
            )
        )
    dev.handle(e("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0, "resource_id": 1, "r.width": W, "r.height": H}))
    return dev


def _failed(p: Protocol, state, command: str, fields: dict) -> set[str]:
    out = p.expect(state, p.codec.decode_request(p.codec.encode(command, fields)))
    assert out is not None and not out.unknown
    return {c.id for c in out.failed}


@pytest.mark.parametrize(
    "command", ["VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", "VIRTIO_GPU_CMD_RESOURCE_FLUSH", "VIRTIO_GPU_CMD_SET_SCANOUT"]
)
def test_edges_hold_what_they_claim(protocol, command):
    p, edges = protocol, Edges(protocol)
    state = _display(p).state
    fixed = {"resource_id": 1, "hdr.ctx_id": 0}
    if "scanout_id" in p.codec.layout(command).keys:
        fixed["scanout_id"] = 0
    aimed = 0
    for check, edge in edges.targets(command):
        # The rectangle's checks: every fact they read is known in this state. (A check on a fact the
        # state does not have yet, a fence timeline say, gets z3's best guess at it, not a promise.)
        if not any(n.startswith("r.") for c in p.rules[command].checks if c.id == check for n in c.full.vars()):
            continue
        got = edges.edge(state, command, fixed, check, edge)
        if got is None:
            continue
        aimed += 1
        failed = _failed(p, state, command, {**got, **fixed})
        if edge == "satisfy":
            assert check not in failed, (check, got)
        else:
            assert check in failed, (check, got)
    assert aimed >= 2  # the rectangle checks at least, one edge each way
    valid = edges.valid(state, command, fixed)
    assert valid is not None
    failed = _failed(p, state, command, {**valid, **fixed})
    assert not {c.id for c in p.rules[command].checks if c.errors is not None} & failed


def test_a_new_resource_id_in_the_same_state_asks_z3_nothing_new(protocol):
    # A cache of its own: the process's one holds whatever earlier tests asked (a fuzz campaign
    # may have asked about resource 9 already), and this test counts questions.
    p, edges = protocol, Edges(protocol, cache={})
    state = _display(p).state
    command, check = "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", None
    for c in p.rules[command].checks:
        if any(n.startswith("r.") for n in c.full.vars()):
            check = c.id
            break
    assert check is not None
    first = edges.edge(state, command, {"resource_id": 1, "hdr.ctx_id": 0}, check, "violate")
    asked = edges.solved
    assert asked == 1
    # Resource 2 has the same size and backing: the same question, so the cached answer, which holds there too.
    second = edges.edge(state, command, {"resource_id": 2, "hdr.ctx_id": 0}, check, "violate")
    assert edges.solved == asked
    assert second == first
    assert check in _failed(p, state, command, {**second, "resource_id": 2, "hdr.ctx_id": 0})
    # A resource that does not exist changes the facts: z3 is asked again.
    edges.edge(state, command, {"resource_id": 9, "hdr.ctx_id": 0}, check, "violate")
    assert edges.solved == asked + 1
