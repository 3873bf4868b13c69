"""The adapter protocol: the reference device served over a pipe and a socket, checked by the model;
devices that hang, die or send garbage; no device program outlives its target or its tool."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from processes import assert_children_die_with_tool
from processes import gone as _gone

from virtgpu_conform.checker.devices import adapter_wire as ap
from virtgpu_conform.checker.devices.adapter import AdapterTarget
from virtgpu_conform.checker.devices.children import Child
from virtgpu_conform.checker.devices.target import TargetError
from virtgpu_conform.checker.fuzz.record import record
from virtgpu_conform.model.protocol import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_qemu_target import check_native, script  # noqa: E402  (the same script and checking as for QEMU)

SERVE = [sys.executable, "-m", "virtgpu_conform.checker.devices.adapter_serve"]
OK_NODATA, ERR_INVALID_RESOURCE_ID = 0x1100, 0x1203


def _program(tmp_path, body: str) -> list[str]:
    """A device program: Python with the serving helpers at hand."""
    path = tmp_path / "device.py"
    path.write_text(
        textwrap.dedent("""
        import os, struct, sys, time
        from virtgpu_conform.checker.devices import adapter_wire as ap
        from virtgpu_conform.checker.devices.adapter_serve import serve, read_frame
        from virtgpu_conform.checker.devices.target import ReferenceTarget
        from virtgpu_conform.spec.load import load_snapshot
        ir = load_snapshot()
        out = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
    """)
        + textwrap.dedent(body)
    )
    return [sys.executable, str(path)]


def _create(p: Protocol, rid: int = 1) -> bytes:
    return p.codec.encode(
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": rid, "format": 1, "width": 8, "height": 8}
    )


def _type(data: bytes) -> int:
    return int.from_bytes(data[:4], "little")


# --- frames ---------------------------------------------------------------------
def test_frames_round_trip():
    f = ap.request(1, [b"abc", b""], [24, 8])
    length, kind = struct.unpack_from("<IB", f)
    assert kind == ap.REQUEST and length == len(f) - 4
    assert ap.parse_request(f[5:]) == (1, [b"abc", b""], [24, 8])
    cfg = bytearray(20)
    cfg[12] = 1
    hello = ap.device_hello(0b11, bytes(cfg), 1 << 20, [(2, 2, 256)])[5:]
    assert ap.parse_device_hello(hello) == (0b11, 1 << 20, [(2, 2, 256)], bytes(cfg))
    assert ap.parse_reply(ap.reply(ap.ANSWERED, 24, bytes(24))[5:], [24]) == (0, 24, bytes(24))
    # a used length beyond the buffers: the bytes are the buffers' worth
    assert ap.parse_reply(ap.reply(ap.ANSWERED, 100, bytes(24))[5:], [24]) == (0, 100, bytes(24))


@pytest.mark.parametrize(
    "body, words",
    [
        (ap.reply(ap.ANSWERED, 24, bytes(10))[5:], "carries 10 written bytes, not 24"),
        (ap.reply(7, 0)[5:], "status 7"),
        (ap.reply(ap.NO_ANSWER, 4, b"xxxx")[5:], "no answer"),
        (b"\x00", "shorter than its fixed part"),
    ],
)
def test_bad_replies_are_named(body, words):
    with pytest.raises(ap.ProtocolError, match=words):
        ap.parse_reply(body, [24])


def test_bad_hellos_are_named():
    with pytest.raises(ap.ProtocolError, match="not the magic"):
        ap.parse_device_hello(b"HTTP" + bytes(40))
    with pytest.raises(ap.ProtocolError, match="version 9"):
        ap.parse_device_hello(b"VGCA" + struct.pack("<H", 9) + bytes(40))
    with pytest.raises(ap.ProtocolError, match="config bytes"):
        ap.parse_device_hello(ap.device_hello(0, bytes(8))[5:])


# --- the reference device served ----------------------------------------------------
def _check_script(ir, target) -> None:
    p = Protocol(ir)
    steps = script(p.codec)
    out = io.StringIO()
    replies = record(ir, target, steps, out)
    assert [r.status for r in replies] == ["answered"] * len(steps)
    c = check_native(p, out.getvalue())
    assert c.exchanges == len(steps) and c.unidentified == 0
    line = {i: 2 + 2 * i for i in range(len(steps))}
    driver = sorted({(f.where.line, f.check) for f in c.findings if f.side == "driver"})
    assert driver == sorted(
        [
            (line[8], "resource-id-nonzero"),
            (line[9], "resource-exists"),
            (line[10], "scanout-id"),
            (line[11], "rect-inside-resource"),
            (line[14], "resource-exists"),
        ]
    )
    assert [f for f in c.findings if f.side == "device"] == []


def test_the_reference_device_over_a_pipe(ir, tmp_path):
    with AdapterTarget(ir, command=SERVE, log_path=str(tmp_path / "stderr.log")) as t:
        assert t.settings.known and t.settings.num_scanouts == 1 and "VIRTIO_GPU_F_EDID" in t.settings.features
        _check_script(ir, t)
        pid = t.child.pid
        p = Protocol(ir)
        t.reset()  # a RESET frame: the same program, a fresh device
        assert t.child.pid == pid and t.starts == 1
        assert _type(t.send("controlq", [_create(p)], [24]).data) == OK_NODATA
    assert _gone(pid), "the device program outlived its target"


def test_the_reference_device_over_a_socket(ir, tmp_path):
    sock = str(tmp_path / "dev.sock")
    server = Child([*SERVE, "--socket", sock, "--features", "VIRTIO_GPU_F_EDID"])
    try:
        with AdapterTarget(ir, socket_path=sock) as t:
            assert t.settings.features == frozenset({"VIRTIO_GPU_F_EDID"})
            _check_script(ir, t)
        with AdapterTarget(ir, socket_path=sock) as t:  # a new connection is a new device
            p = Protocol(ir)
            assert _type(t.send("controlq", [_create(p)], [24]).data) == OK_NODATA
            assert _type(t.send("controlq", [_create(p)], [24]).data) == ERR_INVALID_RESOURCE_ID
            t.reset()
            assert _type(t.send("controlq", [_create(p)], [24]).data) == OK_NODATA
    finally:
        server.stop()


def test_features_are_negotiated(ir):
    with AdapterTarget(
        ir,
        command=[*SERVE, "--features", "VIRTIO_GPU_F_EDID,VIRTIO_GPU_F_VIRGL"],
        features=frozenset({"VIRTIO_GPU_F_VIRGL", "VIRTIO_GPU_F_RESOURCE_BLOB"}),
    ) as t:
        assert t.settings.features == frozenset({"VIRTIO_GPU_F_VIRGL"})


# --- devices that misbehave -----------------------------------------------------------
HANGS_AFTER_TWO = """
    class Hangs(ReferenceTarget):
        n = 0
        def send(self, queue, outs, in_sizes):
            Hangs.n += 1
            if Hangs.n > 2:
                time.sleep(3600)
            return super().send(queue, outs, in_sizes)
    serve(ir, sys.stdin.buffer, out, lambda f: Hangs(ir, f))
