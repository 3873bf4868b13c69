"""The 3D half's oracles without a device: chains in flight together (fence order, a fence never
answered, how they are recorded and replayed), the render oracle, the capset oracle, and the tally of
which rule checks a device's answers judged."""

from __future__ import annotations

import json
import struct

from virtgpu_conform.checker.devices.target import (
    TOGETHER,
    ReferenceTarget,
    Reply,
    chains_of_step,
    together_step,
)
from virtgpu_conform.checker.fuzz import virgl
from virtgpu_conform.checker.fuzz.exercised import Exercised
from virtgpu_conform.checker.fuzz.oracle import Oracle
from virtgpu_conform.checker.fuzz.record import session_header
from virtgpu_conform.checker.fuzz.renders import RenderModel, judge
from virtgpu_conform.checker.fuzz.replay import steps_from_trace
from virtgpu_conform.model.protocol import Protocol
from virtgpu_conform.model.rules_common import RING_COMPLETE

OK = (0x1100).to_bytes(4, "little")
FENCE, RING = 1, 2


def _answer(p: Protocol, req: bytes) -> bytes:
    """OK_NODATA echoing the request's fence, as a device answers."""
    f = p.codec.decode_request(req).fields
    flags = f["hdr.flags"] & (FENCE | RING)
    return p.codec.encode(
        "VIRTIO_GPU_RESP_OK_NODATA",
        {
            "hdr.flags": flags,
            "hdr.fence_id": f["hdr.fence_id"] if flags & FENCE else 0,
            "hdr.ctx_id": f["hdr.ctx_id"],
            "hdr.ring_idx": f["hdr.ring_idx"] if flags & RING else 0,
        },
    )


def _oracle(ir, **kw) -> tuple[Protocol, Oracle]:
    p = Protocol(ir)
    return p, Oracle(p, session_header(ir, ReferenceTarget(ir)), **kw)


def _group(p: Protocol, reqs: list[bytes], order: list) -> tuple[bytes, Reply]:
    """A TOGETHER step of `reqs`, and a reply whose parts came in `order` (None: never)."""
    buf = together_step("controlq", [([r], [24]) for r in reqs])
    parts = [
        Reply("answered", _answer(p, r), order=o) if o is not None else Reply("no-answer", detail="no completion")
        for r, o in zip(reqs, order)
    ]
    status = "answered" if None not in order else "no-answer"
    return buf, Reply(status, parts=parts)


def _submit(p: Protocol, ctx: int, fence: int = 0, ring: int = -1, stream: bytes = b"") -> bytes:
    flags = (FENCE if fence else 0) | (RING if ring >= 0 else 0)
    fields = {"hdr.ctx_id": ctx, "hdr.flags": flags, "hdr.fence_id": fence, "hdr.ring_idx": max(ring, 0)}
    return p.codec.encode("VIRTIO_GPU_CMD_SUBMIT_3D", fields, None, stream)


