"""rust-vmm's vhost-device-gpu: what stops the build is said in one line, and a panic in its log is read
(the build and the device themselves: tests/integration/test_vhost_device_gpu.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virtgpu_conform.checker.devices import vhost_device_gpu_build as build
from virtgpu_conform.checker.devices.vhost_device_gpu import VhostDeviceGpuTarget

DATA = Path(__file__).resolve().parents[1] / "data" / "vhost-device-gpu"


def _fake_rust(tmp_path: Path, version: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("rustc", "cargo"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho '{tool} {version} (fake 2025-01-01)'\n")
        (bin_dir / tool).chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def test_a_rustc_too_old_for_the_crate_is_named_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_rust(tmp_path, "1.85.1"))
    why = build.rustc_problem()
    assert "rustc 1.85.1" in why and "older than 1.87" in why and "rustup update stable" in why
    monkeypatch.setenv("PATH", _fake_rust(tmp_path / "new", "1.95.0"))
    assert build.rustc_problem() == ""


def test_no_rust_at_all_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "needs Rust's cargo and rustc 1.87 or newer" in build.rustc_problem()


def test_building_needs_root_once_and_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built here
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert build.problem() == (
        "building vhost-device-gpu needs root once (debootstrap, chroot, a mount namespace): "
        "run `virtgpu-conform setup vhost-device-gpu` as root"
    )


def test_a_failed_build_is_said_with_cargos_own_error_lines(tmp_path):
    log = tmp_path / "build.log"
    log.write_text(
        "   Compiling virglrenderer v0.1.3\n"
        "error[E0658]: use of unstable library feature `unsigned_is_multiple_of`\n"
        "  --> src/lib.rs:1:1\n"
        "error: could not compile `virglrenderer` (lib) due to 1 previous error\n"
    )
    said = build._errors(str(log))
    assert said.startswith("error[E0658]: use of unstable library feature") and "could not compile" in said


def test_a_panic_in_the_backends_log_is_read_as_thread_place_and_message():
    class Seen:
        backend_log = str(DATA / "panic-backend.log")

    assert VhostDeviceGpuTarget.panic(Seen()) == (  # type: ignore[arg-type]
        "thread vring_worker at vhost-device-gpu-0.2.0/src/device.rs:261:17: "
        "virtio_gpu: GpuCommand::ResourceCreateBlob unimplemented"
    )


def test_a_log_without_a_panic_since_the_last_start_reads_as_none(tmp_path):
    text = (DATA / "panic-backend.log").read_text()
    log = tmp_path / "backend.log"
    log.write_text(text + "--- start 3: vhost-device-gpu -s x.sock --gpu-mode virglrenderer\n")

    class Seen:
        backend_log = str(log)

    assert VhostDeviceGpuTarget.panic(Seen()) == ""  # type: ignore[arg-type]


@pytest.mark.parametrize("thing", ["vhost-device-gpu"])
def test_setup_names_what_it_can_make(thing):
    from click.testing import CliRunner

    from virtgpu_conform.checker.cli.main import main

    r = CliRunner().invoke(main, ["setup", "--help"])
    assert r.exit_code == 0 and thing in r.output
    bad = CliRunner().invoke(main, ["setup", "crosvm"])
    assert bad.exit_code == 2 and "one of vhost-device-gpu | qemu@SUITE" in bad.output
