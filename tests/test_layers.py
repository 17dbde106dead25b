"""Imports point one way: down the data path, never up or sideways; and packages form no cycle.

Every module of the project is read with ``ast`` (imports inside functions included), each import
of a project module is mapped to its layer, and an import that reaches a higher layer, or a
sibling of the same rank, fails the test with the file, line and the rule it breaks.

The same imports, read package by package (``llamavid``, ``indexer``, ``train``, ``evaluation``,
``app``, ``assets``, ``cli``), make a graph of top-level packages; a cycle in it (say ``llamavid``
importing ``cli``, which imports ``llamavid``) fails with the cycle and one import line per edge.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llamavid", "indexer", "train", "app", "assets", "evaluation", "cli")

#: (layer, rank, module prefixes), most specific prefix first where they nest. A module may import
#: its own layer and any layer of a lower rank; layers of equal rank may not import each other.
LAYERS: list[tuple[str, int, tuple[str, ...]]] = [
    ("bench", 7, ("cli.bench",)),  # the benchmarks, nested in the cli package
    ("cli", 8, ("cli",)),
    ("app", 6, ("app",)),
    ("evaluation", 6, ("evaluation",)),
    ("indexer", 5, ("indexer",)),
    ("train", 5, ("train",)),
    ("runtime", 4, ("llamavid.runtime",)),
    ("prompt", 3, ("llamavid.prompt",)),
    ("model", 2, ("llamavid.model",)),
    ("media", 1, ("llamavid.media",)),
    ("hub", 1, ("llamavid.hub",)),
    ("base", 0, ("llamavid.errors", "llamavid.paths", "llamavid.files", "llamavid.system", "llamavid.storage",
                 "llamavid.fingerprint",
                 "assets")),
]
#: The package front doors: ``llamavid/__init__.py`` names its exports as strings (imported on first
#: use, see its docstring); ``cli/bench/__init__.py`` is the ``llamavid bench`` command, a command
#: module like its siblings in ``cli/`` (it uses ``cli.options``) above the benchmarks it runs.
ENTRY_POINTS = {"llamavid": "base", "cli.bench": "cli"}


def layer_of(module: str) -> tuple[str, int]:
    if module in ENTRY_POINTS:
        name = ENTRY_POINTS[module]
        return name, next(rank for layer, rank, _ in LAYERS if layer == name)
    for name, rank, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name, rank
    raise LookupError(f"{module} belongs to no layer: add it to LAYERS in {Path(__file__).name}")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a project module in ``path``, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            found.append((node.lineno, base))
    return [(line, mod) for line, mod in found if mod.split(".")[0] in PACKAGES]


def violations(path: Path) -> list[str]:
    here = module_name(path)
    layer, rank = layer_of(here)
    out = []
    for line, target in imported_modules(path):
        other, other_rank = layer_of(target)
        if other == layer:
            continue
        if other_rank > rank:
            out.append(f"{path.relative_to(ROOT)}:{line}: {here} ({layer}) imports {target}, a higher layer ({other})")
        elif other_rank == rank:
            out.append(f"{path.relative_to(ROOT)}:{line}: {here} ({layer}) imports {target}, a sibling layer "
                       f"({other}); move the shared piece down to a layer both may import")
    return out


def package_edges() -> dict[tuple[str, str], str]:
    """The graph of top-level packages: (importer, imported) -> the first import that makes the edge,
    as ``file:line: module imports target``."""
    edges: dict[tuple[str, str], str] = {}
    for path in project_modules():
        here = module_name(path)
        for line, target in imported_modules(path):
            edge = (here.split(".")[0], target.split(".")[0])
            if edge[0] != edge[1]:
                edges.setdefault(edge, f"{path.relative_to(ROOT)}:{line}: {here} imports {target}")
    return edges


def find_cycle(edges: dict[tuple[str, str], str]) -> list[str]:
    """A cycle of the graph as ``[a, b, ..., a]`` (depth-first, packages in name order), or ``[]``."""
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(edges):
        graph[a].append(b)
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        path.append(node)
        for nxt in graph[node]:
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done and (found := visit(nxt)):
                return found
        path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        if node not in done and (found := visit(node)):
            return found
    return []


def describe(cycle: list[str], edges: dict[tuple[str, str], str]) -> str:
    """``a -> b -> a`` and, per edge, the import that makes it."""
    return " -> ".join(cycle) + "".join(f"\n  {a} -> {b}: {edges[a, b]}" for a, b in zip(cycle[:-1], cycle[1:],
                                                                                            strict=True))


def format_graph(edges: dict[tuple[str, str], str]) -> str:
    """One line per package: what it imports."""
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(edges):
        graph[a].append(b)
    return "\n".join(f"{a} -> {', '.join(graph[a]) or '(nothing)'}" for a in sorted(set(PACKAGES) | set(graph)))


def test_every_module_has_a_layer() -> None:
    modules = project_modules()
    assert len(modules) > 80  # the walk found the tree (a wrong ROOT would find nothing and pass)
    unplaced = []
    for path in modules:
        try:
            layer_of(module_name(path))
        except LookupError as exc:
            unplaced.append(str(exc))
    assert not unplaced, "\n".join(unplaced)


def test_imports_point_down_the_data_path() -> None:
    found = [v for path in project_modules() for v in violations(path)]
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_the_check_catches_an_upward_and_a_sideways_import(tmp_path, monkeypatch) -> None:
    """Negative control: the same walk flags a model module importing the runtime, a function-level
    import of the CLI from the indexer, and hub importing media."""
    fake = tmp_path / "llamavid" / "model"
    fake.mkdir(parents=True)
    (tmp_path / "indexer").mkdir()
    (tmp_path / "llamavid" / "hub").mkdir()
    (fake / "bad.py").write_text("from llamavid.runtime.chat import Chat\n")
    (tmp_path / "indexer" / "bad.py").write_text("def f():\n    from cli import main\n")
    (tmp_path / "llamavid" / "hub" / "bad.py").write_text("from ..media import probe\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    flagged = [violations(p) for p in (fake / "bad.py", tmp_path / "indexer" / "bad.py",
                                       tmp_path / "llamavid" / "hub" / "bad.py")]
    assert "a higher layer (runtime)" in flagged[0][0]
    assert "a higher layer (cli)" in flagged[1][0] and ":2:" in flagged[1][0]
    assert "a sibling layer (media)" in flagged[2][0]


def test_the_packages_form_no_cycle() -> None:
    edges = package_edges()
    print("package graph (importer -> imported):\n" + format_graph(edges))
    # the walk saw the tree: the command line imports the library and the apps, the apps the library
    assert {("cli", "llamavid"), ("cli", "app"), ("app", "llamavid")} <= set(edges)
    cycle = find_cycle(edges)
    assert not cycle, "the packages import each other in a cycle: " + describe(cycle, edges)
    assert not [line for (_, imported), line in edges.items() if imported == "cli"], "cli is the top"


def test_the_package_check_catches_a_cycle(tmp_path, monkeypatch) -> None:
    """Negative control: a fake tree where the model library imports the command line (inside a
    function) and the command line imports the library is a cycle, reported with both imports; the
    same tree without that import has none; a longer cycle (llamavid -> app -> indexer -> llamavid)
    is found too."""
    for folder in ("llamavid/runtime", "cli", "app", "indexer"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "cli" / "__init__.py").write_text("from llamavid.errors import UserError\n")
    (tmp_path / "app" / "chat.py").write_text("import llamavid.runtime.api\n")
    bad = tmp_path / "llamavid" / "runtime" / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    from cli import main\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    edges = package_edges()
    cycle = find_cycle(edges)
    assert cycle == ["llamavid", "cli", "llamavid"]  # found from app, the first package by name
    assert describe(cycle, edges).splitlines() == [
        "llamavid -> cli -> llamavid",
        "  llamavid -> cli: llamavid/runtime/bad.py:5: llamavid.runtime.bad imports cli",
        "  cli -> llamavid: cli/__init__.py:1: cli imports llamavid.errors",
    ]
    bad.write_text("from ..media import probe\n")  # a relative import stays inside llamavid
    assert find_cycle(package_edges()) == []
    bad.write_text("from app.chat import x\n")
    (tmp_path / "app" / "library.py").write_text("from indexer import library\n")
    (tmp_path / "indexer" / "library.py").write_text("from llamavid.media import probe\n")
    assert find_cycle(package_edges()) == ["app", "indexer", "llamavid", "app"]


def test_layer_of_known_modules() -> None:
    assert layer_of("cli") == ("cli", 8)
    assert layer_of("cli.doctor") == ("cli", 8)
    assert layer_of("cli.bench") == ("cli", 8)  # the `llamavid bench` command
    assert layer_of("cli.bench.film") == ("bench", 7)
    assert layer_of("evaluation.runner") == ("evaluation", 6)
    assert layer_of("llamavid.model.qformer") == ("model", 2)
    assert layer_of("indexer.library") == ("indexer", 5)
    for gone in ("llamavid.somewhere_new", "llamavid.cli", "llamavid.bench.film"):  # moved to cli/
        with pytest.raises(LookupError, match="belongs to no layer"):
            layer_of(gone)
