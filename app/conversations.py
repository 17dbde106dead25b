"""Conversations about films, kept in SQLite: list, resume, rename, delete, export as Markdown.

``<data>/conversations.db``, separate from the library database (the indexer may rebuild or move
that one; a person's conversations must survive it). This module owns the schema and its
migrations; the connection, WAL mode and the migration runner are the library database's
(:func:`indexer.db.connect`). Every turn keeps the token ids of its answer: rebuilding a
conversation after a restart feeds exactly those tokens back, so the model's state is the one it
had (re-tokenizing the text could differ), and the frame stride its film was read with and the
context it ran in (``n_ctx``, since version 3): reopened later, it runs in that context whatever
memory is free then.

The store is used from several threads at once (the chat service's worker, the web server's and
the desktop app's threads): each thread gets its own connection (:class:`indexer.db.ThreadConnections`).
Ids are never reused (``AUTOINCREMENT`` since version 2), and a conversation whose film left the
library is detached (``movie_id`` NULL, its ``movie_path`` kept): it can be read and exported, and
asking in it says the film is gone (:class:`FilmGone`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from indexer.db import ThreadConnections, atomic, rebuild_autoincrement
from llamavid.errors import UserError

_SCHEMA_V1 = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    movie_id INTEGER,                       -- the library's movie id; NULL: a chat without a film
    movie_path TEXT,                        -- the film's path when the conversation began
    title TEXT NOT NULL,
    model TEXT NOT NULL,                    -- what --model named
    track_id INTEGER,                       -- subtitle track asked for; NULL: the default choice
    language TEXT,                          -- the user's language for that choice
    stride INTEGER,                         -- frames kept (every k-th), fixed by the first turn
    fast INTEGER NOT NULL DEFAULT 0,        -- begins from the film's prepared state (a hidden first turn)
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX conversations_movie ON conversations(movie_id, updated_at);
CREATE TABLE turns (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    answer_ids TEXT NOT NULL,               -- JSON list of the answer's token ids
    stopped INTEGER NOT NULL DEFAULT 0,
    moments TEXT NOT NULL DEFAULT '[]',     -- JSON list of {start, end, score, why}
    hidden INTEGER NOT NULL DEFAULT 0,      -- the neutral first turn of a fast conversation
    created_at REAL NOT NULL,
    UNIQUE (conversation_id, idx)
);
"""


def _v1(db: sqlite_utils.Database) -> None:
    db.executescript(_SCHEMA_V1)


def _v2(db: sqlite_utils.Database) -> None:
    """Ids never reused: a deleted conversation's id (and its state file's name) is not given to
    the next one."""
    rebuild_autoincrement(db, "conversations")
    rebuild_autoincrement(db, "turns")


def _v3(db: sqlite_utils.Database) -> None:
    """The context a conversation runs in, fixed by its first turn as its stride is: reopening it
    uses that context, never one sized from the memory free at the time."""
    db.execute("ALTER TABLE conversations ADD COLUMN n_ctx INTEGER")


MIGRATIONS = [_v1, _v2, _v3]


class FilmGone(UserError):
    """The conversation's film is no longer in the library: it can be read, not continued."""

    kind = "not_found"

    def __init__(self, conversation: Conversation):
        name = Path(conversation.movie_path).name if conversation.movie_path else "its film"
        super().__init__(f"{name} is no longer in the library, so this conversation cannot go on; it can still "
                         "be read and exported. Add the film to the library again and start a new conversation")


@dataclass
class StoredTurn:
    id: int
    question: str
    answer: str
    answer_ids: list[int]
    stopped: bool
    moments: list[dict]
    created_at: float
    hidden: bool = False


@dataclass
class Conversation:
    id: int
    movie_id: int | None
    movie_path: str | None
    title: str
    model: str
    track_id: int | None
    language: str | None
    stride: int | None
    fast: bool
    created_at: float
    updated_at: float
    n_ctx: int | None = None  # the context it runs in (tokens), fixed by its first turn
    turns: list[StoredTurn] = field(default_factory=list)

    @property
    def film_gone(self) -> bool:
        """A conversation about a film that has left the library (detached from it)."""
        return self.movie_id is None and self.movie_path is not None

    @property
    def shown_turns(self) -> list[StoredTurn]:
        """The turns a person asked (without the hidden first turn of a fast conversation)."""
        return [t for t in self.turns if not t.hidden]


