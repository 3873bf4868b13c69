"""`virtgpu-conform model ...`: list the rules, prove they never demand contradictory outcomes."""

from __future__ import annotations

import json
import sys
from typing import Optional

import click
from rich.markup import escape
from rich.table import Table

from virtgpu_conform.spec.load import load_spec

from . import console
from .console import EXIT_FINDINGS, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE


def _protocol():
    from virtgpu_conform.model.protocol import Protocol

    return Protocol(load_spec(None, None))


@click.group()
def model() -> None:
    """Inspect the protocol model built from the embedded SpecIR."""


@model.command()
@click.argument("command", required=False)
def rules(command: Optional[str]) -> None:
    """The checks of every rule (or of one COMMAND): basis, requirement IDs, what a device may answer."""
    p = _protocol()
    names = list(p.rules)
    if command:
        want = command.upper()
        names = [n for n in names if n == want or n.removeprefix("VIRTIO_GPU_CMD_") == want]
        names = names or [n for n in p.rules if n.endswith("_" + want)]  # map_blob -> RESOURCE_MAP_BLOB
        if not names:
            console.err.print(
                f"no rule for {command!r}; commands: " + ", ".join(n.removeprefix("VIRTIO_GPU_CMD_") for n in p.rules),
                markup=False,
            )
            sys.exit(EXIT_USAGE)
    for name in names:
        rule = p.rules[name]
        t = Table(title=f"{name} ({rule.family}; success: {', '.join(rule.ok)}, basis {rule.ok_basis})")
        for col in ("check", "basis", "requirements", "if broken, a device answers", "why"):
            t.add_column(col, overflow="fold")
        for c in rule.checks:
            answer = (
                "anything (open)" if c.errors is None else ("any error" if len(c.errors) > 2 else ", ".join(c.errors))
            )
            if c.prefer:
                answer += f"; reference: {c.prefer.removeprefix('VIRTIO_GPU_RESP_')}"
            t.add_row(c.id, c.basis, "\n".join(c.reqs), answer, escape(c.note))
        for o in rule.obligations:
            t.add_row(f"response: {o.id}", o.basis, "\n".join(o.reqs), "", escape(o.note))
        console.out.print(t)


@model.command()
@click.option(
    "--reading",
    type=click.Choice(["conformant", "preferred"]),
    default="conformant",
    show_default=True,
    help="conformant: a failed check accepts every error the spec allows; preferred: only the "
    "single code each rule prefers (shows which checks the spec leaves unordered).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def prove(reading: str, as_json: bool) -> None:
    """Ask z3 whether any request, in any state, meets demands no response can satisfy.

    Exits 0 when the rules are consistent, 1 when contradictions or conflicting pairs
    exist, 3 when the solver could not decide some case.
    """
    from virtgpu_conform.model.symbolic import prove as run

    p = _protocol()
    with console.err.status(f"proving {len(p.rules)} rules with z3 ({reading} reading)"):
        proof = run(p, reading)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "reading": reading,
                    "holds": proof.holds,
                    "valid_request_exists": proof.valid_exists,
                    "contradictions": proof.contradictions,
                    "unknown": proof.unknown,
                    "conflicts": [
                        {
                            "command": c.command,
                            "first": c.first.id,
                            "second": c.second.id,
                            "first_requirements": list(c.first.reqs),
                            "second_requirements": list(c.second.reqs),
                            "witness": c.witness,
                        }
                        for c in proof.conflicts
                    ],
                },
                indent=1,
            )
            + "\n"
        )
    else:
        out = console.out
        no_valid = [n for n, v in proof.valid_exists.items() if v != "sat"]
        out.print(f"{len(p.rules)} rules, {reading} reading", markup=False)
        out.print(f"commands with no valid request: {', '.join(no_valid) or 'none'}", markup=False)
        out.print(f"commands whose demands can contradict: {', '.join(proof.contradictions) or 'none'}", markup=False)
        for c in proof.conflicts:
            out.print(f"  conflict: {c}", markup=False, soft_wrap=True)
        out.print(f"{len(proof.conflicts)} conflicting check pairs; undecided: {len(proof.unknown)}", markup=False)
    if proof.unknown:
        sys.exit(EXIT_INCONCLUSIVE)
    sys.exit(EXIT_OK if proof.holds and not proof.conflicts else EXIT_FINDINGS)
