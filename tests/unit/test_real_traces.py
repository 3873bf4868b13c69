"""The committed real traces check clean, and hand-made faults put into them are found where they were put, and nothing else."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from virtgpu_conform.checker.check.engine import Checker
from virtgpu_conform.checker.check.session import Recording, check_session
from virtgpu_conform.checker.traces.qemu_log import UNTRACED
from virtgpu_conform.model.protocol import Protocol

TRACES = Path(__file__).resolve().parents[2] / "traces"
SESSIONS = sorted(p.parent for p in TRACES.glob("qemu-*/*/qemu-trace.log"))
BASE = TRACES / "qemu-7.2" / "fbdev-modetest"
# Real sessions faults are put into: one per importer's kind of log (QEMU's full log and the one
# traced the documented way; Linux 6.1's tracepoints and 6.12's, with seqno).
BASES = {
    "qemu-full+linux-6.1": BASE,
    "qemu-full+linux-6.12": TRACES / "qemu-7.2" / "fbdev-modetest-linux-6.12",
    "qemu-gpu-only+linux-6.12": TRACES / "qemu-7.2" / "gpu-only-linux-6.12",
}

ERR_UNSPEC, ERR_RESOURCE, ERR_PARAM = 0x1200, 0x1203, 0x1205
OK_NODATA, OK_DISPLAY_INFO = 0x1100, 0x1101


@pytest.fixture(scope="module")
def protocol(ir):
    return Protocol(ir)


def check(protocol, *files: Path, profile: str = "strict") -> Checker:
    """The files as one session (merged), checked as `check` checks them."""
    return check_session(Recording.of(*files), protocol, profile).checker


def test_there_are_real_traces():
    assert len(SESSIONS) >= 2, f"no captured sessions under {TRACES}"
    versions = {p.parent.name for p in SESSIONS}
    assert "qemu-7.2" in versions


@pytest.mark.parametrize("session", SESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_session_checks_clean(protocol, session):
    qemu, guest = session / "qemu-trace.log", session / "guest-tracepoints.log"
    merged = check(protocol, qemu, guest)
    alone_q, alone_g = check(protocol, qemu), check(protocol, guest)
    for c in (merged, alone_q, alone_g):
        assert [f for f in c.findings if f.definite] == []
        assert c.exchanges > 20
    assert merged.unidentified == alone_g.unidentified == 0
    # QEMU traces no event for the capset and blob-mapping commands (the GL sessions send them): its
    # full log alone has their elements, answered and unnamed, and says so for each; traced the
    # documented way (no pops) it has nothing of them, and the guest's log alone shows them merged.
    untraced = {k: n for k, n in merged.commands.items() if k.removeprefix("VIRTIO_GPU_CMD_") in UNTRACED}
    no_pops = bool(alone_q.diagnostics.get("no-answers"))
    unnamed = 0 if no_pops else sum(untraced.values())
    assert alone_q.unidentified == alone_q.diagnostics.get("no-event", 0) == unnamed
    assert merged.diagnostics.get("no-event", 0) == 0  # the guest's log names them
    # Every other command is in QEMU's log in every session: merged, the session has exactly them too.
    assert {k: n for k, n in merged.commands.items() if k not in untraced} == alone_q.commands
    assert merged.exchanges == alone_q.exchanges + (sum(untraced.values()) if no_pops else 0)
    late = bool(alone_g.diagnostics.get("late-start"))  # the guest's tracepoints came on after its first commands
    if late:
        assert all(n <= merged.commands[k] for k, n in alone_g.commands.items())
        assert alone_g.exchanges < alone_q.exchanges
    else:  # the two sources see the same commands
        assert alone_g.commands == merged.commands
    # Together they leave nothing to guess on controlq (but for the commands only QEMU's log has).
    assert merged.findings == [] and (merged.max_split == 1 or late)
    assert merged.diagnostics.get("unmatched", 0) == 0
    verdicts = merged.verdicts()
    assert verdicts["device-operation/guest/driver-must.2"]["verdict"] == "pass"  # backing before transfer
    assert not any(v["verdict"] == "fail" for v in verdicts.values())


# --- faults put into a real session --------------------------------------------------------


class Session:
    """Both logs of one real session, with commands inserted where neither source has one in flight.

    Either kind of QEMU log (with pops and fills, or traced the documented way, command events
    alone) and either guest format (6.1; 6.12 with seqno, renumbered past the insertion)."""

    def __init__(self, src: Path, dst: Path):
        shutil.copytree(src, dst)
        self.dir = dst
        self.qemu = (dst / "qemu-trace.log").read_text().splitlines()
        self.guest = (dst / "guest-tracepoints.log").read_text().splitlines()
        pop = re.search(r"virtqueue_pop vq (\S+)", "\n".join(self.qemu))
        self.gpu_only = pop is None
        self.ctrl_vq = pop.group(1) if pop else ""
        self.seqno = "seqno=" in (dst / "guest-tracepoints.log").read_text()

    def quiet_points(self) -> tuple[dict[int, int], dict[int, int]]:
        """control exchanges completed -> index of the line after which nothing is in flight, per log."""
        q, out, done = {}, set(), 0
        for i, line in enumerate(self.qemu):
            if self.gpu_only:  # each control command's event is the whole command
                if "virtio_gpu_cmd_" in line:
                    done += 1
                    q[done] = i
                continue
            m = re.search(r"virtqueue_(pop|fill) vq (\S+) elem (\S+)", line)
            if not m:
                continue
            if m.group(1) == "pop":
                out.add(m.group(3))
            else:
                out.discard(m.group(3))
                done += m.group(2) == self.ctrl_vq
                if not out:
                    q[done] = i
        g, pending, done = {}, 0, 0
        for i, line in enumerate(self.guest):
            if "vq=0 " not in line:
                continue
            if "virtio_gpu_cmd_queue:" in line:
                pending += 1
            elif "virtio_gpu_cmd_response:" in line:
                pending -= 1
                done += 1
                if pending == 0:
                    g[done] = i
        return q, g

    def insert(self, after: int, commands: list[dict]) -> list[int]:
        """Insert commands after the `after`-th quiet control exchange; returns their QEMU event line numbers."""
        q, g = self.quiet_points()
        k = sorted(set(q) & set(g))[after]
        qi, gi = q[k], g[k]
        prefix = "" if self.gpu_only else self.qemu[qi].split(":", 1)[0] + ":"
        qlines, glines, where = [], [], []
        for n, c in enumerate(commands):
            elem = f"0xdead{n:04x}0"
            if not self.gpu_only:
                qlines.append(f"{prefix}virtqueue_pop vq {self.ctrl_vq} elem {elem} in_num 1 out_num 1")
            qlines.append(f"{prefix}{c['event']}")
            where.append(qi + 1 + len(qlines))  # 1-based line number of the event
            if c.get("complaint") and not self.gpu_only:  # a log traced without -d guest_errors has none
                qlines.append(c["complaint"])
            if c.get("fill", True) and not self.gpu_only:
                qlines.append(f"{prefix}virtqueue_fill vq {self.ctrl_vq} elem {elem} len {c.get('len', 24)} idx 0")
            seq = f" num_free=63 seqno={k + n + 1}" if self.seqno else ""
            hdr = "vdev=0 vq=0 name=control type={:#x} flags=0x0 fence_id=0 ctx_id=0" + seq
            glines.append(
                f"            test-1       [000] .....     9.000000: virtio_gpu_cmd_queue: {hdr.format(c['type'])}"
            )
            if c.get("resp") is not None:
                glines.append(
                    f"     kworker/0:1-17      [000] .....     9.000001: virtio_gpu_cmd_response: "
                    f"{hdr.format(c['resp'])}"
                )
        if self.seqno:  # the control queue's later commands move up by as many
            self.guest[gi + 1 :] = [_renumber(line, len(commands)) for line in self.guest[gi + 1 :]]
        self.qemu[qi + 1 : qi + 1] = qlines
        self.guest[gi + 1 : gi + 1] = glines
        (self.dir / "qemu-trace.log").write_text("\n".join(self.qemu) + "\n")
        (self.dir / "guest-tracepoints.log").write_text("\n".join(self.guest) + "\n")
        return where


def _renumber(line: str, by: int) -> str:
    if "name=control" not in line:
        return line
    return re.sub(r"seqno=(\d+)", lambda m: f"seqno={int(m.group(1)) + by}", line)


def create(rid: int, w: int = 64, h: int = 64) -> dict:
    return {
        "event": f"virtio_gpu_cmd_res_create_2d res {rid:#x}, fmt 0x2, w {w}, h {h}",
        "type": 0x101,
        "resp": OK_NODATA,
    }


def attach(rid: int) -> dict:
    return {"event": f"virtio_gpu_cmd_res_back_attach res {rid:#x}", "type": 0x106, "resp": OK_NODATA}


def rejected(c: dict, code: int, why: str) -> dict:
    return {**c, "resp": code, "complaint": f"virtio_gpu_test: {why}"}


FAULTS = {
    # name: (commands inserted, index of the faulty one, side, check, requirement or None)
    "use-after-unref": (
        [
            create(0x63),
            {"event": "virtio_gpu_cmd_res_unref res 0x63", "type": 0x102, "resp": OK_NODATA},
            rejected(
                {"event": "virtio_gpu_cmd_res_xfer_toh_2d res 0x63", "type": 0x105},
                ERR_RESOURCE,
                "invalid resource specified 99",
            ),
        ],
        2,
        "driver",
        "resource-exists",
        None,
    ),
    "transfer-without-backing": (
        [
            create(0x63),
            rejected(
                {"event": "virtio_gpu_cmd_res_xfer_toh_2d res 0x63", "type": 0x105}, ERR_UNSPEC, "no backing storage 99"
            ),
        ],
        1,
        "driver",
        "backing-attached",
        "device-operation/guest/driver-must.2",
    ),
    "scanout-rect-outside-resource": (
        [
            create(0x63),
            attach(0x63),
            rejected(
                {"event": "virtio_gpu_cmd_set_scanout id 0, res 0x63, w 128, h 64, x 0, y 0", "type": 0x103},
                ERR_PARAM,
                "illegal scanout 0 bounds",
            ),
        ],
        2,
        "driver",
        "rect-inside-resource",
        "device-operation-controlq/VIRTIO_GPU_CMD_SET_SCANOUT/driver-must",
    ),
    "error-to-a-valid-request": (
        [{"event": "virtio_gpu_cmd_get_display_info ", "type": 0x100, "resp": ERR_UNSPEC}],
        0,
        "device",
        "response-type",
        None,
    ),
    "wrong-response-length": (
        [{"event": "virtio_gpu_cmd_get_display_info ", "type": 0x100, "resp": OK_DISPLAY_INFO, "len": 24}],
        0,
        "device",
        "response-length",
        None,
    ),
    "ok-to-a-double-create": ([create(0x63), create(0x63)], 1, "driver", "resource-id-free", None),
}


@pytest.mark.parametrize(
    "fault, base",
    # a log traced without virtqueue_fill has no lengths to be wrong
    [(f, b) for f in sorted(FAULTS) for b in sorted(BASES) if not (f == "wrong-response-length" and "gpu-only" in b)],
)
def test_fault_found_where_it_was_put(protocol, tmp_path, fault, base):
    """Merged: QEMU's log and the guest's fill each other's gaps, whatever each lacks alone."""
    cmds, bad, side, check_id, req = FAULTS[fault]
    s = Session(BASES[base], tmp_path / "s")
    where = s.insert(10, cmds)
    c = check(protocol, s.dir / "qemu-trace.log", s.dir / "guest-tracepoints.log")
    got = [(f.where.line, f.side, f.check, f.definite) for f in c.findings]
    expect = [(where[bad], side, check_id, True)]
    if fault == "ok-to-a-double-create":  # the device accepted it too: both sides are at fault
        expect.append((where[bad], "device", "response-type", True))
    assert sorted(got) == sorted(expect), c.findings
    first = next(f for f in c.findings if f.side == side)
    assert first.where.file.endswith("qemu-trace.log") and first.index > 10
    assert first.also and first.also[0].file.endswith("guest-tracepoints.log")
    if req:
        assert first.reqs == (req,) and first.spec and first.spec[0][0].endswith(".tex")
    assert first.message and "\n" not in first.message
    if fault == "use-after-unref":
        assert any("UNREF" in what for _, what in first.related)


