"""The SpecIR built from the real v1.4 chapter and header holds the protocol's facts."""

from __future__ import annotations

import json
import re
import shutil

from virtgpu_conform.spec.ir import SpecIR
from virtgpu_conform.spec.load import parse_sources


def _prose_keywords(text: str) -> int:
    """Count requirement keywords outside listings, independently of the extractor."""
    body = re.sub(r"\\begin\{lstlisting\}.*?\\end\{lstlisting\}", "", text, flags=re.S)
    body = re.sub(r"%[^\n]*", "", body)
    return len(re.findall(r"\b(?:MUST|SHOULD|MAY|must)\b", body))


def test_commands(v14):
    ir, _ = v14
    assert len(ir.commands) == 26
    by = {c.name: c for c in ir.commands}
    assert by["VIRTIO_GPU_CMD_GET_DISPLAY_INFO"].code == 0x100
    assert by["VIRTIO_GPU_CMD_GET_DISPLAY_INFO"].request == "virtio_gpu_ctrl_hdr"
    assert by["VIRTIO_GPU_CMD_GET_DISPLAY_INFO"].responses == ("VIRTIO_GPU_RESP_OK_DISPLAY_INFO",)
    assert by["VIRTIO_GPU_CMD_MOVE_CURSOR"].code == 0x301
    assert {c.name for c in ir.commands if c.queue == "cursorq"} == {
        "VIRTIO_GPU_CMD_UPDATE_CURSOR",
        "VIRTIO_GPU_CMD_MOVE_CURSOR",
    }
    assert by["VIRTIO_GPU_CMD_GET_EDID"].features == ("VIRTIO_GPU_F_EDID",)
    assert by["VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID"].features == ("VIRTIO_GPU_F_RESOURCE_UUID",)
    assert by["VIRTIO_GPU_CMD_SUBMIT_3D"].features == ("VIRTIO_GPU_F_VIRGL",)
    assert by["VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB"].features == ("VIRTIO_GPU_F_RESOURCE_BLOB",)
    assert by["VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB"].needs_shm == "VIRTIO_GPU_SHM_ID_HOST_VISIBLE"
    assert by["VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB"].responses == ("VIRTIO_GPU_RESP_OK_MAP_INFO",)
    assert by["VIRTIO_GPU_CMD_GET_DISPLAY_INFO"].features == ()
    # every command may fail with any error code the header enum defines
    assert len(by["VIRTIO_GPU_CMD_RESOURCE_UNREF"].errors) == 6


def test_facts_the_tex_lacks_come_from_the_header_and_say_so(v14):
    ir, _ = v14
    submit = ir.command("VIRTIO_GPU_CMD_SUBMIT_3D")
    assert submit.request == "virtio_gpu_cmd_submit" and submit.request_source == "header"
    assert ir.struct("virtio_gpu_cmd_submit").source == "header"
    assert ir.struct("virtio_gpu_transfer_host_3d").source == "header"
    assert ir.struct("virtio_gpu_ctrl_hdr").source == "tex"
    assert ir.command("VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D").request == "virtio_gpu_transfer_host_3d"


def test_layouts(v14):
    ir, _ = v14
    hdr = ir.struct("virtio_gpu_ctrl_hdr")
    assert hdr.size == 24
    assert [(f.name, f.offset, f.size) for f in hdr.fields] == [
        ("type", 0, 4),
        ("flags", 4, 4),
        ("fence_id", 8, 8),
        ("ctx_id", 16, 4),
        ("ring_idx", 20, 1),
        ("padding", 21, 3),
    ]
    assert (hdr.field("ring_idx").value_min, hdr.field("ring_idx").value_max) == (0, 63)
    assert ir.struct("virtio_gpu_resp_display_info").size == 24 + 16 * 24
    pmodes = ir.struct("virtio_gpu_resp_display_info").field("pmodes")
    assert (pmodes.count, pmodes.count_expr, pmodes.struct) == (16, "VIRTIO_GPU_MAX_SCANOUTS", "virtio_gpu_display_one")
    assert ir.struct("virtio_gpu_resp_edid").size == 1056
    assert ir.struct("virtio_gpu_transfer_to_host_2d").field("offset").offset == 40
    capset = ir.struct("virtio_gpu_resp_capset")
    assert capset.flexible and capset.size == 24 and capset.field("capset_data").count == 0
    for name in ("virtio_gpu_resource_attach_backing", "virtio_gpu_resource_create_blob"):
        t = ir.struct(name).trailing
        assert (t.element, t.count_field) == ("virtio_gpu_mem_entry", "nr_entries"), name
    assert ir.struct("virtio_gpu_mem_entry").size == 16
    assert ir.struct("virtio_gpu_set_scanout_blob").field("strides").count == 4


def test_features_and_config(v14):
    ir, _ = v14
    assert [(f.name, f.bit) for f in ir.features] == [
        ("VIRTIO_GPU_F_VIRGL", 0),
        ("VIRTIO_GPU_F_EDID", 1),
        ("VIRTIO_GPU_F_RESOURCE_UUID", 2),
        ("VIRTIO_GPU_F_RESOURCE_BLOB", 3),
        ("VIRTIO_GPU_F_CONTEXT_INIT", 4),
        ("VIRTIO_GPU_F_BLOB_ALIGNMENT", 5),
    ]
    assert ir.feature("VIRTIO_GPU_F_CONTEXT_INIT").requires == ("VIRTIO_GPU_F_VIRGL",)
    assert ir.feature("VIRTIO_GPU_F_BLOB_ALIGNMENT").requires == ("VIRTIO_GPU_F_RESOURCE_BLOB",)
    assert ir.feature("VIRTIO_GPU_F_BLOB_ALIGNMENT").config_fields == ("blob_alignment",)
    assert ir.feature("VIRTIO_GPU_F_BLOB_ALIGNMENT").source == "tex"  # not in the 6.1 header
    cfg = {f.name: f for f in ir.config.fields}
    assert list(cfg) == ["events_read", "events_clear", "num_scanouts", "num_capsets", "blob_alignment"]
    assert (cfg["num_scanouts"].value_min, cfg["num_scanouts"].value_max) == (1, 16)
    assert cfg["num_capsets"].value_min == 0
    assert ir.config.size == 20
    assert ir.constant("VIRTIO_GPU_MAX_SCANOUTS") == 16
    assert ir.constant("VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST") == 3
    assert ir.constant("VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM") == 134


