"""`virtgpu-conform setup THING...`: make a target's parts ready in the cache once, ahead of the runs that use them."""

from __future__ import annotations

import sys

import click

from . import console
from .console import EXIT_OK, EXIT_USAGE

THINGS = "vhost-device-gpu | qemu@SUITE"


@click.command()
@click.argument("things", nargs=-1, required=True, metavar=THINGS)
def setup(things: tuple[str, ...]) -> None:
    """Build or fetch what a fuzz target needs into ~/.cache/virtgpu-conform, once.

    vhost-device-gpu: rust-vmm's backend, `cargo install --locked` from crates.io at a pinned
    version against Debian 13's virglrenderer (makes that Debian root first). qemu@SUITE: that
    Debian suite's QEMU (as --qemu-suite does). Making a root or building needs root privileges
    once; the fuzz targets then run as any user. Prints where each thing is.
    """
    from virtgpu_conform.checker.devices import vhost_device_gpu_build
    from virtgpu_conform.checker.devices.target import TargetError

    from .fuzz import _suite_qemu

    say = lambda s: console.err.print(s, markup=False, soft_wrap=True)  # noqa: E731
    for thing in things:
        kind, _, suite = thing.partition("@")
        if thing == "vhost-device-gpu":
            try:
                where = vhost_device_gpu_build.build(say)
            except TargetError as exc:
                console.err.print(f"setup: {thing}: {exc}", markup=False, soft_wrap=True)
                sys.exit(EXIT_USAGE)
        elif kind == "qemu" and suite:
            where = _suite_qemu(suite)
        else:
            raise click.BadParameter(f"{thing!r}: one of {THINGS}", param_hint="THINGS")
        console.out.print(f"{thing}: {where}", markup=False, soft_wrap=True)
    sys.exit(EXIT_OK)
