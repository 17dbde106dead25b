"""The library database: WAL, versioned schema, one writer while readers keep reading."""
from __future__ import annotations

import sqlite3

import pytest

from indexer import db as dbmod


def test_new_database_is_wal_and_current(tmp_path):
    db = dbmod.connect(tmp_path / "library.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert dbmod.schema_version(db) == dbmod.SCHEMA_VERSION
    assert {"movies", "jobs", "frames", "subtitle_tracks", "cues", "cues_fts"} <= set(db.table_names())
    assert dbmod.apply_migrations(db) == 0  # idempotent


def test_migrations_run_in_order_from_an_older_version(tmp_path, monkeypatch):
    calls = []

    def v2(db):
        calls.append("v2")
        db.execute("ALTER TABLE movies ADD COLUMN extra TEXT")

    released = list(dbmod.MIGRATIONS)
    monkeypatch.setattr(dbmod, "MIGRATIONS", released + [v2])
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", len(dbmod.MIGRATIONS))
    path = tmp_path / "library.db"
    db = dbmod.connect(path, migrate=False)
    for migration in released:  # a database made by the released code
        migration(db)
    db.execute(f"PRAGMA user_version = {len(released)}")
    assert dbmod.apply_migrations(db) == 1
    assert calls == ["v2"] and "extra" in db["movies"].columns_dict
    assert dbmod.schema_version(db) == len(released) + 1


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "library.db"
    db = dbmod.connect(path)
    db.execute(f"PRAGMA user_version = {dbmod.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(dbmod.DatabaseError, match="newer than this llamavid"):
        dbmod.connect(path)


def test_failed_migration_leaves_the_old_version(tmp_path, monkeypatch):
    def broken(db):
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    released = list(dbmod.MIGRATIONS)
    monkeypatch.setattr(dbmod, "MIGRATIONS", released + [broken])
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", len(dbmod.MIGRATIONS))
    with pytest.raises(RuntimeError):
        dbmod.connect(tmp_path / "library.db")
    db = dbmod.connect(tmp_path / "library.db", migrate=False)
    assert dbmod.schema_version(db) == len(released) and "half_done" not in db.table_names()


def test_readers_read_while_the_writer_holds_a_transaction(tmp_path):
    path = tmp_path / "library.db"
    writer = dbmod.connect(path)
    writer.execute("INSERT INTO libraries (path, added_at) VALUES ('/a', 0)")
    reader = dbmod.connect(path)
    with dbmod.atomic(writer):
        writer.execute("INSERT INTO libraries (path, added_at) VALUES ('/b', 0)")
        # the reader is not blocked and sees the last committed state
        assert [r[0] for r in reader.execute("SELECT path FROM libraries")] == ["/a"]
        other = sqlite3.connect(path, timeout=0.1)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")  # one writer at a time
        other.close()
    assert sorted(r[0] for r in reader.execute("SELECT path FROM libraries")) == ["/a", "/b"]


def test_atomic_rolls_back_and_nests(tmp_path):
    db = dbmod.connect(tmp_path / "library.db")
    with pytest.raises(ValueError):
        with dbmod.atomic(db):
            db.execute("INSERT INTO libraries (path, added_at) VALUES ('/a', 0)")
            raise ValueError
    with dbmod.atomic(db):
        db.execute("INSERT INTO libraries (path, added_at) VALUES ('/b', 0)")
        with pytest.raises(ValueError):
            with dbmod.atomic(db):
                db.execute("INSERT INTO libraries (path, added_at) VALUES ('/c', 0)")
                raise ValueError
    assert [r[0] for r in db.execute("SELECT path FROM libraries")] == ["/b"]


def test_a_version_1_library_upgrades_keeping_its_films(tmp_path):
    """The prepared-films migration on a database written before it: rows kept, new columns empty."""
    path = tmp_path / "library.db"
    db = dbmod.connect(path, migrate=False)
    dbmod.MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO libraries (path, added_at) VALUES ('/films', 0)")
    db.execute("INSERT INTO movies (library_id, path, rel_path, size, mtime, fingerprint, added_at, changed_at)"
               " VALUES (1, '/films/a.mkv', 'a.mkv', 10, 0, 'fp', 0, 0)")
    db.close()
    upgraded = dbmod.connect(path)
    assert dbmod.schema_version(upgraded) == dbmod.SCHEMA_VERSION >= 2
    row = next(upgraded.query("SELECT * FROM movies"))
    assert row["rel_path"] == "a.mkv" and row["prepare"] is None and row["prepared_bytes"] == 0
    assert next(upgraded.query("SELECT prepare FROM libraries"))["prepare"] == 0
