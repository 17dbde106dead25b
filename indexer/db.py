"""The library database: schema, migrations, connections and transactions; the queries and
writes themselves are the methods of ``store.LibraryStore``.

One SQLite file (``<data>/library.db``) in WAL mode, so the apps can read while the indexer
writes. The schema is versioned with ``PRAGMA user_version``: ``MIGRATIONS[i]`` turns version
``i`` into ``i + 1``, each in its own transaction, and a database newer than this code is refused
rather than silently misread.

Connections run in autocommit mode; every write that must be atomic goes through ``atomic()``,
which starts ``BEGIN IMMEDIATE`` (takes the write lock up front, so two writers queue on the busy
timeout instead of failing on a lock upgrade) and nests as savepoints. A connection serves one
thread at a time: code used from several threads at once (the chat service, its conversations)
takes one connection per thread from :class:`ThreadConnections`.

Row ids are never reused (movies, and the app's conversations and turns, are ``AUTOINCREMENT``
since version 3): a conversation kept about a removed film can never point at the next film added.
Migrations run with foreign keys off (a table rebuilt by :func:`rebuild_autoincrement` is dropped
and renamed; with them on, dropping it would cascade into its children) and commit only if
``PRAGMA foreign_key_check`` finds no reference they broke.
"""
from __future__ import annotations

import re
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_S = 60.0

