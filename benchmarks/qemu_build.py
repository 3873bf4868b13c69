"""A QEMU built with gcov from Debian's own source for the installed version, for qemu_coverage.py.

    python benchmarks/qemu_build.py [--cache DIR] [--install-deps]

Fetches the source package that built the installed qemu-system-x86 (its .dsc and the files it
lists, checked against the .dsc's SHA-256 sums) from Debian's archive, unpacks it with Debian's
patches applied (dpkg-source), and builds x86_64-softmmu alone with --enable-gcov. Everything
lives in the cache (default ~/.cache/virtgpu-conform/coverage/<version>); a second run reuses
it. The apt configuration is not touched: no deb-src line is needed.

The build needs meson, ninja-build, pkg-config, libglib2.0-dev and libpixman-1-dev; a missing
one is named with the apt-get line that installs it (--install-deps runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import urllib.request

POOL = "http://deb.debian.org/debian/pool/main/q/qemu/"
BUILD_DEPS = {  # what the build runs or includes: the Debian package that brings it
    "meson": "meson",
    "ninja": "ninja-build",
    "pkg-config": "pkg-config",
    "gcov": "gcc",
    "dpkg-source": "dpkg-dev",
}
PC_DEPS = {"glib-2.0": "libglib2.0-dev", "pixman-1": "libpixman-1-dev"}
HEADERS = {"/usr/include/libfdt.h": "libfdt-dev"}  # x86_64-softmmu requires fdt (microvm)
CONFIGURE = [
    "--target-list=x86_64-softmmu",
    "--enable-gcov",
    "--without-default-features",  # what the virtio-gpu device needs is not an optional feature
    "--disable-werror",
    "--disable-docs",
    "--disable-user",
]


class BuildError(Exception):
    pass


def installed_version(package: str = "qemu-system-x86") -> str:
    """The source version (no epoch) that built the installed package."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${source:Version}", package], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        raise BuildError(f"{package} is not installed: apt-get install {package}") from None
    return out.split(":", 1)[-1].strip()


def missing_deps() -> list[str]:
    missing = [pkg for tool, pkg in BUILD_DEPS.items() if shutil.which(tool) is None]
    for mod, pkg in PC_DEPS.items():
        if shutil.which("pkg-config") is None or subprocess.run(["pkg-config", "--exists", mod]).returncode:
            missing.append(pkg)
    missing += [pkg for header, pkg in HEADERS.items() if not os.path.exists(header)]
    return sorted(set(missing))


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.read()
    except OSError as exc:
        raise BuildError(f"cannot fetch {url}: {exc}") from None


def fetch_source(version: str, cache: str) -> str:
    """The unpacked, patched source tree of qemu `version` under `cache` (fetched once)."""
    tree = os.path.join(cache, "src")
    if os.path.exists(os.path.join(tree, "configure")):
        return tree
    dl = os.path.join(cache, "download")
    os.makedirs(dl, exist_ok=True)
    dsc_name = f"qemu_{version}.dsc"
    dsc = _get(POOL + dsc_name)
    with open(os.path.join(dl, dsc_name), "wb") as f:
        f.write(dsc)
    section = re.search(rb"^Checksums-Sha256:\n((?: .*\n)+)", dsc, re.M)
    if section is None:
        raise BuildError(f"{POOL + dsc_name} lists no SHA-256 sums")
    for line in section.group(1).decode().splitlines():
        digest, _, name = line.split()
        path = os.path.join(dl, name)
        if not (os.path.exists(path) and _sha256(path) == digest):
            print(f"fetching {name}", file=sys.stderr)
            with open(path, "wb") as f:
                f.write(_get(POOL + name))
            if _sha256(path) != digest:
                raise BuildError(f"{name}: SHA-256 differs from the one {dsc_name} lists")
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["dpkg-source", "--no-check", "-x", dsc_name, tree], cwd=dl, check=True, stdout=subprocess.DEVNULL)
    return tree


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(tree: str, cache: str) -> str:
    """qemu-system-x86_64 built with gcov from `tree` (built once); returns its path."""
    out = os.path.join(cache, "build")
    binary = os.path.join(out, "qemu-system-x86_64")
    if os.path.exists(binary):
        return binary
    shutil.rmtree(out, ignore_errors=True)  # a failed configure's leftovers fail the next one
    os.makedirs(out)
    log = os.path.join(cache, "build.log")
    print(f"building QEMU with gcov in {out} (several minutes; log: {log})", file=sys.stderr)
    with open(log, "wb") as f:
        for argv in ([os.path.join(tree, "configure"), *CONFIGURE], ["ninja", "qemu-system-x86_64"]):
            if subprocess.run(argv, cwd=out, stdout=f, stderr=subprocess.STDOUT).returncode:
                raise BuildError(f"{' '.join(argv[:2])} failed in {out}; see {log}")
    return binary


def ensure(cache: str = "", install_deps: bool = False) -> tuple[str, str, str]:
    """(version, source tree, gcov-built binary), fetching and building what the cache lacks."""
    version = installed_version()
    cache = os.path.join(cache or os.path.expanduser("~/.cache/virtgpu-conform/coverage"), version)
    missing = missing_deps()
    if missing:
        line = ["apt-get", "install", "-y", *missing]
        if not install_deps:
            raise BuildError(f"building QEMU needs {', '.join(missing)}: {' '.join(line)} (or --install-deps)")
        subprocess.run(line, check=True)
    tree = fetch_source(version, cache)
    return version, tree, build(tree, cache)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="", help="where the source and build go")
    ap.add_argument("--install-deps", action="store_true", help="apt-get install what the build needs")
    args = ap.parse_args()
    try:
        version, tree, binary = ensure(args.cache, args.install_deps)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"QEMU {version} with gcov: {binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
