"""The pipelined campaign: the target in a sender process of its own. Judged as the serial campaign
judges, on the reference device and on QEMU; nothing it starts outlives the tool; its failures are
named, not tracebacks."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from processes import alive, assert_children_die_with_tool

from virtgpu_conform.checker.cli.main import main
from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.devices.target import ReferenceTarget, TargetError
from virtgpu_conform.checker.fuzz.campaign import Campaign
from virtgpu_conform.checker.fuzz.pipeline import Pipeline, SenderFailed
from virtgpu_conform.model.protocol import Protocol

pytestmark = pytest.mark.integration


def _run(ir, pipeline: bool, hunt: bool, seed: int = 7) -> Campaign:
    c = Campaign(Protocol(ir), lambda d: ReferenceTarget(ir), seed=seed, steps=20, hunt=hunt, pipeline=pipeline)
    c.run(examples=25)
    return c


@pytest.mark.parametrize("hunt", [False, True])
def test_a_pipelined_campaign_generates_and_judges_as_the_serial_one(ir, hunt):
    serial, piped = _run(ir, False, hunt), _run(ir, True, hunt)
    assert piped.result()["pipelined"] and not serial.result()["pipelined"]
    assert piped.commands == serial.commands > 100 and piped.cases == serial.cases
    assert piped.found == serial.found == {}
    # every requirement was judged the same number of times, with the same outcomes
    assert {k: vars(v) for k, v in piped.tallies.items()} == {k: vars(v) for k, v in serial.tallies.items()}
    assert piped.tallies


class _Quirky(ReferenceTarget):
    """The reference device, but RESOURCE_UNREF is answered ERR_UNSPEC: a finding for the hunt to shrink."""

    def send(self, queue, outs, in_sizes):
        from virtgpu_conform.checker.devices.target import Reply

        data = b"".join(outs)
        if queue == "controlq" and len(data) >= 24 and int.from_bytes(data[:4], "little") == 0x0102:
            return Reply("answered", (0x1200).to_bytes(4, "little") + data[4:24])
        return super().send(queue, outs, in_sizes)


def test_a_pipelined_hunt_shrinks_and_reproduces_what_it_finds(ir, tmp_path):
    found = {}
    for pipeline in (False, True):
        out = tmp_path / str(pipeline)
        c = Campaign(Protocol(ir), lambda d: _Quirky(ir), seed=3, steps=20, pipeline=pipeline, out=str(out))
        c.run(examples=40)
        assert c.error is None and not c.flaky, (c.error, c.flaky)
        unref = [f for f in c.found.values() if f.signature.command == "VIRTIO_GPU_CMD_RESOURCE_UNREF"]
        assert unref and all(f.shrunk and f.reproduced for f in unref), [f.to_json() for f in c.found.values()]
        # shrunk: at most a scene (six commands), the unref, and a few steps hypothesis kept
        assert all(len(f.steps) <= 12 for f in unref), [len(f.steps) for f in unref]
        found[pipeline] = {f.signature for f in unref}
    # the same finding whether the answers came at once or later (shrunk to much the same size: the
    # serial case ends at the step that shows it, the pipelined one draws on to its end)
    assert found[True] == found[False]


def test_a_target_that_cannot_start_in_the_sender_is_a_target_error(ir):
    def make(log_dir):
        raise TargetError("no QEMU binary 'nope' (install qemu-system-x86 or pass --qemu PATH)")

    with pytest.raises(TargetError, match="no QEMU binary 'nope'"):
        Pipeline(make)


class _Buggy(ReferenceTarget):
    def send(self, queue, outs, in_sizes):
        raise ValueError("a bug in a target")


def test_a_bug_in_the_sender_ends_the_campaign_with_its_traceback_kept(ir, tmp_path):
    c = Campaign(Protocol(ir), lambda d: _Buggy(ir), seed=1, pipeline=True, out=str(tmp_path))
    c.run(examples=5)
    assert c.stopped == "internal error" and c.error["type"] == SenderFailed.__name__
    assert "ValueError: a bug in a target" in c.error["message"]
    assert "Traceback" in Path(c.error["traceback"]).read_text()
    assert not c.target.proc.is_alive()
    assert json.loads((tmp_path / "fuzz-result.json").read_text())["error"]["type"] == "SenderFailed"


def _descendants(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids += [int(d), *_descendants(int(d))]
    return kids


@pytest.mark.needs_qemu
def test_the_sender_and_its_qemu_die_with_a_killed_tool(tmp_path):
    child = textwrap.dedent("""
        import os, time
        from virtgpu_conform.spec.load import load_snapshot
        from virtgpu_conform.checker.fuzz.pipeline import Pipeline
        from virtgpu_conform.checker.devices.qemu import QemuTarget
        ir = load_snapshot()
        p = Pipeline(lambda d: QemuTarget(ir))
        qemu = [int(t) for t in open(f"/proc/{p.proc.pid}/task/{p.proc.pid}/children").read().split()]
        print(p.proc.pid, *qemu, flush=True)
        time.sleep(60)
    """)
    assert_children_die_with_tool(child, 2, "the sender or its QEMU")


@pytest.mark.needs_qemu
def test_close_leaves_nothing_running(ir):
    p = Pipeline(lambda d: QemuTarget(ir))
    pids = [p.proc.pid, *_descendants(p.proc.pid)]
    assert len(pids) == 2
    p.close()
    assert not any(alive(pid) for pid in pids)


class _WrongPicture(QemuTarget):
    """QEMU, but every screendump has its first pixel changed: the pixel oracle must say so."""

    def screendump(self, twin: bool = False):
        shot = super().screendump(twin)
        if shot is None:
            return None
        w, h, rgb = shot
        return w, h, bytes([rgb[0] ^ 0xFF]) + rgb[1:]


@pytest.mark.needs_qemu
@pytest.mark.parametrize("make, shows", [(QemuTarget, False), (_WrongPicture, True)])
def test_the_pixel_oracle_judges_a_pipelined_campaign(ir, tmp_path, make, shows):
    """A screendump must be taken right after its flush, with nothing later in the pipe: QEMU then
    shows what the model expects, and a picture changed behind the oracle's back is reported."""
    c = Campaign(
        Protocol(ir), lambda d: make(ir, pixels=True, timeout=0.3), seed=4, steps=20, hunt=False, pipeline=True
    )
    c.run(examples=40)
    assert c.error is None
    pixels = [f for f in c.found.values() if f.signature.check == "pixels"]
    assert bool(pixels) == shows, [f.message for f in pixels]


