"""The C compiler is the oracle for struct layouts: gcc's sizeof/offsetof must match the SpecIR."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from virtgpu_conform.spec.load import load_snapshot, parse_sources

pytestmark = pytest.mark.integration

SPEC_SOURCES = Path(
    os.environ.get("VIRTGPU_SPEC_SOURCES", Path(__file__).resolve().parents[2].parent / "shared" / "spec-sources")
)
SYSTEM_HEADER = Path("/usr/include/linux/virtio_gpu.h")
HEADER_COPY = SPEC_SOURCES / "virtio_gpu.h"


@dataclass
class CLayout:
    """What gcc reports for one struct."""

    size: int = -1
    align: int = -1
    offsets: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, Optional[int]] = field(default_factory=dict)  # None: flexible array


def _need(header: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not on PATH; the C compiler is the layout oracle")
    if not header.is_file():
        pytest.skip(f"{header} is missing (install linux-libc-dev)")


def _c_program(header_structs) -> str:
    """One C file printing size, alignment and every member's offset/size of each struct."""
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <linux/virtio_gpu.h>",
        "",
        "int main(void)",
        "{",
    ]
    for name, cs in header_structs.items():
        lines.append(f'\tprintf("S {name} %zu %zu\\n", sizeof(struct {name}), _Alignof(struct {name}));')
        for m in cs.members:
            if m.array == "":  # flexible array member: offsetof works, sizeof does not
                lines.append(f'\tprintf("F {name} {m.name} %zu -\\n", offsetof(struct {name}, {m.name}));')
            else:
                lines.append(
                    f'\tprintf("F {name} {m.name} %zu %zu\\n", '
                    f"offsetof(struct {name}, {m.name}), "
                    f"sizeof(((struct {name} *)0)->{m.name}));"
                )
    lines += ["\treturn 0;", "}", ""]
    return "\n".join(lines)


def _compile_and_run(src: str, workdir: Path, include_dirs: tuple[Path, ...] = ()) -> str:
    c_file = workdir / "layout.c"
    exe = workdir / "layout"
    c_file.write_text(src)
    incs = [f"-I{d}" for d in include_dirs]
    cc = subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Werror", *incs, "-o", str(exe), str(c_file)], capture_output=True, text=True
    )
    assert cc.returncode == 0, f"gcc failed:\n{cc.stderr}\n--- source ---\n{src}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout


def _parse_output(out: str) -> dict[str, CLayout]:
    layouts: dict[str, CLayout] = {}
    for line in out.splitlines():
        parts = line.split()
        if parts[0] == "S":
            lay = layouts.setdefault(parts[1], CLayout())
            lay.size, lay.align = int(parts[2]), int(parts[3])
        elif parts[0] == "F":
            lay = layouts.setdefault(parts[1], CLayout())
            lay.offsets[parts[2]] = int(parts[3])
            lay.sizes[parts[2]] = None if parts[4] == "-" else int(parts[4])
        else:
            raise AssertionError(f"unexpected output line from the layout program: {line!r}")
    return layouts


def _compare(ir, header_structs, gcc: dict[str, CLayout], label: str) -> tuple[list[str], list[str]]:
    """Return (mismatches, notes) between the SpecIR and gcc for every header struct."""
    bad: list[str] = []
    notes: list[str] = []
    for name, cs in header_structs.items():
        where = f"[{label}] struct {name}"
        lay = gcc.get(name)
        if lay is None:
            bad.append(f"{where}: the layout program printed nothing for it")
            continue
        try:
            st = ir.struct(name)
        except KeyError:
            bad.append(f"{where}: in the header but missing from the SpecIR")
            continue
        where += f" (source={st.source})"
        c_names = [m.name for m in cs.members]
        ir_names = [f.name for f in st.fields]
        compare_size = True
        if ir_names != c_names:
            if st.source == "tex" and ir_names[: len(c_names)] == c_names:
                extra = ir_names[len(c_names) :]
                notes.append(
                    f"{where}: the spec adds field(s) {extra} the header lacks; "
                    "compared the common prefix only, size and alignment not compared"
                )
                compare_size = False
            else:
                bad.append(f"{where}: field names differ: SpecIR {ir_names} vs C {c_names}")
        if compare_size and st.size != lay.size:
            bad.append(f"{where}: size SpecIR {st.size} vs gcc {lay.size}")
        if compare_size and st.align != lay.align:
            bad.append(f"{where}: align SpecIR {st.align} vs gcc {lay.align}")
        for m in cs.members:
            try:
                f = st.field(m.name)
            except KeyError:
                continue  # already reported as a name difference
            if f.offset != lay.offsets[m.name]:
                bad.append(f"{where}.{m.name}: offset SpecIR {f.offset} vs gcc {lay.offsets[m.name]}")
            csize = lay.sizes[m.name]
            if csize is None:
                if f.count != 0:
                    bad.append(f"{where}.{m.name}: a flexible array in C but SpecIR count={f.count}")
                if not st.flexible:
                    bad.append(f"{where}: ends in a flexible array in C but SpecIR flexible=False")
            elif f.size != csize:
                bad.append(f"{where}.{m.name}: size SpecIR {f.size} vs gcc {csize}")
    return bad, notes


