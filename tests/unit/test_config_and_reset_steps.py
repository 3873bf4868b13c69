"""Steps on no queue: driver writes to the device configuration (the native `config` record, how
`check` judges one, the reference device's answer, the fuzzer's `configure` rule) and virtio resets
mid-case (the `restart` rule, the native `reset` record's `how`)."""

from __future__ import annotations

import json

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices import target as target_mod
from virtgpu_conform.checker.devices.target import (
    CONFIG,
    DEVICE_RESET,
    EARLY_NOTIFY,
    PENDING,
    ReferenceTarget,
    config_of_step,
    config_step,
)
from virtgpu_conform.checker.fuzz import machine
from virtgpu_conform.checker.fuzz.record import session_header
from virtgpu_conform.checker.fuzz.replay import steps_from_trace
from virtgpu_conform.model.coverage import coverage
from virtgpu_conform.model.protocol import EVENTS_READ_RO, Protocol


def _config(codec, events_read=0, num_scanouts=1, num_capsets=0) -> bytes:
    return codec.encode_config({"events_read": events_read, "num_scanouts": num_scanouts, "num_capsets": num_capsets})


def _trace(tmp_path, ir, *records) -> str:
    head = session_header(ir, ReferenceTarget(ir))
    lines = [json.dumps({"kind": "session", "format": "virtgpu-conform-trace", "version": 1, **head})]
    lines += [json.dumps(r) for r in records]
    path = tmp_path / "config.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _record(codec, offset: int, value: int, before: bytes, after: bytes) -> dict:
    data = value.to_bytes(4, "little")
    return {"kind": "config", "offset": offset, "bytes": data.hex(), "before": before.hex(), "read": after.hex()}


def test_check_judges_config_writes_from_the_records(ir, tmp_path):
    codec = Protocol(ir).codec
    off = dict(zip(codec.config.keys, codec.config.offsets))
    shown = _config(codec, events_read=1)
    records = [
        # events_clear of the pending event: cleared, as the spec describes
        _record(codec, off["events_clear"], 1, shown, _config(codec)),
        # events_clear of the pending event, and the device keeps it
        _record(codec, off["events_clear"], 1, shown, shown),
        # the driver writes num_scanouts, and the device takes the value
        _record(codec, off["num_scanouts"], 7, _config(codec), _config(codec, num_scanouts=7)),
        # the driver writes events_read: its own breach of a MUST NOT
        _record(codec, off["events_read"], 0, shown, shown),
    ]
    result = vgc.check_trace([_trace(tmp_path, ir, *records)])
    session = result.sessions[0]
    got = sorted((f.where.line, f.side, f.check, f.basis) for f in session.findings)
    assert got == [
        (3, "device", "events-clear", "spec-text"),
        (4, "device", "config-read-only", "informal"),
        (5, "driver", "config-events-read", "normative"),
    ]
    driver = next(f for f in session.findings if f.side == "driver")
    assert driver.reqs == (EVENTS_READ_RO,) and driver.spec and driver.message.startswith("the driver broke")
    assert session.requirements()[EVENTS_READ_RO]["verdict"] == "fail"
    # the spec profile leaves the informal one out
    spec_only = vgc.check_trace([_trace(tmp_path, ir, *records)], profile="spec").sessions[0]
    assert "config-read-only" not in {f.check for f in spec_only.findings}


def test_a_broken_config_record_is_a_diagnostic_not_a_crash(ir, tmp_path):
    path = _trace(tmp_path, ir, {"kind": "config", "offset": "four", "bytes": "zz"}, {"kind": "config", "offset": 4})
    session = vgc.check_trace([path]).sessions[0]
    assert session.checker.diagnostics == {"bad-record": 2}
    said = [d.message for d in session.checker.first_diagnostics]
    assert said == [
        "'bytes' is not hex; skipped",
        "a config record needs 'offset' (a byte offset) and 'bytes' (what was written, hex); skipped",
    ]


def test_the_events_read_requirement_is_enforced_now(ir):
    rows = {r.requirement.id: r for r in coverage(Protocol(ir))}
    assert rows[EVENTS_READ_RO].status == "enforced"
    assert "config-events-read" in " ".join(rows[EVENTS_READ_RO].by)


def test_the_reference_device_clears_events_and_keeps_the_rest(ir):
    t = ReferenceTarget(ir)
    codec = Protocol(ir).codec
    off = dict(zip(codec.config.keys, codec.config.offsets))
    t.events_read = 3
    r = t.send(CONFIG, [config_step(off["events_clear"], (1).to_bytes(4, "little"))], [codec.config.size])
    half = len(r.data) // 2
    before, after = codec.decode_config(r.data[:half]), codec.decode_config(r.data[half:])
    assert (before["events_read"], after["events_read"]) == (3, 2)
    r = t.send(CONFIG, [config_step(off["num_scanouts"], b"\x09\x00")], [codec.config.size])
    assert codec.decode_config(r.data[half:])["num_scanouts"] == t.settings.num_scanouts
    assert config_of_step(config_step(6, b"\x01\x02")) == (6, b"\x01\x02")


