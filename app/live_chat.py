"""The one kept conversation whose KV cache is in memory, and the saved states of the others.

A film's cache is large and a llama.cpp context serves one sequence, so the chat service keeps one
conversation live at a time (:class:`LiveChats`, used on the service's worker thread only). Taking
another conversation saves the live one's state (``<data>/states/conversation-N.state``, see
:mod:`llamavid.runtime.state`) and reads the other's back, or rebuilds it from its kept turns when
its state is missing, damaged or made for another model or film: the next answer is the one an
uninterrupted chat would give. A fast conversation begins from its film's prepared state.

A conversation runs in the context and reads its film with the stride it was made with (kept with
it; a new one takes its film's plan, :func:`indexer.prepare.film_plan`), never in one sized from
the memory free now. A state is deleted only when it is wrong (another model, a re-indexed film, a
damaged file); one that does not fit the memory free now is kept, and the question is refused with
:class:`~llamavid.errors.MemoryInUse`, which says what to free: asking again later reads it.

A state is a cache of what the kept turns rebuild: failing to write one (a full disk, no memory
left) never fails a question whose answer is kept; it is logged, and the state rebuilt next time.
A conversation whose film has left the library is refused with :class:`FilmGone` (and detached).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.conversations import Conversation, ConversationStore, FilmGone, StoredTurn, short_title
from app.moments import CueHit, Moment, rank_moments
from indexer import library
from indexer.db import ThreadConnections
from indexer.prepare import film_chat, film_identity, keep_prepared, open_prepared, prepared_key
from indexer.scenes_search import film_similarity
from indexer.search import search_cues
from indexer.store import LibraryStore
from llamavid.paths import DataDir
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat, Turn
from llamavid.runtime.control import Control
from llamavid.runtime.inputs import Visual
from llamavid.runtime.memory import FilmPlan
from llamavid.runtime.prepared import PREPARED_QUESTION, prepare
from llamavid.runtime.state import StateError, StateMismatch, load_chat, save_chat, state_key

log = logging.getLogger(__name__)

SAVE_AFTER_TOKENS = 2048  # a turn that adds this many tokens (a film's first) is saved at once


@dataclass
class Live:
    """A conversation in memory: its chat, the key its state is saved under, its film and track."""

    conversation_id: int
    chat: Chat
    key: dict
    movie: library.Movie | None = None
    track_id: int | None = None  # the subtitle track in the film's prompt
    saved_length: int = 0  # tokens in the cache when its state was last written


class LiveChats:
    """The live conversation of a chat service (see the module docstring)."""

    def __init__(self, data: DataDir, store: ConversationStore, library_db: ThreadConnections,
                 model: Callable[[], LlamaVid]):
        """``library_db``: the service's connections to the library database (one per thread)."""
        self.data, self.store, self._library, self.model = data, store, library_db, model
        self.live: Live | None = None

    @property
    def db(self):
        return self._library.get()

    def state_path(self, conversation_id: int) -> Path:
        return self.data.root / "states" / f"conversation-{conversation_id}.state"

    def take(self, conversation_id: int, control: Control) -> Live:
        """The conversation's chat: the live one, its saved state, or rebuilt from its kept turns."""
        if self.live and self.live.conversation_id == conversation_id:
            return self.live
        self.release()  # the other conversation's state goes to disk, its cache is freed
        conv = self.store.get(conversation_id)
        live = self._open(conv)
        if not self._load(live, conv):
            if conv.fast and not conv.turns:
                self._start_fast(live, conv, control)
            else:
                live.chat.restore([_turn(t) for t in conv.turns], control)
        self.live = live
        return live

    def release(self) -> None:
        """Save the live conversation's state and let its cache go."""
        if self.live is not None:
            self.save(self.live)
            self.live = None

    def forget(self, conversation_id: int) -> None:
        """A deleted conversation: out of memory, its state off the disk."""
        if self.live and self.live.conversation_id == conversation_id:
            self.live = None
        self.state_path(conversation_id).unlink(missing_ok=True)

    def keep(self, live: Live, turn: Turn, moments: list[Moment]) -> int:
        """Store the turn just answered with its moments (the id of the kept turn); a long turn's
        state is saved at once."""
        chat = live.chat
        try:
            turn_id = self.store.add_turn(live.conversation_id, turn.question, turn.answer, turn.answer_ids,
                                          turn.stopped, [m.to_dict() for m in moments], chat.stride,
                                          n_ctx=chat.context_length())
        except BaseException:
            self.live = None  # the chat holds a turn the store does not: rebuild from the store next time
            raise
        if chat.state.length - live.saved_length >= SAVE_AFTER_TOKENS:
            self.save(live)
        return turn_id

    def save(self, live: Live) -> None:
        if not live.chat.turns:
            return
        path = self.state_path(live.conversation_id)
        try:
            save_chat(live.chat, path, live.key)
            live.saved_length = live.chat.state.length
        except Exception as exc:  # noqa: BLE001 - the answer is kept: a full disk or no memory must not lose it
            if isinstance(exc, (OSError, MemoryError)):
                log.warning("could not save the state of conversation %s (rebuilt next time): %r",
                            live.conversation_id, exc)
            else:
                log.exception("could not save the state of conversation %s (rebuilt next time)", live.conversation_id)
            try:  # an older state holds fewer turns: it would be read and refused; no need to keep it
                path.unlink(missing_ok=True)
            except OSError:
                pass

    def moments(self, live: Live, turn: Turn) -> list[Moment]:
        """Where in the film the answer rests: the question's frame relevance, matching cues, and the
        frames that look like the question where the film has scene vectors (its text against them:
        milliseconds, in every mode)."""
        if live.movie is None:
            return []
        chat, found = live.chat, {}
        for text in (turn.question, turn.answer):  # the subtitle search finds and scores the lines
            for hit in search_cues(self.db, text, live.movie.id, live.track_id):
                kept = found.get((hit.start, hit.text))
                if kept is None or kept.closeness < hit.score:
                    found[(hit.start, hit.text)] = CueHit(hit.start, hit.end, hit.text, hit.score)
        relevance = chat.relevance.tolist() if chat.relevance is not None else None
        scenes = film_similarity(LibraryStore(self.db), live.movie.id, turn.question, self.data.root)
        return rank_moments(chat.visual.frame_times, relevance, list(found.values()), turn.question, turn.answer,
                            live.movie.duration, weighed_by=weighed_by(chat, turn), scenes=scenes)

    def _open(self, conv: Conversation) -> Live:
        if conv.film_gone:
            raise FilmGone(conv)
        lv = self.model()
        kept = FilmPlan(conv.stride or 1, conv.n_ctx) if conv.n_ctx else None  # its stride and context
        if conv.movie_id is None:
            chat = Chat(lv, Visual("none"), plan=kept)
            return Live(conv.id, chat, state_key(chat, film=None))
        try:
            movie = library.get_movie(self.db, conv.movie_id)
        except KeyError:  # removed from the library (its id is never reused): detached, and said so
            self.store.detach_movies([conv.movie_id])
            self.state_path(conv.id).unlink(missing_ok=True)
            raise FilmGone(conv) from None
        chat, track_id = film_chat(lv, LibraryStore(self.db), movie, conv.language, conv.track_id, conv.stride,
                                   plan=kept)
        return Live(conv.id, chat, state_key(chat, film=film_identity(movie, chat), track=track_id), movie, track_id)

    def _load(self, live: Live, conv: Conversation) -> bool:
        """Read the conversation's saved state if it matches it exactly (key and kept turns); a wrong
        one is deleted, one that does not fit the memory free now is kept (MemoryInUse is raised)."""
        path = self.state_path(conv.id)
        if not path.is_file():
            return False
        try:
            load_chat(live.chat, path, live.key)
            if [t.answer_ids for t in live.chat.turns] != [t.answer_ids for t in conv.turns]:
                raise StateMismatch(f"{path}: holds other turns than the conversation kept")
        except StateError as exc:
            log.info("rebuilding conversation %s: %s", conv.id, exc)
            path.unlink(missing_ok=True)
            live.chat = self._open(conv).chat
            return False
        live.saved_length = live.chat.state.length
        return True

    def _start_fast(self, live: Live, conv: Conversation, control: Control) -> None:
        """A fast conversation's hidden first turn: the film's prepared state, or prepared now."""
        store, movie, chat = LibraryStore(self.db), live.movie, live.chat
        key = prepared_key(chat, movie, live.track_id)
        if not open_prepared(chat, store, self.data, movie, key):
            prepare(chat, control)
            try:
                keep_prepared(chat, store, self.data, movie, key)
            except (OSError, MemoryError) as exc:  # the film is read: this question goes on without keeping it
                log.warning("could not keep the prepared state of %s: %r", movie.rel_path, exc)
        neutral = chat.turns[0]
        self.store.add_turn(conv.id, neutral.question, neutral.answer, neutral.answer_ids, False, [],
                            chat.stride, hidden=True, n_ctx=chat.context_length())


def weighed_by(chat: Chat, turn: Turn) -> str:
    """Whose question the film's frame weights come from, for a moment's reason: the film is read
    once, with the conversation's first question (a neutral one in a fast conversation)."""
    first = chat.turns[0] if chat.turns else turn
    if first is turn:
        return "the question"
    if first.question == PREPARED_QUESTION:
        return "the film's first reading (a neutral question, read ahead for fast answers)"
    return f"the conversation's first question (\"{short_title(first.question)}\")"


def _turn(stored: StoredTurn) -> Turn:
    return Turn(stored.question, stored.answer, len(stored.answer_ids), stored.stopped, list(stored.answer_ids))
