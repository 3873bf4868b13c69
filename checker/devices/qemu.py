"""QEMU's built-in virtio-gpu-pci as a target, over qtest: started, brought to DRIVER_OK, reset, stopped."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, cast

from virtgpu_conform.model.codec import codec_for
from virtgpu_conform.model.state import Settings
from virtgpu_conform.spec.ir import SpecIR

from . import migration, qtest_script, scratch
from .guest_ram import PATTERN, PATTERN_BASE
from .migration import MigrationFailed, MigrationRefused, Twin
from .qmp import Qmp, QmpError
from .qtest import QemuGone, QemuProcess, Shot, exit_status
from .running_vm import HALT_SH, accelerator, halt_bios
from .target import (
    CONFIG,
    DEVICE_RESET,
    EARLY_NOTIFY,
    HOST_VISIBLE,
    MIGRATION,
    PENDING,
    QUEUES,
    TOGETHER,
    DeviceRefused,
    Reply,
    Target,
    TargetError,
    chains_of_step,
    config_of_step,
    feature_bits,
    host_visible_of_step,
    settings_from_config,
    used_reply,
)
from .virtio_pci import DeviceError, Stalled, VirtioPci

NEEDS_RESET = 0x40  # virtio device status: the device hit an error it cannot recover from by itself
MIGRATION_TIMEOUT = 10.0  # seconds a save or a load of the machine may take
CAPSETS_ASKED = 16  # capset indexes asked at initialisation at most (a device may claim any number)
INIT_TIMEOUT = 2.0  # seconds an answer at initialisation may take
LOG_LIMIT = 64 << 20  # bytes of QEMU's trace log past which the next case starts a new QEMU, and a new log


def _other_log(path: str, first: str) -> str:
    """Where the device a migration starts logs, when its source logs at `path`: beside the target's
    first log (qemu-trace.log, qemu-trace.migrated.log), in turn."""
    if path == "/dev/null":
        return path
    stem, ext = os.path.splitext(first)
    return f"{stem}.migrated{ext}" if path == first else first


def _exited(q: QemuProcess) -> Reply:
    return Reply("died", detail=f"QEMU exited ({exit_status(q.proc.poll())})")


def _gone(exc: QemuGone) -> Reply:
    return Reply("died", detail=str(exc) + (f": {exc.log.strip()[-300:]}" if exc.log else ""))


def _display_info(ir: SpecIR) -> tuple[bytes, int]:
    """A GET_DISPLAY_INFO request, and the size of its answer."""
    codec = codec_for(ir)
    return codec.encode("VIRTIO_GPU_CMD_GET_DISPLAY_INFO"), codec.layout("VIRTIO_GPU_RESP_OK_DISPLAY_INFO").size


def _send_on(q: QemuProcess, pci: VirtioPci, queue: str, outs, in_sizes, timeout: float) -> Reply:
    """One chain to the device `pci` drives in `q` (or a CONFIG write), and what became of it."""
    if not q.alive:
        return _exited(q)
    if queue == CONFIG:
        return _configure(pci, outs[0], in_sizes[0])
    if queue == TOGETHER:
        return _together_on(q, pci, outs[0], timeout)
    if queue == HOST_VISIBLE:
        return _host_visible_on(q, pci, outs[0])
    try:
        used = pci.send(QUEUES[queue], outs, in_sizes, timeout)
    except Stalled as exc:
        detail = str(exc)
        try:
            if pci.status() & NEEDS_RESET:
                detail += "; the device set DEVICE_NEEDS_RESET (it took the chain for a broken one)"
        except QemuGone:
            pass
        return Reply("no-answer", detail=detail)
    except QemuGone as exc:
        return _gone(exc)
    return used_reply(used.length, used.data, sum(in_sizes))


def _host_visible_on(q: QemuProcess, pci: VirtioPci, buf: bytes) -> Reply:
    """The driver's writes and reads in the host-visible region (a HOST_VISIBLE step), through the BAR
    the shared-memory capability names: the bytes read."""
    region = pci.host_visible()
    if region is None:
        return Reply("refused", detail="the device has no host-visible region")
    offset, data, n = host_visible_of_step(buf)
    if offset + max(len(data), n) > region[1]:  # past the BAR: another device's or nobody's memory
        return Reply("refused", detail=f"{offset:#x} + {max(len(data), n)} is past the {region[1]}-byte region")
    try:
        q.memwrite(region[0] + offset, data)
        return Reply("answered", q.memread(region[0] + offset, n))
    except QemuGone as exc:
        return _gone(exc)


def _together_on(q: QemuProcess, pci: VirtioPci, buf: bytes, timeout: float) -> Reply:
    """Chains made available together (a TOGETHER step): each one's answer and when it came."""
    queue, chains = chains_of_step(buf)
    try:
        answers, order = pci.send_group(QUEUES[queue], chains, timeout)
    except QemuGone as exc:
        return _gone(exc)
    except DeviceError as exc:  # a used element naming no chain in flight: the queue cannot be read on
        return Reply("no-answer", detail=str(exc))
    parts = []
    for k, used in enumerate(answers):
        if used is None:
            said = f"{len(order)} of the {len(chains)} chains sent together were completed"
            parts.append(
                Reply("no-answer", detail=f"no completion on queue {QUEUES[queue]} within {timeout:g} s ({said})")
            )
        else:
            part = used_reply(used.length, used.data, sum(chains[k][1]))
            part.order = order.index(k)
            parts.append(part)
    if not q.alive:
        return _exited(q)
    return Reply("answered" if len(order) == len(chains) else "no-answer", parts=parts)