_SCHEMA_V1 = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE libraries (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL,
    scanned_at REAL
);
CREATE TABLE movies (
    id INTEGER PRIMARY KEY,
    library_id INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
    path TEXT NOT NULL UNIQUE,
    rel_path TEXT NOT NULL,                 -- relative to the library folder
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    missing INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL,
    changed_at REAL NOT NULL,
    -- probe
    duration REAL, width INTEGER, height INTEGER, video_codec TEXT, frame_rate REAL,
    rotation INTEGER NOT NULL DEFAULT 0, variable_frame_rate INTEGER NOT NULL DEFAULT 0,
    has_audio INTEGER NOT NULL DEFAULT 0, probe TEXT,
    -- stages: probe -> subtitles -> speech -> features
    probed INTEGER NOT NULL DEFAULT 0,
    subtitles_done INTEGER NOT NULL DEFAULT 0,
    sidecar_sig TEXT,                       -- names + mtimes of the sidecar files last read
    speech_state TEXT,                      -- NULL, 'done', 'skipped: <why>'
    speech_windows_done INTEGER NOT NULL DEFAULT 0,
    speech_language TEXT,
    fps REAL, vision_id TEXT, feature_path TEXT, feature_shape TEXT,
    frames_capacity INTEGER, chunk_frames INTEGER, frames_done INTEGER NOT NULL DEFAULT 0,
    features_complete INTEGER NOT NULL DEFAULT 0,
    cache_bytes INTEGER NOT NULL DEFAULT 0,
    warning TEXT
);
CREATE INDEX movies_fingerprint ON movies(fingerprint);
CREATE INDEX movies_library ON movies(library_id);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    movie_id INTEGER NOT NULL UNIQUE REFERENCES movies(id) ON DELETE CASCADE,
    state TEXT NOT NULL,                    -- queued running paused done failed cancelled
    stage TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    rate REAL,                              -- frames per second of wall time, for the ETA
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    reason TEXT,
    request TEXT,                           -- pause / cancel asked for while running
    pid INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    updated_at REAL,
    finished_at REAL
);
CREATE INDEX jobs_state ON jobs(state, id);
CREATE TABLE frames (
    movie_id INTEGER NOT NULL REFERENCES movies(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (movie_id, idx)
) WITHOUT ROWID;
CREATE TABLE subtitle_tracks (
    id INTEGER PRIMARY KEY,
    movie_id INTEGER NOT NULL REFERENCES movies(id) ON DELETE CASCADE,
    source TEXT NOT NULL,                   -- embedded sidecar asr
    ref TEXT NOT NULL,                      -- stream index, sidecar path or model name
    codec TEXT, language TEXT,
    forced INTEGER NOT NULL DEFAULT 0, sdh INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL,                     -- text image
    status TEXT NOT NULL,                   -- ok image-based error
    message TEXT,
    cue_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE cues (
    id INTEGER PRIMARY KEY,
    movie_id INTEGER NOT NULL REFERENCES movies(id) ON DELETE CASCADE,
    track_id INTEGER NOT NULL REFERENCES subtitle_tracks(id) ON DELETE CASCADE,
    start REAL NOT NULL,
    "end" REAL NOT NULL,
    text TEXT NOT NULL,
    language TEXT,
    source TEXT NOT NULL
);
CREATE INDEX cues_movie ON cues(movie_id, start);
"""


def _v1(db: sqlite_utils.Database) -> None:
    db.executescript(_SCHEMA_V1)  # sqlite-utils runs it inside the open transaction
    # FTS5 over cue text, kept in sync by triggers (sqlite-utils writes the boilerplate)
    db["cues"].enable_fts(["text"], fts_version="FTS5", create_triggers=True,
                          tokenize="unicode61 remove_diacritics 2", replace=True)


def _v2(db: sqlite_utils.Database) -> None:
    """Prepared films: who asked for one (a film, its library folder, or everything), and the state kept."""
    db.executescript("""
        ALTER TABLE movies ADD COLUMN prepare INTEGER;              -- 1 / 0 asked for this film; NULL: its folder's
        ALTER TABLE movies ADD COLUMN prepared_key TEXT;            -- the state's key (JSON): model, film, stride...
        ALTER TABLE movies ADD COLUMN prepared_path TEXT;
        ALTER TABLE movies ADD COLUMN prepared_bytes INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE movies ADD COLUMN prepared_used_at REAL;        -- for least-recently-used eviction
        ALTER TABLE libraries ADD COLUMN prepare INTEGER NOT NULL DEFAULT 0;
    """)


def rebuild_autoincrement(db: sqlite_utils.Database, table: str) -> None:
    """Make ``table``'s ``id INTEGER PRIMARY KEY`` an ``AUTOINCREMENT`` one (ids never reused),
    keeping its rows, their ids, its indexes and triggers: SQLite cannot alter a primary key, so
    the table is made again under a new name from its own SQL, filled, dropped and renamed. Run
    it inside a migration (foreign keys off, see :func:`apply_migrations`)."""
    sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone()
    if sql is None:
        raise DatabaseError(f"no table {table} to rebuild")
    sql = sql[0]
    if re.search(r"\bAUTOINCREMENT\b", sql, re.IGNORECASE):
        return
    new_sql, n = re.subn(r"\bid\s+INTEGER\s+PRIMARY\s+KEY\b", "id INTEGER PRIMARY KEY AUTOINCREMENT", sql,
                         count=1, flags=re.IGNORECASE)
    if n != 1:
        raise DatabaseError(f"table {table} has no 'id INTEGER PRIMARY KEY' column")
    staged = f"_{table}_autoincrement"
    new_sql = re.sub(r"^\s*CREATE\s+TABLE\s+(\"[^\"]+\"|\[[^\]]+\]|[^\s(]+)", f'CREATE TABLE "{staged}"', new_sql,
                     count=1, flags=re.IGNORECASE)
    extras = [r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN"
                                       " ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name", [table])]
    db.execute(new_sql)
    db.execute(f'INSERT INTO "{staged}" SELECT * FROM "{table}"')  # same columns, same order: its own SQL
    db.execute(f'DROP TABLE "{table}"')
    db.execute(f'ALTER TABLE "{staged}" RENAME TO "{table}"')
    for extra in extras:  # dropped with the old table
        db.execute(extra)


def _v3(db: sqlite_utils.Database) -> None:
    """A removed film's id is never given to another: conversations kept about it (which name the
    film by id, in another database) must not attach to the next film added."""
    rebuild_autoincrement(db, "movies")


def _v4(db: sqlite_utils.Database) -> None:
    """A film's plan for a model (:class:`llamavid.runtime.memory.FilmPlan`): the frame stride and
    the context it is read with, decided once from the model's trained context and the film memory
    budget and then used by every process (the chat service, the indexer), so their keys agree."""
    db.executescript("""
        CREATE TABLE film_plans (
            movie_id INTEGER NOT NULL REFERENCES movies(id) ON DELETE CASCADE,
            model TEXT NOT NULL,                -- the engine: backend, KV type, weights fingerprint
            track INTEGER NOT NULL,             -- the subtitle track in the prompt; 0: none
            film TEXT NOT NULL,                 -- the film's features when planned (indexer.prepare.film_identity)
            budget INTEGER NOT NULL,            -- the film memory budget (bytes) it was planned for
            stride INTEGER NOT NULL,            -- every k-th frame
            n_ctx INTEGER NOT NULL,             -- the context (tokens) it is read in
            planned_at REAL NOT NULL,
            PRIMARY KEY (movie_id, model, track)
        ) WITHOUT ROWID;
    """)


#: The subtitle index's tokenizer since version 5: words stemmed (Porter), so "hiding" finds "hides".
CUES_TOKENIZER = "porter unicode61 remove_diacritics 2"


def _v5(db: sqlite_utils.Database) -> None:
    """Subtitle search by stem (``indexer.terms``, ``indexer.search``): the full-text index of the
    cues made again with the Porter tokenizer and filled from the stored cues. Its triggers (on
    ``cues``, by table name) stay as they are."""
    db.execute("DROP TABLE cues_fts")
    db.execute(f"""CREATE VIRTUAL TABLE "cues_fts" USING FTS5 (
    "text",
    tokenize='{CUES_TOKENIZER}',
    content="cues"
)""")
    db.execute("INSERT INTO cues_fts (cues_fts) VALUES ('rebuild')")


def _v6(db: sqlite_utils.Database) -> None:
    """The order of work: a film a person opens or asks about goes first (highest priority), and the
    one being indexed yields to it at its next chunk (:meth:`indexer.store.LibraryStore.bring_forward`)."""
    db.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")


def _v7(db: sqlite_utils.Database) -> None:
    """Which frames reuse the features of an earlier, near-identical frame (a static shot,
    :mod:`indexer.similar`) instead of their own EVA pass; frames indexed before read as not reused."""
    db.execute("ALTER TABLE frames ADD COLUMN reused INTEGER NOT NULL DEFAULT 0")


def _v8(db: sqlite_utils.Database) -> None:
    """Scene vectors (:mod:`indexer.scenes`): one image-text embedding per sampled frame in a
    memory-mappable ``.npy`` next to the features, the model that made them, and the time of each
    row, committed chunk by chunk as the features' are (a killed run resumes at the last chunk)."""
    db.executescript("""
        ALTER TABLE movies ADD COLUMN scenes_state TEXT;          -- NULL not run; done; 'skipped: <why>'
        ALTER TABLE movies ADD COLUMN scenes_model TEXT;          -- indexer.scene_model.scene_model_id
        ALTER TABLE movies ADD COLUMN scenes_path TEXT;           -- the final .npy (fp16, rows x width)
        ALTER TABLE movies ADD COLUMN scenes_done INTEGER NOT NULL DEFAULT 0;   -- rows committed
        ALTER TABLE movies ADD COLUMN scenes_chunk INTEGER;       -- rows per chunk (kept on resume)
        ALTER TABLE movies ADD COLUMN scenes_bytes INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE scene_frames (
            movie_id INTEGER NOT NULL REFERENCES movies(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            time REAL NOT NULL,
            PRIMARY KEY (movie_id, idx)
        ) WITHOUT ROWID;
    """)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8]