def test_every_keyword_of_the_chapter_is_a_requirement(v14, spec_sources):
    ir, _ = v14
    text = (spec_sources / "gpu-description.tex").read_text()
    # "MUST NOT" is one statement: the independent count sees its MUST once
    assert len(ir.requirements) == _prose_keywords(text) == 34
    levels = {}
    for r in ir.requirements:
        levels[r.level] = levels.get(r.level, 0) + 1
    assert levels == {"MUST": 17, "MUST NOT": 2, "SHOULD": 5, "MAY": 5, "must": 5}
    basis = {}
    for r in ir.requirements:
        basis[r.basis] = basis.get(r.basis, 0) + 1
    assert basis == {"normative": 10, "spec-text": 19, "informal": 5}
    lines = text.splitlines()
    for r in ir.requirements:  # each points at its keyword
        word = r.level.split()[0]
        assert lines[r.loc.line - 1][r.loc.col - 1 :].startswith(word), r.id


def test_requirement_ids_are_unique_and_bind_the_right_side(v14):
    ir, _ = v14
    ids = [r.id for r in ir.requirements]
    assert len(ids) == len(set(ids))
    binds = {r.id: r.binds for r in ir.requirements}
    assert binds["device-operation-request-header/fence_id/device-MUST"] == "device"
    assert binds["device-operation-controlq-3d/VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB/driver-MUST-NOT"] == "driver"
    assert binds["device-operation-controlq/VIRTIO_GPU_CMD_GET_CAPSET_INFO/driver-MUST"] == "driver"
    assert binds["device-operation-controlq/VIRTIO_GPU_CMD_GET_CAPSET_INFO/device-MUST"] == "device"
    assert (
        binds["driver-requirements-device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST"]
        == "driver"
    )
    normative = {r.id for r in ir.requirements if r.normative}
    assert all(r.basis == "normative" for r in ir.requirements if r.normative)
    assert "device-requirements-device-operation-command-lifecycle-and-fencing/device/device-MUST" in normative
    assert all(r.summary for r in ir.requirements)


def test_requirement_ids_survive_added_text(tmp_path, spec_sources, shared_header):
    """IDs come from section, subject and anchor: new text elsewhere does not renumber them."""
    before = parse_sources(spec_sources, shared_header)[0]
    text = (spec_sources / "gpu-description.tex").read_text()
    anchor = "\\subsubsection{Device Operation: Using pageflip}"
    edited = text.replace(anchor, "The driver MUST be quick. The device SHOULD be kind.\n\n" + anchor)
    edited = edited.replace(
        "\\item[VIRTIO_GPU_CMD_RESOURCE_FLUSH]",
        "A new paragraph without keywords.\n\n\\item[VIRTIO_GPU_CMD_RESOURCE_FLUSH]",
    )
    for f in spec_sources.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "gpu-description.tex").write_text(edited)
    after = parse_sources(tmp_path, shared_header)[0]
    old_ids = [r.id for r in before.requirements]
    new_ids = [r.id for r in after.requirements]
    assert len(new_ids) == len(old_ids) + 2
    assert set(old_ids) <= set(new_ids)


def test_sections_and_citations(v14):
    ir, _ = v14
    kinds = {s.kind for s in ir.sections}
    assert kinds == {"plain", "devicenormative", "drivernormative"}
    assert sum(1 for s in ir.sections if s.kind != "plain") == 4
    assert len(ir.citations) == 4 and all(c.resolved for c in ir.citations)
    req_header = next(s for s in ir.sections if s.id == "device-operation-request-header")
    assert req_header.loc.line == 197 and req_header.label.startswith("sec:")
    assert req_header.path[0] == "GPU Device"


def test_json_round_trip(v14):
    ir, _ = v14
    data = json.loads(json.dumps(ir.to_json()))
    assert SpecIR.from_json(data) == ir


def test_response_kinds_match_the_headers_groups(v14, shared_header):
    """Whether a response says OK or an error is the SpecIR's, checked against the header's own
    grouping of the enum (its 'success responses' and 'error responses' comments), read apart."""
    ir, _ = v14
    groups: dict[str, str] = {}
    group = None
    for line in shared_header.read_text().splitlines():
        if "/* success responses */" in line:
            group = "ok"
        elif "/* error responses */" in line:
            group = "error"
        elif "};" in line:
            group = None
        m = re.match(r"\s*(VIRTIO_GPU_RESP_\w+)", line)
        if m and group:
            groups[m.group(1)] = group
    assert {r.name: r.kind for r in ir.responses} == groups
    assert ir.ok_responses == {n for n, g in groups.items() if g == "ok"} and len(ir.ok_responses) >= 7
    assert ir.error_responses == {n for n, g in groups.items() if g == "error"} and len(ir.error_responses) >= 6
