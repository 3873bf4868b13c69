"""A newer Debian release's QEMU, virglrenderer and Mesa, in a root of their own in the cache.

Debian 13's QEMU 10.0.13 is built against virglrenderer 1.1, which the host's release does not
have: it is the one here with CONTEXT_INIT, blob resources and a host-visible region. Its
packages need that release's C library, so they cannot be unpacked beside the host's as a
backport can (debian_qemu.py). Instead `debootstrap --variant=minbase` makes a root of that
release once (about a minute with a near mirror), `apt-get install` in it adds QEMU's GL device
and Mesa's software renderer, and the QEMU runs from the host through that root's own dynamic
loader and libraries (qemu.unpacked_tree): the tool's sockets, logs and firmware keep their host
paths, and nothing is installed on the host. Making the root needs root privileges and
debootstrap; using it needs neither.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

from .debian_qemu import BINARY, locked, tool_cache
from .target import TargetError

PACKAGES = ("qemu-system-x86", "qemu-system-modules-opengl", "libgl1-mesa-dri", "libegl-mesa0", "libgbm1")
MIRROR = "http://deb.debian.org/debian"
MAKE_TIMEOUT = 900  # seconds debootstrap and apt-get may take


def cache_root() -> str:
    return tool_cache()


def folder(suite: str) -> str:
    return os.path.join(cache_root(), f"debian-{suite}")


def cached(suite: str) -> str:
    """The root's QEMU binary when the root is whole; else ""."""
    root = folder(suite)
    ok = os.path.exists(os.path.join(root, ".complete")) and os.path.exists(os.path.join(root, BINARY))
    return os.path.join(root, BINARY) if ok else ""


def host_release() -> str:
    """The host's Debian codename (bookworm), or "" off Debian."""
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def _run(argv: list[str], what: str) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=MAKE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{what} took longer than {MAKE_TIMEOUT} s") from None
    if r.returncode:
        raise TargetError(f"{what} failed (status {r.returncode}): {(r.stderr or r.stdout).strip()[-600:]}")


def make(suite: str, say: Callable[[str], None] = lambda _: None) -> str:
    """The QEMU of `suite`'s root, made once (then taken from the cache): its binary."""
    done = cached(suite)
    if done:
        return done
    with locked(folder(suite)):
        return cached(suite) or _make(suite, say)


def _make(suite: str, say: Callable[[str], None]) -> str:
    if os.geteuid() != 0:
        raise TargetError(f"making a Debian {suite} root needs root (debootstrap and chroot): run this once as root")
    if shutil.which("debootstrap") is None:
        raise TargetError(f"making a Debian {suite} root needs debootstrap: apt-get install debootstrap")
    root = folder(suite)
    part = root + ".part"
    shutil.rmtree(part, ignore_errors=True)
    os.makedirs(cache_root(), exist_ok=True)
    say(f"making a Debian {suite} root in {root} (debootstrap, once)")
    _run(["debootstrap", "--variant=minbase", suite, part, MIRROR], f"debootstrap {suite}")
    say(f"installing {', '.join(PACKAGES)} in it")
    env_sh = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " + " ".join(PACKAGES)
    _run(["chroot", part, "/bin/sh", "-c", env_sh], f"apt-get install in the {suite} root")
    _run(["chroot", part, "apt-get", "clean"], f"apt-get clean in the {suite} root")
    shutil.rmtree(root, ignore_errors=True)
    os.rename(part, root)
    open(os.path.join(root, ".complete"), "w").close()
    return os.path.join(root, BINARY)