def test_a_campaign_writes_the_config_and_attaches_many_entries_and_its_case_replays_the_writes(
    ir, tmp_path, monkeypatch
):
    sent: list[tuple[int, bytes]] = []
    big: list[int] = []
    real = target_mod.ReferenceTarget.send

    def spy(self, queue, outs, in_sizes):
        if queue == CONFIG:
            sent.append(config_of_step(outs[0]))
        elif len(b"".join(outs)) > machine.MANY_ENTRIES[0] * 16:
            big.append(len(outs))
        return real(self, queue, outs, in_sizes)

    monkeypatch.setattr(target_mod.ReferenceTarget, "send", spy)
    monkeypatch.setattr(machine, "CONFIG_TOP", 0)  # every `configure` rule writes: a short campaign shows them
    result = vgc.fuzz("reference", examples=120, seed=3, steps=20, survey=True, out=str(tmp_path / "out"))
    assert result.findings == []
    codec = Protocol(ir).codec
    fields = {
        k
        for off, _ in sent
        for k, o, n in zip(codec.config.keys, codec.config.offsets, codec.config.sizes)
        if o <= off < o + n
    }
    assert {"events_clear", "events_read", "num_scanouts"} <= fields, fields
    # and backing in as many entries as QEMU takes, or one more
    assert big, "no RESOURCE_ATTACH_BACKING of 16384 or 16385 entries"
    # a saved case's config records come back as CONFIG steps
    before = _config(codec)
    path = _trace(tmp_path, ir, _record(codec, 4, 1, before, before))
    steps = steps_from_trace(path, codec)
    assert [(s.queue, config_of_step(s.outs[0]), s.ins) for s in steps] == [
        (CONFIG, (4, b"\x01\x00\x00\x00"), [codec.config.size])
    ]


def test_a_campaign_resets_the_device_mid_case_and_its_case_replays_the_resets(ir, tmp_path, monkeypatch):
    flags: list[int] = []
    real = target_mod.ReferenceTarget.send

    def spy(self, queue, outs, in_sizes):
        if queue == DEVICE_RESET:
            flags.append(outs[0][0])
        return real(self, queue, outs, in_sizes)

    monkeypatch.setattr(target_mod.ReferenceTarget, "send", spy)
    monkeypatch.setattr(machine, "RESET_TOP", 0)
    result = vgc.fuzz("reference", examples=80, seed=5, steps=20, survey=True, out=str(tmp_path / "out"))
    # the model starts over with the device: no false finding after a reset
    assert result.findings == []
    assert set(flags) == {0, PENDING, EARLY_NOTIFY, PENDING | EARLY_NOTIFY}
    path = _trace(tmp_path, ir, {"kind": "reset", "how": ["early_notify"]}, {"kind": "reset"})
    steps = steps_from_trace(path, Protocol(ir).codec)
    assert [(s.queue, s.outs) for s in steps] == [(DEVICE_RESET, [bytes([EARLY_NOTIFY])]), (DEVICE_RESET, [b"\0"])]


def test_a_host_visible_record_replays_as_its_step_and_a_bad_one_says_where(ir, tmp_path):
    """The driver's access to the host-visible region: written by the oracle's writer, read back by
    `check` (nothing to judge) and by `fuzz --replay` (the same step); the reference device refuses it."""
    from virtgpu_conform.checker.devices.target import HOST_VISIBLE, host_visible_of_step, host_visible_step
    from virtgpu_conform.checker.fuzz.oracle import Oracle
    from virtgpu_conform.checker.traces.events import TraceError

    p = Protocol(ir)
    t = ReferenceTarget(ir)
    out = host_visible_step(4096, b"\x5a" * 8, 16)
    assert host_visible_of_step(out) == (4096, b"\x5a" * 8, 16)
    reply = t.send(HOST_VISIBLE, [out], [])
    assert reply.status == "refused" and "no host-visible region" in reply.detail
    oracle = Oracle(p, session_header(ir, t), peek=t.peek)
    assert oracle.step(HOST_VISIBLE, [out], [], target_mod.Reply("answered", b"\x5a" * 16)) == []
    case = tmp_path / "case.ndjson"
    case.write_text(oracle.text())
    rec = json.loads(case.read_text().splitlines()[-1])
    assert rec == {"kind": "host-visible", "offset": 4096, "bytes": "5a" * 8, "length": 16, "read": "5a" * 16}
    steps = steps_from_trace(str(case), p.codec)
    assert [(s.queue, s.outs) for s in steps] == [(HOST_VISIBLE, [out])]
    assert vgc.check_trace(str(case)).sessions[0].checker.diagnostics == {}
    lines = case.read_text().splitlines()
    case.write_text("\n".join([*lines[:-1], json.dumps({**rec, "length": 1 << 32})]) + "\n")
    try:
        steps_from_trace(str(case), p.codec)
    except TraceError as exc:
        assert exc.where.line == 2 and "'length' (bytes read, u32)" in str(exc)
    else:
        raise AssertionError("a length past u32 was replayed")
