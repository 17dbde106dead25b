"""Questions for a Qwen3-VL (the second family) in the chat service: a library film's prompt, pictures and
clips, and the one live Qwen conversation with the saved states of the others.

A film's prompt is built from the library when its first question comes: the film's plan
(:func:`llamavid.prompt.qwen_vl.plan_film`: which frames, at which size, within the budget), its
frames decoded by seeking the film file at the planned times (:func:`llamavid.media.seek.frames_at`,
one at a time, with progress and a cancel), the chosen subtitle track's cues after the pair shown
when each ends, and a time marker before every pair. Nothing of the film is kept at index time
for this family, so a film is askable once it is probed (its duration and size known), before the
indexer has read its pictures for LLaMA-VID: Qwen decodes them itself.

As for LLaMA-VID (:mod:`app.live_chat`), one conversation is live at a time: taking another saves
the live one's cache (``<data>/states/qwen-conversation-N.state``: a header with the model, the film
and the kept turns' ids, then the backend's state) and reads the other's back, or rebuilds it from
its kept turns when its state is missing or made for something else. Moments come from the index
(cue evidence and scene vectors) as for LLaMA-VID; there is no Q-Former relevance.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.conversations import Conversation, ConversationStore, FilmGone
from app.live_chat import LiveChats
from app.moments import Moment
from indexer import library
from indexer.db import ThreadConnections
from indexer.qwen_film import DEFAULT_BUDGET, film_askable, film_frames, film_plan_of
from llamavid.errors import BadMedia
from llamavid.media.load import check_clip, load_image, load_video
from llamavid.model.qwen_vl import fit_grid
from llamavid.paths import DataDir
from llamavid.prompt.qwen_vl import FilmBudget, clip_prompt, film_prompt
from llamavid.runtime.chat import Turn
from llamavid.runtime.control import Control
from llamavid.runtime.family import QwenVL
from llamavid.runtime.qwen_chat import FirstTurn, QwenChat, image_turn, text_turn
from llamavid.storage import atomic_write

log = logging.getLogger(__name__)

__all__ = ["QwenChats", "QwenLive", "film_askable", "film_plan_of", "film_turn", "media_turn"]

#: A clip is sampled at Qwen3-VL's own video rate, each pair of frames at the film's size budget.
CLIP_FPS = 2.0


def film_turn(db, movie: library.Movie, language: str | None = None, track_id: int | None = None,
              budget: FilmBudget = DEFAULT_BUDGET) -> tuple[FirstTurn, int | None]:
    """A library film as a Qwen conversation's first turn, and the subtitle track in it."""
    plan = film_plan_of(movie, budget)
    track = library.choose_track(movie, language, track_id)
    cues = library.subtitles(db, movie, track_id=track["id"]) if track else []

    def build(question: str, control: Control | None) -> Any:
        tracker = control.phase("visual", len(plan.times), "frames") if control is not None else None
        frames = film_frames(movie, plan, check=control.check if control is not None else None,
                             progress=tracker.update if tracker is not None else None)
        if tracker is not None:
            tracker.finish()
        return film_prompt(question, frames, plan.times, cues)

    notes = [] if cues else ["the film has no subtitles to go by: the answer rests on its pictures alone"]
    return FirstTurn("film", build, list(plan.times), notes, tokens_hint=plan.visual_tokens), (track or {}).get("id")


def media_turn(images: Sequence[Any] = (), video: Path | None = None, max_frames: int = 180,
               check: Callable[[], None] | None = None, budget: FilmBudget = DEFAULT_BUDGET) -> FirstTurn:
    """Pictures, a short clip or nothing as a stateless question's first turn; decoded now (the
    question's turn has come), a clip's frames straight to the size its pairs are planned at."""
    if images:
        pictures = []
        for source in images:
            if check is not None:
                check()
            pictures.append(np.asarray(source.convert("RGB")) if isinstance(source, Image.Image)
                            else np.asarray(source) if isinstance(source, np.ndarray) else load_image(source, 512))
        return image_turn(pictures)
    if video is None:
        return text_turn()
    info = check_clip(video)
    w, h = (info.height, info.width) if round(info.rotation / 90) % 2 else (info.width, info.height)
    size = fit_grid(w, h, budget.tokens_per_pair)

    def small(frame: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))

    frames, times = load_video(video, fps=CLIP_FPS, max_frames=min(max_frames, budget.max_frames), transform=small,
                               check=check)
    if not frames:
        raise BadMedia(f"{video}: no frame could be decoded")
    return FirstTurn("video", lambda q, _c: clip_prompt(q, frames, times), list(times))


