"""rust-vmm's vhost-device-gpu (rutabaga's side of virtio-gpu) built from crates.io once, into the cache.

The crate's virgl backend needs virglrenderer 1.1's API (virgl_renderer_submit_cmd2,
resource_get_info_ext): Debian 12 has 0.10.4, so it is built against the Debian 13 root the
trixie QEMU lives in (debian_root.py) and runs through that root's loader and libraries, as that
QEMU does. Its virglrenderer crate needs a newer rustc than Debian 13 packages (1.87, for
`is_multiple_of`), so the build uses the host's Rust toolchain, bind-mounted into a throwaway copy
of the root, inside a mount namespace of its own: the mount and the /proc rustc's linker needs
vanish with the build's process, whatever ends it. `cargo install --locked` at a pinned version,
never a downloaded binary. gfxstream's backend is left out: Debian packages no gfxstream library.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable

from . import debian_root
from .debian_qemu import locked, tool_cache
from .target import TargetError

CRATE = "vhost-device-gpu"
VERSION = "0.2.0"
FEATURES = "backend-virgl"
SUITE = "trixie"  # the Debian root whose virglrenderer (1.1.0) it is built against and runs on
MIN_RUSTC = (1, 87)
BUILD_PACKAGES = ("libvirglrenderer-dev", "libclang-dev", "pkg-config", "gcc", "libc6-dev")
BUILD_TIMEOUT = 1800  # seconds: a cold build took 40 s to 2 min here
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"  # the host's trust, which crates.io is reached through
SETUP = f"virtgpu-conform setup {CRATE}"


def folder() -> str:
    return os.path.join(tool_cache(), f"{CRATE}-{VERSION}-{SUITE}")


def cached() -> str:
    """The built binary when the cache holds it and the root it runs on; else ""."""
    binary = os.path.join(folder(), "bin", CRATE)
    ok = os.path.exists(os.path.join(folder(), ".complete")) and debian_root.cached(SUITE)
    return binary if ok and os.path.exists(binary) else ""


def runtime_root() -> str:
    return debian_root.folder(SUITE)


def rustc_problem() -> str:
    """What is wrong with the host's Rust toolchain for this build, in one line; "" when nothing."""
    if shutil.which("cargo") is None or shutil.which("rustc") is None:
        return f"building {CRATE} needs Rust's cargo and rustc {'.'.join(map(str, MIN_RUSTC))} or newer (rustup)"
    out = subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=False).stdout
    m = re.match(r"rustc (\d+)\.(\d+)", out)
    if not m:
        return f"`rustc --version` said {out.strip()!r}: not a Rust compiler this build can use"
    if (int(m[1]), int(m[2])) < MIN_RUSTC:
        return (
            f"{out.strip()} is older than {'.'.join(map(str, MIN_RUSTC))}, which {CRATE} {VERSION}'s "
            "virglrenderer crate needs: `rustup update stable`"
        )
    return ""


def problem() -> str:
    """Why this machine cannot build it, in one line; "" when it can (or it is built already)."""
    if cached():
        return ""
    if os.geteuid() != 0:
        return f"building {CRATE} needs root once (debootstrap, chroot, a mount namespace): run `{SETUP}` as root"
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"building {CRATE} needs {tool} (util-linux, coreutils)"
    return rustc_problem()


def _errors(log: str) -> str:
    """cargo's own error lines from the end of the build's log."""
    try:
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    said = [line.strip() for line in lines if line.startswith("error") or "panicked at" in line]
    return "; ".join(dict.fromkeys(said))[-600:] or "\n".join(lines[-8:])[-600:]


def _run(argv: list[str], log_path: str, what: str) -> None:
    with open(log_path, "ab") as log:
        log.write(f"--- {what}: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            r = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise TargetError(f"{what} took longer than {BUILD_TIMEOUT} s (log: {log_path})") from None
    if r.returncode:
        raise TargetError(f"{what} failed (status {r.returncode}): {_errors(log_path)} (log: {log_path})")


def build(say: Callable[[str], None] = lambda _: None) -> str:
    """The binary, built once (then taken from the cache)."""
    done = cached()
    if done:
        return done
    why = problem()
    if why:
        raise TargetError(why)
    debian_root.make(SUITE, say)
    with locked(folder()):
        return cached() or _build(say)


def _build(say: Callable[[str], None]) -> str:
    part = folder() + ".part"
    shutil.rmtree(part, ignore_errors=True)
    work = os.path.join(part, "root")
    log = os.path.join(part, "build.log")
    os.makedirs(part)
    say(f"building {CRATE} {VERSION} ({FEATURES}) from crates.io against Debian {SUITE}'s virglrenderer; log: {log}")
    try:
        _run(["cp", "-a", runtime_root(), work], log, f"copying the Debian {SUITE} root")
        apt = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " + " ".join(BUILD_PACKAGES)
        _run(["chroot", work, "/bin/sh", "-c", apt], log, "installing the build's packages in the copy")
        env = ["PATH=/opt/rust/bin:/usr/bin:/bin", "HOME=/root", "CARGO_HOME=/root/cargo"]
        if os.path.exists(HOST_CA):
            shutil.copy(HOST_CA, os.path.join(work, "root", "host-ca.crt"))
            env.append("CARGO_HTTP_CAINFO=/root/host-ca.crt")
        os.makedirs(os.path.join(work, "opt", "rust"))
        sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout
        # in the namespace: the toolchain bound in, then cargo in the chroot
        inner = 'mount --bind "$1" "$2/opt/rust" && shift 2 && exec chroot "$@"'
        cargo = ["cargo", "install", "--locked", CRATE, "--version", VERSION, "--no-default-features"]
        cargo += ["--features", FEATURES, "--root", "/opt/vdg"]
        argv = ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={os.path.join(work, 'proc')}"]
        argv += ["sh", "-c", inner, "sh", sysroot.strip(), work, work, "/usr/bin/env", "-i", *env, *cargo]
        say(f"cargo install --locked {CRATE} {VERSION} (a minute or two)")
        _run(argv, log, f"cargo install {CRATE} {VERSION}")
        os.makedirs(os.path.join(part, "bin"))
        shutil.copy2(os.path.join(work, "opt", "vdg", "bin", CRATE), os.path.join(part, "bin", CRATE))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(folder(), ignore_errors=True)
    os.rename(part, folder())
    open(os.path.join(folder(), ".complete"), "w").close()
    return os.path.join(folder(), "bin", CRATE)