def _writes_ram(queue: str, outs: Sequence[bytes], types: frozenset[bytes]) -> bool:
    """Whether a chain (or a TOGETHER step's) asks the device to write guest RAM: its type among `types`."""
    if queue == TOGETHER:
        return any(_writes_ram("controlq", o, types) for o, _ in chains_of_step(outs[0])[1])
    return bool(outs) and outs[0][:4] in types


def _configure(pci: VirtioPci, out: bytes, size: int) -> Reply:
    """A driver write to the device configuration, between two reads of the whole of it."""
    offset, data = config_of_step(out)
    try:
        before = pci.config(size)
        pci.config_write(offset, data)
        return Reply("answered", before + pci.config(size))
    except QemuGone as exc:
        return _gone(exc)


# QEMU's words for a -device it cannot make at all, or an option it cannot read: the user's to fix,
# not the device's answer to its options.
NOT_A_REFUSAL = ("is not a valid device model name", "not found", "expects")


def refusal(device: str, log: str) -> str:
    """What QEMU said when it would not realize `device` as configured ("-device DEV,OPTS: why"),
    or "" when its exit said something else."""
    for line in log.splitlines():
        m = re.search(rf"-device {re.escape(device)}(?:,[^:]*)?: (.+)", line)
        if m and "warning:" not in m.group(1) and not any(w in m.group(1) for w in NOT_A_REFUSAL):
            return m.group(1).strip()
    return ""


def _initialise_on(
    pci: VirtioPci, ir: SpecIR, want, early_notify: bool = False, starting: bool = False, wait: float = INIT_TIMEOUT
) -> Settings:
    """Virtio reset, features, config, queues, DRIVER_OK; `early_notify`: every queue kicked before
    it is set up again (a device must ignore it). `starting`: a device that does not answer its first
    request (GET_CAPSET_INFO) has not started (DeviceError), rather than stalled in a case."""
    agreed = pci.negotiate(feature_bits(ir, want))
    cfg = pci.config(ir.config.size)
    if early_notify:
        pci.notify_all()
    pci.setup_queues()
    pci.driver_ok()
    capsets = _capsets(pci, ir, codec_for(ir).decode_config(cfg).get("num_capsets"), starting, wait)
    region = pci.host_visible()
    return settings_from_config(ir, agreed, cfg, capsets, region[1] if region else None)


