"""spec lint: disagreements between tex and header and defects in the sources, found by comparison."""

from __future__ import annotations

import shutil

from virtgpu_conform.spec.lint import lint
from virtgpu_conform.spec.load import parse_sources


def _by_line(findings):
    out = {}
    for f in findings:
        out.setdefault((f.loc.file, f.loc.line), []).append(f.message)
    return out


def test_lint_finds_the_known_defects_of_v14(v14):
    ir, parsed = v14
    found = _by_line(lint(ir, parsed))
    tex = "gpu-description.tex"

    def has(line, text, file=tex):
        msgs = found.get((file, line), [])
        assert any(text in m for m in msgs), f"{file}:{line}: {text!r} not in {msgs}"

    has(292, "\\field{ctx_idx} names no field")  # ctx_idx for ctx_id
    has(531, "bare group '{capset_idex}'")
    has(531, "lacks its backslash")  # field{capset_id}
    has(732, "stray ';' after the value of #define VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK")
    has(770, "'MUST not'")
    has(57, "stated maximum is 4294967296")  # le32 cannot hold 2^32
    has(40, "VIRTIO_GPU_F_BLOB_ALIGNMENT (bit 5) is missing from the header")
    has(52, "field blob_alignment is not in the header")
    has(357, "struct virtio_gpu_get_edid in the spec but struct virtio_gpu_cmd_get_edid in the header")
    has(556, "VIRTIO_GPU_CAPSET_GFXSTREAM is in the spec but not in the header")
    has(94, "binds the device to use VIRTIO_GPU_CMD_GET_EDID")
    has(62, "VIRTIO_GPU_CMD_CREATE_CONTEXT, which is not a command", "virtio_gpu.h")


def test_lint_reports_a_changed_value_and_field(tmp_path, spec_sources, shared_header):
    header = shared_header.read_text()
    header = header.replace("VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM  = 68", "VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM  = 69")
    header = header.replace("\t__le32 hot_y;                 /* update only */", "\t__le64 hot_y;")
    (tmp_path / "virtio_gpu.h").write_text(header)
    ir, parsed = parse_sources(spec_sources, tmp_path / "virtio_gpu.h")
    msgs = [str(f) for f in lint(ir, parsed)]
    assert any("VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM is 0x44 in the spec but 0x45 in the header" in m for m in msgs), msgs
    assert any(
        "struct virtio_gpu_update_cursor: field hot_y has type le32 in the spec, le64 in the header" in m for m in msgs
    ), msgs


def test_lint_reports_an_uncited_normative_block(tmp_path, spec_sources, shared_header):
    for f in spec_sources.iterdir():
        shutil.copy(f, tmp_path / f.name)
    conf = (tmp_path / "gpu-driver-conformance.tex").read_text()
    conf = "\n".join(ln for ln in conf.splitlines() if "controlq (3d)" not in ln) + "\n"
    (tmp_path / "gpu-driver-conformance.tex").write_text(conf)
    ir, parsed = parse_sources(tmp_path, shared_header)
    msgs = [str(f) for f in lint(ir, parsed)]
    assert any("controlq (3d)' is cited by no conformance clause" in m for m in msgs), msgs
