"""QEMU's separate vhost-user-gpu backend, driven through QEMU's vhost-user-gpu-pci over qtest.

The backend (`/usr/lib/qemu/vhost-user-gpu`, Debian package qemu-system-gui) is a process
of its own with its own command handling: a second implementation of the device. It serves
one connection on a unix socket and then exits, so every QEMU gets a new backend.

vhost-user needs KVM and a running vCPU (vhost starts only when the VM runs, so no -S):
the guest is HALT.BIN, 64 KiB of `hlt`, and guest RAM is a shared memfd the backend maps.

A virtio reset does not clear the backend's state (QEMU 7.2: a resource created before the
reset still exists after it, RESOURCE_CREATE_2D of its id answers ERR_INVALID_RESOURCE_ID),
so `reset()` starts a new backend and a new QEMU. A QEMU with KVM takes about 0.1 s to answer
(a fifth of it CPU, the rest waiting), longer than most fuzz cases: the next pairs are started
ahead (`SPARES`) while the current one works, and the one retired is reaped later.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from typing import Optional

from virtgpu_conform.spec.ir import SpecIR

from . import affinity, scratch
from .children import Child, tail
from .qemu import GL_DISPLAY, QemuTarget, gl_problem
from .qtest import QemuProcess
from .running_vm import halt_bios, kvm_problem
from .target import DeviceRefused, Reply, TargetError

BACKEND = "/usr/lib/qemu/vhost-user-gpu"
_SO_ACCEPTCON = 0x10000  # /proc/net/unix flags of a listening socket
SPARES = 1  # backend + QEMU pairs a campaign's target keeps started ahead of use


class KvmUnusable(TargetError):
    """This machine cannot run the vCPU vhost-user needs (no /dev/kvm, no permission, no VM)."""


def _listening(path: str) -> bool:
    """True when a unix socket is listening at `path` (without connecting: the backend serves one connection)."""
    try:
        with open("/proc/net/unix") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[7] == path and int(parts[3], 16) & _SO_ACCEPTCON:
                    return True
        return False
    except OSError:  # no /proc: the socket file appearing is the best sign there is
        return os.path.exists(path)


class VhostUserGpuTarget(QemuTarget):
    """vhost-user-gpu behind QEMU's vhost-user-gpu-pci; the backend's log (each command) in `backend_log`.

    Another vhost-user GPU backend plugs in by setting how its program is started (vhost_device_gpu.py)."""

    BACKEND_NAME = "vhost-user-gpu"
    BACKEND_HINT = "apt-get install qemu-system-gui"
    BACKEND_LOG = "vhost-user-gpu.log"  # beside QEMU's log, unless a path is given

    def __init__(
        self,
        ir: SpecIR,
        features: Optional[frozenset[str]] = None,
        qemu: str = "qemu-system-x86_64",
        backend: Optional[str] = None,
        extra: Sequence[str] = (),
        log_path: Optional[str] = None,
        backend_log: Optional[str] = None,
        timeout: float = 2.0,
        qtest_log: Optional[str] = None,
        name: str = "vhost-user-gpu",
        spares: int = 0,
        pixels: bool = False,
        gl: bool = False,
    ):
        """`spares`: pairs to keep started ahead, for a target reset many times (a campaign's).
        `gl`: the backend renders with virgl (--virgl), in software: Mesa falls back to llvmpipe
        given /dev/null as its render node, and QEMU's display is EGL too (REAL-TARGETS.md)."""
        backend = backend or BACKEND
        if not (os.path.isfile(backend) and os.access(backend, os.X_OK)):
            raise TargetError(f"no {self.BACKEND_NAME} backend at {backend} ({self.BACKEND_HINT})")
        problem = kvm_problem()
        if problem:
            raise KvmUnusable(problem)
        self.backend_binary = backend
        self.backend_args, self.backend_launcher, self.backend_env = self._backend_setup(gl)
        self.backend: Optional[Child] = None
        self.want_spares = spares
        self.spares: deque = deque()  # (backend, QEMU, socket, argv) started ahead, in the order started
        self.retired: list = []  # killed, not yet reaped
        self._socks = 0
        self.workdir = ""  # HALT.BIN and the socket, made by _prepare, removed by close
        self.own_logs = "" if log_path else scratch.make("qemu")  # QEMU's and the backend's, unless asked to keep
        log_path = log_path or os.path.join(self.own_logs, "qemu-trace.log")
        self.backend_log = backend_log or os.path.join(os.path.dirname(log_path), self.BACKEND_LOG)
        try:
            super().__init__(
                ir,
                features,
                qemu=qemu,
                device="vhost-user-gpu-pci",
                extra=extra,
                log_path=log_path,
                timeout=timeout,
                qtest_log=qtest_log,
                name=name,
                pixels=pixels,
                gl=gl,
            )
        except BaseException:
            self.close()
            raise

    def _backend_setup(self, gl: bool) -> tuple[list[str], tuple[str, ...], dict[str, str]]:
        """The backend's arguments after its socket, a loader it runs through, its environment."""
        # GLib's debug lines put each command in the backend's log
        return (["--virgl", "--render-node", "/dev/null"] if gl else []), (), {"G_MESSAGES_DEBUG": "all"}

    def _prepare(self) -> None:
        if not os.path.isdir(self.workdir):
            self.workdir = scratch.make("vug")
        self._socks += 1
        # one per pair: spares wait on theirs
        self.sock = scratch.socket_path(self.workdir, f"vug-{self._socks}.sock", "the vhost-user backend")
        self.halt_bin = halt_bios(self.workdir)

    def _argv(self) -> list[str]:
        self._prepare()
        # fmt: off
        return [*self.tree.launcher, self.binary, "-accel", "kvm", "-machine", "q35,memory-backend=mem",
                "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-m", "256M",
                "-bios", self.halt_bin, "-nodefaults", *(GL_DISPLAY if self.gl else ("-display", "none")),
                *self._driven("vhost_user*", "virtio_set_status"),
                "-chardev", f"socket,id=vug,path={self.sock}", "-device", f"{self.device},chardev=vug,addr=04.0",
                *self._monitor(), *self.tree_args, *self.extra]
        # fmt: on

    # The backend answers in its own process, on its own time: each poll in a reproducer fills
    # 64 KiB, a margin where the built-in device has a guarantee (qtest_script.py). Measured with
    # QEMU 7.2: a poll of 4,370 reads lasts 5.7 ms; the backend's answer showed after 0.03-0.04 ms.
    SETTLE = 64 * 1024

    def _repro_argv(self) -> tuple[list[str], list[str], list[str]]:
        """QEMU's command line with the backend started before it on a socket beside the script,
        and a HALT.BIN made there."""
        before, argv, after = super()._repro_argv()  # HALT.BIN made and removed there
        swap = {f"socket,id=vug,path={self.sock}": "socket,id=vug,path=repro.sock"}
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.backend_env.items()))
        launch = " ".join(map(shlex.quote, self.backend_launcher))
        before = [
            *before,
            f"BACKEND=${{BACKEND:-{self.backend_binary}}}",
            "rm -f repro.sock",
            f'{env} {launch + " " if launch else ""}"$BACKEND" -s repro.sock {" ".join(self.backend_args)} '
            "> repro-backend.log 2>&1 &",
            "n=0; while [ ! -S repro.sock ]; do",
            '    n=$((n + 1)); [ $n -le 500 ] || { echo "$BACKEND did not listen on repro.sock" >&2; exit 1; }',
            "    sleep 0.01",
            "done",
        ]
        after = ["wait  # for the backend, which exits with QEMU", "rm -f repro.sock", *after]
        return before, [swap.get(a, a) for a in argv], after

    def _spawn(self) -> QemuProcess:
        q = None
        while self.spares and q is None:
            backend, spare, sock, argv, qmp = self.spares.popleft()
            if backend.alive and spare.alive:
                self.backend, self.sock, self.argv, self.qmp, q = backend, sock, argv, qmp, spare
                here = os.sched_getaffinity(0)
                for pid in (backend.pid, spare.proc.pid):
                    affinity.move(pid, here)  # it started elsewhere; it works where this process does
            else:
                self._retire(backend, spare)
                if qmp is not None:
                    qmp.close()
        if q is None:
            self._start_backend()
            q = super()._spawn()
        self._top_up()
        return q

    def _top_up(self) -> None:
        """Start pairs ahead of use, each on a socket of its own."""
        current = (self.backend, self.sock, self.argv, self.qmp)
        try:
            away = affinity.elsewhere()
            while len(self.spares) < self.want_spares:
                self.argv = self._argv()  # a new socket
                self._start_backend(keep=True, cpus=away)
                q = QemuProcess(self.argv, timeout=max(5.0, self.timeout), cpus=away, env=self.env or None)
                self.spares.append((self.backend, q, self.sock, self.argv, self.qmp))
        finally:
            self.backend, self.sock, self.argv, self.qmp = current

    def _retire(self, *children) -> None:
        """SIGTERM now, reap later: waiting for a QEMU with KVM to exit costs tens of ms."""
        for c in children:
            if c is not None:
                try:
                    os.killpg(c.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                self.retired.append(c)
        still = []
        for c in self.retired:
            if c.proc.poll() is None:
                still.append(c)
            else:
                c.stop()  # exited: this reaps it and closes its pipes, without waiting
        self.retired = still

    def _start_backend(self, keep: bool = False, cpus=None) -> None:
        if not keep:
            self._stop_backend()
        with contextlib.suppress(FileNotFoundError):  # a retired backend may remove it as it exits
            os.unlink(self.sock)
        argv = [*self.backend_launcher, self.backend_binary, "-s", self.sock, *self.backend_args]
        with open(self.backend_log, "ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            self.backend = Child(
                argv,
                cpus=cpus,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.backend_env},
            )
        deadline = time.monotonic() + 5.0
        while not _listening(self.sock):
            if not self.backend.alive:
                raise TargetError(
                    f"{self.backend_binary} exited (status {self.backend.returncode}) before listening "
                    f"on {self.sock}:\n{tail(self.backend_log)}"
                )
            if time.monotonic() > deadline:
                self._stop_backend()
                raise TargetError(f"{self.backend_binary} did not listen on {self.sock} within 5 s")
            time.sleep(0.001)

    def _stop_backend(self) -> None:
        if self.backend is not None:
            self.backend.stop()
            self.backend = None

    def _start(self) -> None:
        try:
            super()._start()
        except DeviceRefused:
            self._stop_backend()
            raise
        except TargetError as exc:
            self._stop_backend()
            if "kvm" in str(exc).lower():  # QEMU's own words: "failed to initialize kvm", "KVM internal error"
                raise KvmUnusable(f"KVM is unusable here: QEMU with -accel kvm failed: {exc}") from None
            said = tail(self.backend_log, 800)
            missing = gl_problem(said) if self.gl else ""
            prefix = f"{missing}\n" if missing and missing not in str(exc) else ""
            raise TargetError(f"{prefix}{exc}\nbackend log ({self.backend_log}):\n{said}") from None

    def reset(self) -> None:
        """A new backend and a new QEMU: a virtio reset leaves the backend's resources in place."""
        self._stop_qemu()
        try:
            self._start()
        except KvmUnusable:
            raise
        except TargetError:
            # A pair started ahead can fail where a new one would not (it waited while the machine
            # was busy): once more, with nothing started ahead.
            self._stop_qemu()
            self._drop_spares()
            self._start()

    def send(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> Reply:
        if self.backend is None or not self.backend.alive:
            return Reply("died", detail=self._backend_gone())
        r = super().send(queue, outs, in_sizes)
        if r.status == "no-answer" and not self.backend.alive:
            return Reply("died", detail=self._backend_gone())
        return r

    def _backend_gone(self) -> str:
        status = self.backend.returncode if self.backend is not None else None
        return f"{self.BACKEND_NAME} backend exited (status {status}): {tail(self.backend_log, 300).strip()}"

    def _stop_qemu(self) -> None:
        """Retire the pair in use (the spares stay)."""
        self._retire(getattr(self, "q", None), self.backend)  # QemuTarget.__init__ may have failed before a QEMU
        qmp = getattr(self, "qmp", None)
        if qmp is not None:
            qmp.close()
        self.q = self.backend = self.qmp = None

    def _drop_spares(self) -> None:
        while self.spares:
            spare = self.spares.popleft()
            self._retire(*spare[:2])
            if spare[4] is not None:
                spare[4].close()

    def close(self) -> None:
        self._stop_qemu()
        self._drop_spares()
        for c in self.retired:
            c.stop()  # told to go already: this waits out its grace (SIGKILL after it), reaps it, closes its pipes
        self.retired = []
        super().close()
        for folder in (self.workdir, self.own_logs):
            scratch.remove(folder)
        self.workdir = self.own_logs = ""
