"""The importers: native NDJSON written and read back, QEMU and guest logs in their variants, and broken input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from virtgpu_conform.checker.check.engine import Checker
from virtgpu_conform.checker.check.session import Recording, check_session
from virtgpu_conform.checker.cli.main import main
from virtgpu_conform.checker.traces import native, qemu_log, sources
from virtgpu_conform.checker.traces.events import Diagnostic, Exchange
from virtgpu_conform.model.device import ReferenceDevice
from virtgpu_conform.model.protocol import Protocol

REAL = Path(__file__).resolve().parents[2] / "traces" / "qemu-7.2" / "fbdev-modetest"


@pytest.fixture(scope="module")
def protocol(ir):
    return Protocol(ir)


def native_trace(ir, steps, from_reset=True) -> str:
    """A native trace of the reference device answering `steps` (command, fields, entries)."""
    dev = ReferenceDevice(ir)
    out = io.StringIO()
    s = dev.settings
    w = native.Writer(
        out,
        spec=ir.version,
        features=s.features,
        num_scanouts=s.num_scanouts,
        capsets=[[c.id, c.max_version, c.max_size] for c in s.capsets],
        blob_alignment=s.blob_alignment,
        host_visible=s.host_visible,
        from_reset=from_reset,
    )
    for name, fields, entries in steps:
        data = dev.codec.encode(name, fields, entries)
        queue = "cursorq" if "CURSOR" in name else "controlq"
        rid = w.request(data, queue, ts=0.5)
        w.response(rid, dev.handle(data, queue))
    return out.getvalue()


FRAME = [
    ("VIRTIO_GPU_CMD_GET_DISPLAY_INFO", {}, None),
    ("VIRTIO_GPU_CMD_GET_EDID", {"scanout": 0}, None),
    ("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 64, "height": 64}, None),
    ("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", {"resource_id": 1}, [{"addr": 4096, "length": 16384}]),
    ("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0, "resource_id": 1, "r.width": 64, "r.height": 64}, None),
    ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", {"resource_id": 1, "r.width": 64, "r.height": 64}, None),
    ("VIRTIO_GPU_CMD_RESOURCE_FLUSH", {"resource_id": 1, "r.width": 64, "r.height": 64}, None),
    ("VIRTIO_GPU_CMD_MOVE_CURSOR", {"pos.x": 5, "pos.y": 5}, None),
]


def run_check(
    protocol, path: Path, fmt=None, profile: str = "strict", candidates: int = 8, fast: bool = True
) -> Checker:
    return check_session(Recording.of(path, fmt=fmt), protocol, profile, candidates, fast=fast).checker


def test_native_round_trip_of_the_reference_device_is_clean(ir, protocol, tmp_path):
    p = tmp_path / "t.ndjson"
    p.write_text(native_trace(ir, FRAME))
    assert sources.detect(str(p)) == "native"
    c = run_check(protocol, p)
    assert c.exchanges == len(FRAME) and c.findings == [] and c.max_split == 1
    v = c.verdicts()
    assert v["device-operation-controlq/VIRTIO_GPU_CMD_SET_SCANOUT/driver-must"]["verdict"] == "pass"
    # every exchange read its request and response bytes back into the fields that were sent
    evs = [
        e
        for e in native.read(enumerate(p.read_text().splitlines(), 1), str(p), protocol.codec)
        if isinstance(e, Exchange)
    ]
    assert [e.req.name for e in evs] == [n for n, _, _ in FRAME]
    assert evs[2].req.fields["width"] == 64 and evs[3].req.entries == [{"addr": 4096, "length": 16384, "padding": 0}]
    assert evs[0].resp.name == "VIRTIO_GPU_RESP_OK_DISPLAY_INFO" and evs[0].ts == 0.5


def test_native_decoded_fields_and_no_response(ir, protocol, tmp_path):
    lines = [
        json.dumps(
            {
                "kind": "session",
                "format": "virtgpu-conform-trace",
                "version": 1,
                "features": ["VIRTIO_GPU_F_EDID"],
                "num_scanouts": 1,
                "from_reset": False,
            }
        ),
        json.dumps(
            {"kind": "request", "id": "a", "type": "VIRTIO_GPU_CMD_RESOURCE_UNREF", "fields": {"resource_id": 9}}
        ),
        json.dumps({"kind": "response", "id": "a", "type": "VIRTIO_GPU_RESP_OK_NODATA"}),
        json.dumps({"kind": "request", "id": 2, "type": "VIRTIO_GPU_CMD_GET_DISPLAY_INFO"}),
        json.dumps({"kind": "no-response", "id": 2, "reason": "timeout after 2 s"}),
    ]
    p = tmp_path / "t.ndjson"
    p.write_text("\n".join(lines) + "\n")
    c = run_check(protocol, p)
    # The unref of a resource the trace never shows created is fine: the trace starts mid-session.
    assert [(f.where.line, f.side, f.check, f.definite) for f in c.findings] == [(4, "device", "no-response", True)]
    assert (
        c.verdicts()["device-requirements-device-initialization/VIRTIO_GPU_CMD_GET_DISPLAY_INFO/driver-SHOULD"][
            "verdict"
        ]
        == "not-exercised"
    )


def test_a_request_of_no_known_type_is_still_owed_an_answer(protocol, tmp_path):
    # A garbage type, and a chain too short to hold one: the model has no rule for either, yet the device
    # must still complete them; a stall on them is as much a finding as on a known command.
    lines = [
        json.dumps(
            {
                "kind": "session",
                "format": "virtgpu-conform-trace",
                "version": 1,
                "features": [],
                "num_scanouts": 1,
                "from_reset": True,
            }
        ),
        json.dumps({"kind": "request", "id": 1, "queue": "controlq", "bytes": "efbe0000" + "00" * 20}),
        json.dumps({"kind": "no-response", "id": 1, "reason": "no-answer: timeout"}),
        json.dumps({"kind": "request", "id": 2, "queue": "controlq", "bytes": "0102"}),
        json.dumps({"kind": "no-response", "id": 2, "reason": "no-answer: timeout"}),
        json.dumps({"kind": "request", "id": 3, "queue": "controlq", "bytes": "efbe0000" + "00" * 20}),
        json.dumps({"kind": "response", "id": 3, "type": "VIRTIO_GPU_RESP_ERR_UNSPEC"}),
    ]
    p = tmp_path / "t.ndjson"
    p.write_text("\n".join(lines) + "\n")
    c = run_check(protocol, p)
    assert [(f.where.line, f.side, f.check, f.definite) for f in c.findings] == [
        (2, "device", "no-response", True),
        (4, "device", "no-response", True),
    ]
    assert all("never answered" in f.message for f in c.findings)
    # Outside the strict profile (no informal rules) nothing is said, as for a known command.
    c = run_check(protocol, p, profile="spec")
    assert not [f for f in c.findings if f.check == "no-response"]


def test_guest_log_newer_format_pairs_by_seqno(protocol, tmp_path):
    line = (
        "  insmod-95 [000] ...1.  2.49: virtio_gpu_cmd_{d}: vdev=0 vq=0 name=control type={t} flags=0x0 "
        "fence_id=0 ctx_id=0 num_free=254 seqno={s}"
    )
    text = "\n".join(
        [
            line.format(d="queue", t="0x100", s=1),
            line.format(d="queue", t="0x10a", s=2),
            line.format(d="response", t="0x1104", s=2),
            line.format(d="response", t="0x1101", s=1),
        ]
    )
    p = tmp_path / "g.log"
    p.write_text(text + "\n")
    assert sources.detect(str(p)) == "guest"
    evs = [e for e in sources.events(str(p), None, protocol.codec) if isinstance(e, Exchange)]
    assert [(e.req.name, e.resp.name) for e in evs] == [
        ("VIRTIO_GPU_CMD_GET_DISPLAY_INFO", "VIRTIO_GPU_RESP_OK_DISPLAY_INFO"),
        ("VIRTIO_GPU_CMD_GET_EDID", "VIRTIO_GPU_RESP_OK_EDID"),
    ]


def test_qemu_log_without_timestamps_and_with_qemu_10_events(protocol, tmp_path):
    lines = [
        ln.split(":", 1)[1] if ln[:1].isdigit() else ln for ln in (REAL / "qemu-trace.log").read_text().splitlines()
    ]
    lines.insert(12, "virtio_gpu_inc_inflight_fences in-flight+ 1")
    lines.insert(13, "virtio_gpu_cmd_suspended cmd 0x105")
    p = tmp_path / "q.log"
    p.write_text("\n".join(lines) + "\n")
    assert sources.detect(str(p)) == "qemu"
    c = run_check(protocol, p)
    assert c.exchanges == run_check(protocol, REAL / "qemu-trace.log").exchanges
    assert c.diagnostics == {} and [f for f in c.findings if f.definite] == []


BROKEN = {
    "truncated-line": "1413@1795446671.526123:virtio_gpu_cmd_res_create_2d res 0x2, fmt 0x2, w 12",
    "binary-junk": "\x00\x01\x02\xff\xfe\x00garbage\x00\x7f\x10\x11\x12\x13\x14\x15",
    "unknown-event": "1413@1795446671.526123:virtio_gpu_cmd_frobnicate res 0x2",
    "impossible-number": "1413@1795446671.526123:virtio_gpu_cmd_res_create_2d res 0x2, fmt 0x2, w 99999999999, h 8",
    "guest-line-in-qemu-log": "  insmod-95 [000] ...1.  2.49: virtio_gpu_cmd_queue: vdev=0 vq=0 name=control type=0x",
}


def test_broken_lines_are_diagnosed_and_the_check_goes_on(tmp_path):
    lines = (REAL / "qemu-trace.log").read_text().splitlines()
    for i, (_name, bad) in enumerate(sorted(BROKEN.items())):
        lines.insert(40 + 7 * i, bad)
    p = tmp_path / "broken.log"
    p.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape") + b"\xff\xfe half a line")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["check", str(p), "--json", str(out)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output
    doc = json.loads(out.read_text())
    s = doc["sessions"][0]
    first = {d["code"]: d["at"] for d in s["diagnostics"]["first"]}
    assert {"bad-event", "binary-junk", "unknown-event", "bad-number", "unknown-line"} <= set(first)
    assert all(at.startswith(str(p) + ":") for at in first.values())
    assert s["exchanges"] >= 300  # everything else was checked
    assert r.exit_code in (0, 3)


def test_not_a_trace_is_a_one_line_error(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("hello\nworld\n")
    r = CliRunner().invoke(main, ["check", str(p)])
    assert r.exit_code == 2 and "not a trace this tool knows" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["check", str(tmp_path / "missing.log")])
    assert r.exit_code == 2 and "missing.log" in r.output


def test_bad_native_records_are_diagnosed(ir, tmp_path):
    good = native_trace(ir, FRAME[:3]).splitlines()
    good[2:2] = [
        '{"kind": "request", "id": 5, "type": "VIRTIO_GPU_CMD_NOPE"}',
        "{not json",
        '{"kind": "request", "id": 6, "type": "VIRTIO_GPU_CMD_RESOURCE_UNREF", "fields": {"resource_id": -1}}',
        '{"kind": "response", "id": 77, "type": "VIRTIO_GPU_RESP_OK_NODATA"}',
        "[1, 2]",
    ]
    p = tmp_path / "t.ndjson"
    p.write_text("\n".join(good) + "\n")
    evs = list(native.read(enumerate(p.read_text().splitlines(), 1), str(p), Protocol(ir).codec))
    diags = [(d.where.line, d.code) for d in evs if isinstance(d, Diagnostic)]
    assert diags == [(3, "bad-record"), (4, "bad-json"), (5, "bad-record"), (6, "unpaired"), (7, "bad-record")]
    assert sum(isinstance(e, Exchange) for e in evs) == 3


def test_check_json_result_and_exit_codes(tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["check", str(REAL), "--json", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "virtgpu-conform/check-result" and doc["version"] == 1
    s = doc["sessions"][0]
    assert [x["format"] for x in s["sources"]] == ["qemu", "guest"]
    assert doc["totals"]["definite"] == 0 and s["verdict_counts"]["pass"] > 0
    assert "0 definite, 0 possible findings" in r.output
    assert "\x1b[" not in r.output  # not a terminal: no colour, no progress bar


def test_symbolic_verdict_is_explained_by_an_unsat_core(ir, protocol, tmp_path):
    """A rect whose x + width wraps u32 is outside the resource whatever its unknown y and height are."""
    head = native_trace(ir, FRAME[:4]).splitlines()
    head += [
        json.dumps(
            {
                "kind": "request",
                "id": 99,
                "type": "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D",
                "fields": {"resource_id": 1, "r.x": 0xFFFFFFF0, "r.width": 0x20, "offset": 0},
            }
        ),
        json.dumps({"kind": "response", "id": 99, "type": "VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER"}),
    ]
    p = tmp_path / "t.ndjson"
    p.write_text("\n".join(head) + "\n")
    c = run_check(protocol, p)
    assert [(f.where.line, f.check, f.definite) for f in c.findings] == [(len(head) - 1, "rect-inside-resource", True)]
    msg = c.findings[0].message
    assert "r.x=4294967280" in msg and "r.width=32" in msg and "st.res.width=64" in msg
    assert "r.y" not in msg.split("because")[1]  # the unknown fields are not part of the reason


SESSION = json.dumps(
    {
        "kind": "session",
        "format": "virtgpu-conform-trace",
        "version": 1,
        "features": [],
        "num_scanouts": 1,
        "capsets": [],
        "from_reset": True,
    }
)


def req(i, name, **fields):
    return json.dumps({"kind": "request", "id": i, "type": name, "fields": fields})


def resp(i, name):
    return json.dumps({"kind": "response", "id": i, "type": name})


HDR = {"hdr.flags": 0, "hdr.fence_id": 0, "hdr.ctx_id": 0, "hdr.ring_idx": 0}
UNREF, OK = "VIRTIO_GPU_CMD_RESOURCE_UNREF", "VIRTIO_GPU_RESP_OK_NODATA"

# name: (records after the session header, expected (line, side, check, definite) findings)
GUESSES = {
    # a trace that ends, or a reset, while a request is in flight proves no silence
    "trace-ends-in-flight": ([req(1, "VIRTIO_GPU_CMD_GET_DISPLAY_INFO", **HDR)], [(2, "device", "no-response", False)]),
    "reset-in-flight": ([req(1, "VIRTIO_GPU_CMD_GET_DISPLAY_INFO", **HDR), json.dumps({"kind": "reset"})], []),
    "stated-no-response": (
        [
            req(1, "VIRTIO_GPU_CMD_GET_DISPLAY_INFO", **HDR),
            json.dumps({"kind": "no-response", "id": 1, "reason": "timeout"}),
        ],
        [(2, "device", "no-response", True)],
    ),
    # a line that could not be read may have created the resource
    "unreadable-line-before": (
        ["{broken", req(1, UNREF, resource_id=7, **HDR), resp(1, "VIRTIO_GPU_RESP_ERR_UNSPEC")],
        [(3, "driver", "resource-exists", False)],
    ),
    # the header unknown cannot rescue an OK to an unref of a resource that never existed
    "ok-despite-unknown-header": (
        [req(1, UNREF, resource_id=7), resp(1, OK)],
        [(2, "driver", "resource-exists", True), (2, "device", "response-type", True)],
    ),
}


@pytest.mark.parametrize("case", sorted(GUESSES))
def test_definite_only_when_no_reading_is_conformant(protocol, tmp_path, case):
    records, expect = GUESSES[case]
    p = tmp_path / "t.ndjson"
    p.write_text("\n".join([SESSION, *records]) + "\n")
    c = run_check(protocol, p)
    assert sorted((f.where.line, f.side, f.check, f.definite) for f in c.findings) == sorted(expect)


UNUSABLE = [
    '{"kind": "request", "id": ' + "9" * 5000 + ', "type": "VIRTIO_GPU_CMD_GET_DISPLAY_INFO"}',
    "[" * 100000,
    '{"kind": "request", "id": 1, "type": "VIRTIO_GPU_CMD_GET_DISPLAY_INFO", "ts": ' + "9" * 400 + "}",
    '{"kind": "request", "id": 2, "type": "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", "fields": {"resource_id": 1},'
    ' "entries": [{"addr": "x"}]}',
    '{"kind": "session", "format": "virtgpu-conform-trace", "version": 1, "features": 5, "capsets": [[1]]}',
]


def test_unusable_records_are_diagnosed_not_raised(tmp_path):
    p = tmp_path / "t.ndjson"
    p.write_text("\n".join([SESSION, *UNUSABLE]) + "\n")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["check", str(p), "--json", str(out)])
    assert "Traceback" not in r.output and r.exit_code in (0, 3), r.output
    at = [int(d["at"].rsplit(":", 1)[1]) for d in json.loads(out.read_text())["sessions"][0]["diagnostics"]["first"]]
    assert at == [2, 3, 5, 6]  # a time stamp past float's range is only dropped: the record is read


def test_guest_orphan_response_does_not_shift_the_pairing(protocol, tmp_path):
    line = (
        "  k-1 [000] .....  2.49: virtio_gpu_cmd_{d}: vdev=0 vq=0 name=control type={t} flags=0x0 fence_id=0 ctx_id=0"
    )
    p = tmp_path / "g.log"
    p.write_text(
        "\n".join(
            [
                line.format(d="response", t="0x1100"),
                line.format(d="queue", t="0x100"),
                line.format(d="response", t="0x1101"),
            ]
        )
        + "\n"
    )
    c = run_check(protocol, p)
    assert c.findings == [] and c.diagnostics == {"unpaired": 1}


def test_ok_to_a_truncated_request_is_definite_and_only_later_findings_are_downgraded(ir, protocol, tmp_path):
    # QEMU and vhost-user-gpu answer OK_NODATA to a RESOURCE_CREATE_2D cut to 30 of its 40 bytes. The OK
    # itself is the finding, whatever the device did with the part it read; what comes after rests on
    # that unknown (did it create resource 1?), so refusing to unref resource 1 is only possibly wrong.
    dev = ReferenceDevice(ir)
    c = dev.codec
    text = native_trace(ir, [("VIRTIO_GPU_CMD_GET_DISPLAY_INFO", {}, None)])
    cut = c.encode("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": 1, "width": 64, "height": 64})[:30]
    ok = c.encode("VIRTIO_GPU_RESP_OK_NODATA")
    unref = c.encode("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": 1})
    lines = [
        json.dumps({"kind": "request", "id": 10, "queue": "controlq", "bytes": cut.hex()}),
        json.dumps({"kind": "response", "id": 10, "bytes": ok.hex()}),
        json.dumps({"kind": "request", "id": 11, "queue": "controlq", "bytes": unref.hex()}),
        json.dumps({"kind": "response", "id": 11, "bytes": ok.hex()}),
    ]
    lines[-1] = json.dumps(
        {"kind": "response", "id": 11, "bytes": c.encode("VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID").hex()}
    )
    path = tmp_path / "cut.ndjson"
    path.write_text(text + "\n".join(lines) + "\n")
    checker = run_check(protocol, path)
    accepted = [f for f in checker.findings if f.check == "malformed-accepted"]
    assert len(accepted) == 1 and accepted[0].definite and accepted[0].side == "device", checker.findings
    assert accepted[0].where.line == 4
    later = [f for f in checker.findings if f.where.line > 5]
    assert later and not any(f.definite for f in later), later
    assert all("cannot have read whole at" in f.reason for f in later)


def test_after_an_ok_to_a_truncated_request_what_rests_on_no_state_stays_definite(ir, protocol, tmp_path):
    # QEMU answers OK_NODATA to truncated bodies; a chain shorter than the header it never completes.
    # After the first, the state is unknown, but a missing answer, or a second OK to a request that
    # cannot be read, rests on the exchange alone: the fuzzer had lost QEMU's short-header stall this way.
    dev = ReferenceDevice(ir)
    c = dev.codec
    text = native_trace(ir, [("VIRTIO_GPU_CMD_GET_DISPLAY_INFO", {}, None)])
    cut = c.encode("VIRTIO_GPU_CMD_RESOURCE_FLUSH", {"resource_id": 1})[:30]
    ok = c.encode("VIRTIO_GPU_RESP_OK_NODATA").hex()
    lines = [
        json.dumps({"kind": "request", "id": 10, "queue": "controlq", "bytes": cut.hex()}),
        json.dumps({"kind": "response", "id": 10, "bytes": ok}),
        json.dumps({"kind": "request", "id": 11, "queue": "controlq", "bytes": cut.hex()}),
        json.dumps({"kind": "response", "id": 11, "bytes": ok}),
        json.dumps({"kind": "request", "id": 12, "queue": "controlq", "bytes": "01020000"}),
        json.dumps({"kind": "no-response", "id": 12, "reason": "no-answer: no completion within 0.2 s"}),
    ]
    path = tmp_path / "cut.ndjson"
    path.write_text(text + "\n".join(lines) + "\n")
    device = [(f.where.line, f.check, f.definite) for f in run_check(protocol, path).findings if f.side == "device"]
    assert device == [(4, "malformed-accepted", True), (6, "malformed-accepted", True), (8, "no-response", True)], (
        device
    )


ODD = [
    b"virtio_gpu_cmd_get_display_info  \r",
    b"\t1413@1.5:virtqueue_pop vq 0x1 elem 0x2 in_num 1 out_num 1",
    b"1413@1.5:virtio_gpu_cmd_res_unref res 0x2 ",
    b"\xff\xfe\x00 junk \xe2\x80",
    b"",
    b"   ",
    b"virtio_gpu_resource_create_2d: resource already exists 2",
    b"1413@1.5:virtio_gpu_features virgl 0",
    b"1413@1.5:virtqueue_fill vq 0x1 elem 0x2 len 24 idx 0\x0b",
    "\u2028é".encode(),
]


@pytest.mark.parametrize("block", [1 << 18, 333, 1])
def test_qemu_log_read_in_blocks_reads_as_line_by_line(protocol, tmp_path, monkeypatch, block):
    """The block reader's patterns take only lines the per-line path reads the same way: same events, same lines."""
    lines = (REAL / "qemu-trace.log").read_bytes().split(b"\n")
    for i, odd in enumerate(ODD):
        lines.insert(30 + 41 * i, odd)
    lines.insert(200, b"1413@1.5:virtqueue_pop vq 0x7f9f9708f010 elem 0x99 in_num 1 out_num 1")  # never filled
    p = tmp_path / "q.log"
    p.write_bytes(b"\n".join(lines).rstrip(b"\n"))  # and no newline at the end
    monkeypatch.setattr(sources, "_BLOCK", block)
    by_block = [repr(e) for e in sources.events(str(p), "qemu", protocol.codec)]
    by_line = [repr(e) for e in qemu_log.read(list(sources.numbered_lines(str(p))), str(p), protocol.codec)]
    assert by_block == by_line and len(by_line) > 300


