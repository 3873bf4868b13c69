"""QEMU from another Debian suite (bookworm-backports' 10.0), unpacked into the cache, never installed.

The packages come from Debian's archive through apt (`apt-get download`), checked by apt against
the suite's signed lists, and are unpacked with `dpkg -x` into the folder traces/capture/capture.sh
uses for the same suite, so the two share one copy. Its shared libraries are the host's; what it
loads at run time (firmware, modules) it finds through -L and QEMU_MODULE_DIR (qemu.unpacked_tree).
Nothing outside the cache is written: a suite apt does not know is the user's to add.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator

from .target import TargetError

# The GL devices and egl-headless are qemu-system-modules-opengl's from QEMU 8 on (qemu-system-gui's before).
PACKAGES = ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "qemu-system-gui")
OPTIONAL = ("qemu-system-modules-opengl",)
GL_MODULE = "usr/lib/x86_64-linux-gnu/qemu/hw-display-virtio-gpu-gl.so"
BINARY = "usr/bin/qemu-system-x86_64"


def tool_cache() -> str:
    """The tool's folder in the user's cache (XDG_CACHE_HOME or ~/.cache)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "virtgpu-conform")


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold `path`.lock: one process at a time makes a thing in the cache (parallel test workers)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cache_root() -> str:
    """Where the capture recipe keeps its downloads too (VIRTGPU_CAPTURE_CACHE, as capture.sh reads it)."""
    return os.environ.get("VIRTGPU_CAPTURE_CACHE") or os.path.join(tool_cache(), "capture")


def folder(suite: str) -> str:
    return os.path.join(cache_root(), f"qemu-{suite}")


def cached(suite: str) -> str:
    """The unpacked QEMU's binary when the cache holds it whole, with its GL modules; else ""."""
    root = folder(suite)
    ok = all(os.path.exists(os.path.join(root, p)) for p in (".complete", BINARY, GL_MODULE))
    return os.path.join(root, BINARY) if ok else ""


def _apt_sees(suite: str) -> bool:
    out = subprocess.run(["apt-cache", "policy"], capture_output=True, text=True, check=False).stdout
    return f" {suite}/main " in out


def _download(names: list[str], where: str) -> None:
    # as root, apt warns that its sandbox user cannot write here; root downloading is what is meant
    argv = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", *names]
    r = subprocess.run(argv, cwd=where, capture_output=True, text=True, check=False)
    if r.returncode:
        raise TargetError(f"apt-get download {' '.join(names)} failed: {r.stderr.strip()[-400:]}")


def unpack(suite: str, say: Callable[[str], None] = lambda _: None) -> str:
    """The QEMU of `suite`, fetched and unpacked once (then taken from the cache): its binary."""
    done = cached(suite)
    if done:
        return done
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise TargetError("fetching QEMU from a Debian suite needs apt-get and dpkg (a Debian machine)")
    if not _apt_sees(suite):
        raise TargetError(
            f"apt knows no suite {suite}: add `deb http://deb.debian.org/debian {suite} main` to a file in "
            "/etc/apt/sources.list.d/ and run apt-get update (backports are pinned below the release: "
            "nothing installed changes)"
        )
    root = folder(suite)
    os.makedirs(cache_root(), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dl-", dir=cache_root()) as dl:
        say(f"fetching QEMU from {suite} into {root}")
        _download([f"{p}/{suite}" for p in PACKAGES], dl)
        for p in OPTIONAL:
            try:
                _download([f"{p}/{suite}"], dl)
            except TargetError:
                pass  # before QEMU 8 qemu-system-gui holds the GL modules
        try:
            _download([f"seabios/{suite}"], dl)
        except TargetError:
            _download(["seabios"], dl)  # not always in the suite; the release's boots the same
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        for deb in sorted(os.listdir(dl)):
            subprocess.run(["dpkg", "-x", os.path.join(dl, deb), root], check=True)
        version = subprocess.run(
            [
                "dpkg-deb",
                "-f",
                next(os.path.join(dl, d) for d in os.listdir(dl) if d.startswith("qemu-system-x86_")),
                "Version",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    with open(os.path.join(root, ".version"), "w") as f:
        f.write(version)
    open(os.path.join(root, ".complete"), "w").close()
    binary = os.path.join(root, BINARY)
    missing = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    lacking = [line.split()[0] for line in missing.splitlines() if "not found" in line]
    if lacking:
        raise TargetError(f"{binary} needs libraries this host lacks: {', '.join(lacking)}")
    return binary
