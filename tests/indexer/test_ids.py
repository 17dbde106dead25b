"""Ids are never reused: a removed film's or conversation's id is not given to the next one, and the
migration that makes it so keeps every row and id of an older database (with the cues' full-text
index and the cascades working). Removing a film deletes its prepared state."""
from __future__ import annotations

from app import conversations as conv_schema
from app.conversations import ConversationStore
from indexer import controls, movies
from indexer import db as dbmod
from indexer.store import LibraryStore


def _movie(store: LibraryStore, library_id: int, name: str) -> int:
    return store.add_movie({"library_id": library_id, "path": f"/films/{name}", "rel_path": name, "size": 1,
                            "mtime": 0.0, "fingerprint": name}, "new")


def _table_sql(db, table: str) -> str:
    return db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone()[0]


def test_a_removed_films_id_is_never_given_to_the_next_film(tmp_path):
    with LibraryStore.open(tmp_path / "library.db") as store:
        folder = store.add_library("/films")["id"]
        first, newest = _movie(store, folder, "A.mkv"), _movie(store, folder, "B.mkv")
        movies.delete(store, newest)
        assert _movie(store, folder, "C.mkv") > newest
        store.remove_library(folder)
        folder = store.add_library("/films")["id"]
        assert _movie(store, folder, "D.mkv") > newest + 1 and first < newest


def test_a_deleted_conversations_and_turns_ids_are_never_reused(tmp_path):
    store = ConversationStore(tmp_path / "conversations.db")
    try:
        store.create("m", title="old")
        newest = store.create("m", title="newest")
        turn = store.add_turn(newest.id, "q", "a", [1], False, [])
        store.delete(newest.id)  # its turns go with it
        again = store.create("m", title="again")
        assert again.id > newest.id
        assert store.add_turn(again.id, "q", "a", [1], False, []) > turn
    finally:
        store.close()


def test_the_migration_keeps_an_old_librarys_rows_ids_cues_and_cascades(tmp_path):
    path = tmp_path / "library.db"
    old = dbmod.connect(path, migrations=dbmod.MIGRATIONS[:2])  # the schema before ids were kept
    assert "AUTOINCREMENT" not in _table_sql(old, "movies")
    old.execute("INSERT INTO libraries (id, path, added_at, prepare) VALUES (1, '/films', 0, 1)")
    for movie_id, name in ((3, "A.mkv"), (7, "B.mkv"), (9, "C.mkv")):
        old.execute("INSERT INTO movies (id, library_id, path, rel_path, size, mtime, fingerprint, added_at,"
                    " changed_at, prepared_path, prepared_bytes) VALUES (?, 1, ?, ?, 1, 0, ?, 0, 0, ?, 5)",
                    [movie_id, f"/films/{name}", name, name, f"/p/{movie_id}.state"])
        old.execute("INSERT INTO jobs (movie_id, state, created_at) VALUES (?, 'done', 0)", [movie_id])
        old.execute("INSERT INTO frames (movie_id, idx, time) VALUES (?, 0, 0.5)", [movie_id])
        old.execute("INSERT INTO subtitle_tracks (id, movie_id, source, ref, kind, status)"
                    " VALUES (?, ?, 'sidecar', 'x', 'text', 'ok')", [movie_id, movie_id])
        old.execute("INSERT INTO cues (movie_id, track_id, start, \"end\", text, source)"
                    " VALUES (?, ?, 1, 2, ?, 'sidecar')", [movie_id, movie_id, f"the lighthouse of {name}"])
    old.execute("DELETE FROM movies WHERE id = 9")  # removed before the upgrade
    old.conn.close()

    with LibraryStore.open(path) as store:
        assert dbmod.schema_version(store.db) == dbmod.SCHEMA_VERSION
        assert "AUTOINCREMENT" in _table_sql(store.db, "movies")
        assert [(r["id"], r["rel_path"], r["prepared_path"]) for r in store.db.query(
            "SELECT id, rel_path, prepared_path FROM movies ORDER BY id")] == [
                (3, "A.mkv", "/p/3.state"), (7, "B.mkv", "/p/7.state")]
        for table in ("jobs", "frames", "subtitle_tracks", "cues"):  # children kept (no cascade on the rebuild)
            assert sorted(r[0] for r in store.db.execute(f"SELECT movie_id FROM {table}")) == [3, 7], table
        assert {"movies_fingerprint", "movies_library"} <= {
            r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert sorted(h[0] for h in store.search_cues("lighthouse")) == [3, 7]  # full-text index works
        newest = _movie(store, 1, "D.mkv")
        assert newest == 8  # after the highest id kept
        movies.delete(store, newest)
        assert _movie(store, 1, "E.mkv") == 9
        movies.delete(store, 7)  # cascades still reach the children
        for table in ("jobs", "frames", "subtitle_tracks", "cues"):
            assert 7 not in {r[0] for r in store.db.execute(f"SELECT movie_id FROM {table}")}, table
        assert sorted(h[0] for h in store.search_cues("lighthouse")) == [3]


def test_the_migration_keeps_old_conversations_turns_and_their_ids(tmp_path):
    path = tmp_path / "conversations.db"
    old = dbmod.connect(path, migrations=conv_schema.MIGRATIONS[:1])
    for conv_id in (2, 5):
        old.execute("INSERT INTO conversations (id, movie_id, movie_path, title, model, created_at, updated_at)"
                    " VALUES (?, 4, '/films/A.mkv', ?, 'm', 0, 0)", [conv_id, f"c{conv_id}"])
        for idx in range(2):
            old.execute("INSERT INTO turns (id, conversation_id, idx, question, answer, answer_ids, created_at)"
                        " VALUES (?, ?, ?, 'q', 'a', '[1, 2]', 0)", [conv_id * 10 + idx, conv_id, idx])
    old.conn.close()

    store = ConversationStore(path)
    try:
        assert "AUTOINCREMENT" in _table_sql(store.db, "conversations")
        assert "AUTOINCREMENT" in _table_sql(store.db, "turns")
        assert [(c.id, c.movie_id, [t.id for t in c.turns]) for c in map(store.get, (2, 5))] == [
            (2, 4, [20, 21]), (5, 4, [50, 51])]
        store.delete(5)  # the newest: cascade still takes its turns
        assert store.db.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = 5").fetchone()[0] == 0
        conv = store.create("m")
        assert conv.id == 6 and store.add_turn(conv.id, "q", "a", [1], False, []) == 52
    finally:
        store.close()


def test_removing_a_folder_or_a_film_deletes_their_prepared_states(tmp_path):
    states = tmp_path / "cache" / "prepared"
    states.mkdir(parents=True)
    with LibraryStore.open(tmp_path / "library.db") as store:
        folder = store.add_library("/films")["id"]
        ids = [_movie(store, folder, n) for n in ("A.mkv", "B.mkv", "C.mkv")]
        for movie_id in ids:
            (states / f"movie-{movie_id}.state").write_bytes(b"state")
            store.record_prepared(movie_id, "{}", str(states / f"movie-{movie_id}.state"), 5)
        movies.delete(store, ids[0])
        assert not (states / f"movie-{ids[0]}.state").exists()
        controls.remove_folder(store, folder)
        assert list(states.iterdir()) == [] and store.prepared() == []