def _display_log(frames: int) -> str:
    """A QEMU log of a display loop that splits the readings (a CREATE_2D may be answered OUT_OF_MEMORY),
    with the device complaining now and then and a fill lost once."""
    out, n = ["1@1.0:virtio_gpu_features virgl 0"], 0

    def cmd(event: str, length: int = 24, queue: str = "0x10", after: str = "") -> None:
        nonlocal n
        n += 1
        elem = f"0x{n % 7 + 1:x}0"
        out.append(f"1@{n}.5:virtqueue_pop vq {queue} elem {elem} in_num 1 out_num 1")
        out.append(f"1@{n}.5:{event}")
        out.extend([after] if after else [])
        if n != 40:
            out.append(f"1@{n}.5:virtqueue_fill vq {queue} elem {elem} len {length} idx 0")

    cmd("virtio_gpu_cmd_get_display_info ", 408)
    cmd("virtio_gpu_cmd_res_create_2d res 0x1, fmt 0x1, w 64, h 64")
    cmd("virtio_gpu_cmd_res_back_attach res 0x1")
    cmd("virtio_gpu_cmd_set_scanout id 0, res 0x1, w 64, h 64, x 0, y 0")
    for f in range(frames):
        cmd("virtio_gpu_cmd_res_xfer_toh_2d res 0x1")
        cmd(
            f"virtio_gpu_cmd_res_flush res 0x1, w 64, h 16, x 0, y {f % 4 * 16}",
            after="virtio_gpu_resource_flush: bad" if f % 9 == 5 else "",
        )
        cmd(f"virtio_gpu_update_cursor scanout 0, x {f % 5}, y 1, move, res 0x0", 0, "0x20")
        if f % 3 == 0:
            rid = f % 4 + 2
            cmd(f"virtio_gpu_cmd_res_create_2d res {rid:#x}, fmt 0x1, w 8, h 8")
            cmd(f"virtio_gpu_cmd_res_back_attach res {rid:#x}")
            cmd(f"virtio_gpu_cmd_res_unref res {rid:#x}", after="virtio_gpu_cmd_res_unref: oops" if f % 7 == 3 else "")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("profile,candidates", [("strict", 8), ("spec", 8), ("strict", 1), ("strict", 2)])
