"""QEMU's separate vhost-user-gpu backend, driven through QEMU's vhost-user-gpu-pci over qtest.

The backend (`/usr/lib/qemu/vhost-user-gpu`, Debian package qemu-system-gui) is a process
of its own with its own command handling: a second implementation of the device. It serves
one connection on a unix socket and then exits, so every QEMU gets a new backend.

vhost-user needs KVM and a running vCPU (vhost starts only when the VM runs, so no -S):
the guest is HALT.BIN, 64 KiB of `hlt`, and guest RAM is a shared memfd the backend maps.

A virtio reset does not clear the backend's state (QEMU 7.2: a resource created before the
reset still exists after it, RESOURCE_CREATE_2D of its id answers ERR_INVALID_RESOURCE_ID),
so `reset()` starts a new backend and a new QEMU.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from typing import Optional, Sequence

from virtgpu_conform.spec.ir import SpecIR

from .children import Child, tail
from .qtest import QemuProcess
from .targets import QemuTarget, Reply, TargetError

BACKEND = "/usr/lib/qemu/vhost-user-gpu"
_KVM_GET_API_VERSION, _KVM_CREATE_VM = 0xAE00, 0xAE01
_SO_ACCEPTCON = 0x10000  # /proc/net/unix flags of a listening socket


class KvmUnusable(TargetError):
    """This machine cannot run the vCPU vhost-user needs (no /dev/kvm, no permission, no VM)."""


def kvm_problem(path: str = "/dev/kvm") -> Optional[str]:
    """Why KVM cannot be used here, or None when a VM can be created."""
    if not os.path.exists(path):
        return f"KVM is unusable here: {path} does not exist (vhost-user needs a KVM vCPU)"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"KVM is unusable here: cannot open {path}: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, _KVM_GET_API_VERSION, 0)
        if version != 12:
            return f"KVM is unusable here: {path} reports API version {version}, not 12"
        os.close(fcntl.ioctl(fd, _KVM_CREATE_VM, 0))
    except OSError as exc:
        return f"KVM is unusable here: {path} cannot create a VM: {exc.strerror}"
    finally:
        os.close(fd)
    return None


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
    """vhost-user-gpu behind QEMU's vhost-user-gpu-pci; the backend's log (each command) in `backend_log`."""

    def __init__(self, ir: SpecIR, features: Optional[frozenset[str]] = None, qemu: str = "qemu-system-x86_64",
                 backend: str = BACKEND, extra: Sequence[str] = (), log_path: Optional[str] = None,
                 backend_log: Optional[str] = None, timeout: float = 2.0, qtest_log: Optional[str] = None,
                 name: str = "vhost-user-gpu"):
        if not (os.path.isfile(backend) and os.access(backend, os.X_OK)):
            raise TargetError(f"no vhost-user-gpu backend at {backend} (apt-get install qemu-system-gui)")
        problem = kvm_problem()
        if problem:
            raise KvmUnusable(problem)
        self.backend_binary = backend
        self.backend: Optional[Child] = None
        self.workdir = ""  # HALT.BIN and the socket, made by _prepare, removed by close
        log_path = log_path or os.path.join(tempfile.mkdtemp(prefix="vgc-qemu-"), "qemu-trace.log")
        self.backend_log = backend_log or os.path.join(os.path.dirname(log_path), "vhost-user-gpu.log")
        try:
            super().__init__(ir, features, qemu=qemu, device="vhost-user-gpu-pci", extra=extra, log_path=log_path,
                             timeout=timeout, qtest_log=qtest_log, name=name)
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        if not os.path.isdir(self.workdir):
            self.workdir = tempfile.mkdtemp(prefix="vgc-vug-")
        self.sock = os.path.join(self.workdir, "vug.sock")
        self.halt_bin = os.path.join(self.workdir, "HALT.BIN")
        with open(self.halt_bin, "wb") as f:
            f.write(b"\xf4" * 65536)  # hlt, everywhere the vCPU can go

    def _argv(self) -> list[str]:
        self._prepare()
        return [self.binary, "-accel", "kvm", "-machine", "q35,memory-backend=mem",
                "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-m", "256M",
                "-bios", self.halt_bin, "-nodefaults", "-display", "none",
                "-qtest", "stdio", "-qtest-log", self.qtest_log, "-trace", "virtio_gpu*", "-trace", "vhost_user*",
                "-trace", "virtio_set_status", "-d", "guest_errors", "-D", self.log_path,
                "-chardev", f"socket,id=vug,path={self.sock}", "-device", f"{self.device},chardev=vug,addr=04.0",
                *self.extra]

    def _spawn(self) -> QemuProcess:
        self._start_backend()
        return super()._spawn()

    def _start_backend(self) -> None:
        self._stop_backend()
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        argv = [self.backend_binary, "-s", self.sock]
        with open(self.backend_log, "ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            self.backend = Child(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "G_MESSAGES_DEBUG": "all"})
        deadline = time.monotonic() + 5.0
        while not _listening(self.sock):
            if not self.backend.alive:
                raise TargetError(f"{self.backend_binary} exited (status {self.backend.returncode}) before listening "
                                  f"on {self.sock}:\n{tail(self.backend_log)}")
            if time.monotonic() > deadline:
                self._stop_backend()
                raise TargetError(f"{self.backend_binary} did not listen on {self.sock} within 5 s")
            time.sleep(0.005)

    def _stop_backend(self) -> None:
        if self.backend is not None:
            self.backend.kill()
            self.backend = None

    def _start(self) -> None:
        try:
            super()._start()
        except TargetError as exc:
            self._stop_backend()
            if "kvm" in str(exc).lower():  # QEMU's own words: "failed to initialize kvm", "KVM internal error"
                raise KvmUnusable(f"KVM is unusable here: QEMU with -accel kvm failed: {exc}") from None
            raise TargetError(f"{exc}\nbackend log ({self.backend_log}):\n{tail(self.backend_log, 800)}") from None

    def reset(self) -> None:
        """A new backend and a new QEMU: a virtio reset leaves the backend's resources in place."""
        self._stop()
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
        return f"vhost-user-gpu backend exited (status {status}): {tail(self.backend_log, 300).strip()}"

    def _stop(self) -> None:
        if getattr(self, "q", None) is not None:  # QemuTarget.__init__ may have failed before starting one
            super().close()
        self._stop_backend()

    def close(self) -> None:
        self._stop()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
