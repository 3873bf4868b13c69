"""`virtgpu-conform spec ...`: show, lint, diff and import the SpecIR."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click
from rich.markup import escape
from rich.table import Table

from virtgpu_conform.spec.diff import diff as spec_diff
from virtgpu_conform.spec.errors import SpecSourceError
from virtgpu_conform.spec.ir import SpecIR
from virtgpu_conform.spec.lint import lint as spec_lint
from virtgpu_conform.spec.load import SNAPSHOT, load_spec, parse_sources, snapshot_json

from . import console
from .console import EXIT_FINDINGS, EXIT_OK

_spec_dir = click.option(
    "--spec-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="A virtio-spec checkout (or a GPU chapter .tex file). Default: the embedded v1.4 snapshot.",
)
_header = click.option(
    "--header",
    type=click.Path(path_type=Path),
    default=None,
    help="C header to read beside the chapter. Default: /usr/include/linux/virtio_gpu.h.",
)


@click.group()
def spec() -> None:
    """Read the virtio-gpu spec: show its facts, lint it, diff two versions."""


def _load(spec_dir: Optional[Path], header: Optional[Path]):
    """SpecIR plus the parse behind it (None for the snapshot)."""
    if spec_dir is None:
        return load_spec(None, header), None  # the snapshot; load_spec rejects a lone --header
    return parse_sources(spec_dir, header)


@spec.command()
@_spec_dir
@_header
@click.option("--json", "as_json", is_flag=True, help="Print the SpecIR as JSON.")
def show(spec_dir: Optional[Path], header: Optional[Path], as_json: bool) -> None:
    """Print the SpecIR: commands, features, config, structs and requirements."""
    ir, _ = _load(spec_dir, header)
    if as_json:
        sys.stdout.write(json.dumps(ir.to_json(), indent=1) + "\n")
        return
    _show_rich(ir)


def _show_rich(ir: SpecIR) -> None:
    out = console.out
    out.print(
        f"[bold]virtio-gpu {ir.version}[/bold]  sources: " + ", ".join(f"{k}={v}" for k, v in ir.sources.items()),
        markup=True,
    )
    t = Table(title=f"Feature bits ({len(ir.features)})")
    for col in ("bit", "name", "requires", "makes valid", "source"):
        t.add_column(col)
    for f in ir.features:
        t.add_row(str(f.bit), f.name, ", ".join(f.requires), ", ".join(f.config_fields), f.source)
    out.print(t)
    t = Table(title=f"Device configuration ({ir.config.size} bytes)")
    for col in ("offset", "field", "type", "range"):
        t.add_column(col)
    for fld in ir.config.fields:
        rng = (
            ""
            if fld.value_min is None and fld.value_max is None
            else f"{'' if fld.value_min is None else fld.value_min}..{'' if fld.value_max is None else fld.value_max}"
        )
        t.add_row(str(fld.offset), fld.name, fld.wire_type, rng)
    out.print(t)
    t = Table(title=f"Commands ({len(ir.commands)})")
    for col in ("code", "name", "queue", "request", "bytes", "responses", "gated by", "source"):
        t.add_column(col)
    sizes = {s.name: s for s in ir.structs}
    for c in ir.commands:
        st = sizes.get(c.request)
        size = (
            f"{st.size}" + (f"+{st.trailing.element}[{st.trailing.count_field}]" if st and st.trailing else "")
            if st
            else "?"
        )
        gates = ", ".join(c.features) + (f" + {c.needs_shm}" if c.needs_shm else "")
        t.add_row(
            f"{c.code:#06x}",
            c.name.removeprefix("VIRTIO_GPU_CMD_"),
            c.queue,
            c.request.removeprefix("virtio_gpu_"),
            escape(size),
            ", ".join(r.removeprefix("VIRTIO_GPU_RESP_") for r in c.responses),
            gates,
            c.source,
        )
    out.print(t)
    t = Table(title=f"Structs ({len(ir.structs)})")
    for col in ("name", "size", "fields", "source", "where"):
        t.add_column(col)
    for s in ir.structs:
        t.add_row(s.name, str(s.size), str(len(s.fields)), s.source, str(s.loc))
    out.print(t)
    t = Table(title=f"Requirements ({len(ir.requirements)})")
    for col in ("id", "level", "binds", "basis", "where", "summary"):
        t.add_column(col, overflow="fold")
    for r in ir.requirements:
        t.add_row(r.id, r.level, r.binds, r.basis, str(r.loc), escape(r.summary))
    out.print(t)
    out.print(_counts_line(ir))


def _counts_line(ir: SpecIR) -> str:
    by_level: dict[str, int] = {}
    by_basis: dict[str, int] = {}
    for r in ir.requirements:
        by_level[r.level] = by_level.get(r.level, 0) + 1
        by_basis[r.basis] = by_basis.get(r.basis, 0) + 1
    return (
        f"{len(ir.commands)} commands, {len(ir.structs)} structs, {len(ir.features)} features, "
        f"{len(ir.requirements)} requirements (by level: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_level.items()))
        + "; by basis: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_basis.items()))
        + ")"
    )


@spec.command()
@_spec_dir
@_header
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
def lint(spec_dir: Optional[Path], header: Optional[Path], as_json: bool) -> None:
    """Cross-check the chapter against the header and report defects in the sources.

    Exits 1 when there are warnings or errors, 0 when only notes remain.
    """
    if spec_dir is None:
        # lint needs the sources themselves; the snapshot holds facts only
        raise SpecSourceError(
            "--spec-dir",
            0,
            0,
            "spec lint reads sources: give --spec-dir",
            hint="e.g. --spec-dir ../shared/spec-sources or a virtio-spec checkout",
        )
    ir, parsed = parse_sources(spec_dir, header)
    findings = spec_lint(ir, parsed)
    if as_json:
        sys.stdout.write(
            json.dumps(
                [
                    {"kind": f.kind, "severity": f.severity, "location": str(f.loc), "message": f.message}
                    for f in findings
                ],
                indent=1,
            )
            + "\n"
        )
    else:
        for f in findings:
            console.out.print(str(f), markup=False, soft_wrap=True)
        counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
        console.err.print(
            f"{counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes", markup=False
        )
    serious = any(f.severity in ("error", "warning") for f in findings)
    sys.exit(EXIT_FINDINGS if serious else EXIT_OK)


@spec.command(name="diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@_header
@click.option("--json", "as_json", is_flag=True, help="Print changes as JSON.")
def diff_cmd(old: Path, new: Path, header: Optional[Path], as_json: bool) -> None:
    """Show what changed between two spec versions (checkouts or chapter .tex files)."""
    a, _ = parse_sources(old, header)
    b, _ = parse_sources(new, header)
    changes = spec_diff(a, b)
    if as_json:
        sys.stdout.write(json.dumps([c.__dict__ for c in changes], indent=1) + "\n")
        return
    for c in changes:
        console.out.print(str(c), markup=False, soft_wrap=True)
    console.err.print(f"{len(changes)} changes from {a.version} ({old}) to {b.version} ({new})", markup=False)


@spec.command()
@_spec_dir
@_header
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def requirements(spec_dir: Optional[Path], header: Optional[Path], as_json: bool) -> None:
    """Which requirements the model's rules enforce, by basis, and why the rest cannot be checked.

    Exits 1 when some requirement is neither enforced nor listed as uncheckable.
    """
    from virtgpu_conform.model.coverage import counts, coverage
    from virtgpu_conform.model.protocol import ModelError, Protocol

    ir, _ = _load(spec_dir, header)
    try:
        rows = coverage(Protocol(ir))
    except ModelError as exc:
        raise SpecSourceError(str(spec_dir or "snapshot"), 0, 0, str(exc)) from None
    if as_json:
        sys.stdout.write(
            json.dumps(
                [
                    {
                        "id": r.requirement.id,
                        "level": r.requirement.level,
                        "binds": r.requirement.binds,
                        "basis": r.requirement.basis,
                        "status": r.status,
                        "by": list(r.by),
                        "reason": r.reason,
                        "where": str(r.requirement.loc),
                    }
                    for r in rows
                ],
                indent=1,
            )
            + "\n"
        )
    else:
        t = Table(title=f"Requirement coverage, virtio-gpu {ir.version}")
        for col in ("id", "level", "basis", "status", "enforced by / why not"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(
                r.requirement.id,
                r.requirement.level,
                r.requirement.basis,
                r.status,
                escape("; ".join(r.by) or r.reason),
            )
        console.out.print(t)
        for status, by_basis in counts(rows).items():
            console.out.print(
                f"{status}: {sum(by_basis.values())} ("
                + ", ".join(f"{b} {n}" for b, n in sorted(by_basis.items()))
                + ")",
                markup=False,
            )
    sys.exit(EXIT_FINDINGS if any(r.status == "uncovered" for r in rows) else EXIT_OK)


@spec.command(name="import")
@click.argument("spec_dir", type=click.Path(path_type=Path))
@_header
@click.option(
    "--version-label",
    default=None,
    help="Version recorded in the snapshot (default: from the checkout's REVISION file).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the snapshot JSON. Default: the embedded snapshot in spec/.",
)
def import_cmd(spec_dir: Path, header: Optional[Path], version_label: Optional[str], output: Optional[Path]) -> None:
    """Regenerate the SpecIR snapshot from a spec checkout (facts only, no spec prose)."""
    ir, _ = parse_sources(spec_dir, header, version_label)
    import virtgpu_conform.spec as spec_pkg

    target = output or Path(spec_pkg.__file__).resolve().parent / "snapshot" / SNAPSHOT
    if output is None and not target.parent.is_dir():
        raise SpecSourceError(
            str(target.parent),
            0,
            0,
            "the embedded snapshot folder is not here (installed package?)",
            hint="give -o FILE",
        )
    target.write_text(snapshot_json(ir))
    console.err.print(f"wrote {target}: " + _counts_line(ir), markup=False)