def _capsets(
    pci: VirtioPci, ir: SpecIR, count, starting: bool = False, wait: float = INIT_TIMEOUT
) -> Optional[list[tuple[int, int, int]]]:
    """What GET_CAPSET_INFO says of each capset index, as a driver asks right after DRIVER_OK (the
    model then knows the capsets a CTX_CREATE or a GET_CAPSET may name); None when it did not say."""
    if not isinstance(count, int) or not 0 < count <= CAPSETS_ASKED:
        return None
    codec = codec_for(ir)
    ok = "VIRTIO_GPU_RESP_OK_CAPSET_INFO"
    out = []
    for index in range(count):
        ask = codec.encode("VIRTIO_GPU_CMD_GET_CAPSET_INFO", {"capset_index": index})
        try:
            used = pci.send(QUEUES["controlq"], [ask], [codec.layout(ok).size], wait)
        except Stalled as exc:
            # Seen with vhost-device-gpu behind QEMU 7.2 in runs of the suite sharing the CPU: the backend's
            # log ends at its memory table (no rings set up, no request seen), and nothing came.
            if starting:
                raise DeviceError(f"GET_CAPSET_INFO at initialisation: {exc}") from None
            return None
        m = codec.decode_response(used.data[: used.length])
        if m.name != ok:
            return None
        f = m.fields
        ids = (f["capset_id"], f["capset_max_version"], f["capset_max_size"])
        if not all(isinstance(v, int) for v in ids):
            return None
        out.append(cast("tuple[int, int, int]", ids))
    return out


def _reset_on(q: QemuProcess, pci: VirtioPci, ir: SpecIR, want, flags: int) -> Reply:
    """A virtio reset mid-case (DEVICE_RESET), with a chain pending and early kicks as `flags` say."""
    if not q.alive:
        return _exited(q)
    try:
        if flags & PENDING:  # a chain on each queue
            info, answer = _display_info(ir)
            move = codec_for(ir).encode("VIRTIO_GPU_CMD_MOVE_CURSOR")
            pci.kick_and_reset([(QUEUES["controlq"], [info], [answer]), (QUEUES["cursorq"], [move], [answer])])
        _initialise_on(pci, ir, want, early_notify=bool(flags & EARLY_NOTIFY))
    except QemuGone as exc:
        return _gone(exc)
    except DeviceError as exc:
        return Reply("no-answer", detail=f"the device did not come back from a reset: {exc}")
    return Reply("answered")


# QEMU's words when a GL piece is missing, and the Debian package that brings it.
GL_MISSING = (
    ("'virtio-gpu-gl-pci' is not a valid device model name", "QEMU has no virtio-gpu-gl-pci module"),
    ("Display 'egl-headless' is not available", "QEMU has no egl-headless display module"),
    ("failed to initialize module", "QEMU's GL modules are not of this QEMU's build"),
    ("egl: render node init failed", "EGL found no renderer (Mesa's software one is in libgl1-mesa-dri)"),
    ("Failed to initialize virgl", "virglrenderer found no renderer (Mesa's software one is in libgl1-mesa-dri)"),
)
GL_PACKAGES = "qemu-system-gui (QEMU 7.2) or qemu-system-modules-opengl (QEMU 8 and later), libgl1-mesa-dri"
# A GL device renders in software (Mesa's llvmpipe) through EGL on GBM: /dev/null as the render node
# makes Mesa fall back to software where the machine has no GPU (REAL-TARGETS.md).
GL_DISPLAY = ("-display", "egl-headless,rendernode=/dev/null")


@dataclass(frozen=True)
class Tree:
    """How to run a QEMU that is not installed: a launcher before its binary, its -L folders, and the
    environment it needs (QEMU_MODULE_DIR; for a whole root, Mesa's driver folders)."""

    launcher: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def environ(self) -> Optional[dict]:
        return {**os.environ, **dict(self.env)} if self.env else None


LIBS = "usr/lib/x86_64-linux-gnu"