def test_remembered_verdicts_check_as_the_general_path(protocol, tmp_path, profile, candidates):
    """Replaying remembered completions (one candidate or several) changes no finding, mark or reading:
    the checker with its fast paths and without them (`fast=False`) agree."""
    p = tmp_path / "q.log"
    p.write_text(_display_log(60))
    results = []
    for fast in (True, False):
        c = run_check(protocol, p, "qemu", profile, candidates, fast)
        results.append(
            (
                [f.to_json() for f in c.findings],
                c.verdicts(),
                c.commands,
                c.max_split,
                c.uncertain,
                c.diagnostics,
                c.divergences,
                c.cands[0].state,
            )
        )
    assert results[0] == results[1]
    assert (results[0][3] > 1) == (candidates > 1)  # the readings split (where room was left for it)
    assert results[0][0] if profile == "strict" else True  # the complaints make findings


def test_a_fenced_answer_after_a_later_one_pairs_by_its_fence_in_the_6_1_format(protocol, tmp_path):
    """Linux 6.1 prints no seqno: a device that completes a fenced command after a later unfenced one
    (QEMU's GL device does, when the fence signals) is paired by the fence, never first in, first out."""
    head = "vdev=0 vq=0 name=control type={} flags={} fence_id={} ctx_id=0"
    q = "            init-1       [000] .....     1.00000{}: virtio_gpu_cmd_queue: " + head
    r = "     kworker/0:1-17      [000] .....     1.00000{}: virtio_gpu_cmd_response: " + head
    p = tmp_path / "guest.log"
    p.write_text(
        "\n".join(
            [
                q.format(0, "0x101", "0x0", 0),
                r.format(1, "0x1100", "0x0", 0),
                q.format(2, "0x105", "0x1", 5),  # fenced
                q.format(3, "0x104", "0x0", 0),
                r.format(4, "0x1100", "0x0", 0),  # the later, unfenced one's answer comes first
                r.format(5, "0x1100", "0x1", 5),
            ]
        )
        + "\n"
    )
    evs = [e for e in sources.events(str(p), "guest", protocol.codec) if isinstance(e, Exchange)]
    assert [(e.req.name, e.resp_where.line) for e in evs] == [
        ("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", 2),
        ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", 6),
        ("VIRTIO_GPU_CMD_RESOURCE_FLUSH", 5),
    ]
    assert run_check(protocol, p, "guest").findings == []


def test_an_answer_no_command_fits_is_paired_by_a_guess_and_said(protocol, tmp_path):
    """A fenced command answered without its fence (a device that echoes none) in the 6.1 format: the
    answer is paired with the oldest open command, and since that is a guess, it is said (an error:
    what rests on it is possible, not definite)."""
    head = "vdev=0 vq=0 name=control type={} flags={} fence_id={} ctx_id=0"
    q = "            init-1       [000] .....     1.00000{}: virtio_gpu_cmd_queue: " + head
    r = "     kworker/0:1-17      [000] .....     1.00000{}: virtio_gpu_cmd_response: " + head
    p = tmp_path / "guest.log"
    p.write_text("\n".join([q.format(0, "0x105", "0x1", 5), r.format(1, "0x1100", "0x0", 0)]) + "\n")
    c = run_check(protocol, p, "guest")
    assert c.diagnostics.get("ambiguous-pairing") == 1
    assert not [f for f in c.findings if f.definite]
