"""Fuzz campaigns: repeatable on the reference device, real findings on QEMU, reproducers that check and replay."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from processes import alive as _alive

from virtgpu_conform.checker.cli.main import main
from virtgpu_conform.checker.devices.target import ReferenceTarget
from virtgpu_conform.checker.fuzz.campaign import Campaign
from virtgpu_conform.checker.fuzz.replay import judge_qtest_run
from virtgpu_conform.checker.fuzz.run import fuzz
from virtgpu_conform.model.adversary import Edges
from virtgpu_conform.model.protocol import Protocol

pytestmark = pytest.mark.integration
DATA = Path(__file__).parent.parent / "data" / "fuzz"


def _campaign(ir, seed: int, cache: dict) -> Campaign:
    c = Campaign(Protocol(ir), lambda d: ReferenceTarget(ir), seed=seed, steps=20)
    # z3's answers of its own, so that it is seen asked whatever ran before in this process
    c.edges = Edges(c.protocol, cache=cache)
    c.run(examples=25)
    return c


def test_reference_campaign_is_repeatable_and_self_consistent(ir):
    cache: dict = {}
    a, b = _campaign(ir, 7, cache), _campaign(ir, 7, cache)
    # The model's own device never breaks the model: any finding here is a bug in the tool.
    assert a.found == {} and b.found == {}, [str(s) for s in a.found]
    assert a.commands == b.commands > 100
    assert a.cases == b.cases >= 25 and a.stopped == "examples"
    assert a.edges.solved > 0  # the z3 edge reading was used, not only hypothesis' own values


def test_the_campaigns_own_stop_is_not_taken_for_a_flaky_device(ir):
    """Hypothesis books a case the campaign's Stop ended as one that stopped drawing there; when it
    was a mutation of a case that had drawn further, it raised a flakiness error over the Stop, and
    every such campaign ended warning that the device answered a rerun differently."""
    c = Campaign(Protocol(ir), lambda d: ReferenceTarget(ir), seed=3, steps=20, hunt=False)
    c.run(examples=300)
    assert c.flaky == [] and c.stopped == "examples" and c.rounds == 1 and c.cases == 300


@pytest.mark.needs_qemu
def test_qemu_campaign_finds_shrinks_and_saves_reproducers(ir, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main, ["fuzz", "--target", "qemu", "--examples", "60", "--seed", "1", "--steps", "20", "--out", str(out)]
    )
    assert r.exit_code in (0, 1), r.output
    result = json.loads((out / "fuzz-result.json").read_text())
    assert result["schema"] == "virtgpu-conform/fuzz-result" and result["target"] == "qemu"
    assert result["commands"] > 0 and result["cases"] >= 60
    findings = result["findings"]
    # QEMU 7.2 answers a 1-pixel-high scanout, and commands it could not read whole, in ways the model
    # flags; whichever the seed reaches first, a short campaign finds something and shrinks it.
    assert findings, r.output
    assert (r.exit_code == 1) == any(f["kind"] in ("violation", "crash", "liveness") for f in findings)
    shrunk = [f for f in findings if f["shrunk"]]
    assert shrunk, findings
    for f in shrunk:
        case = Path(f["reproducer"]).parent
        assert (case / "qemu-trace.log").exists() and (case / "qtest.log").exists()
        assert f["reproduced"] is True, f
        # what the fuzzer saw, `check` sees in the saved trace
        chk = CliRunner().invoke(main, ["check", f["reproducer"], "--json", str(case / "check.json")])
        assert chk.exit_code in (0, 1), chk.output
        checked = json.loads((case / "check.json").read_text())
        res = checked["sessions"][0]
        if f["kind"] == "divergence":
            assert any(d["check"] == f["check"] for d in res["divergences"]), res["divergences"]
        else:
            assert any(x["side"] == "device" and x["definite"] for x in res["findings"]), res["findings"]
    # every finding shown again on a fresh device has its case in QEMU's own form, which shows it
    # again with QEMU alone (a picture too: repro.sh takes the replay's screendumps again)
    protocol = Protocol(ir)
    for f in findings:
        if not f["reproduced"]:
            continue
        case = Path(f["reproducer"]).parent
        assert f["device_reproducer"][:2] == ["repro.qtest", "repro.sh"], f
        assert all(re.fullmatch(r"seen-\d+\.ppm", x) for x in f["device_reproducer"][2:]), f
        run = subprocess.run(
            ["/bin/sh", str(case / "repro.sh")],
            env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            timeout=120,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0 or f["kind"] == "crash", f
        assert "differs from seen" not in run.stdout, (f, run.stdout)
        seen = judge_qtest_run(protocol, f["reproducer"], str(case))
        assert (f["kind"], f["command"], f["check"]) in {
            (o.signature.kind, o.signature.command, o.signature.check) for o in seen
        }, f


@pytest.mark.needs_qemu
def test_saved_reproducer_replays_on_qemu(tmp_path):
    """A case the fuzzer saved against QEMU 7.2: a request cut inside its 24-byte header is never answered."""
    repro = DATA / "qemu-7.2-short-header-never-answered.ndjson"
    r = CliRunner().invoke(main, ["fuzz", "--replay", str(repro), "--target", "qemu", "--out", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "liveness: any command no-response-to-short-buffer" in r.output
    replayed = (tmp_path / "replay.ndjson").read_text().splitlines()
    assert json.loads(replayed[1])["framing"] == {"outs": [4], "ins": [24]}
    assert json.loads(replayed[2])["kind"] == "no-response"
    # and `check` calls the saved case a definite liveness finding on the device
    chk = CliRunner().invoke(main, ["check", str(repro)])
    assert chk.exit_code == 1 and "no-response" in chk.output


@pytest.mark.needs_qemu
def test_empty_backing_accepted_then_missing_replays_on_qemu(tmp_path):
    """Found by a campaign against QEMU 7.2 (and shown by vhost-user-gpu too): RESOURCE_ATTACH_BACKING
    with no entries is answered OK_NODATA, and then the resource acts as if it had no backing:
    TRANSFER_TO_HOST_2D and RESOURCE_DETACH_BACKING are refused with ERR_UNSPEC."""
    repro = DATA / "qemu-7.2-empty-backing-accepted-then-missing.ndjson"
    r = CliRunner().invoke(main, ["fuzz", "--replay", str(repro), "--target", "qemu", "--out", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "line 6: violation: TRANSFER_TO_HOST_2D response-type" in r.output, r.output
    assert "line 8: violation: RESOURCE_DETACH_BACKING response-type" in r.output, r.output
    answers = [json.loads(x) for x in (tmp_path / "replay.ndjson").read_text().splitlines()]
    assert [a["bytes"][:8] for a in answers if a["kind"] == "response"] == [
        "00110000",
        "00110000",
        "00120000",
        "00120000",
    ]
    chk = CliRunner().invoke(main, ["check", str(repro), "--json", str(tmp_path / "check.json")])
    assert chk.exit_code == 1, chk.output
    found = json.loads((tmp_path / "check.json").read_text())["sessions"][0]["findings"]
    device = {(f["line"], f["check"]) for f in found if f["side"] == "device" and f["definite"]}
    assert device == {(6, "response-type"), (8, "response-type")}, found


def test_replay_of_a_broken_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"kind":"session"}\n{"kind":"request","id":1,"queue":"controlq","bytes":"zz"}\n')
    r = CliRunner().invoke(main, ["fuzz", "--replay", str(bad), "--target", "reference"])
    assert r.exit_code == 2 and f"{bad}:2" in r.output and "hex" in r.output


@pytest.mark.needs_qemu
@pytest.mark.parametrize("mode", [[], ["--survey"]])  # a hunt; a survey, pipelined on two or more CPUs
def test_ctrl_c_keeps_findings_and_leaves_no_qemu(tmp_path, mode):
    out = tmp_path / "out"
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from virtgpu_conform.checker.cli.main import main; main()",
            "fuzz",
            "--target",
            "qemu",
            "--time",
            "5m",
            "--out",
            str(out),
            *mode,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out / "fuzz-result.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    # QEMU is restarted after a stall, so catch a moment when one is running
    deadline = time.monotonic() + 20
    while not (qemus := _children_named(p.pid, "qemu-system")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert qemus, "the campaign should be running QEMU by now"
    everyone = _children_named(p.pid, "")  # QEMU, and the sender process of a pipelined campaign
    p.send_signal(signal.SIGINT)
    try:
        stdout, stderr = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGUSR1)  # the CLI prints its stacks on SIGUSR1: where did it hang?
        time.sleep(1)
        p.kill()
        stdout, stderr = p.communicate()
        pytest.fail(f"the campaign did not stop within 60 s of Ctrl-C; its stderr ends:\n{stderr[-4000:]}")
    assert p.returncode == 130, stderr
    result = json.loads((out / "fuzz-result.json").read_text())
    assert result["stopped"] == "interrupted" and result["commands"] > 0
    assert "Traceback" not in stderr
    for pid in qemus:
        assert not _alive(pid), f"QEMU {pid} outlived an interrupted campaign"
    assert result["pipelined"] == (bool(mode) and len(os.sched_getaffinity(0)) >= 2)
    for pid in everyone:
        assert not _alive(pid), f"process {pid} outlived an interrupted campaign"


def _children_named(parent: int, name: str) -> list[int]:
    """Descendants of `parent` whose command line holds `name` (a pipelined campaign's QEMU is a
    child of its sender process)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                if name.encode() in cmd:
                    out.append(int(d))
                out += _children_named(int(d), name)
    return out


