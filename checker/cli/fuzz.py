"""The `fuzz` command: a campaign against one device target, or the replay of a saved case."""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Optional

import click
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from virtgpu_conform.checker.devices import affinity
from virtgpu_conform.checker.fuzz.run import FAILING, QEMU_HOSTED
from virtgpu_conform.checker.fuzz.run import KINDS as TARGETS
from virtgpu_conform.checker.traces.events import TraceError

from . import console
from .console import EXIT_BUG, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE


def _seconds(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration (30s, 5m, 1h, or seconds)", param_hint="--time")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


@click.command()
@click.option(
    "--target",
    "targets",
    metavar="[" + "|".join(TARGETS) + "][@SUITE]",
    multiple=True,
    help="The device under test (default: reference). Give it more than once for a differential run: "
    "the same chains go to every target, the first one leads. qemu@SUITE, vhost-user-gpu@SUITE and "
    "vhost-device-gpu@SUITE take that Debian suite's QEMU (as --qemu-suite does), so two QEMUs can be "
    "compared: --target qemu --target qemu@bookworm-backports. vhost-device-gpu is rust-vmm's backend "
    "on rutabaga, built from crates.io into the cache once (`virtgpu-conform setup vhost-device-gpu`, as root).",
)
@click.option("--qemu", default="qemu-system-x86_64", show_default=True, help="QEMU binary (qemu, vhost-user-gpu).")
@click.option(
    "--qemu-suite",
    metavar="SUITE",
    help="Use the QEMU of this Debian suite instead of --qemu, made ready in ~/.cache/virtgpu-conform once "
    "and never installed: the host release's backports (bookworm-backports: QEMU 10.0.2) unpacked "
    "from apt-get download; another release (trixie: QEMU 10.0.13 with virglrenderer 1.1) as a "
    "debootstrap root of its own, which needs root and debootstrap to make.",
)
@click.option(
    "--qemu-arg",
    "qemu_args",
    multiple=True,
    help="Extra QEMU argument, repeatable (e.g. --qemu-arg=-L --qemu-arg=DIR for an unpacked QEMU; "
    "its modules come from QEMU_MODULE_DIR).",
)
@click.option(
    "--backend",
    "vhost_backend",
    type=click.Path(dir_okay=False),
    help="vhost-user-gpu: the backend program (default /usr/lib/qemu/vhost-user-gpu; another QEMU's, "
    "e.g. from an unpacked qemu-system-gui). vhost-device-gpu: a build of it (default: the cached one).",
)
@click.option(
    "--device-opts",
    default="",
    help="Extra virtio-gpu-pci properties, e.g. 'edid=off,max_outputs=2'. A device QEMU refuses to make "
    "with them (max_outputs=17) is the result, said with QEMU's words (exit 0), not a tool error.",
)
@click.option(
    "--gl",
    is_flag=True,
    help="qemu, vhost-user-gpu, vhost-device-gpu: the 3D device (virtio-gpu-gl-pci; the backend with "
    "--virgl; rust-vmm's with VIRGL accepted, which it always offers), rendering with "
    "virglrenderer on Mesa's software renderer, in a VM that runs (fences are answered on QEMU's clock). "
    "Needs qemu-system-gui (QEMU 7.2) or qemu-system-modules-opengl (QEMU 8 and later) and libgl1-mesa-dri.",
)
@click.option("--adapter", help="Adapter target: the program to start (it speaks the adapter protocol on stdio).")
@click.option("--adapter-socket", type=click.Path(), help="Adapter target: a unix socket to connect to.")
@click.option("--time", "duration", help="Stop after this long (30s, 5m, 1h). Default 1m unless --examples.")
@click.option("--examples", type=click.IntRange(1), help="Stop after this many generated cases.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Campaign seed (repeatable on the reference target)."
)
@click.option(
    "--steps",
    type=click.IntRange(1, 1000),
    default=40,
    show_default=True,
    help="Rule steps per case, at most (a step sends one command, a few, or a whole display scene).",
)
@click.option(
    "--out", "out", type=click.Path(file_okay=False), help="Write findings and reproducers here (default: ./fuzz-out)."
)
@click.option(
    "--profile",
    type=click.Choice(["strict", "spec"]),
    default="strict",
    show_default=True,
    help="Which rules count: spec (normative and spec text) or strict (also informal).",
)
@click.option(
    "--timeout",
    type=float,
    help="Seconds to wait for one answer; a wait past this is a finding. Default 0.2 (QEMU answers within "
    "milliseconds), 2 with --gl (a fenced command waits for the software renderer).",
)
@click.option(
    "--cpu",
    default="auto",
    show_default=True,
    help="Run the fuzzer and the device processes it starts on this one CPU (a number), on the last "
    "CPU it may use (auto), or wherever the kernel puts them (any). qtest round trips between "
    "two processes sharing a CPU are several times faster.",
)
@click.option(
    "--pixels/--no-pixels",
    default=True,
    show_default=True,
    help="The pixel oracle on QEMU-hosted targets: after a flush of a scanout whose every pixel "
    "the model knows, a screendump must show them.",
)
@click.option(
    "--migrate/--no-migrate",
    default=True,
    show_default=True,
    help="On the qemu target, now and then move the device to a new QEMU mid-case (save and restore "
    "over QMP) and go on: an answer that differs from the device left behind, or a device that does "
    "not survive the move, is a migration finding.",
)
@click.option(
    "--pipeline/--no-pipeline",
    default=None,
    help="Send from a process of its own, on --cpu with the device, while generating and judging go on "
    "on the other CPUs. Default: on for a --survey of a target with device processes, when two or more "
    "CPUs are usable (a hunt spends its time shrinking, where answers must be judged as they come).",
)
@click.option(
    "--survey",
    is_flag=True,
    help="Note each finding with the case that showed it, shrink none: a quicker look at what a device "
    "gets wrong (what benchmarks/fuzz_speed.py measures).",
)
@click.option(
    "--replay", "replay_path", type=click.Path(dir_okay=False), help="Re-run a saved case (repro.ndjson) instead."
)
def fuzz(
    targets: tuple[str, ...],
    qemu: str,
    qemu_suite: Optional[str],
    qemu_args: tuple[str, ...],
    device_opts: str,
    adapter: Optional[str],
    adapter_socket: Optional[str],
    duration: Optional[str],
    examples: Optional[int],
    seed: int,
    steps: int,
    out: Optional[str],
    profile: str,
    timeout: Optional[float],
    cpu: str,
    pixels: bool,
    migrate: bool,
    pipeline: Optional[bool],
    survey: bool,
    replay_path: Optional[str],
    vhost_backend: Optional[str],
    gl: bool,
) -> None:
    """Fuzz a virtio-gpu device with model-guided command sequences.

    Each new finding (a spec violation, a divergence from the reference device, an answer
    that never comes, a device that dies) is shrunk to a minimal case (--survey: kept as
    the case that showed it) and saved under --out as a native trace that `check` reads
    and `fuzz --replay` re-runs. Ctrl-C stops
    the campaign and keeps what was found.
    """
    from virtgpu_conform.checker.devices.target import TargetError
    from virtgpu_conform.checker.fuzz.run import DeviceSpec

    try:
        affinity.choose(cpu)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cpu") from None
    names = tuple(dict.fromkeys(targets)) or ("reference",)
    for n in names:
        kind, _, suite = n.partition("@")
        if kind not in TARGETS or (suite and kind not in QEMU_HOSTED):
            raise click.BadParameter(
                f"{n!r}: one of {', '.join(TARGETS)}; {', '.join(QEMU_HOSTED)} may name a Debian suite (@SUITE)",
                param_hint="--target",
            )
    suites = {s: _suite_qemu(s) for s in {qemu_suite, *(n.partition("@")[2] for n in names)} if s}
    if qemu_suite:
        qemu = suites[qemu_suite]
    try:
        devices = [
            DeviceSpec(
                n.partition("@")[0],
                suite=n.partition("@")[2],
                qemu=suites[n.partition("@")[2]] if "@" in n else qemu,
                qemu_args=qemu_args,
                device_opts=device_opts,
                backend=vhost_backend,
                adapter=adapter,
                adapter_socket=adapter_socket,
                timeout=timeout,
                pixels=pixels,
                migrate=migrate,
                gl=gl and n.partition("@")[0] in QEMU_HOSTED,
            )
            for n in names
        ]
    except ValueError as exc:
        raise click.UsageError(f"--target {exc}") from None
    if not vhost_backend and any(d.kind == "vhost-device-gpu" for d in devices):
        _build_vhost_device_gpu()
    try:
        if replay_path and len(devices) > 1:
            raise click.UsageError("--replay re-runs a case on one --target")
        seconds = _seconds(duration)
        if replay_path:
            code = _replay(devices[0], replay_path, out, profile, cpu)
        else:
            code = _campaign(
                devices,
                seconds,
                examples,
                seed,
                steps,
                out or "fuzz-out",
                profile,
                cpu,
                pipeline=pipeline,
                survey=survey,
            )
        sys.exit(code)
    except TargetError as exc:
        console.err.print(f"fuzz: the {'+'.join(names)} target cannot run here: {exc}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    except TraceError as exc:
        console.err.print(f"fuzz: {exc}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)


def _suite_qemu(suite: str) -> str:
    """The QEMU of a Debian suite, fetched into the cache once; a usage error when it cannot be."""
    from virtgpu_conform.checker.devices import debian_qemu, debian_root
    from virtgpu_conform.checker.devices.target import TargetError

    say = lambda s: console.err.print(s, markup=False)  # noqa: E731
    release = debian_root.host_release()
    try:
        if release and not (suite == release or suite.startswith(release + "-")):
            return debian_root.make(suite, say)  # another release: a root of its own (its C library)
        return debian_qemu.unpack(suite, say)
    except TargetError as exc:
        console.err.print(f"fuzz: QEMU of {suite}: {exc}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)


FLAKY_SHOWN = 3  # rounds ended on hypothesis' flakiness check that the summary lists one by one


def _build_vhost_device_gpu() -> None:
    """rust-vmm's backend built into the cache once, as a suite's QEMU is fetched; a usage error when it cannot be."""
    from virtgpu_conform.checker.devices import vhost_device_gpu_build
    from virtgpu_conform.checker.devices.target import TargetError

    try:
        vhost_device_gpu_build.build(lambda s: console.err.print(s, markup=False))
    except TargetError as exc:
        console.err.print(f"fuzz: the vhost-device-gpu target cannot run here: {exc}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)


def _campaign(devices, seconds, examples, seed, steps, out, profile, cpu, pipeline=None, survey=False) -> int:
    from virtgpu_conform.checker.fuzz.run import fuzz as run_campaign

    live: Optional[Live] = None
    reported: set = set()

    def line(c) -> Text:
        rate = c.commands / max(1e-9, time.monotonic() - c.started)
        hunting = f", shrinking {c.hunting}" if c.hunting else ""
        return Text(
            f"fuzz {c.target.name}: {c.commands} commands ({rate:,.0f}/s), {c.cases} cases, "
            f"{len(c.found)} findings{hunting}"
        )

    def progress(c) -> None:
        for f in c.found.values():
            if f.signature not in reported:
                reported.add(f.signature)
                console.err.print(f"  new: {escape(str(f.signature))}: {escape(f.message)}", soft_wrap=True)
        if live is not None:
            live.update(line(c))

    def started(camp) -> None:
        nonlocal live
        if console.err.is_terminal:
            live = Live(line(camp), console=console.err, refresh_per_second=4, transient=True)
            live.start()

    try:
        result = run_campaign(
            devices,
            time=seconds,
            examples=examples,
            seed=seed,
            steps=steps,
            out=out,
            profile=profile,
            survey=survey,
            pipeline=pipeline,
            cpu=cpu,
            progress=progress,
            started=started,
        )
    finally:
        if live is not None:
            live.stop()
    r = result.doc
    if r["stopped"] == "refused":
        console.out.print(
            f"fuzz {r['target']}: {escape(r['notes'][0])}; nothing was sent (a result about the device "
            "as configured, not a failure of the tool)",
            soft_wrap=True,
        )
        if out:
            console.out.print(f"results: {os.path.join(out, 'fuzz-result.json')}", soft_wrap=True)
        return EXIT_OK
    progress(result.campaign)
    why = {"time": "time is up", "examples": "all examples run", "interrupted": "interrupted (Ctrl-C)"}
    console.out.print(
        f"fuzz {r['target']} ({escape(r['device'])}): {r['commands']} commands, {r['cases']} cases in "
        f"{r['seconds']:.1f} s ({r['commands'] / max(r['seconds'], 1e-9):,.0f}/s"
        f"{', pipelined' if r['pipelined'] else ''}), seed {r['seed']}; "
        f"stopped: {why.get(r['stopped'] or '', r['stopped'] or 'budget used')}",
        soft_wrap=True,
    )
    for f in r["findings"]:
        state = "shrunk" if f["shrunk"] else "not shrunk"
        rep = {True: "reproduced on a fresh device", False: "NOT reproduced on a fresh device", None: ""}[
            f["reproduced"]
        ]
        reqs = f" [{', '.join(f['requirements'])}]" if f["requirements"] else ""
        console.out.print(
            f"  {f['kind']}: {escape(f['command'].removeprefix('VIRTIO_GPU_CMD_') or 'any command')} {f['check']}"
            f"{escape(reqs)} x{f['hits']}: {escape(f['message'])}\n    {f['steps']} steps, {state}"
            f"{', ' + rep if rep else ''}: {escape(f['reproducer'] or '')}",
            soft_wrap=True,
        )
    oracles = (r.get("exercised") or {}).get("oracles") or {}
    if oracles:  # the judges that read the device beyond its answers: how often they had something to judge
        said = "; ".join(f"{k} {v['held']} held, {v['broken']} broke" for k, v in oracles.items())
        console.out.print(f"  judged beyond the answers: {said}", soft_wrap=True)
    if r["differential"] is not None:
        _print_differential(r)
    for note in r["flaky"][:FLAKY_SHOWN]:
        console.err.print(f"  warning: a round ended on hypothesis' flakiness check ({escape(note)})", soft_wrap=True)
    if len(r["flaky"]) > FLAKY_SHOWN:
        # a device whose state outlives its reset does this every round: a count, not thousands of lines
        console.err.print(
            f"  warning: {len(r['flaky']) - FLAKY_SHOWN} more rounds ended the same way (all in fuzz-result.json's "
            "`flaky`): the device answers a rerun of a case differently, often state its reset leaves",
            soft_wrap=True,
        )
    for note in r["notes"]:
        console.err.print(f"  warning: {escape(note)}", soft_wrap=True)
    console.out.print(f"results: {os.path.join(out, 'fuzz-result.json')}", soft_wrap=True)
    if r["error"] is not None:
        e = r["error"]
        console.err.print(
            f"fuzz: {console.bug_line(e['type'], e['message'], e['traceback'])}; the campaign stopped "
            "there and the findings so far are kept",
            markup=False,
            soft_wrap=True,
        )
        return EXIT_BUG
    if r["stopped"] == "interrupted":
        return 130
    return EXIT_FINDINGS if any(f["kind"] in FAILING for f in r["findings"]) else EXIT_OK


def _print_differential(r: dict) -> None:
    from rich.table import Table

    rows = r["differential"]
    if not rows:
        console.out.print("differential: every target answered every chain alike")
        return
    names = list(rows[0]["answers"])
    t = Table(title="where the targets' answers differ", title_justify="left")
    t.add_column("command")
    for n in names:
        t.add_column(n)
    t.add_column("count", justify="right")
    t.add_column("verdict")
    t.add_column("requirements / basis")
    for row in rows:
        verdict = row["verdict"] + ": " + row["why"]
        t.add_row(
            escape(row["command"]),
            *[escape(row["answers"][n]) for n in names],
            str(row["count"]),
            escape(verdict),
            escape(", ".join(row["requirements"]) or (row["basis"] or "")),
        )
    console.out.print(t)


def _replay(device, path: str, out: Optional[str], profile: str, cpu: str) -> int:
    from virtgpu_conform.checker.fuzz.run import replay

    r = replay(path, device, out, profile, cpu)
    moved = f" and {r.migrations} migration{'s' if r.migrations > 1 else ''}" if r.migrations else ""
    console.out.print(
        f"replayed {r.steps - r.migrations} requests{moved} of {escape(path)} on {device.name}: {escape(r.trace)}",
        soft_wrap=True,
    )
    for o in r.observations:
        console.out.print(f"  line {o.line}: {escape(str(o.signature))}: {escape(o.message)}", soft_wrap=True)
    if not r.observations:
        console.out.print("  no device findings", soft_wrap=True)
    if r.reproducer:
        shown = ", ".join(escape(p) for p in r.reproducer)
        console.out.print(f"in QEMU's own form (runs with QEMU alone): {shown}", soft_wrap=True)
    return EXIT_FINDINGS if r.failing else EXIT_OK
