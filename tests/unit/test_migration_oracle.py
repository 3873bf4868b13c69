"""The migration oracle without a device: how a move and the answers after it are judged and recorded."""

from __future__ import annotations

import json

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices.target import MIGRATION, ReferenceTarget, Reply
from virtgpu_conform.checker.fuzz.oracle import Oracle
from virtgpu_conform.checker.fuzz.record import session_header
from virtgpu_conform.checker.fuzz.replay import steps_from_trace
from virtgpu_conform.model.protocol import Protocol

OK_NODATA = (0x1100).to_bytes(4, "little") + bytes(20)
INVALID_ID = (0x1203).to_bytes(4, "little") + bytes(20)


def _oracle(ir) -> tuple[Protocol, Oracle, bytes]:
    p = Protocol(ir)
    create = p.codec.encode(
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 8, "height": 8}
    )
    return p, Oracle(p, session_header(ir, ReferenceTarget(ir))), create


def test_an_answer_that_differs_from_the_twins_is_a_migration_finding(ir):
    _, o, create = _oracle(ir)
    assert o.step("controlq", [create], [24], Reply("answered", OK_NODATA)) == []
    assert o.step(MIGRATION, [], [], Reply("answered")) == []
    same = o.step("controlq", [create], [24], Reply("answered", INVALID_ID, twin=Reply("answered", INVALID_ID)))
    assert [str(x.signature) for x in same] == []
    lost = o.step("controlq", [create], [24], Reply("answered", OK_NODATA, twin=Reply("answered", INVALID_ID)))
    moved = [x for x in lost if x.signature.kind == "migration"]
    assert [str(x.signature) for x in moved] == ["migration: RESOURCE_CREATE_2D answer-changed"]
    assert moved[0].message == (
        "answered OK_NODATA after a migration; the device not migrated answered ERR_INVALID_RESOURCE_ID"
    )
    # the model judges the answer too: resource 1 exists, so OK_NODATA breaks the spec
    assert any(x.signature.kind == "violation" for x in lost)


def test_a_move_the_device_does_not_survive_is_a_finding_and_a_refused_one_is_not(ir):
    _, o, _ = _oracle(ir)
    assert o.step(MIGRATION, [], [], Reply("refused", detail="a blocker")) == []
    died = o.step(MIGRATION, [], [], Reply("died", detail="the new QEMU exited while loading the state"))
    assert [(str(x.signature), x.message) for x in died] == [
        ("migration: any command migration-failed", "the new QEMU exited while loading the state")
    ]
    kinds = [json.loads(line)["kind"] for line in o.text().splitlines()]
    assert kinds == ["session", "migration", "migration"]


def test_a_saved_migration_is_read_by_check_and_replayed_as_one(ir, tmp_path):
    p, o, create = _oracle(ir)
    o.step("controlq", [create], [24], Reply("answered", OK_NODATA))
    o.step(MIGRATION, [], [], Reply("answered"))
    o.step("controlq", [create], [24], Reply("answered", INVALID_ID))
    case = tmp_path / "repro.ndjson"
    case.write_text(o.text())
    steps = steps_from_trace(str(case), p.codec)
    assert [s.queue for s in steps] == ["controlq", MIGRATION, "controlq"]
    # check reads on across the move with the same state: the second create of id 1 is the driver's error
    result = vgc.check_trace([str(case)])
    session = result.sessions[0]
    assert session.exchanges == 2 and session.checker.diagnostics == {}
    # the driver's second create names a live id, and the device refused it as it should
    assert [(f.side, f.where.line) for f in session.findings] == [("driver", 5)]
    # the reference device keeps its state across a move (the model is the same object)
    t = ReferenceTarget(ir)
    assert t.send(MIGRATION, [], []).status == "answered" and not t.migrates
