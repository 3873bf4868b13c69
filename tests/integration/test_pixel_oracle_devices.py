"""The pixel oracle on real devices: QEMU's virtio-gpu shows what was transferred and flushed in every 2D
format and at widths whose rows QEMU 7.2's screendump pads; what QEMU 7.2's vhost-user-gpu gets wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_vhost_user_target import _target as _vhost

from virtgpu_conform.checker.cli.main import main
from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.checker.fuzz.pixels import PATTERN_BASE, channel_order
from virtgpu_conform.checker.fuzz.replay import replay
from virtgpu_conform.checker.fuzz.step import Step
from virtgpu_conform.model.protocol import Protocol

pytestmark = pytest.mark.integration
DATA = Path(__file__).parent.parent / "data" / "fuzz"
W, H = 64, 32


def _scene(codec, fmt: int, view: dict) -> list[Step]:
    rect = {"resource_id": 1, "r.width": W, "r.height": H}
    part = {**rect, "r.x": 5, "r.y": 3, "r.width": 20, "r.height": 9, "offset": (3 * W + 5) * 4}
    return [
        Step("controlq", [codec.encode(n, f, e)], [408], "test")
        for n, f, e in (
            ("VIRTIO_GPU_CMD_GET_DISPLAY_INFO", {}, None),
            ("VIRTIO_GPU_CMD_RESOURCE_CREATE_2D", {"resource_id": 1, "format": fmt, "width": W, "height": H}, None),
            (
                "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING",
                {"resource_id": 1},
                [{"addr": PATTERN_BASE + 4096, "length": W * H * 4}],
            ),
            ("VIRTIO_GPU_CMD_SET_SCANOUT", {"scanout_id": 0, **rect, **view}, None),
            ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D", part, None),
            ("VIRTIO_GPU_CMD_RESOURCE_FLUSH", rect, None),
        )
    ]


@pytest.mark.needs_qemu
@pytest.mark.parametrize(
    "view",
    [
        {"r.x": 2, "r.y": 1, "r.width": 48, "r.height": 24},  # not at (0,0)
        {"r.x": 0, "r.y": 0, "r.width": 38, "r.height": 20},
    ],
)  # 114-byte PPM rows
def test_qemu_shows_what_was_transferred_in_every_format(ir, tmp_path, view):
    p = Protocol(ir)
    with QemuTarget(ir, pixels=True) as t:
        for fmt in channel_order(ir):
            shots = []
            screen = t.screendump
            t.screendump = lambda shots=shots, screen=screen: shots.append(screen()) or shots[-1]  # count them
            obs, _ = replay(p, t, _scene(p.codec, fmt, view), str(tmp_path / f"fmt-{fmt}.ndjson"))
            del t.screendump
            assert len(shots) == 1 and shots[0][:2] == (view["r.width"], view["r.height"]), fmt  # once, after the flush
            assert not [o for o in obs if o.signature.check == "pixels"], (fmt, [o.message for o in obs])


@pytest.mark.needs_qemu
def test_the_oracle_reports_a_picture_that_is_not_the_one_flushed(ir, tmp_path):
    # The same scene on QEMU, with the screendump altered: one pixel off is a finding at the flush.
    p = Protocol(ir)
    with QemuTarget(ir, pixels=True) as t:
        real = t.screendump

        def altered():
            w, h, rgb = real()
            return w, h, bytes([rgb[0] ^ 0x80]) + rgb[1:]

        t.screendump = altered
        obs, _ = replay(p, t, _scene(p.codec, 1, {}), str(tmp_path / "altered.ndjson"))
    pixels = [o for o in obs if o.signature.check == "pixels"]
    assert len(pixels) == 1 and pixels[0].line == 12, obs
    assert "1 of 2048 pixels" in pixels[0].message and "first at (0,0)" in pixels[0].message


@pytest.mark.needs_qemu
def test_vhost_user_gpu_shows_a_picture_shifted_by_the_scanout_origin(ir, tmp_path):
    # QEMU 7.2's vhost-user-gpu, found with the pixel oracle: with a scanout rectangle that starts at
    # (2,1), the display shows the resource from (0,0) instead, so no pixel is the one expected.
    t = _vhost(ir, tmp_path, pixels=True)
    p = Protocol(ir)
    try:
        obs, _ = replay(
            p,
            t,
            _scene(p.codec, 1, {"r.x": 2, "r.y": 1, "r.width": 48, "r.height": 24}),
            str(tmp_path / "shifted.ndjson"),
        )
    finally:
        t.close()
    pixels = [o for o in obs if o.signature.check == "pixels"]
    assert pixels and pixels[0].line == 12, [o.message for o in obs]


@pytest.mark.needs_qemu
def test_a_zero_width_scanout_then_a_flush_kills_qemu_with_vhost_user_gpu(ir, tmp_path):
    """A case a campaign saved against QEMU 7.2's vhost-user-gpu (10.0.2 does the same): SET_SCANOUT
    of a resource with a rectangle of width 0 is answered OK, and the next RESOURCE_FLUSH kills QEMU."""
    _vhost(ir, tmp_path).close()  # skips, with the reason, where KVM or the backend is missing
    case = DATA / "vhost-user-gpu-7.2-zero-width-scanout-then-flush-kills-qemu.ndjson"
    r = CliRunner().invoke(
        main, ["fuzz", "--replay", str(case), "--target", "vhost-user-gpu", "--out", str(tmp_path / "out")]
    )
    assert r.exit_code == 1, r.output
    assert "line 6: crash: RESOURCE_FLUSH device-died" in r.output, r.output
    last = json.loads((tmp_path / "out" / "replay.ndjson").read_text().splitlines()[-1])
    assert last["kind"] == "no-response" and "status -11, SIGSEGV" in last["reason"], last
