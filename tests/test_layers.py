"""The package's layers only point down: no import circle, no upward import, no hidden first-party import.

Read from the source with ``ast`` (nothing is imported), so a new upward or circular import fails here
before it can fail at run time. The layer list is the architecture; ``docs/components.md`` draws it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rl_align"

# bottom first: a module may import its own package and packages of lower layers, nothing else
LAYERS: list[tuple[str, ...]] = [
    ("utils",),
    ("config",),
    ("tracking", "ray_utils", "run_dir", "actors"),
    ("data", "embed"),
    ("sid",),
    ("policy", "algos"),
    ("rollouts",),
    ("eval",),
    ("sft", "ranker", "baselines", "retrieval", "preferences"),
    ("rewards", "learner"),
    ("driver", "checks", "rl_report"),
    ("report", "analysis"),
    ("pipeline",),
    ("sweep", "tune"),
    ("commands",),
    ("cli",),
    ("__main__",),
]

# first-party imports allowed inside a function: (module, imported module, why)
DEFERRED: list[tuple[str, str, str]] = [
    ("rl_align.cli", "rl_align.commands", "start-up: the subcommands pull torch, transformers and Ray (~8 s); "
                                          "`rl-align --help` and argument errors answer without them"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ("rl_align",) + p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(mods: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """(importer, imported module, at module top level) for every first-party import."""
    out = []
    for m, p in mods.items():
        tree = ast.parse(p.read_text())
        top = {id(n) for n in tree.body}
        pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(pkg[:len(pkg) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                    else node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            in_type_check = False
            for t in targets:
                if t.split(".")[0] != "rl_align":
                    continue
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                out.append((m, t, id(node) in top or in_type_check))
    return out


def _package(mod: str) -> str:
    return mod.split(".")[1] if mod.count(".") else "__init__"


def _layer(mod: str) -> int:
    pkg = _package(mod)
    for i, names in enumerate(LAYERS):
        if pkg in names:
            return i
    raise AssertionError(f"{mod}: package {pkg!r} is in no layer of tests/test_layers.py")


MODS = _modules()
EDGES = _imports(MODS)


def test_every_package_has_a_layer():
    for m in MODS:
        if m != "rl_align":
            _layer(m)


def test_no_upward_or_sideways_import():
    bad = [f"{a} -> {b}" for a, b, _ in EDGES
           if a != "rl_align" and b != "rl_align" and _package(a) != _package(b) and _layer(b) >= _layer(a)]
    assert not bad, "imports that do not point down:\n" + "\n".join(sorted(set(bad)))


def test_no_import_circle():
    graph: dict[str, set[str]] = {m: set() for m in MODS}
    for a, b, _ in EDGES:
        if a != b:
            graph[a].add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_first_party_import_inside_a_function():
    allowed = {(a, b) for a, b, _ in DEFERRED}
    hidden = [f"{a} -> {b}" for a, b, top in EDGES if not top and (a, b) not in allowed]
    assert not hidden, "first-party imports inside functions (hoist them, or list them in DEFERRED with why):\n" + \
        "\n".join(sorted(set(hidden)))


def test_layer_test_catches_a_circle(tmp_path):
    """The checker itself: a two-module circle written to disk is found."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("import a\n")
    trees = {n: ast.parse((tmp_path / f"{n}.py").read_text()) for n in ("a", "b")}
    graph = {n: {a.name for node in t.body for a in node.names} for n, t in trees.items()}
    assert "b" in graph["a"] and "a" in graph["b"]
