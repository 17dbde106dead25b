"""The library's subtitle search (indexer/search.py, indexer/terms.py): stems as the index stems them,
stop words out, lines scored by closeness, the index rebuilt with stems by migration 5, and
``llamavid index search``."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from indexer import db as dbmod
from indexer.search import closeness, search_cues
from indexer.store import LibraryStore
from indexer.subtitle_sources import Track
from indexer.terms import query_terms, stem, tokens
from llamavid.prompt.subtitles import Cue

ROOT = Path(__file__).resolve().parents[2]
HARBOR = [(4.0, "Hello captain, the wind is rising."), (13.5, "The treasure is buried under the old lighthouse."),
          (18.0, "Who told you about the lighthouse?"), (40.0, "I will hide the map in the chapel."),
          (45.0, "Where is the map?"), (60.0, "The the the.")]
ORCHARD = [(3.0, "Grandmother hid the letters in the piano."), (9.0, "The wind broke the old apple tree.")]


def _film(store: LibraryStore, name: str, lines: list[tuple[float, str]], language: str = "en") -> int:
    library = store.library("/films") or store.add_library("/films")
    movie_id = store.add_movie({"library_id": library["id"], "path": f"/films/{name}", "rel_path": name, "size": 1,
                                "mtime": 1.0, "fingerprint": f"fp-{name}"}, "new file")
    cues = [Cue(start, start + 3.0, text, language, "sidecar") for start, text in lines]
    store.replace_subtitle_tracks(movie_id, [Track(source="sidecar", ref=f"{name}.srt", language=language,
                                                   kind="text", status="ok", cues=cues)], "sig")
    return movie_id


@pytest.fixture
def store(tmp_path):
    with LibraryStore.open(tmp_path / "library.db") as store:
        yield store


def test_the_python_stems_are_the_index_stems():
    """Every word of the project's documentation and code, stemmed here and by SQLite's FTS5 porter tokenizer."""
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(p for folder in ("llamavid", "indexer", "app", "evaluation") for p in (ROOT / folder).rglob("*.py"))]
    text = " ".join(p.read_text(encoding="utf-8") for p in sorted(files))
    text += " Café déjà vu naïve façade Straße grüßen hiding hides hidden hid agreed generalization"
    words = sorted(set(tokens(text)))
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{dbmod.CUES_TOKENIZER}')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")
    db.executemany("INSERT INTO t (rowid, x) VALUES (?, ?)", list(enumerate(words, 1)))
    indexed = {words[doc - 1]: term for term, doc in db.execute("SELECT term, doc FROM v")}
    assert len(words) > 4000
    assert {w: stem(w) for w in words} == indexed


def test_terms_join_word_forms_and_leave_out_stop_words():
    assert query_terms("Who hid the maps?") == query_terms("hide map") == ["hide", "map"]
    assert query_terms("hiding, hidden, hides") == ["hide"]
    assert query_terms("The men went") == query_terms("man go")
    assert query_terms("What is it? The, the, THE!") == [] and query_terms("I don't know") == ["know"]
    assert closeness(["hide", "map"], ["hide", "map"]) == 1.0 and closeness(["hide"], ["map"]) == 0.0


def test_a_question_finds_its_line_in_other_word_forms(store):
    movie_id = _film(store, "Harbor.mkv", HARBOR)
    found = search_cues(store, "Who hid the map?")
    assert [m.text for m in found] == ["I will hide the map in the chapel.", "Where is the map?"]
    assert found[0].score > found[1].score > 0
    assert search_cues(store, "hiding")[0].start == 40.0
    assert search_cues(store, "Where was the treasure buried?")[0].start == 13.5
    quote = search_cues(store, "the treasure is buried under the old lighthouse")
    assert quote[0].start == 13.5 and quote[0].score == pytest.approx(1.0)
    assert {m.movie_id for m in quote} == {movie_id}


def test_stop_words_alone_find_nothing(store):
    _film(store, "Harbor.mkv", HARBOR)
    for text in ("the", "The the the.", "What is it?", "", "  ", '"', "\x00", "*", "OR AND NOT"):
        assert search_cues(store, text) == [], text
    assert search_cues(store, 'the "lighthouse\x00 NEAR(') != []  # free text is never FTS5 syntax


def test_the_whole_library_one_film_or_one_track(store):
    harbor = _film(store, "Harbor.mkv", HARBOR)
    orchard = _film(store, "Orchard.mkv", ORCHARD)
    everywhere = search_cues(store, "who hid it")
    assert [(m.movie_id, m.start) for m in everywhere] == [(harbor, 40.0), (orchard, 3.0)]  # a shorter line first
    assert [m.movie_id for m in search_cues(store, "who hid it", movie_id=harbor)] == [harbor]
    track = store.subtitle_tracks(orchard)[0]["id"]
    assert search_cues(store, "who hid it", movie_id=harbor, track_id=track) == []
    assert len(search_cues(store, "the old wind", limit=1)) == 1
    assert everywhere[1].to_dict() == {"kind": "quote", "movie_id": orchard, "path": "Orchard.mkv", "start": 3.0,
                                       "end": 6.0,
                                       "text": "Grandmother hid the letters in the piano.",
                                       "score": round(everywhere[1].score, 4)}


def test_migration_5_indexes_the_stored_lines_by_stem(tmp_path):
    path = tmp_path / "library.db"
    old = dbmod.connect(path, migrations=dbmod.MIGRATIONS[:4])  # the words as written, before stems
    _film(LibraryStore(old), "Harbor.mkv", HARBOR)
    assert old.execute("SELECT rowid FROM cues_fts WHERE cues_fts MATCH 'hides'").fetchall() == []
    old.close()
    with LibraryStore.open(path) as store:
        assert dbmod.schema_version(store.db) == dbmod.SCHEMA_VERSION >= 5
        assert [m.start for m in search_cues(store, "hides")] == [40.0]
        store.replace_subtitle_tracks(1, [Track(source="sidecar", ref="b.srt", language="en", kind="text", status="ok",
                                                cues=[Cue(7.0, 9.0, "They are hiding", "en", "sidecar")])], "sig-2")
        assert [m.text for m in search_cues(store, "hides")] == ["They are hiding"]  # the triggers keep it in step


def test_index_search_prints_the_film_the_time_and_the_line(cli, data_dir):
    with LibraryStore.open(data_dir / "library.db") as store:
        harbor = _film(store, "Harbor.mkv", HARBOR)
        _film(store, "Orchard.mkv", ORCHARD)
    code, out, _ = cli("search", "Who hid the map?")
    assert code == 0
    assert out.splitlines()[0] == "Harbor.mkv  0:00:40-0:00:43  I will hide the map in the chapel."
    assert "Orchard.mkv  0:00:03-0:00:06  Grandmother hid the letters in the piano." in out
    code, out, _ = cli("search", "who hid it", "--json", "--movie", str(harbor), "--limit", "1")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["movie_id"], r["path"], r["start"], r["end"], r["text"]) for r in rows] == [
        (harbor, "Harbor.mkv", 40.0, 43.0, "I will hide the map in the chapel.")]
    assert 0 < rows[0]["score"] <= 1
    code, out, err = cli("search", "the")
    assert code == 0 and out == "" and "no line" in err
    code, _, err = cli("search", "map", "--limit", "0")
    assert code == 1 and "--limit" in err