def unpacked_tree(binary: str) -> Tree:
    """For a QEMU unpacked from Debian's packages rather than installed (ROOT/usr/bin/qemu-system-x86_64):
    the -L folders of its firmware and the QEMU_MODULE_DIR of its modules, which it looks for under
    /usr otherwise. In a whole root of another release (debian_root.py: its own C library), it runs
    through that root's dynamic loader and libraries, and Mesa's loaders look for their drivers there
    too. An empty Tree for an installed QEMU."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(binary))))
    share = os.path.join(root, "usr", "share")
    if root == "/" or not os.path.isdir(os.path.join(share, "qemu")):
        return Tree()
    args = tuple(
        a for d in ("qemu", "seabios") if os.path.isdir(os.path.join(share, d)) for a in ("-L", os.path.join(share, d))
    )
    env = {}
    modules = os.path.join(root, LIBS, "qemu")
    if os.path.isdir(modules):
        env["QEMU_MODULE_DIR"] = modules
    whole = in_root(root)
    env.update(whole.env)
    return Tree(whole.launcher, args, tuple(sorted(env.items())))


def in_root(root: str) -> Tree:
    """How to run a program built for a whole Debian root of another release (debian_root.py) from the
    host: through the root's own dynamic loader and libraries, with Mesa's loaders looking for their
    drivers in the root too. An empty Tree when `root` is no such root."""
    loader = os.path.join(root, LIBS, "ld-linux-x86-64.so.2")
    if not (os.path.exists(os.path.join(root, "etc", "debian_version")) and os.path.exists(loader)):
        return Tree()
    libs = f"{os.path.join(root, LIBS)}:{os.path.join(root, 'lib', 'x86_64-linux-gnu')}"
    env = {
        "LIBGL_DRIVERS_PATH": os.path.join(root, LIBS, "dri"),
        "GBM_BACKENDS_PATH": os.path.join(root, LIBS, "gbm"),
        "__EGL_VENDOR_LIBRARY_DIRS": os.path.join(root, "usr", "share", "glvnd", "egl_vendor.d"),
    }
    return Tree((loader, "--library-path", libs), (), tuple(sorted(env.items())))


def gl_problem(log: str) -> str:
    """What QEMU's exit says is missing for a GL device, with the packages to install, or ""."""
    for words, what in GL_MISSING:
        if words in log:
            return f"{what}: install {GL_PACKAGES}"
    return ""


def _too_big(path: str) -> bool:
    try:
        return os.path.getsize(path) > LOG_LIMIT
    except OSError:
        return False