def test_missing_response_in_qemu_log(protocol, tmp_path):
    s = Session(BASE, tmp_path / "s")
    where = s.insert(5, [{**create(0x63), "fill": False, "resp": None}])
    c = check(protocol, s.dir / "qemu-trace.log")
    # Later commands were answered while it waited, yet the trace never shows its answer: a device
    # may complete out of order, so this is possible, not definite.
    assert [(f.where.line, f.side, f.check, f.definite) for f in c.findings] == [
        (where[0], "device", "no-response", False)
    ]
    assert "later requests were answered" in c.findings[0].reason


def test_qemu_log_alone_finds_what_it_can_see(protocol, tmp_path):
    s = Session(BASE, tmp_path / "s")
    where = s.insert(10, FAULTS["use-after-unref"][0])
    c = check(protocol, s.dir / "qemu-trace.log")
    assert [(f.where.line, f.check) for f in c.findings] == [(where[2], "resource-exists")]


def test_guest_log_alone_cannot_tell_the_side(protocol, tmp_path):
    """Without payloads, an error answer is non-conformant for some side, but the trace cannot say which."""
    s = Session(BASE, tmp_path / "s")
    s.insert(10, FAULTS["use-after-unref"][0])
    c = check(protocol, s.dir / "guest-tracepoints.log")
    assert [f for f in c.findings if f.definite] == []
    possible = [f for f in c.findings if not f.definite]
    assert len(possible) == 1 and possible[0].check == "response-type" and "resource_id" in possible[0].message