def _check(ir, header_structs, gcc: dict[str, CLayout], label: str) -> None:
    bad, notes = _compare(ir, header_structs, gcc, label)
    for n in notes:
        print("note:", n)
    assert not bad, f"{len(bad)} layout mismatch(es) between the SpecIR and gcc:\n" + "\n".join(bad)
    # the one known spec-only field is really seen, and the note documents it
    assert any("virtio_gpu_config" in n and "blob_alignment" in n for n in notes), (
        "expected the spec's virtio_gpu_config to carry blob_alignment beyond the header"
    )


def _sanity(header_structs, gcc: dict[str, CLayout]) -> None:
    assert len(header_structs) >= 30, f"only {len(header_structs)} structs parsed from the header"
    assert set(gcc) == set(header_structs)
    # gcc itself: known anchors of the ABI, so a broken program cannot pass vacuously
    assert gcc["virtio_gpu_ctrl_hdr"].size == 24
    assert gcc["virtio_gpu_resp_display_info"].offsets["pmodes"] == 24
    assert gcc["virtio_gpu_resp_capset"].sizes["capset_data"] is None


def test_system_header_layouts_match_gcc(tmp_path: Path) -> None:
    _need(SYSTEM_HEADER)
    ir, parsed = parse_sources(SPEC_SOURCES, SYSTEM_HEADER)
    hs = parsed.header_structs
    gcc = _parse_output(_compile_and_run(_c_program(hs), tmp_path))
    _sanity(hs, gcc)
    tex = [n for n in hs if ir.struct(n).source == "tex"]
    hdr = [n for n in hs if ir.struct(n).source == "header"]
    assert tex and hdr, f"expected both tex and header structs; tex={tex} header={hdr}"
    _check(ir, hs, gcc, "system header")


def test_spec_sources_header_copy_layouts_match_gcc(tmp_path: Path) -> None:
    """Same check against the header copy kept beside the spec sources, compiled via -I."""
    _need(HEADER_COPY)
    inc = tmp_path / "include"
    (inc / "linux").mkdir(parents=True)
    shutil.copyfile(HEADER_COPY, inc / "linux" / "virtio_gpu.h")
    ir, parsed = parse_sources(SPEC_SOURCES, HEADER_COPY)
    hs = parsed.header_structs
    src = _c_program(hs)
    gcc = _parse_output(_compile_and_run(src, tmp_path, (inc,)))
    # prove the copy, not /usr/include, was the header compiled
    deps = subprocess.run(
        ["gcc", "-M", f"-I{inc}", str(tmp_path / "layout.c")], capture_output=True, text=True, check=True
    ).stdout
    assert str(inc / "linux" / "virtio_gpu.h") in deps, deps
    assert str(SYSTEM_HEADER) not in deps, deps
    _sanity(hs, gcc)
    _check(ir, hs, gcc, "spec-sources copy")


def test_embedded_snapshot_layouts_match_gcc(tmp_path: Path) -> None:
    """The shipped snapshot's layouts against gcc, for the structs of the system header."""
    _need(SYSTEM_HEADER)
    _, parsed = parse_sources(SPEC_SOURCES, SYSTEM_HEADER)
    hs = parsed.header_structs
    gcc = _parse_output(_compile_and_run(_c_program(hs), tmp_path))
    _check(load_snapshot(), hs, gcc, "embedded snapshot")