@dataclass
class QwenLive:
    """A Qwen conversation in memory (the fields :meth:`LiveChats.moments` reads, as :class:`app.live_chat.Live`)."""

    conversation_id: int
    chat: QwenChat
    key: dict
    movie: library.Movie | None = None
    track_id: int | None = None


class QwenChats:
    """The live Qwen conversation of a chat service (see the module docstring); worker thread only."""

    def __init__(self, data: DataDir, store: ConversationStore, library_db: ThreadConnections,
                 model: Callable[[], QwenVL], moments: LiveChats):
        self.data, self.store, self._library, self.model = data, store, library_db, model
        self._moments = moments  # LLaMA-VID's: the same cue and scene evidence
        self.live: QwenLive | None = None
        self.budget = DEFAULT_BUDGET

    @property
    def db(self):
        return self._library.get()

    def state_path(self, conversation_id: int) -> Path:
        return self.data.root / "states" / f"qwen-conversation-{conversation_id}.state"

    def take(self, conversation_id: int, control: Control) -> QwenLive:
        if self.live and self.live.conversation_id == conversation_id:
            return self.live
        self.release()
        conv = self.store.get(conversation_id)
        live = self._open(conv)
        turns = [Turn(t.question, t.answer, len(t.answer_ids), t.stopped, list(t.answer_ids)) for t in conv.turns]
        if turns and not self._load(live, turns):
            live.chat.restore(turns, control)
        self.live = live
        return live

    def _open(self, conv: Conversation) -> QwenLive:
        if conv.film_gone:
            raise FilmGone(conv)
        model = self.model()
        if conv.movie_id is None:
            return QwenLive(conv.id, QwenChat(model, text_turn()), {"engine": model.engine_id, "film": None})
        try:
            movie = library.get_movie(self.db, conv.movie_id)
        except KeyError:
            self.store.detach_movies([conv.movie_id])
            self.state_path(conv.id).unlink(missing_ok=True)
            raise FilmGone(conv) from None
        first, track_id = film_turn(self.db, movie, conv.language, conv.track_id, self.budget)
        key = {"engine": model.engine_id, "film": movie.fingerprint, "frames": first.frame_times, "track": track_id}
        return QwenLive(conv.id, QwenChat(model, first), key, movie, track_id)

    def _load(self, live: QwenLive, turns: list[Turn]) -> bool:
        """Read the conversation's saved state when it was made for this model, film and these turns."""
        path = self.state_path(live.conversation_id)
        try:
            raw = path.read_bytes()
        except OSError:
            return False
        try:
            size = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8:8 + size])
            if header.get("key") != live.key or header.get("turns") != [t.answer_ids for t in turns]:
                raise ValueError("made for another model, film or turns")
            live.chat.load_state(raw[8 + size:], turns)
            return True
        except Exception as exc:  # noqa: BLE001 - a wrong or damaged state is rebuilt from the kept turns
            log.info("rebuilding Qwen conversation %s: %s", live.conversation_id, exc)
            path.unlink(missing_ok=True)
            live.chat.model.reset()
            return False

    def save(self, live: QwenLive) -> None:
        if not live.chat.turns:
            return
        path = self.state_path(live.conversation_id)
        try:
            header = json.dumps({"key": live.key, "turns": [t.answer_ids for t in live.chat.turns]}).encode()
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as fh:
                fh.write(len(header).to_bytes(8, "little") + header + live.chat.state_bytes())
        except Exception as exc:  # noqa: BLE001 - a state is a cache of what the kept turns rebuild
            log.warning("could not save the state of Qwen conversation %s (rebuilt next time): %r",
                        live.conversation_id, exc)
            path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.live is not None:
            self.save(self.live)
            self.live = None

    def drop(self) -> None:
        """Let the live conversation go without saving (the model is being unloaded)."""
        self.live = None

    def forget(self, conversation_id: int) -> None:
        if self.live and self.live.conversation_id == conversation_id:
            self.live = None
        self.state_path(conversation_id).unlink(missing_ok=True)

    def keep(self, live: QwenLive, turn: Turn, moments: list[Moment]) -> int:
        try:
            return self.store.add_turn(live.conversation_id, turn.question, turn.answer, turn.answer_ids,
                                       turn.stopped, [m.to_dict() for m in moments], live.chat.stride,
                                       n_ctx=live.chat.context_length())
        except BaseException:
            self.live = None
            raise

    def moments(self, live: QwenLive, turn: Turn) -> list[Moment]:
        """Cue evidence and scene vectors, as for LLaMA-VID (no Q-Former relevance)."""
        return self._moments.moments(live, turn)  # type: ignore[arg-type]