@pytest.mark.needs_qemu
def test_differential_run_tables_where_answers_differ(tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main,
        [
            "fuzz",
            "--target",
            "qemu",
            "--target",
            "reference",
            "--examples",
            "20",
            "--seed",
            "2",
            "--steps",
            "20",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code in (0, 1), r.output
    result = json.loads((out / "fuzz-result.json").read_text())
    rows = result["differential"]
    assert rows, "QEMU and the reference device pick different error codes; a short run meets some"
    for row in rows:
        assert set(row["answers"]) == {"qemu", "reference"}
        assert row["answers"]["qemu"] != row["answers"]["reference"]
        assert row["verdict"] in ("open", "violation") and row["count"] >= 1
        assert row["verdict"] == "open" or row["basis"], row
        assert Path(row["first_case"]).read_text().startswith('{"kind":"session"')
    # the spec lets a device pick any error for a bad request: such a difference is open, not a violation
    assert any(row["verdict"] == "open" and "any error" in row["why"] for row in rows), rows
    assert "where the targets' answers differ" in r.output


class _Stalls(ReferenceTarget):
    """The reference device, but a controlq chain shorter than the header is never completed (as QEMU
    7.2 and 10.0 do): the fuzzer must learn not to spend a timeout and a restart on each such chain."""

    def __init__(self, ir):
        super().__init__(ir)
        self.stalls: dict[bool, int] = {}

    def send(self, queue, outs, in_sizes):
        from virtgpu_conform.checker.devices.target import Reply

        if queue == "controlq" and sum(map(len, outs)) < 24:
            self.stalls[bool(in_sizes)] = self.stalls.get(bool(in_sizes), 0) + 1
            return Reply("no-answer", detail="never completed (test)")
        return super().send(queue, outs, in_sizes)


@pytest.mark.parametrize("hunt", [False, True])
def test_a_malformation_the_device_stalls_on_twice_is_not_sent_again(ir, tmp_path, hunt):
    targets = []

    def make(log_dir):
        targets.append(_Stalls(ir))
        return targets[-1]

    c = Campaign(Protocol(ir), make, seed=5, steps=20, hunt=hunt, out=str(tmp_path / "out"))
    c.run(examples=150)
    main_target = targets[0]  # the others are fresh devices for the replays of shrunk findings
    assert main_target.stalls, "the campaign never sent a chain shorter than the header"
    result = json.loads((tmp_path / "out" / "fuzz-result.json").read_text())
    assert result["not_sent"] and all(
        n["problems"] == ["short-buffer"] and not n["whole_header"] and n["device"] == "no-answer"
        for n in result["not_sent"]
    ), result["not_sent"]
    # Twice to learn it, then never again. (In a hunt, the finding's own step alone, replayed on a fresh
    # device, is its minimal case: hypothesis did not have to shrink it through a stall a case.)
    assert all(sent == 2 for sent in main_target.stalls.values()), main_target.stalls
    liveness = [f for f in result["findings"] if f["kind"] == "liveness"]
    assert liveness and liveness[0]["check"] == "no-response-to-short-buffer"
    if hunt:
        assert liveness[0]["shrunk"] and liveness[0]["reproduced"], liveness
        assert liveness[0]["steps"] == 1


def test_a_survey_runs_as_long_as_asked(ir, monkeypatch):
    """--time is the campaign's length: a round that uses its whole budget of cases is followed by
    another (with another seed) until the time is up, never a stop for 'budget used'."""
    from virtgpu_conform.checker.fuzz import campaign

    monkeypatch.setattr(campaign, "ROUND_EXAMPLES", 15)
    r = fuzz("reference", time=3, seed=4, steps=5, survey=True)
    assert r.doc["stopped"] == "time" and r.doc["seconds"] >= 3 and r.doc["rounds"] > 1, r.doc


@pytest.mark.needs_qemu
def test_a_campaigns_device_log_stays_bounded(ir, tmp_path, monkeypatch):
    """QEMU's trace log grows with every command: past LOG_LIMIT the next case starts a new QEMU,
    whose log starts anew."""
    from virtgpu_conform.checker.devices import qemu

    monkeypatch.setattr(qemu, "LOG_LIMIT", 4096)
    log = tmp_path / "qemu-trace.log"
    t = qemu.QemuTarget(ir, log_path=str(log))
    try:
        first = t.q
        while log.stat().st_size <= 4096:
            t.send("controlq", [bytes.fromhex("00010000" + "00" * 20)], [408])
        t.reset()
        assert t.q is not first and log.stat().st_size < 4096
        t.reset()  # a small log: a virtio reset, the same QEMU
        assert t.starts == 2
    finally:
        t.close()
