"""Search by description (indexer/scenes_search.py): a text's vector from the scene model's text side
against every film's scene vectors in one memory-mapped library file, peaks not neighbours, the one
search over quotes and scenes, and ``llamavid index search --kind``. A real library database, the tiny
CLIP's real text side; the films' vectors are written through the indexer's store (see
tests/support/scenes.py for why a description is planted)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.scenes_search import (
    SceneIndex,
    ScenesUnavailable,
    film_similarity,
    library_folder,
    scene_score,
    search_library,
)
from indexer.store import LibraryStore
from indexer.subtitle_sources import Track
from llamavid.prompt.subtitles import Cue
from tests.support.scenes import add_scene_film, alike, install_tiny_scene_model, noise, plant, text_vector, unlike

KITE = "a red kite over the lighthouse at dawn"


@pytest.fixture
def library(data_dir):
    """Two films of scene vectors made by the installed tiny CLIP, pictures unlike the kite: Harbor (120 s)
    and Orchard (90 s); the kite planted in Orchard from 30 to 35 s and, less alike (cosine 0.3, what a good
    caption scores with CLIP), in Harbor from 70 to 72 s."""
    model = install_tiny_scene_model(data_dir)
    kite = text_vector(model, KITE)
    with LibraryStore.open(data_dir / "library.db") as store:
        harbor = add_scene_film(store, data_dir, model, "Harbor.mkv", unlike(noise(120, 16, seed=1), kite))
        orchard = add_scene_film(store, data_dir, model, "Orchard.mkv", unlike(noise(90, 16, seed=2), kite))
        assert plant(store, orchard, (30, 35), kite) == [30, 31, 32, 33, 34]
        plant(store, harbor, (70, 72), alike(kite, 0.3))
        yield store, harbor, orchard


def test_a_description_finds_the_stretch_that_looks_like_it_first_and_one_result_per_stretch(library, data_dir):
    store, harbor, orchard = library
    found = search_library(store, KITE, "scene", limit=5)
    best = found[0]
    assert (best.kind, best.movie_id, best.rel_path) == ("scene", orchard, "Orchard.mkv")
    assert (best.start, best.end) == (30.0, 35.0) and 30 <= best.time < 35
    assert best.similarity == pytest.approx(1.0, abs=2e-3) and best.score == 1.0
    assert (found[1].movie_id, found[1].start) == (harbor, 70.0) and found[1].similarity < best.similarity
    assert all(abs(a.time - b.time) >= 8 for a in found for b in found if a is not b and a.movie_id == b.movie_id)
    assert [m.movie_id for m in search_library(store, KITE, "scene", movie_id=harbor, limit=3)] == [harbor] * 3
    assert best.to_dict() == {"kind": "scene", "movie_id": orchard, "path": "Orchard.mkv", "start": 30.0, "end": 35.0,
                              "time": best.time, "text": None, "score": 1.0, "similarity": round(best.similarity, 4)}
    times, cosines = film_similarity(store, orchard, KITE)
    assert list(times) == [float(t) for t in range(90)] and int(np.argmax(cosines)) in range(30, 35)
    assert scene_score(0.1) == 0 and scene_score(0.25) == pytest.approx(0.5) and scene_score(0.9) == 1


def test_the_library_is_one_file_made_again_when_a_film_changes(library, data_dir):
    store, harbor, orchard = library
    index = SceneIndex()
    search_library(store, KITE, "scene", index=index)
    (made,) = sorted(library_folder(data_dir).glob("library-*.npy"), key=lambda p: "times" in p.name)[:1]
    assert np.load(made, mmap_mode="r").shape == (210, 16)
    written = made.stat().st_mtime_ns
    search_library(store, KITE, "scene", index=SceneIndex())  # another process: the file is read, not made again
    assert made.stat().st_mtime_ns == written and len(list(library_folder(data_dir).glob("library-*.npy"))) == 2
    model = data_dir / "models" / "clip-vit-b-32"
    kite = text_vector(model, KITE)
    third = add_scene_film(store, data_dir, model, "Station.mkv", unlike(noise(40, 16, seed=4), kite))
    plant(store, third, (10, 12), kite)
    found = search_library(store, KITE, "scene", limit=3, index=index)
    assert {m.movie_id for m in found[:2]} == {orchard, third}
    files = list(library_folder(data_dir).glob("library-*.npy"))
    assert not made.exists() and len(files) == 2  # the new matrix and its times; the old ones deleted
    assert any(np.load(f, mmap_mode="r").shape == (250, 16) for f in files)


def test_all_ranks_lines_and_scenes_together_and_quotes_alone_need_no_scene_model(library, data_dir):
    store, harbor, orchard = library
    line = "I saw a red kite over the lighthouse at dawn."
    store.replace_subtitle_tracks(harbor, [Track(source="sidecar", ref="h.srt", language="en", kind="text",
                                                 status="ok", cues=[Cue(12.0, 15.0, line, "en", "sidecar")])], "s")
    found = search_library(store, KITE, "all", limit=4)
    assert [(m.kind, m.movie_id) for m in found] == [("scene", orchard), ("quote", harbor), ("scene", harbor)]
    assert found[0].score == 1.0 > found[1].score > found[2].score == pytest.approx(0.75, abs=0.02)  # cosines 1, 0.3
    assert all(m.score > 0 for m in found) and found == sorted(found, key=lambda m: -m.score)
    assert [m.kind for m in search_library(store, KITE, "quote")] == ["quote"]
    with pytest.raises(ValueError):
        search_library(store, KITE, "lines")
    (data_dir / "models" / "clip-vit-b-32" / "config.json").unlink()  # the scene model is gone
    with pytest.raises(ScenesUnavailable, match="llamavid models pull clip-vit-b-32"):
        search_library(store, KITE, "scene")
    assert [m.kind for m in search_library(store, KITE, "all")] == ["quote"]
    assert film_similarity(store, orchard, KITE) is None


def test_index_search_finds_scenes_by_description(cli, library, data_dir):
    store, harbor, orchard = library
    code, out, _ = cli("search", KITE, "--kind", "scene", "--limit", "1")
    assert code == 0 and out.startswith("Orchard.mkv  0:00:30-0:00:35  [scene, similarity 1.00]")
    code, out, _ = cli("search", KITE, "--kind", "scene", "--json", "--movie", str(harbor), "--limit", "2")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["kind"], r["movie_id"], r["start"]) for r in rows[:1]] == [("scene", harbor, 70.0)]
    assert len(rows) == 2 and rows[0]["text"] is None and 0 <= rows[1]["score"] <= rows[0]["score"] <= 1
    (data_dir / "models" / "clip-vit-b-32" / "config.json").unlink()
    code, _, err = cli("search", KITE, "--kind", "scene")
    assert code == 1 and "llamavid models pull clip-vit-b-32" in err