FAST_VS_GENERAL = [
    *SESSIONS,  # merged
    *(s / name for s in SESSIONS for name in ("qemu-trace.log", "guest-tracepoints.log")),  # each log alone
    *sorted((Path(__file__).parents[1] / "data" / "fuzz").glob("*.ndjson")),
]


@pytest.mark.parametrize("path", FAST_VS_GENERAL, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_the_fast_paths_check_as_the_general_path(protocol, path):
    """The checker's remembered verdicts and clean path, switched off through `fast=False`, change no
    finding, verdict, count or reading, on every real session and every saved fuzz reproducer."""
    from virtgpu_conform import check_trace

    fast, general = (check_trace(path, spec=protocol, fast=f, timeline=True) for f in (True, False))
    paths = fast.sessions[0].checker.fast_paths
    assert paths is not None and general.sessions[0].checker.fast_paths is None
    if fast.sessions[0].exchanges >= 100:  # the modetest sessions: long enough to repeat themselves
        assert paths.settled or paths.clean_memo, "the fast paths were never taken: the comparison shows nothing"
    assert fast.to_json()["sessions"] == general.to_json()["sessions"]
    assert fast.sessions[0].exchanges > 0


def test_there_are_sessions_of_every_kind():
    """Linux 6.1 and 6.12 guests, QEMU 7.2 and 10.0, QEMU traced fully and the documented way, a late start."""
    names = {f"{p.parent.name}/{p.name}" for p in SESSIONS}
    assert {
        "qemu-7.2/fbdev-modetest",
        "qemu-10.0/fbdev-modetest",
        "qemu-7.2/fbdev-modetest-linux-6.12",
        "qemu-10.0/fbdev-modetest-linux-6.12",
        "qemu-7.2/gpu-only-linux-6.12",
        "qemu-7.2/late-start-linux-6.12",
    } <= names
    assert {
        "qemu-7.2/gl",
        "qemu-10.0/gl",
        "qemu-10.0/gl-blob",
        "qemu-10.0/gl-blob-linux-6.12",
        "qemu-10.0/gl-blob-gpu-only-linux-6.12",
    } <= names
    assert "virtqueue_pop" not in (TRACES / "qemu-7.2" / "gpu-only-linux-6.12" / "qemu-trace.log").read_text()
    assert "seqno=" in (TRACES / "qemu-7.2" / "fbdev-modetest-linux-6.12" / "guest-tracepoints.log").read_text()


def test_a_guest_log_that_starts_late_is_aligned_by_seqno(protocol):
    """Linux 6.12 with its virtio transport built in, its tracepoints on after the driver probed: the
    guest's first command is seqno=k, QEMU's log has all of them. Merged, QEMU's k-th command since
    the reset pairs with the guest's seqno=k, the ones before are QEMU's alone, and it is said."""
    from virtgpu_conform.checker.traces import sources
    from virtgpu_conform.checker.traces.events import Diagnostic, Exchange

    d = TRACES / "qemu-7.2" / "late-start-linux-6.12"
    first = int(re.search(r"name=control .*seqno=(\d+)", (d / "guest-tracepoints.log").read_text()).group(1))
    assert first > 1
    qemu = sources.events(str(d / "qemu-trace.log"), None, protocol.codec)
    guest = sources.events(str(d / "guest-tracepoints.log"), None, protocol.codec)
    evs = list(sources.merged(qemu, guest))
    control = [e for e in evs if isinstance(e, Exchange) and e.queue == "controlq"]
    assert [e.seqno for e in control] == list(range(1, len(control) + 1))
    assert all(not e.also for e in control[: first - 1])  # before the guest's log began: QEMU's alone
    assert all(e.also and e.also[0].file.endswith("guest-tracepoints.log") for e in control[first - 1 :])
    assert all(e.resp is not None for e in control[first - 1 :])  # the guest's answers, paired by number
    notes = [e for e in evs if isinstance(e, Diagnostic)]
    assert [(n.code, n.level) for n in notes] == [("late-start", "info")], notes
    assert f"seqno={first}" in notes[0].message and f"the {first - 1} before it" in notes[0].message


GPU_ONLY_FAULTS = {
    # name: (commands inserted, index of the faulty one, check, definite)
    "use-after-unref": (FAULTS["use-after-unref"][0], 2, "resource-exists", True),
    "rect-outside-the-resource": (FAULTS["scanout-rect-outside-resource"][0], 2, "rect-inside-resource", True),
    "unknown-resource": (
        [{"event": "virtio_gpu_cmd_res_flush res 0x77, w 8, h 8, x 0, y 0", "type": 0x104}],
        0,
        "resource-exists",
        True,
    ),
    # The first create may have been refused with OUT_OF_MEMORY, which the spec allows to any create
    # and a log without answers cannot rule out: then the second is right. Possible, and it says so.
    "duplicate-create": ([create(0x63), create(0x63)], 1, "resource-id-free", False),
}


@pytest.mark.parametrize("fault", sorted(GPU_ONLY_FAULTS))
def test_the_documented_qemu_log_alone_finds_the_drivers_faults(protocol, tmp_path, fault):
    """QEMU traced with -trace 'virtio_gpu*' alone: no answers, yet the command stream and its fields
    prove what the driver did wrong, at the event's line; definite unless a reading the spec allows
    (an answer the log does not show) makes the command right."""
    cmds, bad, check_id, definite = GPU_ONLY_FAULTS[fault]
    s = Session(BASES["qemu-gpu-only+linux-6.12"], tmp_path / "s")
    where = s.insert(10, cmds)
    c = check(protocol, s.dir / "qemu-trace.log")
    got = [(f.where.line, f.side, f.check, f.definite) for f in c.findings]
    assert got == [(where[bad], "driver", check_id, definite)], c.findings
    if not definite:
        assert c.findings[0].reason == (
            f"conformant if the device rejected RESOURCE_CREATE_2D at {s.dir / 'qemu-trace.log'}:{where[0]} "
            "(the trace does not show those answers)"
        )
    assert c.diagnostics.get("no-answers") == 1  # and it says what it lacks


@pytest.mark.parametrize("base", ["qemu-full+linux-6.1", "qemu-full+linux-6.12"])
def test_a_guest_log_alone_finds_what_the_device_got_wrong(protocol, tmp_path, base):
    """Each guest format alone: an error to a request that has no fields to get wrong is the device's,
    definite, at the guest's line of it."""
    s = Session(BASES[base], tmp_path / "s")
    s.insert(10, FAULTS["error-to-a-valid-request"][0])
    lines = (s.dir / "guest-tracepoints.log").read_text().splitlines()
    line = 1 + next(i for i, x in enumerate(lines) if "test-1" in x)
    c = check(protocol, s.dir / "guest-tracepoints.log")
    assert [(f.where.line, f.side, f.check, f.definite) for f in c.findings] == [
        (line, "device", "response-type", True)
    ], c.findings


def test_every_reading_blaming_one_side_is_one_definite_finding(protocol, tmp_path):
    """A create whose answer the log does not show, then a transfer with no backing attached: read
    one way the resource exists unbacked, the other way (the create refused) it does not exist.
    Either way the driver is at fault: one definite finding, naming the other reading's rule; which
    requirement it broke stays open, so the requirement's verdict is inconclusive."""
    s = Session(BASES["qemu-gpu-only+linux-6.12"], tmp_path / "s")
    where = s.insert(10, [create(0x63), {"event": "virtio_gpu_cmd_res_xfer_toh_2d res 0x63", "type": 0x105}])
    c = check(protocol, s.dir / "qemu-trace.log")
    assert [(f.where.line, f.side, f.check, f.definite) for f in c.findings] == [
        (where[1], "driver", "backing-attached", True)
    ]
    assert c.findings[0].message.endswith(
        "(every reading of what the trace leaves unsaid blames the driver: in another, resource-exists)"
    )
    assert c.verdicts()["device-operation/guest/driver-must.2"]["verdict"] == "inconclusive"


def test_what_needs_the_answers_a_log_does_not_show_is_inconclusive(protocol):
    """The device's duties in its answers (here: echoing the fence of the fenced transfer) are
    inconclusive from QEMU's log alone, which shows no answer header, never a pass; merged with the
    guest's log, which shows it, they pass."""
    fence_echo = "device-operation-request-header/fence_id/device-MUST"
    for d in ("fbdev-modetest", "gpu-only-linux-6.12"):
        session = TRACES / "qemu-7.2" / d
        alone = check(protocol, session / "qemu-trace.log").verdicts()[fence_echo]
        merged = check(protocol, session / "qemu-trace.log", session / "guest-tracepoints.log").verdicts()[fence_echo]
        assert (alone["verdict"], merged["verdict"]) == ("inconclusive", "pass"), (d, alone, merged)


def test_an_answer_no_reading_allows_is_the_devices_fault(protocol, tmp_path):
    """QEMU's log alone leaves the header's flags and fence unknown, so the driver may have broken a
    header rule; but then the device owed an error, and a 408-byte answer to RESOURCE_CREATE_2D (an
    OK_DISPLAY_INFO's size) is wrong whatever the header said: definite, the device's."""
    s = Session(BASE, tmp_path / "s")
    where = s.insert(10, [{**create(0x63), "len": 408}])
    c = check(protocol, s.dir / "qemu-trace.log")
    assert [(f.where.line, f.side, f.check, f.definite) for f in c.findings] == [
        (where[0], "device", "response-type", True)
    ]
    assert "the device wrote 408 bytes" in c.findings[0].message


GL_SESSIONS = sorted(p for p in SESSIONS if p.name.startswith("gl"))
COMMANDS_3D = {
    "CTX_CREATE",
    "CTX_DESTROY",
    "CTX_ATTACH_RESOURCE",
    "CTX_DETACH_RESOURCE",
    "RESOURCE_CREATE_3D",
    "TRANSFER_TO_HOST_3D",
    "TRANSFER_FROM_HOST_3D",
    "SUBMIT_3D",
    "GET_CAPSET_INFO",
    "GET_CAPSET",
}
BLOB = {"RESOURCE_CREATE_BLOB", "RESOURCE_MAP_BLOB", "RESOURCE_UNMAP_BLOB"}


@pytest.mark.parametrize("session", GL_SESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_real_guest_3d_session_has_every_3d_command(protocol, session):
    """A guest rendering through Mesa's virgl driver (kmscube, glmark2) plus the kernel-ioctl round trip:
    every 3D command type is in it, each answered OK; on Debian 13's QEMU with blob=true, Mesa's
    coherent buffer is a mapped and unmapped blob. The GL really was virgl, and every step ran."""
    import json

    c = check(protocol, session / "qemu-trace.log", session / "guest-tracepoints.log")
    sent = {k.removeprefix("VIRTIO_GPU_CMD_") for k, n in c.commands.items() if n}
    info = json.loads((session / "session.json").read_text())
    blob = "blob=true" in info["device"]
    assert info["device"].startswith("virtio-gpu-gl-pci")
    assert COMMANDS_3D | (BLOB if blob else set()) <= sent, sent
    assert (BLOB & sent) == (BLOB if blob else set())
    assert all(s["rc"] == 0 for s in info["steps"]) and len(info["steps"]) >= 9, info["steps"]
    serial = (session / "serial.log").read_text()
    assert "virgl (LLVMPIPE" in serial and " 0 pixels differ" in serial
    from virtgpu_conform.checker.traces import sources
    from virtgpu_conform.checker.traces.events import Exchange

    evs = sources.merged(
        *(sources.events(str(session / f), None, protocol.codec) for f in ("qemu-trace.log", "guest-tracepoints.log"))
    )
    answers = {}
    for e in evs:
        if isinstance(e, Exchange) and e.req.name and e.resp is not None:
            answers.setdefault(e.req.name.removeprefix("VIRTIO_GPU_CMD_"), set()).add(e.resp.name)
    for name in COMMANDS_3D | (BLOB if blob else set()):
        assert all(a.startswith("VIRTIO_GPU_RESP_OK_") for a in answers[name]), (name, answers[name])
    if blob:
        assert answers["RESOURCE_MAP_BLOB"] == {"VIRTIO_GPU_RESP_OK_MAP_INFO"}
