"""Session fixtures: files that many test modules need and that cost time to make, made once per test
session (once per worker under pytest-xdist) in pytest's temporary folder. A plugin of tests/conftest.py
(``pytest_plugins``), so every test of the suite can ask for them by name.

They are shared: a test that changes one must copy it first
(``shutil.copytree(tiny_checkpoint, tmp_path / "model")``). Each folder's contents are hashed when it is
made and again at the end of the session; a change is an error at that point, naming the files, so a
test that writes into a shared folder cannot go unnoticed and make later tests depend on the order.
"""
from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kept_unchanged(folder: Path) -> Iterator[Path]:
    """Yield ``folder``; afterwards fail, naming the files, if its contents changed (a fixture's body)."""
    before = _digest(folder)
    yield folder
    after = _digest(folder)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    if changed:
        pytest.fail(f"{folder} is shared by the whole session but a test changed it (copy it first): "
                    f"{', '.join(changed)}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny random LLaMA-VID checkpoint in the exact released layout (sharded bf16 ``.bin`` + index,
    ``eva_vit_g.pth``, the Q-Former vocabulary, a SentencePiece tokenizer), with
    :func:`llamavid.model.tiny.write_tiny_checkpoint`'s default sizes (LLM width 64 in 4 heads, EVA
    width 176, ``compress_type`` mean: 2 tokens per frame). Read-only: copy it to change it."""
    from llamavid.model.tiny import write_tiny_checkpoint

    yield from kept_unchanged(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama-vid-tiny-224-video"))


@pytest.fixture(scope="session")
def tiny_checkpoint_2heads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny checkpoint with 2 attention heads of 32 (what the llama.cpp tests need), in the
    released layout. Read-only: copy it to change it."""
    from llamavid.model.tiny import write_tiny_checkpoint

    yield from kept_unchanged(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-2heads") / "tiny-vid", heads=2))


@pytest.fixture(scope="session")
def tiny_gguf_2heads(tiny_checkpoint_2heads: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """:func:`tiny_checkpoint_2heads` converted for llama.cpp (``llamavid models convert-gguf``'s
    folder) in f32, f16, q8_0 and q4_K_M. Read-only: copy it to change it."""
    from llamavid.runtime.gguf_export import convert

    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny-vid-gguf"
    convert(tiny_checkpoint_2heads, out, types=("f32", "f16", "q8_0", "q4_K_M"))
    yield from kept_unchanged(out)


def copy_library(root: Path, dest: Path) -> tuple[Path, Path]:
    """Copy ``root``'s ``data`` and ``films`` folders (as :func:`app.server.sample.make_library` lays them
    out) to ``dest``; returns the copy's (data, films). The library database holds absolute paths (films,
    feature caches, subtitle files): every one under ``root`` is rewritten to point into ``dest``, so the
    copy shares no file with the original."""
    shutil.copytree(root, dest)
    old, new = str(root.resolve()) + "/", str(dest.resolve()) + "/"
    db = sqlite3.connect(dest / "data" / "library.db")
    try:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                                 " AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE '%VIRTUAL%'")]
        with db:
            for table in tables:
                for column in [c[1] for c in db.execute(f"PRAGMA table_info({table})") if c[2].upper() == "TEXT"]:
                    db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?)"
                               f" WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
    finally:
        db.close()
    return dest / "data", dest / "films"


@pytest.fixture(scope="session")
def served_library_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The root folder of :func:`app.server.sample.make_library`, made once per session: ``data`` (the tiny
    model installed as ``sample.MODEL``, ``sample.FILM`` indexed by ``llamavid index``) and ``films``
    (the 130 s film and its English subtitles). Never used directly: :func:`served_library` copies it."""
    from app.server.sample import make_library

    root = tmp_path_factory.mktemp("served-library")
    make_library(root)
    yield from kept_unchanged(root)


@pytest.fixture(scope="module")
def served_library(served_library_source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``make_library``'s (data, films) for this test module alone: a copy of the session's library
    (:func:`copy_library`), so a module may change it (conversations, prepared films, new folders)."""
    return copy_library(served_library_source, tmp_path_factory.mktemp("served") / "library")
