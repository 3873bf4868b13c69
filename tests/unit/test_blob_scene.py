"""The blob scene (rules_3d.blob_scene) on the reference device: mappable HOST3D blobs mapped at the
host-visible region's edges, unmapped, unreferenced while mapped, mapped again and overlapped, so the
region's checks are judged; the reference device breaks none of them."""

from __future__ import annotations

import virtgpu_conform as vgc
from virtgpu_conform.checker.fuzz.run import DeviceSpec


def test_mappings_at_the_regions_edges_are_judged_and_the_reference_device_keeps_to_them(tmp_path):
    doc = vgc.fuzz(DeviceSpec("reference"), examples=150, seed=5, out=str(tmp_path)).doc
    checks = {c["check"]: c for c in doc["exercised"]["checks"] if c["command"] == "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB"}
    # a map past the region's end and one over a mapping: refused, as the model allows
    for check in ("inside-region", "no-overlap"):
        assert checks[check]["held"] > 0 and checks[check]["broken"] == 0, checks
    assert not [f for f in doc["findings"] if f["kind"] in ("violation", "crash", "liveness")]