@pytest.mark.needs_qemu
@pytest.mark.parametrize("flag", ["--pipeline", "--no-pipeline"])
def test_the_cli_pipelines_a_device_target_unless_told_not_to(tmp_path, flag):
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main,
        [
            "fuzz",
            "--target",
            "qemu",
            "--examples",
            "15",
            "--seed",
            "2",
            "--steps",
            "10",
            "--survey",
            flag,
            "--out",
            str(out),
        ],
    )
    assert r.exit_code in (0, 1), r.output
    result = json.loads((out / "fuzz-result.json").read_text())
    assert result["pipelined"] == (flag == "--pipeline") and result["commands"] > 50
    assert ("pipelined" in r.output) == (flag == "--pipeline")
    # a survey notes what it finds and shrinks nothing
    assert result["findings"] and not any(f["shrunk"] for f in result["findings"])


class _ResetFailsOnce(ReferenceTarget):
    """The reference device, but its sixth reset cannot restart it (later ones can)."""

    def __init__(self, ir):
        super().__init__(ir)
        self.resets = 0

    def reset(self):
        self.resets += 1
        if self.resets == 6:
            raise TargetError("the device did not come back (test)")
        super().reset()


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_reset_that_fails_leaves_no_answer_judged_against_another_chain(ir, pipeline):
    """Hypothesis reruns the case a failed reset interrupted; the answers still in the pipe then belong
    to no case, and must not be taken for the next case's (the reference device would then break its
    own model, and every such answer would be a finding)."""
    c = Campaign(Protocol(ir), lambda d: _ResetFailsOnce(ir), seed=2, steps=2, hunt=False, pipeline=pipeline)
    try:
        c.run(examples=30)
    except TargetError as exc:
        assert "did not come back" in str(exc)
    assert c.found == {}, [str(s) for s in c.found]
    assert c.commands > 10


class _ProgramBreaks(ReferenceTarget):
    """The reference device, but its 40th chain gets a TargetError, as an adapter's device program
    that breaks the protocol does."""

    def __init__(self, ir):
        super().__init__(ir)
        self.sent = 0

    def send(self, queue, outs, in_sizes):
        self.sent += 1
        if self.sent == 40:
            raise TargetError("the device program answered garbage (test)")
        return super().send(queue, outs, in_sizes)


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_target_error_mid_campaign_is_the_targets_not_a_bug(ir, pipeline):
    c = Campaign(Protocol(ir), lambda d: _ProgramBreaks(ir), seed=2, steps=10, pipeline=pipeline)
    with pytest.raises(TargetError, match="answered garbage"):
        c.run(examples=30)
    assert c.error is None
