"""Requests the generator once never built, sent to QEMU's real virtio-gpu-pci: driver writes to the
device configuration, and backing in as many entries as QEMU allows and one more."""

from __future__ import annotations

import pytest

from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.devices.target import CONFIG, Reply, config_step
from virtgpu_conform.checker.fuzz.machine import MANY_ENTRIES, RAM_BACKING
from virtgpu_conform.checker.fuzz.oracle import Oracle
from virtgpu_conform.checker.fuzz.record import session_header
from virtgpu_conform.model.protocol import Protocol

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]
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