class ConversationStore:
    """The conversations database of one data folder."""

    def __init__(self, path: str | Path):
        self._connections = ThreadConnections(path, migrations=MIGRATIONS)

    @property
    def db(self) -> sqlite_utils.Database:
        """The calling thread's connection."""
        return self._connections.get()

    def close(self) -> None:
        self._connections.close()

    def create(self, model: str, movie_id: int | None = None, movie_path: str | None = None,
               title: str | None = None, track_id: int | None = None, language: str | None = None,
               fast: bool = False) -> Conversation:
        now = time.time()
        name = title or (Path(movie_path).stem if movie_path else "New chat")
        with atomic(self.db):
            cur = self.db.execute(
                "INSERT INTO conversations (movie_id, movie_path, title, model, track_id, language, fast, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [movie_id, movie_path, name, model, track_id, language, int(fast), now, now])
        return self.get(cur.lastrowid)

    def get(self, conversation_id: int) -> Conversation:
        row = self.db.execute("SELECT * FROM conversations WHERE id = ?", [conversation_id]).fetchone()
        if row is None:
            raise KeyError(f"no conversation {conversation_id}")
        cols = [d[0] for d in self.db.execute("SELECT * FROM conversations LIMIT 0").description]
        conv = Conversation(**dict(zip(cols, row, strict=True)))
        conv.fast = bool(conv.fast)
        conv.turns = [StoredTurn(r[0], r[1], r[2], json.loads(r[3]), bool(r[4]), json.loads(r[5]), r[6], bool(r[7]))
                      for r in self.db.execute(
                          "SELECT id, question, answer, answer_ids, stopped, moments, created_at, hidden FROM turns"
                          " WHERE conversation_id = ? ORDER BY idx", [conversation_id])]
        return conv

    def recent(self, movie_id: int | None = None) -> list[Conversation]:
        """Newest first; with ``movie_id`` only that film's (without their turns: cheap for a sidebar)."""
        sql, params = "SELECT id FROM conversations", []
        if movie_id is not None:
            sql, params = sql + " WHERE movie_id = ?", [movie_id]
        ids = [r[0] for r in self.db.execute(sql + " ORDER BY updated_at DESC, id DESC", params)]
        found = []
        for i in ids:
            try:
                found.append(self.get(i))
            except KeyError:  # deleted by another thread since the listing
                continue
        return found

    def add_turn(self, conversation_id: int, question: str, answer: str, answer_ids: list[int], stopped: bool,
                 moments: list[dict], stride: int | None = None, hidden: bool = False,
                 n_ctx: int | None = None) -> int:
        """Append a turn (and fix the film's stride and the context with the first one), in one transaction."""
        now = time.time()
        with atomic(self.db):
            idx = self.db.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = ?",
                                  [conversation_id]).fetchone()[0]
            cur = self.db.execute(
                "INSERT INTO turns (conversation_id, idx, question, answer, answer_ids, stopped, moments, hidden,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [conversation_id, idx, question, answer, json.dumps(answer_ids), int(stopped), json.dumps(moments),
                 int(hidden), now])
            self.db.execute("UPDATE conversations SET updated_at = ?, stride = COALESCE(stride, ?),"
                            " n_ctx = COALESCE(n_ctx, ?) WHERE id = ?", [now, stride, n_ctx, conversation_id])
        return cur.lastrowid

    def movie_ids(self) -> set[int]:
        """The films conversations are about (by library id)."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT movie_id FROM conversations WHERE movie_id IS NOT NULL")}

    def detach_movies(self, movie_ids: set[int] | list[int]) -> int:
        """These films left the library: their conversations are kept, no longer attached to them
        (``movie_id`` NULL; ``movie_path`` still names the film). Returns how many were detached."""
        ids = sorted(set(movie_ids))
        if not ids:
            return 0
        with atomic(self.db):
            cur = self.db.execute(f"UPDATE conversations SET movie_id = NULL WHERE movie_id IN"
                                  f" ({', '.join('?' * len(ids))})", ids)
        return cur.rowcount

    def rename(self, conversation_id: int, title: str) -> None:
        if not title.strip():
            raise ValueError("a conversation needs a title")
        self.get(conversation_id)
        with atomic(self.db):
            self.db.execute("UPDATE conversations SET title = ? WHERE id = ?", [title.strip(), conversation_id])

    def delete(self, conversation_id: int) -> None:
        self.get(conversation_id)
        with atomic(self.db):
            self.db.execute("DELETE FROM conversations WHERE id = ?", [conversation_id])

    def markdown(self, conversation_id: int) -> str:
        """The conversation as Markdown: title, film, model, then each question, answer and moments."""
        conv = self.get(conversation_id)
        lines = [f"# {conv.title}", ""]
        if conv.movie_path:
            lines.append(f"Film: `{conv.movie_path}`  ")
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.created_at))
        lines += [f"Model: {conv.model}  ", f"Started: {started}", ""]
        for turn in conv.shown_turns:
            lines += [f"**You:** {turn.question}", "", f"**Assistant:** {turn.answer}"
                      + (" *(stopped)*" if turn.stopped else ""), ""]
            if turn.moments:
                lines.append("Moments: " + ", ".join(f"{clock(m['start'])}-{clock(m['end'])}" for m in turn.moments))
                lines.append("")
        return "\n".join(lines)


def short_title(question: str | None) -> str | None:
    """A conversation's title from its first question: one line of at most 60 characters."""
    if not question:
        return None
    text = " ".join(question.split())
    return text if len(text) <= 60 else text[:57] + "..."


def clock(seconds: float) -> str:
    """0:12:03"""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
