"""Entry points: find the GPU chapter in a spec checkout, parse it, or load the embedded snapshot."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional

from . import document as D
from .cdecl import parse_c
from .errors import SpecSourceError
from .extract import Parsed, extract, parse_listings
from .ir import SpecIR
from .latex import NewCommand, parse_tex

DEFAULT_HEADER = Path("/usr/include/linux/virtio_gpu.h")
SNAPSHOT = "spec-v1.4.json"

# Where the GPU chapter lives, newest layout first: a virtio-spec checkout since
# v1.3, one before it, and a flat folder of copies (as in ../shared/spec-sources).
LAYOUTS = (
    {
        "chapter": "device-types/gpu/description.tex",
        "device_conformance": "device-types/gpu/device-conformance.tex",
        "driver_conformance": "device-types/gpu/driver-conformance.tex",
    },
    {"chapter": "virtio-gpu.tex"},
    {
        "chapter": "gpu-description.tex",
        "device_conformance": "gpu-device-conformance.tex",
        "driver_conformance": "gpu-driver-conformance.tex",
    },
)


@dataclass
class SpecFiles:
    root: Path
    roles: dict[str, Path] = field(default_factory=dict)  # role -> absolute path
    version: str = "unknown"

    def rel(self, role: str) -> str:
        p = self.roles[role]
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)


def find_spec_files(spec: Path) -> SpecFiles:
    """Locate the chapter and its companions from a checkout folder or a chapter .tex file."""
    spec = Path(spec)
    if not spec.exists():
        raise SpecSourceError(
            str(spec), 0, 0, "no such file or folder", hint="give a virtio-spec checkout or a GPU chapter .tex file"
        )
    if spec.is_file():
        files = SpecFiles(spec.parent, {"chapter": spec})
        m = re.search(r"v(\d+\.\d+)", spec.name)
        files.version = f"v{m.group(1)}" if m else "unknown"
    else:
        for layout in LAYOUTS:
            if (spec / layout["chapter"]).is_file():
                files = SpecFiles(spec, {r: spec / p for r, p in layout.items() if (spec / p).is_file()})
                break
        else:
            tried = ", ".join(lay["chapter"] for lay in LAYOUTS)
            raise SpecSourceError(
                str(spec),
                0,
                0,
                "no virtio-gpu chapter found here",
                hint=f"looked for {tried}; give a virtio-spec checkout or the chapter .tex file itself",
            )
        rev = spec / "REVISION"
        if rev.is_file():
            m = re.search(r"v\d+\.\d+(-\w+)?", rev.read_text(errors="replace"))
            files.version = m.group(0) if m else "unknown"
    for role, name in (("macros", "commands.tex"), ("shared_mem", "shared-mem.tex")):
        if (files.root / name).is_file():
            files.roles[role] = files.root / name
    return files


def read_source(path: Path, shown: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecSourceError(shown, 0, 0, f"cannot read: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecSourceError(
            shown,
            line,
            col,
            "not UTF-8 text (binary or wrongly encoded file)",
            hint="point at the LaTeX sources of the virtio spec",
        ) from None


def parse_sources(spec: Path, header: Optional[Path] = None, version: Optional[str] = None) -> tuple[SpecIR, Parsed]:
    """Parse a chapter (and companions) plus a C header into the SpecIR."""
    files = find_spec_files(spec)
    chapter_rel = files.rel("chapter")
    doc = D.build(parse_tex(read_source(files.roles["chapter"], chapter_rel), chapter_rel))
    hdr_path = header if header is not None else (DEFAULT_HEADER if DEFAULT_HEADER.is_file() else None)
    hunit = None
    sources = {"chapter": chapter_rel}
    if hdr_path is not None:
        hname = Path(hdr_path).name
        hunit = parse_c(read_source(Path(hdr_path), str(hdr_path)), hname)
        sources["header"] = hname
    parsed = Parsed(chapter=doc, listings=parse_listings(doc), header=hunit)
    for role in ("device_conformance", "driver_conformance"):
        if role in files.roles:
            rel = files.rel(role)
            parsed.conformance.append(D.build(parse_tex(read_source(files.roles[role], rel), rel)))
            sources[role] = rel
    if "macros" in files.roles:
        rel = files.rel("macros")
        mdoc = parse_tex(read_source(files.roles["macros"], rel), rel, start="macros")
        parsed.macro_arity = {e.name: e.arity for e in mdoc.events if isinstance(e, NewCommand)}
        sources["macros"] = rel
    if "shared_mem" in files.roles:
        rel = files.rel("shared_mem")
        sdoc = D.build(parse_tex(read_source(files.roles["shared_mem"], rel), rel))
        parsed.external_labels = set(sdoc.labels)
        parsed.external_fields = {f.name for f, _ in sdoc.field_refs}
    ir = extract(parsed, version or files.version, sources)
    return ir, parsed


def load_spec(spec_dir: Optional[Path] = None, header: Optional[Path] = None) -> SpecIR:
    """The SpecIR of a checkout (or chapter file) if given, else the embedded v1.4 snapshot."""
    if spec_dir is None and header is None:
        return load_snapshot()
    if spec_dir is None:
        raise SpecSourceError(
            str(header), 0, 0, "--header needs --spec-dir", hint="the snapshot was built with its own header; give both"
        )
    return parse_sources(Path(spec_dir), header)[0]


@lru_cache(maxsize=1)
def load_snapshot() -> SpecIR:
    text = resources.files(__package__).joinpath("snapshot", SNAPSHOT).read_text()
    return SpecIR.from_json(json.loads(text))


def snapshot_json(ir: SpecIR) -> str:
    return json.dumps(ir.to_json(), indent=1, sort_keys=False) + "\n"