SCHEMA_VERSION = len(MIGRATIONS)


class DatabaseError(Exception):
    """The database cannot be used as it is (newer schema, not a library database)."""


Migrations = list[Callable[[sqlite_utils.Database], None]]


def connect(path: str | Path, migrate: bool = True, migrations: Migrations | None = None) -> sqlite_utils.Database:
    """Open (and create or upgrade) a database in WAL mode: the library's, or with ``migrations``
    another one of the project's (the app's conversations), kept the same way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           check_same_thread=False)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA foreign_keys = ON")
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable on commit except power loss
    if migrate:
        apply_migrations(db, migrations)
    return db


class ThreadConnections:
    """One connection per thread to one database file, for code that several threads use at once
    (one sqlite3 connection shared by threads mixes their transactions and cursors). Each is opened
    by :func:`connect` with the same settings; the first (made here) creates or upgrades the schema.
    A thread's connection closes when the thread ends or at :meth:`close`."""

    def __init__(self, path: str | Path, migrations: Migrations | None = None):
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[sqlite_utils.Database] = weakref.WeakSet()
        self._closed = False
        self._remember(connect(self.path, migrations=migrations))

    def get(self) -> sqlite_utils.Database:
        """This thread's connection (opened on first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise sqlite3.ProgrammingError(f"{self.path} is closed")
            db = self._remember(connect(self.path, migrate=False))
        return db

    def _remember(self, db: sqlite_utils.Database) -> sqlite_utils.Database:
        self._local.db = db
        with self._lock:
            self._open.add(db)
        return db

    def close(self) -> None:
        """Close every thread's connection; later use raises ``sqlite3.ProgrammingError``."""
        with self._lock:
            self._closed = True
            dbs = list(self._open)
        for db in dbs:
            db.close()


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def apply_migrations(db: sqlite_utils.Database, migrations: Migrations | None = None) -> int:
    """Bring the schema to ``len(migrations)`` (default: the library's); returns how many ran.

    Each migration runs in its own transaction with foreign keys off (so that a table can be
    rebuilt without its children's ON DELETE CASCADE firing) and commits only if
    ``PRAGMA foreign_key_check`` finds no reference it broke."""
    migrations = MIGRATIONS if migrations is None else migrations
    applied, latest = 0, len(migrations)
    if schema_version(db) == latest:
        return 0
    foreign_keys = db.execute("PRAGMA foreign_keys").fetchone()[0]
    db.execute("PRAGMA foreign_keys = OFF")  # only outside a transaction does this take effect
    try:
        while True:
            with atomic(db):
                version = schema_version(db)
                if version > latest:
                    raise DatabaseError(
                        f"{db_path(db)} has schema version {version}, newer than this llamavid "
                        f"understands ({latest}); upgrade llamavid or use another --data-dir")
                if version == latest:
                    return applied
                before = set(db.execute("PRAGMA foreign_key_check").fetchall())
                migrations[version](db)
                broken = set(db.execute("PRAGMA foreign_key_check").fetchall()) - before
                if broken:
                    raise DatabaseError(f"{db_path(db)}: migration to version {version + 1} would break "
                                        f"{len(broken)} references (one: {min(broken)})")
                db.execute(f"PRAGMA user_version = {version + 1}")
                applied += 1
    finally:
        db.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")


def db_path(db: sqlite_utils.Database) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return row[2] if row else "?"


@contextmanager
def atomic(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction taken with BEGIN IMMEDIATE; nested calls become savepoints."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")

