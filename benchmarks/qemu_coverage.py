"""How much of QEMU's virtio-gpu device a campaign reaches, by the device's own line coverage.

    python benchmarks/qemu_coverage.py [--time 10m] [--checkpoint 60s] [--baseline-time T]
                                       [--seed 1] [--campaign-args '--no-migrate ...']
                                       [--cache DIR] [--install-deps] [--json FILE] [--edges]

Builds the installed QEMU's Debian source with gcov (qemu_build.py, cached), then runs, each with
its own counters (GCOV_PREFIX), against that build:

- the campaign, `fuzz --target qemu --seed S --time T` (plus --campaign-args);
- the same campaign stopped at --checkpoint (how fast it rises);
- a blind command-level fuzzer written here: a random command type of the SpecIR's, on its own
  queue, with random bytes for every field, as long as the campaign (--baseline-time); a
  device that dies or stalls is restarted;
- with --edges, a 40-case survey for each device option at its edge (EDGES: max_outputs 16 and
  17, blob=true, edid=off, 1 MiB of host memory, the smallest and a huge xres/yres), or QEMU's refusal of it;

and prints line and function coverage of hw/display/virtio-gpu.c and virtio-gpu-base.c for each,
the campaign's lines over the baseline's as a ratio measured in this run, and the lines the
campaign left uncovered, grouped by function. A QEMU that crashes writes no counters (gcov
writes them at exit), so what a crashing process covered is not counted; every QEMU the tool
stops exits through its normal path.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import qemu_build

from virtgpu_conform.checker.devices.qemu import QemuTarget
from virtgpu_conform.model.codec import codec_for
from virtgpu_conform.spec.load import load_snapshot

FILES = ("hw/display/virtio-gpu.c", "hw/display/virtio-gpu-base.c")
# Device options at their edges (--edges): each a short campaign of its own, or QEMU's refusal.
EDGES = (
    "max_outputs=16",
    "max_outputs=17",
    "blob=true",
    "edid=off",
    "max_hostmem=1M",
    "xres=1,yres=1",
    "xres=16384,yres=16384",
)
FIRMWARE = ["-L", "/usr/share/seabios", "-L", "/usr/share/qemu"]  # the dfsg source ships no firmware


def parse_duration(text: str) -> float:
    """30s, 5m, 1h or seconds."""
    unit = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], 0)
    return float(text[:-1]) * unit if unit else float(text)


@dataclass
class FileCoverage:
    lines: dict[int, int] = field(default_factory=dict)  # executable line -> count
    functions: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (start, end, count)

    @property
    def covered(self) -> int:
        return sum(1 for n in self.lines.values() if n)

    @property
    def functions_covered(self) -> int:
        return sum(1 for f in self.functions.values() if f[2])

    def union(self, other: FileCoverage) -> FileCoverage:
        lines = {ln: self.lines.get(ln, 0) + other.lines.get(ln, 0) for ln in self.lines.keys() | other.lines.keys()}
        functions = dict(self.functions)
        for name, (a, b, n) in other.functions.items():
            functions[name] = (a, b, functions.get(name, (a, b, 0))[2] + n)
        return FileCoverage(lines, functions)

    def uncovered_by_function(self) -> list[tuple[str, list[int]]]:
        out: dict[str, list[int]] = {}
        spans = sorted(self.functions.items(), key=lambda kv: kv[1][0])
        for line, n in sorted(self.lines.items()):
            if n:
                continue
            name = next((f for f, (a, b, _) in spans if a <= line <= b), "(outside any function)")
            out.setdefault(name, []).append(line)
        return sorted(out.items(), key=lambda kv: -len(kv[1]))


def coverage(build: str, prefix: str) -> dict[str, FileCoverage]:
    """Coverage of FILES from the counters a run wrote under GCOV_PREFIX=`prefix`."""
    result = {name: FileCoverage() for name in FILES}
    for gcno in _gcno_files(build):
        obj_dir = os.path.dirname(gcno)
        gcda_dir = prefix + obj_dir  # GCOV_PREFIX_STRIP=0: the object's absolute path under the prefix
        stem = os.path.basename(gcno)[: -len(".gcno")]
        gcda = os.path.join(gcda_dir, stem + ".gcda")
        if not os.path.exists(gcda):
            continue  # this run never executed the file: every line stays at 0
        shutil.copy(gcno, gcda_dir)
        out = subprocess.run(
            ["gcov", "--json-format", "--stdout", "-o", gcda_dir, gcda], capture_output=True, cwd=gcda_dir, check=True
        ).stdout
        for doc in _json_docs(out):
            for f in doc["files"]:
                _merge(result, f)
    for name, cov in result.items():
        if not cov.lines:  # never run: the executable lines come from the notes file alone
            for doc in _json_docs(_notes_only(build, name)):
                for f in doc["files"]:
                    _merge(result, f)
    return result


def _gcno_files(build: str) -> list[str]:
    wanted = {os.path.basename(f) for f in FILES}
    out = []
    for root, _, names in os.walk(build):
        out += [os.path.join(root, n) for n in names if n.endswith(".c.gcno") and n.split("_")[-1][:-5] in wanted]
    return out


def _notes_only(build: str, name: str) -> bytes:
    gcno = next(g for g in _gcno_files(build) if g.endswith("_" + os.path.basename(name) + ".gcno"))
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(gcno, tmp)
        return subprocess.run(
            ["gcov", "--json-format", "--stdout", "-o", tmp, os.path.join(tmp, os.path.basename(gcno))],
            capture_output=True,
            cwd=tmp,
        ).stdout


def _json_docs(out: bytes):
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(b"{"):
            yield json.loads(line)
        elif line[:2] == b"\x1f\x8b":
            yield json.loads(gzip.decompress(line))


def _merge(result: dict[str, FileCoverage], f: dict) -> None:
    name = next((n for n in FILES if f["file"].endswith(n)), None)
    if name is None:
        return
    cov = result[name]
    for ln in f["lines"]:
        cov.lines[ln["line_number"]] = cov.lines.get(ln["line_number"], 0) + ln["count"]
    for fn in f["functions"]:
        a, b, n = cov.functions.get(fn["name"], (fn["start_line"], fn["end_line"], 0))
        cov.functions[fn["name"]] = (a, b, n + fn["execution_count"])


@contextlib.contextmanager
def counters(root: str, name: str):
    """GCOV_PREFIX for the QEMUs started inside: their counters go to root/name alone."""
    prefix = os.path.join(root, name)
    shutil.rmtree(prefix, ignore_errors=True)
    os.makedirs(prefix)
    saved = {k: os.environ.get(k) for k in ("GCOV_PREFIX", "GCOV_PREFIX_STRIP")}
    os.environ.update(GCOV_PREFIX=prefix, GCOV_PREFIX_STRIP="0")
    try:
        yield prefix
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def campaign(binary: str, seconds: float, seed: int, extra: list[str], out: str) -> str:
    return _fuzz(binary, ["--seed", str(seed), "--time", f"{seconds:g}s", "--out", out, *extra])


def edges(binary: str, seed: int, out: str) -> str:
    """A 40-case survey for each of EDGES: what the device does with its options at their edges."""
    said = []
    for opts in EDGES:
        where = os.path.join(out, opts.replace(",", "_"))
        argv = ["--device-opts", opts, "--seed", str(seed), "--examples", "40", "--survey", "--out", where]
        try:
            said.append(f"{opts}: {_fuzz(binary, argv)}")
        except RunFailed as exc:  # one option's failure costs that option alone
            said.append(f"{opts}: failed: {str(exc).splitlines()[-1]}")
    return "; ".join(said)


class RunFailed(Exception):
    pass


def _fuzz(binary: str, args: list[str]) -> str:
    argv = [sys.executable, "-m", "virtgpu_conform", "fuzz", "--target", "qemu", "--qemu", binary]
    argv += [f"--qemu-arg={a}" for a in FIRMWARE] + args
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode not in (0, 1):
        raise RunFailed(f"the campaign failed ({r.returncode}): {shlex.join(argv)}\n{r.stderr[-2000:].strip()}")
    summary = next((ln for ln in r.stdout.splitlines() if " cases in " in ln or "refuses" in ln), "")
    if "refuses" in summary:
        return summary.split(": ", 1)[-1].split(";", 1)[0]
    return summary.split("): ", 1)[-1] if summary else "(no summary line)"


def blind(binary: str, seconds: float, seed: int) -> str:
    """Random command types with random fields, nothing modelled: what a blind fuzzer reaches."""
    ir = load_snapshot()
    rng = random.Random(seed)
    codec = codec_for(ir)
    commands = [(c.code, c.queue) for c in ir.commands]
    sizes = {c.code: codec.layouts[c.request].size for c in ir.commands}
    answer = 4096  # room for any response
    sent = restarts = 0
    with QemuTarget(ir, qemu=binary, extra=FIRMWARE, timeout=0.2) as target:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            code, queue = rng.choice(commands)
            body = code.to_bytes(4, "little") + rng.randbytes(sizes[code] - 4)
            reply = target.send(queue, [body], [answer])
            sent += 1
            if reply.status != "answered":
                target.reset()
                restarts += 1
    return f"{sent} commands, {restarts} restarts"


def report(title: str, covs: dict[str, FileCoverage]) -> None:
    for name, cov in covs.items():
        n, total = cov.covered, len(cov.lines)
        fn, ftotal = cov.functions_covered, len(cov.functions)
        print(
            f"  {title:<22} {name:<30} lines {n:4d}/{total} ({100 * n / max(total, 1):5.1f} %)  functions {fn}/{ftotal}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", default="10m", help="the campaign's length")
    ap.add_argument("--checkpoint", default="60s", help="a second campaign this long (0: none)")
    ap.add_argument("--baseline-time", default="", help="the blind fuzzer's length (default: --time)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--campaign-args", default="", help="more fuzz options, one shell-quoted string")
    ap.add_argument("--cache", default="", help="where QEMU's source, build and counters go")
    ap.add_argument("--install-deps", action="store_true", help="apt-get install what the build needs")
    ap.add_argument("--json", default="", help="also write the figures here")
    ap.add_argument(
        "--edges", action="store_true", help="also a short survey for each device option at its edge (EDGES)"
    )
    ap.add_argument(
        "--reuse",
        default="",
        help="runs (comma-separated: campaign, checkpoint, blind, edges) not to run again: their counters "
        "from the last run are read (a run that failed late need not start over)",
    )
    args = ap.parse_args()
    try:
        version, _tree, binary = qemu_build.ensure(args.cache, args.install_deps)
    except qemu_build.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    build = os.path.dirname(binary)
    root = os.path.join(os.path.dirname(build), "runs")
    seconds = parse_duration(args.time)
    runs: list[tuple[str, str, float]] = [("campaign", "campaign", seconds)]
    if parse_duration(args.checkpoint):
        runs.append(("checkpoint", "campaign", parse_duration(args.checkpoint)))
    runs.append(("blind", "blind", parse_duration(args.baseline_time) if args.baseline_time else seconds))
    if args.edges:
        runs.append(("edges", "edges", 0.0))
    extra = shlex.split(args.campaign_args)
    results: dict[str, dict[str, FileCoverage]] = {}
    print(f"QEMU {version} with gcov ({binary}); seed {args.seed}")
    reuse = set(filter(None, args.reuse.split(",")))
    for name, kind, length in runs:
        prefix = os.path.join(root, name)
        if name in reuse:
            if not os.path.isdir(prefix):
                print(f"error: no counters of an earlier {name} run in {prefix}", file=sys.stderr)
                return 2
            said = "the counters of an earlier run"
        else:
            print(f"{name}: {length:g} s ...", file=sys.stderr, flush=True)
            with counters(root, name), tempfile.TemporaryDirectory(prefix="vgc-cov-") as out:
                try:
                    if kind == "campaign":
                        said = campaign(binary, length, args.seed, extra, out)
                    elif kind == "edges":
                        said = edges(binary, args.seed, out)
                    else:
                        said = blind(binary, length, args.seed)
                except RunFailed as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
        results[name] = coverage(build, prefix)
        print(f"{name} ({length:g} s): {said}")
        report(name, results[name])
    if "edges" in results:
        results["campaign+edges"] = {f: results["campaign"][f].union(results["edges"][f]) for f in FILES}
        report("campaign+edges", results["campaign+edges"])
    main_file = FILES[0]
    ours, theirs = results["campaign"][main_file].covered, results["blind"][main_file].covered
    print(f"campaign / blind, {main_file} lines: {ours / max(theirs, 1):.2f}")
    print(f"uncovered by the campaign in {main_file}, by function:")
    for fn, lines in results["campaign"][main_file].uncovered_by_function():
        print(f"  {fn} ({len(lines)}): {_ranges(lines)}")
    if "edges" in results:
        for file in FILES:
            was = {ln for _, lines in results["campaign"][file].uncovered_by_function() for ln in lines}
            now = {ln for _, lines in results["campaign+edges"][file].uncovered_by_function() for ln in lines}
            print(f"lines of {file} the option edges add: {_ranges(sorted(was - now)) or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    name: {
                        file: {
                            "covered": c.covered,
                            "lines": len(c.lines),
                            "functions": c.functions_covered,
                            "uncovered": c.uncovered_by_function(),
                        }
                        for file, c in covs.items()
                    }
                    for name, covs in results.items()
                },
                f,
                indent=1,
            )
    return 0


def _ranges(lines: list[int]) -> str:
    out, start = [], None
    for i, ln in enumerate(lines):
        if start is None:
            start = ln
        if i + 1 == len(lines) or lines[i + 1] != ln + 1:
            out.append(f"{start}" if start == ln else f"{start}-{ln}")
            start = None
    return ", ".join(out)


if __name__ == "__main__":
    sys.exit(main())
