"""The migration oracle on QEMU's real virtio-gpu-pci: a device moved to a new QEMU mid-case keeps what
it held, the one left behind answers beside it, and a device that loses its state is a migration finding
whose saved case migrates again when replayed."""

from __future__ import annotations

import json
import os

import pytest

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.devices.target import MIGRATION
from virtgpu_conform.checker.fuzz import machine
from virtgpu_conform.checker.fuzz.replay import replay
from virtgpu_conform.checker.fuzz.step import Step
from virtgpu_conform.model.protocol import Protocol

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]
OK_NODATA, ERR_INVALID_RESOURCE_ID = 0x1100, 0x1203


def _type(data: bytes) -> int:
    return int.from_bytes(data[:4], "little")


def _case(codec) -> list[Step]:
    create = codec.encode(
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 64, "height": 64}
    )
    again = Step("controlq", [create], [24], "valid RESOURCE_CREATE_2D")
    return [again, Step(MIGRATION, [], [], "migration"), again]


def test_a_migrated_device_keeps_its_resources_and_its_twin_answers_alike(ir, tmp_path):
    t = QemuTarget(ir, log_path=str(tmp_path / "qemu-trace.log"), migrate=True)
    try:
        steps = _case(Protocol(ir).codec)
        first = t.send(steps[0].queue, steps[0].outs, steps[0].ins)
        assert first.status == "answered" and _type(first.data) == OK_NODATA and first.twin is None
        source = t.q
        assert t.send(MIGRATION, [], []).status == "answered"
        assert t.q is not source and t.twin is not None and t.twin.q is source
        again = t.send(steps[2].queue, steps[2].outs, steps[2].ins)
        # resource 1 came along: creating it again is refused, by the moved device and the one left behind
        assert _type(again.data) == ERR_INVALID_RESOURCE_ID
        assert again.twin is not None and (again.twin.status, again.twin.data) == (again.status, again.data)
        # each QEMU kept its own log
        assert (tmp_path / "qemu-trace.log").stat().st_size > 0
        assert (tmp_path / "qemu-trace.migrated.log").stat().st_size > 0
        t.reset()  # the next case has no twin, and the QEMU left behind is gone
        assert t.twin is None and not source.alive
    finally:
        t.close()


def test_a_device_that_loses_its_state_in_a_migration_is_a_migration_finding(ir, tmp_path, monkeypatch):
    """A planted defect: the moved device comes up reset (its resources gone); the twin still has them."""
    moved = QemuTarget._migrate

    def forgetful(self):
        reply = moved(self)
        self._initialise()  # a virtio reset of the new device: what a load that lost the state leaves
        return reply

    monkeypatch.setattr(QemuTarget, "_migrate", forgetful)
    p = Protocol(ir)
    t = QemuTarget(ir, log_path=str(tmp_path / "qemu-trace.log"), migrate=True)
    try:
        obs, native = replay(p, t, _case(p.codec), str(tmp_path / "repro.ndjson"))
    finally:
        t.close()
    moved_ = [o for o in obs if o.signature.kind == "migration"]
    assert [str(o.signature) for o in moved_] == ["migration: RESOURCE_CREATE_2D answer-changed"], obs
    assert "OK_NODATA after a migration; the device not migrated answered ERR_INVALID_RESOURCE_ID" in moved_[0].message
    assert native == []  # a session over two QEMUs has no one qtest script
    records = [json.loads(line) for line in (tmp_path / "repro.ndjson").read_text().splitlines()]
    assert [r["kind"] for r in records[1:]] == ["request", "response", "migration", "request", "response"]
    # the saved case migrates again when replayed (the planted defect still in place)
    again = vgc.replay(str(tmp_path / "repro.ndjson"), vgc.DeviceSpec("qemu", migrate=True), str(tmp_path / "again"))
    assert "migration: RESOURCE_CREATE_2D answer-changed" in [str(o.signature) for o in again.failing]
    assert os.path.exists(tmp_path / "again" / "qemu-trace.migrated.log")


