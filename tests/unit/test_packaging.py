"""pyproject's package list matches the package folders on disk (package-dir mapping), and the
package root carries the API and py.typed."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP = {
    "api": "virtgpu_conform",
    "spec": "virtgpu_conform.spec",
    "model": "virtgpu_conform.model",
    "checker": "virtgpu_conform.checker",
}


def test_packages_match_folders():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(cfg["packages"])
    on_disk = set()
    for folder, pkg in TOP.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            on_disk.add(".".join((pkg,) + rel.parts))
    assert declared == on_disk
    assert cfg["package-dir"] == {pkg: folder for folder, pkg in TOP.items()}
    # No virtgpu_conform/ folder: in a source tree it would shadow the installed package's subpackages.
    assert not (REPO / "virtgpu_conform").exists()
    assert (REPO / "api" / "py.typed").is_file() and "py.typed" in cfg["package-data"]["virtgpu_conform"]


def test_grammars_and_snapshot_are_package_data():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = cfg["package-data"]["virtgpu_conform.spec"]
    assert "grammars/*.lark" in data and "snapshot/*.json" in data
    assert sorted(p.name for p in (REPO / "spec" / "grammars").glob("*.lark")) == ["cdecl.lark", "latex.lark"]
