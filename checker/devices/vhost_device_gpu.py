"""rust-vmm's vhost-device-gpu (rutabaga's implementation of virtio-gpu) behind QEMU's vhost-user-gpu-pci.

The third family of devices the tool drives: neither QEMU's built-in device nor its backend, but the
Rust code crosvm and libkrun share, here as rust-vmm packages it, a vhost-user GPU backend. QEMU's
frontend is the same as for QEMU's own backend (vhost_user.py); only the program behind the socket
changes. It renders with virglrenderer on Mesa's llvmpipe (surfaceless EGL), so it always offers
VIRTIO_GPU_F_VIRGL: without `gl` the driver declines it (and CONTEXT_INIT), and the 2D half of the
protocol is what runs, as on QEMU's devices without GL.

The binary is built once from crates.io into the cache (vhost_device_gpu_build.py) against Debian
13's virglrenderer, and runs through that root's loader; one given by path runs as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Optional

from virtgpu_conform.spec.ir import SpecIR

from . import vhost_device_gpu_build as build
from .children import tail
from .qemu import in_root
from .target import Reply, TargetError
from .vhost_user import VhostUserGpuTarget

GL_ONLY = frozenset({"VIRTIO_GPU_F_VIRGL", "VIRTIO_GPU_F_CONTEXT_INIT"})
PANIC = re.compile(r"thread '([^']*)' \(\d+\) panicked at ([^\n]*?):?\n([^\n]*)")
PANIC_WINDOW = 64 * 1024  # bytes of the log's end a panic is looked for in
MODE = "virglrenderer"  # its other mode, null, answers without rendering: nothing to check pixels against


def default_backend() -> str:
    """The cached build, or a TargetError saying how to make it."""
    binary = build.cached()
    if not binary:
        raise TargetError(f"{build.CRATE} is not built here: {build.problem() or f'run `{build.SETUP}`'}")
    return binary


class VhostDeviceGpuTarget(VhostUserGpuTarget):
    """vhost-device-gpu in virglrenderer mode; its log (RUST_LOG=debug: each command) in `backend_log`."""

    BACKEND_NAME = build.CRATE
    BACKEND_LOG = "vhost-device-gpu.log"
    WARM_UP = 2.0  # it starts virglrenderer (EGL on llvmpipe) at the first request: about a second here
    # ... and longer than 2 s in CI, twice in a row, with the suite's other worker on the same CPU
    INIT_WAIT = 10.0
    BACKEND_HINT = f"`{build.SETUP}` builds it"

    def __init__(
        self,
        ir: SpecIR,
        features: Optional[frozenset[str]] = None,
        backend: Optional[str] = None,
        gl: bool = False,
        **options: Any,
    ):
        """As VhostUserGpuTarget's; `backend` defaults to the cached build."""
        if features is None and not gl:
            features = frozenset(f.name for f in ir.features) - GL_ONLY
        options.setdefault("name", build.CRATE)
        super().__init__(ir, features, backend=backend or default_backend(), gl=gl, **options)

    def _backend_setup(self, gl: bool) -> tuple[list[str], tuple[str, ...], dict[str, str]]:
        # the cached build runs on the root it was built against; another is the user's to run
        tree = in_root(build.runtime_root()) if self.backend_binary == build.cached() else None
        env = {"RUST_LOG": "debug", **dict(tree.env if tree else ())}
        return ["--gpu-mode", MODE], (tree.launcher if tree else ()), env

    def send(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> Reply:
        r = super().send(queue, outs, in_sizes)
        if r.status == "no-answer":
            # A Rust panic ends the thread serving the queues, not the process: nothing answers again.
            panic = self.panic()
            if panic:
                return Reply("died", detail=f"{build.CRATE} panicked, its queues are no longer served: {panic}")
        return r

    def panic(self) -> str:
        """The panic the running backend's log shows (thread, where, message), or ""."""
        # the end of the log is enough: a panic comes at most one answer's wait before it is looked for,
        # and the whole log of a campaign grows to megabytes
        text = tail(self.backend_log, PANIC_WINDOW)
        found = list(PANIC.finditer(text[max(0, text.rfind("--- start ")) :]))
        if not found:
            return ""
        m = found[-1]
        where = re.sub(r".*/registry/src/[^/]+/", "", m[2])  # the crate's own path: vhost-device-gpu-0.2.0/src/...
        return f"thread {m[1]} at {where}: {m[3].strip()}"
