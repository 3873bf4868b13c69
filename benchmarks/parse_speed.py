"""Time a cold-process parse of the GPU chapter plus header, with cached and freshly built LALR tables."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC_DIR = REPO.parent / "shared" / "spec-sources"
DEFAULT_HEADER = Path("/usr/include/linux/virtio_gpu.h")
TARGET_S = 0.3

# Runs in a fresh interpreter: time the import, then one parse_sources call.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from virtgpu_conform.spec.load import parse_sources
t1 = time.perf_counter()
ir, _ = parse_sources(Path(sys.argv[1]), Path(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "parse": t2 - t1, "commands": len(ir.commands)}))
"""


def run_child(spec_dir: Path, header: Path, cwd: Path, tmpdir: Path | None = None) -> dict:
    env = dict(os.environ)
    if tmpdir is not None:
        # lark keeps its cache under tempfile.gettempdir(); an empty TMPDIR forces a fresh build
        env["TMPDIR"] = str(tmpdir)
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec_dir), str(header)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"the child process failed (exit {r.returncode})")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--spec-dir",
        type=Path,
        default=DEFAULT_SPEC_DIR,
        help=f"spec checkout or chapter .tex (default {DEFAULT_SPEC_DIR})",
    )
    ap.add_argument(
        "--header", type=Path, default=DEFAULT_HEADER, help=f"virtio_gpu.h to parse with it (default {DEFAULT_HEADER})"
    )
    ap.add_argument("--runs", type=int, default=5, help="child processes per measurement (default 5)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    for p in (args.spec_dir, args.header):
        if not p.exists():
            ap.error(f"{p} does not exist")

    scratch = Path(tempfile.mkdtemp(prefix="parse-speed-"))
    try:
        work = scratch / "cwd"
        work.mkdir()
        # warm lark's on-disk cache in the ordinary temp dir once
        warm = run_child(args.spec_dir, args.header, work)

        cached = [run_child(args.spec_dir, args.header, work) for _ in range(args.runs)]
        uncached, written = [], []
        for i in range(args.runs):
            fresh = scratch / f"tmp{i}"
            fresh.mkdir()
            uncached.append(run_child(args.spec_dir, args.header, work, fresh))
            written.append(len(list(fresh.glob(".lark_cache_*"))))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    n = args.runs
    parse_cached = statistics.median(r["parse"] for r in cached)
    import_cached = statistics.median(r["import"] for r in cached)
    parse_fresh = statistics.median(r["parse"] for r in uncached)
    print(f"spec: {args.spec_dir}  header: {args.header}  ({warm['commands']} commands)")
    print(f"import (cold process): {import_cached:.3f} s median of {n}")
    print(f"parse (cold process, cached tables): {parse_cached:.3f} s median of {n}")
    print(
        f"parse (cold process, tables built from scratch): {parse_fresh:.3f} s median of {n}"
        f" (lark cache files written per run: {sorted(set(written))})"
    )
    print(f"target {TARGET_S} s: {'met' if parse_cached <= TARGET_S else 'not met'}")
    print(f"ratio cached/uncached: {parse_cached / parse_fresh:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
