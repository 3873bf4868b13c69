"""The package's import graph: no module imports itself back (no cycles), and the layers point one
way, from the user-facing surface down to the spec. Read from the sources (every import, also the
ones inside functions and under TYPE_CHECKING), so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Lowest first; a module may import its own layer and the layers below it. Within `checker`, each
# subpackage is a layer of its own: traces -> check -> (devices) -> fuzz -> report -> cli.
LAYERS = [
    ["virtgpu_conform.spec"],
    ["virtgpu_conform.model"],
    ["virtgpu_conform.checker.version", "virtgpu_conform.checker.errors"],
    ["virtgpu_conform.checker.traces"],
    ["virtgpu_conform.checker.check", "virtgpu_conform.checker.devices"],
    ["virtgpu_conform.checker.fuzz"],
    ["virtgpu_conform.checker.report"],
    ["virtgpu_conform.checker.cli", "virtgpu_conform.checker.pytest_plugin"],
    ["virtgpu_conform"],
]


def _modules() -> dict[str, Path]:
    dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    out = {}
    for pkg, folder in dirs.items():
        for f in (REPO / folder).rglob("*.py"):
            rel = f.relative_to(REPO / folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            name = ".".join((pkg, *rel))
            # a subpackage mapped to a folder of its own is found under that mapping, not its parent's
            if not any(name == p or name.startswith(p + ".") for p in dirs if len(p) > len(pkg)):
                out[name] = f
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = m.split(".")[: len(m.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != m and not m.startswith(n + "."):  # a package's own parents are not imports
                    edges[m].add(n)
    return edges


def _layer(module: str) -> int:
    best = (-1, -1)
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[1]:
                best = (i, len(prefix))
    assert best[0] >= 0, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle of the graph, as a path that ends where it began; [] when there is none."""
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> list[str]:
        seen[m] = 1
        for n in sorted(edges[m]):
            if seen.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in seen:
                found = visit(n, path + [n])
                if found:
                    return found
        seen[m] = 2
        return []

    for m in sorted(edges):
        if m not in seen:
            found = visit(m, [m])
            if found:
                return found
    return []


def _upward(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} (layer {_layer(m)}) imports {n} (layer {_layer(n)})"
        for m, targets in sorted(edges.items())
        for n in sorted(targets)
        if _layer(n) > _layer(m)
    ]


def test_the_package_graph_has_no_cycle():
    edges = _graph()
    assert len(edges) > 80, "the graph was not read"
    assert _cycle(edges) == [], "import cycle: " + " -> ".join(_cycle(edges))


def test_imports_point_down_the_layers():
    wrong = _upward(_graph())
    assert not wrong, "\n".join(wrong)


def test_the_reader_sees_cycles_and_upward_imports(tmp_path, monkeypatch):
    """The graph reader itself: a planted cycle and a planted upward import are both seen."""
    for folder in ("spec", "model", "checker", "api"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "spec" / "a.py").write_text("from virtgpu_conform.model import b\n")
    (tmp_path / "model" / "b.py").write_text("def f():\n    from virtgpu_conform.spec import a\n")
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    edges = _graph()
    assert edges["virtgpu_conform.spec.a"] == {"virtgpu_conform.model", "virtgpu_conform.model.b"}
    assert edges["virtgpu_conform.model.b"] == {"virtgpu_conform.spec", "virtgpu_conform.spec.a"}
    assert _layer("virtgpu_conform.model.b") > _layer("virtgpu_conform.spec.a")
    assert _cycle(edges) == ["virtgpu_conform.model.b", "virtgpu_conform.spec.a", "virtgpu_conform.model.b"]
    assert _upward(edges) == [
        "virtgpu_conform.spec.a (layer 0) imports virtgpu_conform.model (layer 1)",
        "virtgpu_conform.spec.a (layer 0) imports virtgpu_conform.model.b (layer 1)",
    ]
