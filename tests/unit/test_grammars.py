"""Both lark grammars are conflict-free LALR and read every real source file."""

from __future__ import annotations

import pytest

from virtgpu_conform.spec import document
from virtgpu_conform.spec.cdecl import c_parser, parse_c
from virtgpu_conform.spec.latex import Listing, latex_parser, parse_tex

CHAPTERS = [
    "gpu-description.tex",
    "virtio-gpu-v1.1.tex",
    "virtio-gpu-v1.2.tex",
    "gpu-device-conformance.tex",
    "gpu-driver-conformance.tex",
    "shared-mem.tex",
]


def test_latex_grammar_is_strict_lalr():
    parser = latex_parser(strict=True)  # raises on any shift/reduce conflict or regex collision
    assert parser.options.parser == "lalr"


def test_c_grammar_is_strict_lalr():
    parser = c_parser(strict=True)
    assert parser.options.parser == "lalr"


@pytest.mark.parametrize("name", CHAPTERS)
def test_latex_grammar_reads_real_chapter(spec_sources, name):
    text = (spec_sources / name).read_text()
    doc = document.build(parse_tex(text, name))
    assert doc.sections, "no section found"
    # every \section-like command in the file became a section, none was lost
    expected = sum(text.count(f"\\{c}{{") for c in ("section", "subsection", "subsubsection", "paragraph"))
    expected += sum(text.count(f"\\{c}{{\\") for c in ("devicenormative", "drivernormative", "conformance"))
    assert len(doc.sections) == expected


def test_macro_file_declares_the_spec_macros(spec_sources):
    doc = parse_tex((spec_sources / "commands.tex").read_text(), "commands.tex", start="macros")
    arity = {e.name: e.arity for e in doc.events if type(e).__name__ == "NewCommand"}
    assert arity == {"field": 1, "drivernormative": 3, "devicenormative": 3, "conformance": 2}


@pytest.mark.parametrize("name", ["gpu-description.tex", "virtio-gpu-v1.1.tex", "virtio-gpu-v1.2.tex"])
def test_c_grammar_reads_every_listing_in_place(spec_sources, name):
    text = (spec_sources / name).read_text()
    lines = text.splitlines()
    listings = [e for e in parse_tex(text, name).events if isinstance(e, Listing)]
    assert len(listings) == text.count("\\begin{lstlisting}")
    env: dict[str, int] = {}
    for lst in listings:
        unit = parse_c(lst.body, name, lst.body_line - 1, env)
        for e in unit.enums:
            env.update({n: v for n, v, _ in e.members})
        env.update({d.name: d.value for d in unit.defines if d.value is not None})
        # every struct keeps its absolute line in the .tex
        for s in unit.structs:
            assert f"struct {s.name}" in lines[s.line - 1], (s.name, s.line)
            for m in s.members:
                assert m.name in lines[m.line - 1], (s.name, m.name, m.line)


def test_c_grammar_reads_the_linux_header(shared_header):
    unit = parse_c(shared_header.read_text(), "virtio_gpu.h")
    names = {s.name for s in unit.structs}
    assert {
        "virtio_gpu_ctrl_hdr",
        "virtio_gpu_box",
        "virtio_gpu_resource_create_3d",
        "virtio_gpu_display_one",
        "virtio_gpu_resp_display_info",
    } <= names
    box = next(s for s in unit.structs if s.name == "virtio_gpu_box")
    assert [m.name for m in box.members] == ["x", "y", "z", "w", "h", "d"]  # `__le32 x, y, z;`
    ctrl = next(e for e in unit.enums if e.name == "virtio_gpu_ctrl_type")
    values = dict((n, v) for n, v, _ in ctrl.members)
    assert values["VIRTIO_GPU_UNDEFINED"] == 0
    assert values["VIRTIO_GPU_CMD_RESOURCE_CREATE_2D"] == 0x101  # implicit value after 0x0100
    assert values["VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER"] == 0x1205
    defines = {d.name: d.value for d in unit.defines}
    assert defines["VIRTIO_GPU_FLAG_INFO_RING_IDX"] == 2  # (1 << 1)
    assert defines["VIRTIO_GPU_F_CONTEXT_INIT"] == 4
    # comments are kept on the side: the header ties structs to commands with them
    assert any("VIRTIO_GPU_CMD_SUBMIT_3D" in c.text for c in unit.comments)


def test_c_grammar_spellings_and_arrays():
    src = """
    #define N (2 + 2)
    enum e { A, B = 0x10, C, };
    struct s {
        le32 a;
        __u8 b[N];
        struct inner { u8 x; le64 y; } in;
        char name[];
    };
    """
    unit = parse_c(src, "t.h")
    s = unit.structs[-1]
    assert [(m.name, m.type, m.array, m.array_value) for m in s.members] == [
        ("a", "le32", None, None),
        ("b", "__u8", "N", 4),
        ("in", "struct inner", None, None),
        ("name", "char", "", 0),
    ]
    assert [(n, v) for n, v, _ in unit.enums[0].members] == [("A", 0), ("B", 16), ("C", 17)]