"""


@pytest.mark.slow
def test_a_device_that_hangs_is_no_answer_and_reset_restarts_it(ir, tmp_path):
    p = Protocol(ir)
    info = p.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")
    with AdapterTarget(ir, command=_program(tmp_path, HANGS_AFTER_TWO), timeout=0.5) as t:
        assert [t.send("controlq", [info], [408]).status for _ in range(2)] == ["answered"] * 2
        t0 = time.monotonic()
        r = t.send("controlq", [info], [408])
        assert r.status == "no-answer" and "no REPLY within 0.5 s" in r.detail
        assert time.monotonic() - t0 < 3
        assert t.send("controlq", [info], [408]).status == "no-answer"  # the connection is given up
        hung = t.child.pid
        t.reset()  # no RESET frame into a hung stream: a new program
        assert t.starts == 2 and _gone(hung)
        assert t.send("controlq", [info], [408]).status == "answered"
        pid = t.child.pid
    assert _gone(pid)


DIES_AT_THREE = """
    class Dies(ReferenceTarget):
        n = 0
        def send(self, queue, outs, in_sizes):
            Dies.n += 1
            if Dies.n == 3:
                print("device model crashed", file=sys.stderr, flush=True)
                os._exit(3)
            return super().send(queue, outs, in_sizes)
    serve(ir, sys.stdin.buffer, out, lambda f: Dies(ir, f))
