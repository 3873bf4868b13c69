"""spec diff across the real v1.1, v1.2 and v1.4 chapters."""

from __future__ import annotations

from virtgpu_conform.spec.diff import diff
from virtgpu_conform.spec.load import parse_sources


def _load(path, header):
    return parse_sources(path, header)[0]


def _keys(changes, area=None, change=None):
    return {c.name for c in changes if (area is None or c.area == area) and (change is None or c.change == change)}


def test_v11_to_v12(spec_sources, shared_header):
    a = _load(spec_sources / "virtio-gpu-v1.1.tex", shared_header)
    b = _load(spec_sources / "virtio-gpu-v1.2.tex", shared_header)
    assert (a.version, b.version) == ("v1.1", "v1.2")
    ch = diff(a, b)
    assert _keys(ch, "feature", "added") == {
        "VIRTIO_GPU_F_RESOURCE_UUID",
        "VIRTIO_GPU_F_RESOURCE_BLOB",
        "VIRTIO_GPU_F_CONTEXT_INIT",
    }
    assert _keys(ch, "feature", "removed") == set()
    assert _keys(ch, "config", "removed") == {"reserved"}
    assert _keys(ch, "config", "added") == {"num_capsets"}
    added = _keys(ch, "command", "added")
    # GET_CAPSET_INFO and GET_CAPSET stood in v1.1's enum already, undescribed
    assert not {"VIRTIO_GPU_CMD_GET_CAPSET_INFO", "VIRTIO_GPU_CMD_GET_CAPSET"} & added
    assert {
        "VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID",
        "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB",
        "VIRTIO_GPU_CMD_SET_SCANOUT_BLOB",
        "VIRTIO_GPU_CMD_CTX_CREATE",
        "VIRTIO_GPU_CMD_SUBMIT_3D",
        "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB",
        "VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB",
    } <= added
    assert _keys(ch, "command", "removed") == set()
    hdr = [c.detail for c in ch if c.area == "struct" and c.name == "virtio_gpu_ctrl_hdr"]
    assert "field ring_idx added (u8 at 20)" in hdr
    assert _keys(ch, "response", "added") == {"VIRTIO_GPU_RESP_OK_RESOURCE_UUID", "VIRTIO_GPU_RESP_OK_MAP_INFO"}
    # the requirement v1.1 had on a display event keeps its ID in v1.2
    assert "events/VIRTIO_GPU_EVENT_DISPLAY/driver-SHOULD" not in _keys(ch, "requirement")
    assert "events/VIRTIO_GPU_EVENT_DISPLAY/device-SHOULD" in _keys(ch, "requirement", "added")


def test_v12_to_v14_is_exactly_blob_alignment(spec_sources, shared_header):
    b = _load(spec_sources / "virtio-gpu-v1.2.tex", shared_header)
    c = _load(spec_sources, shared_header)
    got = {(x.area, x.change, x.name) for x in diff(b, c)}
    assert got == {
        ("feature", "added", "VIRTIO_GPU_F_BLOB_ALIGNMENT"),
        ("config", "added", "blob_alignment"),
        ("struct", "changed", "virtio_gpu_config"),
        (
            "requirement",
            "added",
            "driver-requirements-device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST",
        ),
        (
            "requirement",
            "added",
            "driver-requirements-device-operation-controlq-3d/VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB/driver-MUST",
        ),
    }


def test_same_version_has_no_changes(v14):
    assert diff(v14[0], v14[0]) == []