def test_a_together_step_carries_its_chains_and_a_device_that_takes_one_at_a_time_answers_in_order(ir):
    chains = [([b"abc", b"de"], [24]), ([b"x" * 40], [24, 8])]
    assert chains_of_step(together_step("controlq", chains)) == ("controlq", chains)
    p = Protocol(ir)
    t = ReferenceTarget(ir)
    create = p.codec.encode("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1})
    r = t.send(TOGETHER, [together_step("controlq", [([create], [24]), ([_submit(p, 1, 5)], [24])])], [])
    assert r.status == "answered" and [(x.status, x.order) for x in r.parts or []] == [("answered", 0), ("answered", 1)]


def test_fences_answered_out_of_order_are_a_finding_unfenced_answers_overtaking_are_not(ir):
    p, o = _oracle(ir)
    o.step("controlq", [p.codec.encode("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1})], [24], Reply("answered", OK))
    # an unfenced command answered before a fenced one sent earlier: allowed
    buf, reply = _group(p, [_submit(p, 1, fence=1), _submit(p, 1)], [1, 0])
    assert o.step(TOGETHER, [buf], [], reply) == []
    # fence 3 answered before fence 2 on the global timeline: the driver takes 2 as signalled
    buf, reply = _group(p, [_submit(p, 1, fence=2), _submit(p, 1, fence=3)], [1, 0])
    seen = o.step(TOGETHER, [buf], [], reply)
    assert [str(x.signature) for x in seen] == ["violation: any command fence-order [informal]"]
    assert "fence 3 on the global timeline" in seen[0].message and "(fence 2)" in seen[0].message
    # the records: every request first, then the answers in the order they came, each marked together
    recs = [json.loads(line) for line in o.text().splitlines()]
    tail = recs[-4:]
    assert [(r["kind"], r["id"]) for r in tail] == [("request", 4), ("request", 5), ("response", 5), ("response", 4)]
    assert tail[0]["together"] == tail[1]["together"] == 2
    # the driver's own disorder: fence 9 sent before fence 5, answered in the order sent. The device
    # kept the order it was given; a lower fence sent later is no earlier fence (seen in a run of the
    # suite: fence 2^64-1, then fence 0, answered in turn, was once called a fence-order violation)
    buf, reply = _group(p, [_submit(p, 1, fence=9), _submit(p, 1, fence=5)], [0, 1])
    assert [x for x in o.step(TOGETHER, [buf], [], reply) if x.signature.check == "fence-order"] == []


def test_on_a_ring_the_order_of_fences_is_the_specs(ir):
    p, o = _oracle(ir)
    o.step("controlq", [p.codec.encode("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1})], [24], Reply("answered", OK))
    buf, reply = _group(p, [_submit(p, 1, fence=1, ring=0), _submit(p, 1, fence=2, ring=0)], [1, 0])
    seen = [x for x in o.step(TOGETHER, [buf], [], reply) if x.signature.check == "fence-order"]
    assert [(x.signature.basis, x.requirements) for x in seen] == [("spec-text", (RING_COMPLETE,))]
    # on two rings, each its own timeline: no order between them
    buf, reply = _group(p, [_submit(p, 1, fence=3, ring=0), _submit(p, 1, fence=4, ring=1)], [1, 0])
    assert [x for x in o.step(TOGETHER, [buf], [], reply) if x.signature.check == "fence-order"] == []


def test_a_fenced_command_never_answered_is_one_liveness_finding_whatever_the_command(ir):
    p, o = _oracle(ir)
    o.step("controlq", [p.codec.encode("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1})], [24], Reply("answered", OK))
    buf, reply = _group(p, [_submit(p, 1, fence=1), _submit(p, 1)], [None, 0])
    seen = o.step(TOGETHER, [buf], [], reply)
    assert [str(x.signature) for x in seen] == ["liveness: any command fence-never-answered"]
    # and one sent alone
    create = p.codec.encode(
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D",
        {"hdr.flags": FENCE, "hdr.fence_id": 1 << 40, "resource_id": 7, "format": 1, "width": 4, "height": 4},
    )
    seen = o.step("controlq", [create], [24], Reply("no-answer", detail="no completion within 2 s"))
    assert [str(x.signature) for x in seen] == ["liveness: any command fence-never-answered"]


def test_a_replay_sends_requests_recorded_together_together_again(ir, tmp_path):
    p, o = _oracle(ir)
    create = p.codec.encode("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1})
    o.step("controlq", [create], [24], Reply("answered", OK))
    reqs = [_submit(p, 1, fence=1), _submit(p, 1), _submit(p, 1, fence=2)]
    buf, reply = _group(p, reqs, [2, 0, 1])
    o.step(TOGETHER, [buf], [], reply)
    o.step("controlq", [create], [24], Reply("answered", OK))
    case = tmp_path / "repro.ndjson"
    case.write_text(o.text())
    steps = steps_from_trace(str(case), p.codec)
    assert [s.queue for s in steps] == ["controlq", TOGETHER, "controlq"]
    assert chains_of_step(steps[1].outs[0]) == ("controlq", [([r], [24]) for r in reqs])


def _scene(p: Protocol, fmt: int, rgba, w: int = 8, h: int = 4, addr: int = 0x100000) -> list[bytes]:
    c = p.codec
    return [
        c.encode("VIRTIO_GPU_CMD_CTX_CREATE", {"hdr.ctx_id": 1}),
        c.encode(
            "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D",
            {
                "resource_id": 5,
                "target": virgl.TEXTURE_2D,
                "format": fmt,
                "bind": 2,
                "width": w,
                "height": h,
                "depth": 1,
                "array_size": 1,
            },
        ),
        c.encode("VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING", {"resource_id": 5}, [{"addr": addr, "length": w * h * 4}]),
        c.encode("VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE", {"hdr.ctx_id": 1, "resource_id": 5}),
        _submit(p, 1, fence=1, stream=virgl.clear_scene(5, fmt, rgba)),
    ]


def _readback(p: Protocol, w: int = 8, h: int = 4, fenced: bool = True) -> bytes:
    fields = {"hdr.ctx_id": 1, "resource_id": 5, "box.w": w, "box.h": h, "box.d": 1, "stride": w * 4}
    if fenced:
        fields.update({"hdr.flags": FENCE, "hdr.fence_id": 2})
    return p.codec.encode("VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D", fields)


def test_the_render_oracle_knows_a_cleared_texture_and_judges_its_fenced_readback(ir):
    p = Protocol(ir)
    m = RenderModel(FENCE)
    rgba = (1.0, 128 / 255, 64 / 255, 1.0)
    for raw in _scene(p, virgl.FORMAT_B8G8R8A8_UNORM, rgba):
        assert m.follow(p.codec.decode_request(raw), True) is None
    assert m.follow(p.codec.decode_request(_readback(p, fenced=False)), True) is None  # may land after its answer
    due = m.follow(p.codec.decode_request(_readback(p)), True)
    assert due == (0x100000, bytes((64, 128, 255, 255)), 32)
    assert judge(due, due[1] * 32) is None
    wrong = judge(due, due[1] * 31 + bytes(4))
    assert wrong is not None and wrong.startswith("1 of 32 texels") and "texel 31: 00000000 read, 4080ffff" in wrong
    # R8G8B8A8 lays the channels the other way; X8 leaves the fourth byte undefined
    assert virgl.pixel(virgl.FORMAT_R8G8B8A8_UNORM, rgba) == bytes((255, 128, 64, 255))
    assert virgl.pixel(virgl.FORMAT_B8G8R8X8_UNORM, rgba) == bytes((64, 128, 255))
    # a stream it cannot follow makes the context's textures unknown
    m.follow(p.codec.decode_request(_submit(p, 1, stream=struct.pack("<II", 0x00010063, 0))), True)
    assert m.follow(p.codec.decode_request(_readback(p)), True) is None


def test_the_oracle_reads_guest_ram_for_a_readback_and_reports_a_wrong_colour(ir):
    rgba = (0.0, 1.0, 0.0, 1.0)
    ram = {}
    p, o = _oracle(ir, peek=lambda addr, n: ram.get(addr, bytes(n)))
    for raw in _scene(p, virgl.FORMAT_B8G8R8A8_UNORM, rgba):
        assert o.step("controlq", [raw], [24], Reply("answered", _answer(p, raw))) == []
    back = _readback(p)
    ram[0x100000] = virgl.pixel(virgl.FORMAT_B8G8R8A8_UNORM, rgba) * 32
    assert o.step("controlq", [back], [24], Reply("answered", _answer(p, back))) == []
    ram[0x100000] = bytes(4 * 32)
    seen = o.step("controlq", [back], [24], Reply("answered", _answer(p, back)))
    assert [str(x.signature) for x in seen] == ["violation: TRANSFER_FROM_HOST_3D render-readback [informal]"]


def test_the_capset_oracle_holds_capset_data_to_what_get_capset_info_said(ir):
    p, o = _oracle(ir)
    info = o.state.settings.capsets[0]  # the reference device's: VIRGL2, version 2, 256 bytes
    ask = p.codec.encode("VIRTIO_GPU_CMD_GET_CAPSET", {"capset_id": info.id, "capset_version": 2})
    head = p.codec.encode("VIRTIO_GPU_RESP_OK_CAPSET")
    good = head + info.max_version.to_bytes(4, "little") + bytes(info.max_size - 4)
    assert o.step("controlq", [ask], [24 + 4096], Reply("answered", good)) == []
    long = good + bytes(4)
    assert [x.signature.check for x in o.step("controlq", [ask], [24 + 4096], Reply("answered", long))] == [
        "capset-size"
    ]
    old = head + (1).to_bytes(4, "little") + bytes(info.max_size - 4)
    seen = o.step("controlq", [ask], [24 + 4096], Reply("answered", old))
    assert [x.message for x in seen] == [
        f"capset {info.id}'s data says max_version 1; GET_CAPSET_INFO gave capset_max_version 2"
    ]


def test_the_tally_says_which_checks_a_devices_answer_held_or_broke(ir):
    ex = Exercised(Protocol(ir))
    p, o = _oracle(ir, exercised=ex)
    unref = p.codec.encode("VIRTIO_GPU_CMD_RESOURCE_UNREF", {"resource_id": 9})  # no such resource
    o.step("controlq", [unref], [24], Reply("answered", (0x1203).to_bytes(4, "little") + bytes(20)))
    o.step("controlq", [unref], [24], Reply("answered", OK + bytes(20)))
    doc = ex.to_json()
    row = next(r for r in doc["checks"] if r["command"] == "VIRTIO_GPU_CMD_RESOURCE_UNREF")
    assert (row["check"], row["held"], row["broken"], row["open"]) == ("resource-exists", 1, 1, 0)
    assert doc["families"]["2d"]["judged"] == 1 and doc["families"]["2d"]["exchanges"] == 2
    assert doc["families"]["3d"] == {"checks": doc["families"]["3d"]["checks"], "judged": 0, "exchanges": 0, "gated": 0}


def test_a_follower_that_died_gets_no_more_chains_until_the_next_case(ir):
    from virtgpu_conform.checker.devices.target import Target
    from virtgpu_conform.checker.fuzz.differential import MirrorTarget

    class Dying(Target):
        sent = 0

        def send(self, queue, outs, in_sizes):
            self.sent += 1
            return Reply("died", detail="QEMU exited (status -6, SIGABRT)")

        def reset(self):
            pass

    lead, follower = ReferenceTarget(ir), Dying("dying")
    m = MirrorTarget([lead, follower])
    info = Protocol(ir).codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")
    for _ in range(3):
        assert m.send("controlq", [info], [408]).status == "answered"
    assert follower.sent == 1 and (m.last[1].status, m.last[1].detail) == (
        "gone",
        "as before: QEMU exited (status -6, SIGABRT)",
    )
    m.reset()
    m.send("controlq", [info], [408])
    assert follower.sent == 2


def test_targets_may_name_a_debian_suite_and_the_gl_device_and_are_told_apart_by_name():
    from click.testing import CliRunner

    from virtgpu_conform.checker.cli.main import main
    from virtgpu_conform.checker.fuzz.run import DeviceSpec, devices_of

    bad = CliRunner().invoke(main, ["fuzz", "--target", "reference@bookworm-backports", "--examples", "1"])
    assert bad.exit_code == 2 and "may name a Debian suite" in bad.output
    a = DeviceSpec("qemu", gl=True)
    b = DeviceSpec("qemu", gl=True, suite="bookworm-backports", qemu="/cache/usr/bin/qemu-system-x86_64")
    assert [d.name for d in devices_of([a, b])] == ["qemu-gl", "qemu@bookworm-backports-gl"]
    assert b.cli_args()[:2] == ["--target", "qemu@bookworm-backports"] and "--gl" in b.cli_args()
    assert "--qemu" not in b.cli_args()  # the suite says which QEMU


def test_a_command_refused_at_its_feature_gate_judges_the_gate_alone(ir):
    ex = Exercised(Protocol(ir))
    p = Protocol(ir)
    no3d = ReferenceTarget(ir, frozenset({"VIRTIO_GPU_F_EDID"}))
    o = Oracle(p, session_header(ir, no3d), exercised=ex)
    submit = _submit(p, 7)  # no VIRGL: refused at the gate, and no context 7 either
    o.step("controlq", [submit], [24], Reply("answered", (0x1200).to_bytes(4, "little") + bytes(20)))
    doc = ex.to_json()
    assert doc["families"]["3d"]["gated"] == 1 and doc["families"]["3d"]["judged"] == 0
    assert [(r["check"], r["held"]) for r in doc["checks"]] == [("feature-gate", 1)]


def test_the_render_oracle_forgets_a_texture_when_a_stream_reuses_a_sub_context_or_a_handle(ir):
    p = Protocol(ir)
    m = RenderModel(FENCE)
    for raw in _scene(p, virgl.FORMAT_B8G8R8A8_UNORM, (1.0, 0.0, 0.0, 1.0)):
        m.follow(p.codec.decode_request(raw), True)
    assert m.follow(p.codec.decode_request(_readback(p)), True) is not None
    # the same scene again: sub-context 1 and surface 1 exist, the renderer keeps them (and what they drew)
    again = _submit(p, 1, fence=3, stream=virgl.clear_scene(5, virgl.FORMAT_B8G8R8A8_UNORM, (0.0, 1.0, 0.0, 1.0)))
    m.follow(p.codec.decode_request(again), True)
    assert m.follow(p.codec.decode_request(_readback(p)), True) is None