class QemuTarget(Target):
    """QEMU's built-in virtio-gpu-pci, driven over qtest with its trace and guest_errors in `log_path`.

    Subclasses (vhost-user-gpu) change how QEMU is started through `_argv` and `_spawn`;
    finding, negotiating and sending stay here.
    """

    config_writes = resets = host_visible_io = True

    def __init__(
        self,
        ir: SpecIR,
        features: Optional[frozenset[str]] = None,
        qemu: str = "qemu-system-x86_64",
        device: str = "virtio-gpu-pci",
        extra: Sequence[str] = (),
        log_path: Optional[str] = None,
        timeout: float = 2.0,
        qtest_log: Optional[str] = None,
        name: str = "qemu",
        pixels: bool = False,
        migrate: bool = False,
        gl: bool = False,
    ):
        """`pixels`: the pixel oracle's pattern in guest RAM and a monitor for screendumps (pixels.py).
        `migrate`: a monitor to migrate the device with (a MIGRATION step, migration.py).
        `gl`: the 3D (virgl) device, rendering in software, in a VM that runs (running_vm.py)."""
        super().__init__(name)
        binary = shutil.which(qemu)
        if binary is None:
            raise TargetError(f"no QEMU binary {qemu!r} (install qemu-system-x86 or pass --qemu PATH)")
        self.gl = gl
        if gl and device.split(",")[0] == "virtio-gpu-pci":  # with its properties (--device-opts)
            device = "virtio-gpu-gl-pci" + device[len("virtio-gpu-pci") :]
        self.tree = unpacked_tree(binary)
        self.tree_args, self.env = list(self.tree.args), self.tree.environ()
        self.workdir = ""  # HALT.BIN (and a vhost-user socket), made when first needed
        self.pixels, self.migrates = pixels, migrate
        self.qmp: Optional[Qmp] = None
        self.q: Optional[QemuProcess] = None
        self.twin: Optional[Twin] = None  # the device as it was before a migration in this case
        self.monitors = scratch.make("qmp") if pixels or migrate else ""
        self._monitor_count = 0
        self.ir, self.timeout, self.binary, self.device, self.extra = ir, timeout, binary, device, list(extra)
        # A log nobody asked to keep goes with the target; one asked for (a case's directory) stays.
        self.logs = "" if log_path else scratch.make("qemu")
        self.log_path = log_path or os.path.join(self.logs, "qemu-trace.log")
        self.qtest_log = qtest_log or "/dev/null"
        self.first_logs = (self.log_path, self.qtest_log)  # a migrated device's go beside them
        self.want = features if features is not None else frozenset(f.name for f in ir.features)
        self.starts = 0
        self.stall_resets = 0  # stalled devices a virtio reset brought back (no new QEMU)
        self.shots: list[bytes] = []  # the recorded session's screendumps, as QEMU wrote them
        self.ram_written = False  # a command that writes guest RAM was sent since the pattern was written
        code = codec_for(ir).by_name["VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D"].code
        self.writes_ram = frozenset({code.to_bytes(4, "little")})
        self.recording = False
        self.fresh_starts = False  # a campaign sets it when a rerun answered differently (campaign.py)
        try:
            self._start_again()
        except BaseException:
            self.close()
            raise

    def _argv(self) -> list[str]:
        if self.gl:
            # fmt: off
            return [*self.tree.launcher, self.binary, "-accel", accelerator(), "-machine", "q35", "-bios", self._halt(), "-nodefaults",
                    *GL_DISPLAY, "-m", "256M", *self._driven("virtqueue_pop", "virtqueue_fill"),
                    "-device", f"{self.device},addr=04.0", *self._monitor(), *self.tree_args, *self.extra]
            # fmt: on
        # fmt: off
        return [*self.tree.launcher, self.binary, "-machine", "q35", "-S", "-nodefaults", "-display", "none", "-m", "256M",
                *self._driven("virtqueue_pop", "virtqueue_fill"),
                "-device", f"{self.device},addr=04.0", *self._monitor(), *self.tree_args, *self.extra]
        # fmt: on

    def _halt(self) -> str:
        if not os.path.isdir(self.workdir):
            self.workdir = scratch.make("vm")
        self.halt_bin = halt_bios(self.workdir)
        return self.halt_bin

    def _driven(self, *traced: str) -> list[str]:
        """Driven over qtest on stdio, its device's events and errors (and `traced`) logged to log_path."""
        # fmt: off
        return ["-qtest", "stdio", "-qtest-log", self.qtest_log, "-trace", "virtio_gpu*",
                *(a for event in traced for a in ("-trace", event)), "-d", "guest_errors", "-D", self.log_path]
        # fmt: on

    def _monitor(self) -> list[str]:
        """A monitor socket of its own for the QEMU about to start (screendumps, migrations)."""
        if not (self.pixels or self.migrates):
            return []
        self._monitor_count += 1
        self.qmp = Qmp(scratch.socket_path(self.monitors, f"qmp-{self._monitor_count}.sock", "QEMU's monitor"))
        return self.qmp.argv()

    def _spawn(self) -> QemuProcess:
        return QemuProcess(self.argv, timeout=max(5.0, self.timeout), env=self.env or None)

    def _start(self) -> None:
        """Start QEMU and bring the device to DRIVER_OK."""
        self.log_path, self.qtest_log = self.first_logs
        self.argv = self._argv()
        self.describe = " ".join(shlex.quote(a) for a in self.argv)
        self.q = self._spawn()
        self.starts += 1
        if self.recording:
            self.q.script = []
        try:
            self.pci = VirtioPci(self.q)
            layout = getattr(self, "_layout", None)
            if layout is not None and layout[0] == self.argv_shape():
                self.pci.restore(layout[1])
            else:
                self.pci.find()
                self.pci.map_bars()
                self._layout = (self.argv_shape(), self.pci.layout())
            if self.pixels:
                self.q.memwrite(PATTERN_BASE, PATTERN)  # what a transfer reads, the same in every QEMU
                self.ram_written = False
            self._initialise()
        except (QemuGone, DeviceError) as exc:
            self._stop_qemu()  # this QEMU; the target's folders stay for the next
            log = getattr(exc, "log", "")  # a QemuGone's tail of what QEMU printed
            message = f"{self.binary} {self.device}: {exc}" + (f"\n{log}" if log else "")
            reason = refusal(self.device, log)
            if reason:
                raise DeviceRefused(message, reason) from None
            missing = gl_problem(log) if self.gl else ""
            raise TargetError(f"{missing}\n{message}" if missing else message) from None

    def argv_shape(self) -> tuple:
        """The command line but for its per-start parts (sockets, logs): what fixes the PCI layout."""
        return tuple(a for a in self.argv if "/" not in a)

    def _initialise(self) -> None:
        """Virtio reset, features, config, queues, DRIVER_OK: a device as fresh as after boot."""
        self.settings = _initialise_on(self.pci, self.ir, self.want, starting=True, wait=self.INIT_WAIT)

    def _start_again(self) -> None:
        """Start, and once more if that failed: Debian 13's GL QEMU once did not answer within its
        start's timeout in a 10-minute campaign, which then ended; a second start is what a user would try."""
        try:
            self._start()
        except DeviceRefused:
            raise
        except TargetError:
            self._stop_qemu()
            self._start()

    def reset(self) -> None:
        """A fresh device for the next case: a virtio reset (after a stall too, when the device then
        answers again), or a new QEMU when the last one died or does not answer after the reset, or
        when its log has grown past LOG_LIMIT (a new QEMU starts a new log: a campaign's stays bounded)."""
        self._drop_twin()
        if (
            self.q is not None
            and self.q.alive
            and not self.fresh_starts
            and not _too_big(self.log_path)
            and not _too_big(self.qtest_log)
        ):
            stalled = any(qd.stalled for qd in self.pci.queues.values())
            try:
                if self.ram_written:  # a transfer from the host may have written over the pattern
                    self.q.memwrite(PATTERN_BASE, PATTERN)
                    self.ram_written = False
                self._initialise()
                if not stalled or self._answers_again():
                    return
            except (QemuGone, DeviceError):
                pass
        self._stop_qemu()
        self._start_again()

    def _answers_again(self) -> bool:
        """After a stall and a reset: whether the device answers a GET_DISPLAY_INFO (then it is reset
        once more, for the next case to find it fresh)."""
        assert self.q is not None, "called on a running QEMU"
        probe, size = _display_info(self.ir)
        if _send_on(self.q, self.pci, "controlq", [probe], [size], self.timeout).status != "answered":
            return False
        self.stall_resets += 1
        self._initialise()
        return True

    def record(self) -> None:
        """A new QEMU whose every qtest command is kept, from its start (write_reproducer)."""
        self.recording = True
        self._stop_qemu()
        self._start_again()
        self.shots = []

    def write_reproducer(self, about: str) -> list[str]:
        """repro.qtest and repro.sh beside the log this target was given (none: nothing is kept)."""
        if self.logs or self.q is None or self.q.script is None:
            return []
        folder = os.path.dirname(os.path.abspath(self.log_path))
        qtest, sh = os.path.join(folder, "repro.qtest"), os.path.join(folder, "repro.sh")
        warm = round(self.WARM_UP / qtest_script.PACE)
        with open(qtest, "w") as fh:
            fh.write(qtest_script.render(self.q.script, self.SETTLE, warm))
        shots = qtest_script.shot_lines(self.q.script, self.SETTLE, warm)
        written = [qtest, sh]
        for n, seen in enumerate(self.shots, 1):
            if seen:  # what the replay's screendump showed, for repro.sh to compare its own with
                written.append(os.path.join(folder, f"seen-{n}.ppm"))
                with open(written[-1], "wb") as fh:
                    fh.write(seen)
        before, argv, after = self._repro_argv()
        first = qtest_script.first_poll_line(self.q.script, self.SETTLE)
        with open(sh, "w") as fh:
            fh.write(qtest_script.shell(argv, about, before, after, shots, (first, warm if first else 0)))
        os.chmod(sh, 0o755)
        return written

    SETTLE = qtest_script.SETTLE  # bytes each poll fills in a reproducer (qtest_script.py)
    WARM_UP = 0.0  # seconds a reproducer polls at its first poll, for a device slow to answer first
    INIT_WAIT = INIT_TIMEOUT  # seconds the first request at initialisation may take

    def _repro_argv(self) -> tuple[list[str], list[str], list[str]]:
        """The command line for repro.sh, and what runs before and after it: this QEMU's, with
        QEMU's own exit at the end of the script and the logs beside it; no QMP monitor (repro.sh
        adds an HMP one for the screendumps, when the session took any)."""
        swap = {self.qtest_log: "repro-qtest.log", self.log_path: "repro-qemu.log"}
        before, after = [], []
        if self.workdir:  # a VM that runs: its firmware made beside the script
            swap[self.halt_bin] = "HALT.BIN"
            before, after = [HALT_SH], ["rm -f HALT.BIN"]
        before += [f"export {k}={shlex.quote(v)}" for k, v in self.tree.env]
        start = len(self.tree.launcher) + 1  # the launcher and the binary
        argv = [*self.argv[:start], "-no-reboot"]
        args = iter(self.argv[start:])
        for a in args:
            if a == "-qmp":
                next(args)
            else:
                argv.append(swap.get(a, a))
        return before, argv, after

    def send(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> Reply:
        assert self.q is not None, "started by __init__ and by every reset"
        if queue == MIGRATION:
            return self._migrate()
        if queue == DEVICE_RESET:
            flags = outs[0][0] if outs and outs[0] else 0
            reply = _reset_on(self.q, self.pci, self.ir, self.want, flags)
            if self.twin is not None:
                reply.twin = _reset_on(self.twin.q, self.twin.pci, self.ir, self.want, flags)
            return reply
        if self.pixels and not self.ram_written and _writes_ram(queue, outs, self.writes_ram):
            self.ram_written = True
        reply = _send_on(self.q, self.pci, queue, outs, in_sizes, self.timeout)
        if self.twin is not None:
            reply.twin = _send_on(self.twin.q, self.twin.pci, queue, outs, in_sizes, self.timeout)
        return reply

    def _migrate(self) -> Reply:
        """Move the device to a new QEMU (migration.py); the one left behind stays as the case's twin."""
        assert self.q is not None and self.qmp is not None, "a target that migrates has a monitor"
        if self.q.script is not None:
            self.recording = False  # a session over two QEMUs has no single qtest script
        source, monitor = self.q, self.qmp
        state = os.path.join(self.monitors, "state")
        try:
            migration.save(monitor, state, MIGRATION_TIMEOUT)
        except MigrationRefused as exc:
            self.migrates = False  # not a finding: the machine (a device option) forbids it
            return Reply("refused", detail=str(exc))
        except (MigrationFailed, QmpError) as exc:
            return Reply("no-answer", detail=f"the device could not be saved: {exc}")
        # The new QEMU logs beside the source, which goes on (as the twin) with its own logs.
        # Two names taken in turn: a campaign's device logs stay two, each bounded.
        self.log_path = _other_log(self.log_path, self.first_logs[0])
        self.qtest_log = _other_log(self.qtest_log, self.first_logs[1])
        argv = [*self._argv(), "-incoming", f"exec:cat {shlex.quote(state)}"]
        try:
            self.q = QemuProcess(argv, timeout=max(5.0, self.timeout), env=self.env or None)
            migration.load(self.qmp, self.q, MIGRATION_TIMEOUT)
        except (MigrationFailed, QmpError, QemuGone) as exc:
            return Reply("died", detail=f"the device did not survive the migration: {exc}")
        finally:
            if os.path.exists(state):
                os.unlink(state)
            if self.twin is None:
                self.twin = Twin.of(source, self.pci, monitor)
            else:  # a second migration: the twin stays the device that never moved
                source.stop()
                monitor.close()
        self.pci.q = self.q
        return Reply("answered")

    def peek(self, addr: int, size: int) -> Optional[bytes]:
        if self.q is None or not self.q.alive:
            return None
        try:
            return self.q.memread(addr, size)
        except QemuGone:
            return None

    def screendump(self, twin: bool = False) -> Optional[tuple[int, int, bytes]]:
        """What the console shows (width, height, RGB), or None without a monitor or when it fails.
        `twin`: the console of the device left behind by a migration in this case."""
        qmp, q = (self.twin.qmp, self.twin.q) if twin and self.twin is not None else (self.qmp, self.q)
        if twin and self.twin is None or qmp is None or q is None or not q.alive:
            return None
        try:
            shot = qmp.screendump()
        except QmpError:
            shot = None
        if not twin and q.script is not None:  # recorded: repro.sh takes it too, where the driver did
            q.script.append(Shot())
            self.shots.append(qmp.last_ppm if shot is not None else b"")
        return shot

    def _stop_qemu(self) -> None:
        self._drop_twin()
        if self.q is not None:
            self.q.stop()
        if self.qmp is not None:
            self.qmp.close()

    def _drop_twin(self) -> None:
        if self.twin is not None:
            self.twin.stop()
            self.twin = None

    def close(self) -> None:
        """Stop QEMU and remove the folders this target made (a log it was given stays)."""
        self._stop_qemu()
        for folder in (self.monitors, self.logs, self.workdir):
            scratch.remove(folder)
        self.monitors = self.logs = self.workdir = ""
