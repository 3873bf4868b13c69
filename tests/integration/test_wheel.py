"""Build a wheel, install it into a fresh venv and run the CLI from it, away from the source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DATA = (
    "virtgpu_conform/spec/grammars/latex.lark",
    "virtgpu_conform/spec/grammars/cdecl.lark",
    "virtgpu_conform/spec/snapshot/spec-v1.4.json",
)
# what a source checkout holds that is not part of the package source
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".venv", "venv", "out"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the venv must find the package on its own
    env.pop("PYTHONHOME", None)
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _build_wheel(src: Path, out: Path) -> Path:
    """pip wheel without build isolation; fall back to an isolated build if that is unavailable."""
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out]
    first = _run([*base, "--no-build-isolation", src], out.parent)
    if first.returncode != 0:
        second = _run([*base, src], out.parent)
        assert second.returncode == 0, (
            "pip wheel failed both without build isolation:\n"
            + first.stdout
            + first.stderr
            + "\nand with it:\n"
            + second.stdout
            + second.stderr
        )
    wheels = sorted(out.glob("virtgpu_conform-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, found {wheels}"
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(wheel, venv, a working directory outside the repository)."""
    base = tmp_path_factory.mktemp("wheel")
    # Build from a clean copy of the checkout: an in-tree build would leave build/ in the repo
    # and could pick stale files from an earlier build/lib.
    src = base / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    dist = base / "dist"
    dist.mkdir()
    wheel = _build_wheel(src, dist)

    venv = base / "venv"
    # The running environment's site-packages supply the dependencies (no network), through a
    # .pth path line: it puts them on sys.path after the venv's own site-packages, where the wheel
    # goes, and runs none of their .pth hooks, so the editable install of this checkout stays out.
    # (--system-site-packages would reach the base interpreter's, which need not hold them.)
    mk = _run([sys.executable, "-m", "venv", venv], base)
    assert mk.returncode == 0, mk.stdout + mk.stderr
    own = _run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base)
    deps = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    Path(own.stdout.strip(), "outer-dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    pip = _run(
        [venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel], base
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr

    work = base / "elsewhere"
    work.mkdir()
    return wheel, venv, work


def test_wheel_carries_grammars_and_snapshot(installed) -> None:
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [p for p in PACKAGE_DATA if p not in names]
        assert not missing, f"{wheel.name} lacks {missing}; it holds {sorted(names)}"
        snap = json.loads(zf.read("virtgpu_conform/spec/snapshot/spec-v1.4.json"))
        assert len(snap["commands"]) == 26
        assert zf.read("virtgpu_conform/spec/grammars/latex.lark").strip()
        assert zf.read("virtgpu_conform/spec/grammars/cdecl.lark").strip()
    # no virtgpu_conform/ folder on disk: the package-dir mapping must have produced the layout
    assert "virtgpu_conform/checker/cli/main.py" in names
    assert "virtgpu_conform/spec/load.py" in names
    assert not any(n.startswith(("spec/", "model/", "checker/", "tests/")) for n in names)


def test_package_imports_from_the_venv(installed) -> None:
    _, venv, work = installed
    code = "import virtgpu_conform.spec, sys; print(virtgpu_conform.spec.__file__)"
    r = _run([venv / "bin" / "python", "-c", code], work)
    assert r.returncode == 0, r.stderr
    where = Path(r.stdout.strip()).resolve()
    assert where.is_relative_to(venv.resolve()), f"virtgpu_conform.spec came from {where}, not from the venv {venv}"
    assert not where.is_relative_to(REPO), f"the editable tree {REPO} shadowed the wheel: {where}"
    # the CLI's submodules, the grammars and the snapshot come from the same place
    code = (
        "import virtgpu_conform.checker.cli.main as c, virtgpu_conform.spec.load as l, "
        "importlib.resources as r; print(c.__file__); "
        "print(r.files('virtgpu_conform.spec').joinpath('snapshot', l.SNAPSHOT)); "
        "print(r.files('virtgpu_conform.spec').joinpath('grammars', 'latex.lark'))"
    )
    r = _run([venv / "bin" / "python", "-c", code], work)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.split():
        p = Path(line).resolve()
        assert p.is_relative_to(venv.resolve()) and p.is_file(), f"{p} is not a file in the venv"


def test_cli_version(installed) -> None:
    _, venv, work = installed
    r = _run([venv / "bin" / "virtgpu-conform", "--version"], work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "virtgpu-conform" in r.stdout and "0.1.0" in r.stdout, r.stdout


def test_cli_spec_show_json(installed) -> None:
    _, venv, work = installed
    r = _run([venv / "bin" / "virtgpu-conform", "spec", "show", "--json"], work)
    assert r.returncode == 0, r.stdout + r.stderr
    ir = json.loads(r.stdout)
    assert len(ir["commands"]) == 26, [c["name"] for c in ir["commands"]]
    assert ir["version"].startswith("v1.4"), ir["version"]
