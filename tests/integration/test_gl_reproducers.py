"""Cases 10-minute campaigns against the GL devices saved (`fuzz --gl`), replayed on the device they
were found on (`fuzz --replay FILE --target T --gl`): each shows its finding again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_gl_targets import _qemu10, _qemu13
from test_qemu_target import _need_qemu

import virtgpu_conform as vgc
from virtgpu_conform.checker.devices.running_vm import kvm_problem
from virtgpu_conform.checker.devices.vhost_user import BACKEND
from virtgpu_conform.checker.fuzz.run import GL_TIMEOUT, DeviceSpec

pytestmark = [pytest.mark.integration, pytest.mark.needs_qemu]

DATA = Path(__file__).resolve().parents[1] / "data" / "fuzz" / "gl"
FENCE_LOST = "liveness: any command fence-never-answered"
CASES = [
    # QEMU 7.2 with virglrenderer 0.10.4 keeps fences in 32 bits: a fence_id past them is never signalled
    ("qemu-7.2-gl-fence-id-past-32-bits-never-answered", "qemu", FENCE_LOST),
    ("qemu-10.0-gl-fence-id-past-32-bits-never-answered", "qemu-10.0", FENCE_LOST),
    # SET_SCANOUT of a resource that does not exist, with a rectangle of 2^32 - 1 pixels: QEMU aborts (7.2
    # in qemu_create_displaysurface; 10.0.2 in qemu_memfd_alloc, after the 41 commands the case holds)
    ("qemu-7.2-gl-huge-scanout-of-no-resource-aborts", "qemu", "crash: SET_SCANOUT device-died"),
    ("qemu-10.0-gl-huge-scanout-of-no-resource-aborts", "qemu-10.0", "crash: SET_SCANOUT device-died"),
    # Debian 13's (virglrenderer 1.1): a context made for VIRGL2, a fence on its ring 0 answered, on ring 1 never
    ("qemu-10.0.13-gl-fence-on-ring-1-never-answered", "qemu-10.0.13", FENCE_LOST),
    # a fenced GET_CAPSET is answered at once, before an earlier fenced RESOURCE_CREATE_3D
    ("qemu-7.2-gl-fenced-capset-overtakes-an-earlier-fence", "qemu", "violation: any command fence-order [informal]"),
    # SET_SCANOUT disabling scanout 0 (resource 0) with a rectangle: QEMU exits (the backend's answer never comes)
    (
        "vhost-user-gpu-7.2-gl-scanout-disabled-with-a-rectangle-kills-qemu",
        "vhost-user-gpu",
        "crash: SET_SCANOUT device-died",
    ),
    # a virtio reset with a chain pending on each queue: the next command kills the backend
    # ("set_gpu_protocol_features: Assertion `g->wait_in == 0' failed")
    (
        "vhost-user-gpu-7.2-gl-reset-with-chains-pending-kills-the-backend",
        "vhost-user-gpu",
        "crash: RESOURCE_UNREF device-died",
    ),
]


def _device(kind: str) -> DeviceSpec:
    _need_qemu()
    if kind == "vhost-user-gpu":
        if not os.access(BACKEND, os.X_OK):
            pytest.skip(f"{BACKEND} is not installed (apt-get install qemu-system-gui)")
        if kvm_problem():
            pytest.skip(kvm_problem())
        return DeviceSpec("vhost-user-gpu", gl=True, timeout=GL_TIMEOUT)
    if kind == "qemu-10.0":
        return DeviceSpec("qemu", gl=True, timeout=GL_TIMEOUT, suite="bookworm-backports", qemu=_qemu10())
    if kind == "qemu-10.0.13":
        return DeviceSpec("qemu", gl=True, timeout=GL_TIMEOUT, suite="trixie", qemu=_qemu13())
    return DeviceSpec("qemu", gl=True, timeout=GL_TIMEOUT)


@pytest.mark.parametrize("name,kind,finding", CASES, ids=[c[0] for c in CASES])
def test_a_saved_gl_case_shows_its_finding_again(tmp_path, name, kind, finding):
    r = vgc.replay(str(DATA / f"{name}.ndjson"), _device(kind), out=str(tmp_path))
    assert finding in {str(o.signature) for o in r.observations}, [str(o.signature) for o in r.observations]


CAMPAIGNS = DATA / "campaigns"
_INDEX = json.loads((CAMPAIGNS / "index.json").read_text())["cases"]
KINDS = {"": "qemu", "bookworm-backports": "qemu-10.0", "trixie": "qemu-10.0.13"}


@pytest.mark.parametrize(
    "case", [c for c in _INDEX if c["reproduced"]], ids=lambda c: c["case"].removesuffix(".ndjson")
)
def test_every_finding_of_the_gl_campaigns_shows_again(tmp_path, case):
    """Each finding the 10-minute campaigns saved (and reproduced on a fresh device when found), replayed."""
    kind = "vhost-user-gpu" if case["kind"] == "vhost-user-gpu" else KINDS[case["suite"]]
    r = vgc.replay(str(CAMPAIGNS / case["case"]), _device(kind), out=str(tmp_path))
    f = case["finding"]
    seen = {(o.signature.kind, o.signature.command, o.signature.check) for o in r.observations}
    if case.get("retracted"):  # the tool's mistake, fixed since: it must not come back
        assert (f["kind"], f["command"], f["check"]) not in seen, case["retracted"]
    else:
        assert (f["kind"], f["command"], f["check"]) in seen, sorted(seen)
