"""Imports point one way: down the data path, never up or sideways.

Every module of the project is read with ``ast`` (imports inside functions included), each import
of a project module is mapped to its layer, and an import that reaches a higher layer, or a
sibling of the same rank, fails the test with the file, line and the rule it breaks.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llamavid", "indexer", "train", "app", "assets", "evaluation")

#: (layer, rank, module prefixes), most specific prefix first where they nest. A module may import
#: its own layer and any layer of a lower rank; layers of equal rank may not import each other.
LAYERS: list[tuple[str, int, tuple[str, ...]]] = [
    ("cli", 8, ("llamavid.cli",)),
    ("bench", 7, ("llamavid.bench",)),
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
#: use, see its docstring) and ``python -m llamavid`` runs the command line.
ENTRY_POINTS = {"llamavid": "base", "llamavid.__main__": "cli"}


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
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


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
    (tmp_path / "indexer" / "bad.py").write_text("def f():\n    from llamavid.cli import main\n")
    (tmp_path / "llamavid" / "hub" / "bad.py").write_text("from ..media import probe\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    flagged = [violations(p) for p in (fake / "bad.py", tmp_path / "indexer" / "bad.py",
                                       tmp_path / "llamavid" / "hub" / "bad.py")]
    assert "a higher layer (runtime)" in flagged[0][0]
    assert "a higher layer (cli)" in flagged[1][0] and ":2:" in flagged[1][0]
    assert "a sibling layer (media)" in flagged[2][0]


def test_layer_of_known_modules() -> None:
    assert layer_of("llamavid.cli") == ("cli", 8)
    assert layer_of("llamavid.model.qformer") == ("model", 2)
    assert layer_of("indexer.library") == ("indexer", 5)
    with pytest.raises(LookupError, match="belongs to no layer"):
        layer_of("llamavid.somewhere_new")
