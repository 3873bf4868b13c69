"""Requests the generator once never built, sent to QEMU's real virtio-gpu-pci: driver writes to the
device configuration, backing in as many entries as QEMU allows and one more, a virtio reset mid-case
(with a chain pending, with the queues kicked before they are set up), a stalled device reset, and
device options at their edges (a refusal is a result)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.devices.target import (
    CONFIG,
    DEVICE_RESET,
    EARLY_NOTIFY,
    PENDING,
    DeviceRefused,
    Reply,
    TargetError,
    config_step,
)
from virtgpu_conform.checker.fuzz.machine import MANY_ENTRIES, RAM_BACKING
from virtgpu_conform.checker.fuzz.oracle import Oracle
from virtgpu_conform.checker.fuzz.record import session_header
from virtgpu_conform.model.protocol import Protocol

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]
REPO = Path(__file__).resolve().parents[2]
OK_NODATA, ERR_UNSPEC = 0x1100, 0x1200


def _type(r: Reply) -> int:
    return int.from_bytes(r.data[:4], "little")


def test_qemu_clears_events_and_ignores_writes_to_the_fields_it_sets(ir):
    p = Protocol(ir)
    cfg = p.codec.config
    off = dict(zip(cfg.keys, cfg.offsets))
    with QemuTarget(ir) as t:
        o = Oracle(p, session_header(ir, t))
        seen = []
        for key, data in [
            ("events_clear", b"\xff\xff\xff\xff"),
            ("num_scanouts", (7).to_bytes(4, "little")),
            ("num_capsets", b"\x05\x00"),
            ("events_read", b"\x01"),
        ]:
            r = t.send(CONFIG, [config_step(off[key], data)], [cfg.size])
            assert r.status == "answered" and len(r.data) == 2 * cfg.size
            before, after = p.codec.decode_config(r.data[: cfg.size]), p.codec.decode_config(r.data[cfg.size :])
            assert after["num_scanouts"] == before["num_scanouts"] == 1 and after["num_capsets"] == 0
            seen += o.step(CONFIG, [config_step(off[key], data)], [cfg.size], r)
        assert seen == []  # the driver's events_read write is the fuzzer's own doing, not the device's
        # the device still answers commands after them
        r = t.send("controlq", [p.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")], [408])
        assert r.status == "answered" and _type(r) == 0x1101
        log = open(t.log_path).read()
    assert "virtio_gpu" in log


def test_qemu_refuses_backing_in_more_than_16384_entries(ir):
    """The spec sets no limit on nr_entries; QEMU refuses more than 16384 with ERR_UNSPEC, which the
    model reads as an error to a valid request (informal)."""
    p = Protocol(ir)
    e = p.codec.encode
    with QemuTarget(ir) as t:
        o = Oracle(p, session_header(ir, t))
        answers, seen = [], []
        for rid, n in zip((1, 2), MANY_ENTRIES):
            create = e(
                "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": rid, "format": 1, "width": 64, "height": 64}
            )
            size = -(-64 * 64 * 4 // n)
            entries = [{"addr": RAM_BACKING + i * size, "length": size} for i in range(n)]
            attach = e("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", {"resource_id": rid}, entries)
            for data in (create, attach):
                r = t.send("controlq", [data], [24])
                seen += o.step("controlq", [data], [24], r)
            answers.append(_type(r))
    assert MANY_ENTRIES == (16384, 16385) and answers == [OK_NODATA, ERR_UNSPEC]
    assert [(str(x.signature), x.line) for x in seen] == [
        ("violation: RESOURCE_ATTACH_BACKING response-type [informal]", 8)
    ]


def test_a_reset_mid_case_with_a_chain_pending_and_early_kicks_leaves_qemu_fresh(ir):
    p = Protocol(ir)
    e = p.codec.encode
    create = e("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 8, "height": 8})
    with QemuTarget(ir) as t:
        o = Oracle(p, session_header(ir, t))
        seen = o.step("controlq", [create], [24], t.send("controlq", [create], [24]))
        for flags in (0, PENDING, EARLY_NOTIFY, PENDING | EARLY_NOTIFY):
            r = t.send(DEVICE_RESET, [bytes([flags])], [])
            assert r.status == "answered", r
            seen += o.step(DEVICE_RESET, [bytes([flags])], [], r)
            # resource 1 went with the reset: creating it again is answered OK (the model agrees)
            again = t.send("controlq", [create], [24])
            assert _type(again) == OK_NODATA
            seen += o.step("controlq", [create], [24], again)
        # a kicked cursor queue before set-up was ignored; the cursor queue still works
        move = e("VIRTIO_GPU_CMD_MOVE_CURSOR", {"pos.x": 1})
        assert t.send("cursorq", [move], [24]).status == "answered"
        assert t.starts == 1
    assert seen == []
    records = [json.loads(line) for line in o.text().splitlines()]
    assert [r.get("how") for r in records if r["kind"] == "reset"] == [
        None,
        ["pending"],
        ["early_notify"],
        ["pending", "early_notify"],
    ]


def test_a_stalled_qemu_is_reset_not_restarted_when_it_answers_again(ir):
    """QEMU 7.2 never answers a 4-byte request (tests/data/fuzz/qemu-7.2-short-header-never-answered);
    a virtio reset brings its queue back, so the next case needs no new QEMU."""
    p = Protocol(ir)
    with QemuTarget(ir, timeout=0.3) as t:
        stalled = t.send("controlq", [bytes.fromhex("01020000")], [24])
        if stalled.status == "answered":
            pytest.skip("this QEMU answers a 4-byte request: nothing stalls")
        assert stalled.status == "no-answer"
        t.reset()
        assert (t.starts, t.stall_resets) == (1, 1)
        r = t.send("controlq", [p.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")], [408])
        assert r.status == "answered" and _type(r) == 0x1101


@pytest.mark.parametrize(
    "opts, refused",
    [
        ("max_outputs=17", "invalid max_outputs > 16"),
        ("blob=true", "cannot enable blob resources without udmabuf"),
        ("max_outputs=16", None),
        ("xres=1,yres=1", None),
        ("edid=off", None),
    ],
)
def test_device_options_at_their_edges_run_or_are_refused_as_a_result(tmp_path, opts, refused):
    if opts == "blob=true" and os.path.exists("/dev/udmabuf"):
        pytest.skip("this host has udmabuf: QEMU 7.2 accepts blob=true")
    out = tmp_path / "out"
    r = vgc.fuzz(vgc.DeviceSpec("qemu", device_opts=opts), examples=4, steps=10, seed=1, survey=True, out=str(out))
    doc = json.loads((out / "fuzz-result.json").read_text())
    if refused:
        assert (r.doc["stopped"], r.commands) == ("refused", 0)
        assert doc["notes"] == [f"the device refuses to be made as configured: {refused}"]
        schema = json.loads((REPO / "docs" / "schemas" / "fuzz-result.schema.json").read_text())
        assert not list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    else:
        assert r.commands > 0 and doc["stopped"] == "examples"
        if opts == "max_outputs=16":
            assert r.campaign is not None and r.campaign.target.settings.num_scanouts == 16


def test_an_option_qemu_cannot_read_is_the_users_error_not_a_refusal(tmp_path):
    with pytest.raises(TargetError) as err:
        vgc.fuzz(vgc.DeviceSpec("qemu", device_opts="nosuch=1"), examples=2, out=str(tmp_path / "out"))
    assert not isinstance(err.value, DeviceRefused)
    assert "Property 'virtio-gpu-pci.nosuch' not found" in str(err.value)


def test_a_qemu_campaign_writes_the_config_and_resets_the_device(tmp_path, monkeypatch):
    from virtgpu_conform.checker.devices import qemu as qemu_mod
    from virtgpu_conform.checker.fuzz import machine

    sent: list[str] = []
    real_send = QemuTarget.send

    def spy(self, queue, outs, in_sizes):
        sent.append(queue)
        return real_send(self, queue, outs, in_sizes)

    monkeypatch.setattr(qemu_mod.QemuTarget, "send", spy)
    monkeypatch.setattr(machine, "RESET_TOP", 0)
    monkeypatch.setattr(machine, "CONFIG_TOP", 0)
    r = vgc.fuzz("qemu", examples=20, seed=1, steps=15, survey=True, pipeline=False, out=str(tmp_path / "out"))
    assert r.commands > 0 and sent.count(DEVICE_RESET) > 0 and sent.count(CONFIG) > 0
