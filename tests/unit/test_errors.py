"""Broken spec input gives path:line:col, the source context and exit 2, never a traceback."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from virtgpu_conform.checker.cli.main import main
from virtgpu_conform.spec.errors import SpecSourceError
from virtgpu_conform.spec.load import parse_sources


def _copy(spec_sources, tmp_path):
    for f in spec_sources.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "gpu-description.tex"


def _error(tmp_path, header) -> SpecSourceError:
    with pytest.raises(SpecSourceError) as exc:
        parse_sources(tmp_path, header)
    return exc.value


def test_truncated_chapter_names_the_open_environment(tmp_path, spec_sources, shared_header):
    chapter = _copy(spec_sources, tmp_path)
    lines = chapter.read_text().splitlines(keepends=True)
    chapter.write_text("".join(lines[:318]))  # stops inside the controlq description list
    err = _error(tmp_path, shared_header)
    assert err.path == "gpu-description.tex"
    assert err.line == 312 and "\\begin{description}" in err.message and "never closed" in err.message
    assert "truncated" in str(err)


def test_truncated_inside_a_listing(tmp_path, spec_sources, shared_header):
    chapter = _copy(spec_sources, tmp_path)
    lines = chapter.read_text().splitlines(keepends=True)
    chapter.write_text("".join(lines[:260]))  # inside the request header listing
    err = _error(tmp_path, shared_header)
    assert err.line == 202 and "lstlisting" in err.message


def test_unknown_macro(tmp_path, spec_sources, shared_header):
    chapter = _copy(spec_sources, tmp_path)
    text = chapter.read_text().replace("Create a 2D resource on the", "Create a \\textsc{2D} resource on the")
    chapter.write_text(text)
    err = _error(tmp_path, shared_header)
    assert (err.line, err.message) == (381, "unknown macro \\textsc")
    assert err.col == text.splitlines()[380].index("\\textsc") + 1
    assert "^^^^^^^" in err.context


def test_malformed_struct_in_a_listing_keeps_the_tex_line(tmp_path, spec_sources, shared_header):
    chapter = _copy(spec_sources, tmp_path)
    text = chapter.read_text()
    assert "le32 nlen;" in text
    chapter.write_text(text.replace("le32 nlen;", "le32 nlen", 1))
    err = _error(tmp_path, shared_header)
    assert err.path == "gpu-description.tex" and err.line == 736  # the line after the missing ';'
    assert "C declaration" in err.message
    assert " 736 |" in err.context


def test_binary_junk(tmp_path, spec_sources, shared_header):
    chapter = _copy(spec_sources, tmp_path)
    chapter.write_bytes(b"\\section{GPU Device}\n\xff\xfe\x00garbage")
    err = _error(tmp_path, shared_header)
    assert err.line == 2 and "UTF-8" in err.message


def test_broken_header(tmp_path, spec_sources):
    (tmp_path / "h.h").write_text("struct virtio_gpu_rect {\n\t__le32 x;\n\t__le32 y\n")
    with pytest.raises(SpecSourceError) as exc:
        parse_sources(spec_sources, tmp_path / "h.h")
    assert exc.value.path.endswith("h.h")


def test_no_chapter_in_folder(tmp_path):
    with pytest.raises(SpecSourceError) as exc:
        parse_sources(tmp_path, None)
    assert "no virtio-gpu chapter" in exc.value.message and "device-types/gpu" in exc.value.hint


def test_cli_reports_broken_input_with_exit_2(tmp_path, spec_sources, shared_header):
    chapter = _copy(spec_sources, tmp_path)
    chapter.write_text(chapter.read_text().replace("\\end{lstlisting}", "", 1))
    for args in (["spec", "show", "--spec-dir", str(tmp_path)], ["spec", "lint", "--spec-dir", str(tmp_path)]):
        result = CliRunner().invoke(main, args + ["--header", str(shared_header)])
        assert result.exit_code == 2, result.output
        assert "gpu-description.tex:49:1: \\begin{lstlisting}" in result.output
        assert "never closed" in result.output
        assert "Traceback" not in result.output


def test_checkout_layouts_are_found(tmp_path, spec_sources, shared_header):
    """--spec-dir finds the chapter in a v1.3+ checkout (device-types/gpu/) and an older one."""
    new = tmp_path / "new"
    (new / "device-types" / "gpu").mkdir(parents=True)
    shutil.copy(spec_sources / "gpu-description.tex", new / "device-types/gpu/description.tex")
    shutil.copy(spec_sources / "gpu-device-conformance.tex", new / "device-types/gpu/device-conformance.tex")
    shutil.copy(spec_sources / "commands.tex", new / "commands.tex")
    (new / "REVISION").write_text("virtio-v1.4-cs01\n")
    ir, _ = parse_sources(new, shared_header)
    assert ir.version == "v1.4-cs01" and ir.sources["chapter"] == "device-types/gpu/description.tex"
    assert len(ir.commands) == 26
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(spec_sources / "virtio-gpu-v1.2.tex", old / "virtio-gpu.tex")
    ir, _ = parse_sources(old, shared_header)
    assert ir.sources["chapter"] == "virtio-gpu.tex" and len(ir.commands) == 26