def test_a_campaign_migrates_now_and_then_and_qemu_keeps_its_state(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "MIGRATE_TOP", 1)  # every other `moving` rule: a short campaign migrates
    r = vgc.fuzz("qemu", examples=60, seed=2, steps=20, survey=True, out=str(tmp_path / "out"))
    assert r.doc["migrations"] > 0, r.doc["migrations"]
    assert not [f for f in r.findings if f["kind"] == "migration"], r.findings  # QEMU 7.2's 2D device keeps it all
    off = vgc.fuzz(vgc.DeviceSpec("qemu", migrate=False), examples=20, seed=2, steps=20, survey=True)
    assert off.doc["migrations"] == 0


def test_a_machine_qemu_will_not_migrate_stops_the_migrations_without_a_finding(tmp_path, monkeypatch):
    """A real migration blocker: ivshmem in peer mode (its default). The first migration is refused;
    the campaign says so once and migrates no more, and nothing of it is a finding."""
    blocked = vgc.DeviceSpec(
        "qemu",
        qemu_args=("-object", "memory-backend-ram,id=hm,size=1M,share=on", "-device", "ivshmem-plain,memdev=hm"),
    )
    monkeypatch.setattr(machine, "MIGRATE_TOP", 1)
    r = vgc.fuzz(blocked, examples=60, seed=2, steps=20, survey=True, out=str(tmp_path / "out"))
    assert r.doc["migrations"] == 0
    assert len(r.doc["notes"]) == 1 and "ivshmem" in r.doc["notes"][0], r.doc["notes"]
    assert not [f for f in r.findings if f["kind"] == "migration"], r.findings


@pytest.mark.parametrize(
    "view, lost",
    [
        ({"r.x": 0, "r.y": 0, "r.width": 64, "r.height": 32}, False),  # the whole resource: nothing to lose
        ({"r.x": 2, "r.y": 1, "r.width": 48, "r.height": 24}, True),
    ],
)
def test_qemu_72_shows_the_whole_resource_after_a_migration_not_the_scanout_rectangle(ir, view, lost):
    """A display set up, the device moved, then the flush. QEMU 7.2's load rebuilds each scanout's surface
    from the whole resource: a scanout showing part of one shows all of it after the move (fixed upstream
    by "virtio-gpu: fix scanout migration post-load", QEMU 9.0). The device left behind shows it right."""
    from test_pixel_oracle_devices import _scene

    from virtgpu_conform.checker.fuzz.oracle import Oracle, screen_of
    from virtgpu_conform.checker.fuzz.record import session_header

    p = Protocol(ir)
    steps = _scene(p.codec, 1, view)
    steps = [*steps[:-1], Step(MIGRATION, [], [], "migration"), steps[-1]]
    with QemuTarget(ir, pixels=True, migrate=True) as t:
        t.reset()
        oracle = Oracle(p, session_header(ir, t), screen=screen_of(t))
        seen = []
        for s in steps:
            seen += oracle.step(s.queue, s.outs, s.ins, t.send(s.queue, s.outs, s.ins))
    assert oracle.pixel_checks == 1
    if not lost:
        assert seen == []
        return
    assert [(str(o.signature), o.message) for o in seen] == [
        (
            "migration: RESOURCE_FLUSH picture-changed",
            "after a migration, scanout 0 shows a 64x32 picture, the 48x24 scanout rectangle was expected; "
            "the device not migrated shows the picture expected",
        )
    ]


def test_the_saved_migration_finding_replays_on_qemu(tmp_path):
    """The case the test above builds, saved: `fuzz --replay` migrates where its record says and sees it again."""
    from pathlib import Path

    from click.testing import CliRunner

    from virtgpu_conform.checker.cli.main import main

    case = Path(__file__).parent.parent / "data" / "fuzz" / "qemu-7.2-scanout-rectangle-lost-in-migration.ndjson"
    r = CliRunner().invoke(main, ["fuzz", "--replay", str(case), "--target", "qemu", "--out", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "replayed 6 requests and 1 migration" in r.output, r.output
    assert "line 13: migration: RESOURCE_FLUSH picture-changed" in r.output, r.output
    assert (tmp_path / "qemu-trace.migrated.log").exists()