"""


def test_a_device_that_dies_mid_run_is_reported(ir, tmp_path):
    p = Protocol(ir)
    steps = script(p.codec)
    out = io.StringIO()
    with AdapterTarget(ir, command=_program(tmp_path, DIES_AT_THREE), log_path=str(tmp_path / "err.log")) as t:
        replies = record(ir, t, steps, out)
        assert [r.status for r in replies] == ["answered", "answered", "died"]
        assert "status 3" in replies[2].detail and "device model crashed" in replies[2].detail
        t.reset()
        assert t.send("controlq", [p.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")], [408]).status == "answered"
    c = check_native(p, out.getvalue())  # the recorded run says what happened and stays checkable
    assert c.exchanges == 3 and c.unidentified == 0


@pytest.mark.parametrize(
    "body, words",
    [
        # an HTTP server, not a device
        ("out.write(b'HTTP/1.1 400 Bad Request\\r\\n\\r\\n'); time.sleep(30)", "frame length"),
        (
            "read_frame(sys.stdin.buffer); out.write(ap.frame(ap.HELLO, b'HELLO-ish-bytes!' + bytes(30))); time.sleep(30)",
            "not the magic",
        ),
        ("read_frame(sys.stdin.buffer); out.write(ap.frame(0x42, b'x')); time.sleep(30)", "unknown frame type 0x42"),
        (
            "read_frame(sys.stdin.buffer); out.write(ap.frame(ap.HELLO, b'VGCA\\x02\\x00' + bytes(30))); time.sleep(30)",
            "version 2",
        ),
        (
            "read_frame(sys.stdin.buffer); out.write(ap.frame(ap.REPLY, bytes(8))); time.sleep(30)",
            "REPLY frame, not HELLO",
        ),
        # the config (decoded by the SpecIR's layout) says no capsets; the HELLO lists two
        (
            "read_frame(sys.stdin.buffer); out.write(ap.device_hello(0, bytes(16), 0, [(1, 1, 1), (2, 2, 2)])); "
            "time.sleep(30)",
            "lists 2 capsets; its config says num_capsets 0",
        ),
    ],
)
def test_garbage_at_hello_is_a_clear_error(ir, tmp_path, body, words):
    with pytest.raises(TargetError, match=words) as exc:
        AdapterTarget(ir, command=_program(tmp_path, body), start_timeout=5)
    assert "does not speak the adapter protocol" in str(exc.value)


GARBAGE_REPLY = """
    read_frame(sys.stdin.buffer)
    cfg = struct.pack("<4I", 0, 0, 1, 0)
    out.write(ap.device_hello(0, cfg))
    read_frame(sys.stdin.buffer)
    out.write(ap.reply(ap.ANSWERED, 24, b"short"))
    time.sleep(30)
"""


def test_garbage_after_hello_is_a_clear_error(ir, tmp_path):
    p = Protocol(ir)
    with AdapterTarget(ir, command=_program(tmp_path, GARBAGE_REPLY)) as t:
        assert t.settings.known and t.settings.features == frozenset()
        with pytest.raises(TargetError, match="carries 5 written bytes, not 24"):
            t.send("controlq", [p.codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO")], [408])
        pid = t.child.pid
    assert _gone(pid)


def test_a_device_error_frame_is_raised(ir, tmp_path):
    with AdapterTarget(ir, command=SERVE) as t:
        # the reference server answers a request on a queue virtio-gpu does not have with ERROR
        t.stream.write(ap.request(5, [b"x"], [24]), time.monotonic() + 2)
        kind, body = t.stream.read_frame(time.monotonic() + 2)
        assert kind == ap.ERROR and b"no queue 5" in body


@pytest.mark.slow
def test_programs_that_cannot_start(ir, tmp_path):
    with pytest.raises(TargetError, match="cannot start the device program"):
        AdapterTarget(ir, command=[str(tmp_path / "no-such-program")])
    with pytest.raises(TargetError, match=r"exited \(status 7\)"):
        AdapterTarget(ir, command=[sys.executable, "-c", "import sys; sys.exit(7)"])
    with pytest.raises(TargetError, match="gave no HELLO"):
        AdapterTarget(ir, command=[sys.executable, "-c", "import time; time.sleep(30)"], start_timeout=0.5)
    with pytest.raises(TargetError, match="nothing accepts connections"):
        AdapterTarget(ir, socket_path=str(tmp_path / "none.sock"), start_timeout=0.2)


def test_no_device_program_survives_a_killed_tool(tmp_path):
    child = textwrap.dedent("""
        import sys, time
        from virtgpu_conform.spec.load import load_snapshot
        from virtgpu_conform.checker.devices.adapter import AdapterTarget
        t = AdapterTarget(load_snapshot(), command=[sys.executable, "-m", "virtgpu_conform.checker.devices.adapter_serve"])
        print(t.child.pid, flush=True)
        time.sleep(60)
    """)
    assert_children_die_with_tool(child, 1, "the device program")


def test_a_program_that_ignores_end_of_input_is_killed(ir, tmp_path):
    stubborn = """
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            serve(ir, sys.stdin.buffer, out, lambda f: ReferenceTarget(ir, f))
        finally:
            time.sleep(3600)
    """
    t = AdapterTarget(ir, command=_program(tmp_path, stubborn))
    pid = t.child.pid
    t0 = time.monotonic()
    t.close()
    assert _gone(pid) and time.monotonic() - t0 < 3


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace():
    """Stopping is SIGTERM first; a child that ignores it is killed once the grace runs out."""
    import time

    from virtgpu_conform.checker.devices.children import Child

    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    c = Child([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert c.proc.stdout.readline() == b"ready\n"
    t0 = time.monotonic()
    c.stop(grace=0.5)
    assert c.returncode == -9 and time.monotonic() - t0 >= 0.5
    polite = Child(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE
    )
    assert polite.proc.stdout.readline() == b"ready\n"
    polite.stop(grace=5)
    assert polite.returncode == -15  # it left on SIGTERM, without waiting out the grace
