"""The words a person reads about a film, one home for every front end.

A film's length and a moment's time, its index state with progress and time left, whether it is
prepared for fast answers (and what preparing it would take), its subtitles, and a question's
place in the model's queue: the desktop window (:mod:`app.desktop`) and the web UI
(:mod:`app.server.ui`) lay these strings out, so the two never word the same thing two ways.
Plain functions of a :class:`indexer.library.Movie`; no Qt, no web framework. Every sentence starts
in lower case (it often follows a film's name or a label); a front end capitalises where it shows
one on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.library import DIALOGUE_NOTE, Movie
from llamavid.runtime.chat import DIALOGUE_ONLY, ordinal
from llamavid.runtime.control import rough_duration
from llamavid.storage import human_size

__all__ = ["FORGET_PREPARED", "NO_LINE", "STAGES", "UNITS", "IndexState", "clock", "index_state", "prepare_action",
           "prepared_label", "queue_position", "search_label", "short_clock", "subtitle_summary", "time_left"]

#: What the indexer is doing in each stage of a film's job, and what its progress counts.
STAGES = {"probe": "reading the file", "subtitles": "reading subtitles", "speech": "recognising speech",
          "features": "reading frames", "scenes": "reading scenes for search", "prepare": "preparing for fast answers",
          "waiting": "waiting while a question is answered"}
UNITS = {"features": "frames", "scenes": "frames", "speech": "windows", "prepare": "tokens"}
FORGET_PREPARED = "Forget prepared state"


# -- times ----------------------------------------------------------------------------------------------
def clock(seconds: float | None) -> str:
    """A film's length or a position in it: "0:12:03", "1:02:03" ("--:--" when unknown)."""
    if seconds is None:
        return "--:--"
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def short_clock(seconds: float) -> str:
    """A moment, as a player shows it: "12:03" under an hour, "1:02:03" from an hour on."""
    s = max(0, int(seconds))
    return clock(s) if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def time_left(seconds: float | None) -> str:
    """"about 3 min left" ("" when unknown)."""
    return f"about {rough_duration(seconds)} left" if seconds else ""


# -- the index ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexState:
    """What a film's row says about its index, and its progress bar."""

    text: str  # "indexing, reading frames: 120 / 2,400 frames, about 3 min left"
    done: int
    total: int  # 0: no progress bar
    tone: str  # "good" (ready), "bad" (failed, file missing) or "" (anything else): a colour

    @property
    def percent(self) -> int | None:
        """How far the bar is, 0-100 (None without a bar)."""
        return min(100, 100 * self.done // self.total) if self.total > 0 else None


def index_state(movie: Movie, paused: bool = False) -> IndexState:
    """A film's index state for a person; ``paused``: the whole queue is paused."""
    done, total = movie.progress[0], movie.progress[1] or 0
    state = movie.state
    if state == "done":
        return IndexState("ready to chat" + (f" ({movie.warning})" if movie.warning else ""), 0, 0, "good")
    if state == "missing":
        return IndexState("file missing (it resumes if the file comes back)", 0, 0, "bad")
    if state == "failed":
        return IndexState(f"failed: {movie.error or 'unknown error'}", 0, 0, "bad")
    if state == "cancelled":
        return IndexState("cancelled", 0, 0, "")
    if state == "running":
        stage = STAGES.get(movie.stage or "", movie.stage or "")
        amount = f": {done:,} / {total:,} {UNITS.get(movie.stage or '', '')}".rstrip() if total else ""
        left = time_left(movie.eta_seconds)
        return IndexState(f"indexing, {stage}{amount}" + (f", {left}" if left else ""), done, total, "")
    if state == "paused" or (state == "queued" and paused):
        return IndexState("paused" + (f" at {done:,} / {total:,}" if total else ""), done, total, "")
    if state in ("queued", "new"):
        if movie.features_complete and movie.prepare_wanted and not movie.prepared_bytes:
            return IndexState("waiting to be prepared for fast answers", 0, 0, "")
        return IndexState("waiting to resume" if done else "waiting to be indexed", done, total, "")
    return IndexState(state, done, total, "")


def subtitle_summary(movie: Movie) -> str:
    """"subtitles: subtitle files (en, fr)" / "image subtitles only (not read)" / "no subtitles yet"."""
    tracks = [t for t in movie.subtitle_tracks if t.get("status") == "ok" and t.get("cue_count")]
    if not tracks:
        image = [t for t in movie.subtitle_tracks if t.get("kind") == "image"]
        return "image subtitles only (not read)" if image else (
            "no subtitles" if movie.state == "done" else "no subtitles yet")
    sources = sorted({t["source"] for t in tracks})
    languages = sorted({t["language"] for t in tracks if t.get("language")})
    names = {"asr": "speech recognition", "sidecar": "subtitle files", "embedded": "embedded"}
    text = "subtitles: " + ", ".join(names.get(s, s) for s in sources)
    return text + (f" ({', '.join(languages)})" if languages else "")


# -- models ---------------------------------------------------------------------------------------------
FAMILY_NAMES = {"llama-vid": "LLaMA-VID", "qwen-vl": "Qwen3-VL"}


def model_label(name: str, family: str) -> str:
    """A model as the pickers show it: its name and its family ("qwen3-vl-4b (Qwen3-VL)")."""
    return f"{name} ({FAMILY_NAMES.get(family, family)})"


# -- fast answers ---------------------------------------------------------------------------------------
def _about(estimate: int | None, seconds: float | None = None) -> str:
    """" (about 2.6 GB, about 50 min here)": the disk a preparation takes and, once this model was
    measured on this machine, how long it reads."""
    parts = [f"about {human_size(estimate)}"] if estimate else []
    parts += [f"about {rough_duration(seconds)} here"] if seconds else []
    return f" ({', '.join(parts)})" if parts else ""


def fast_answers_note(per_hour: int | None) -> str:
    """What fast answers are and the disk they take per hour of film with the model chosen (its KV
    cache type included), computed as each film's own estimate is, never a fixed figure."""
    size = (f"about {human_size(per_hour)} per hour of film with the model chosen" if per_hour else
            "shown for each film once a model is chosen")
    return ("A prepared film has been read once ahead, so a new question about it is answered in seconds "
            f"instead of minutes. It takes disk space: {size}. The KV cache type sets it (f16 takes twice "
            "q8_0's): the desktop's Film memory setting, `kv_type` in settings.json or `--kv-type`.")


def prepared_label(movie: Movie, estimate: int | None = None) -> str:
    """Whether the film is prepared for fast answers: "prepared for fast answers (1.2 GB)", "to be
    prepared for fast answers (about 1.2 GB)" (``estimate``: the bytes it will take, when known),
    or "not prepared"."""
    if movie.prepared_bytes:
        return f"prepared for fast answers ({human_size(movie.prepared_bytes)})"
    return f"to be prepared for fast answers{_about(estimate)}" if movie.prepare_wanted else "not prepared"


def prepare_action(movie: Movie, estimate: int | None = None, seconds: float | None = None) -> str:
    """The button or menu entry a film offers: "Prepare for fast answers (about 1.2 GB, about 3 min
    here)" (the size and the time once known), or "Forget prepared state" once it is prepared or
    asked for."""
    if movie.prepared_bytes or movie.prepare_wanted:
        return FORGET_PREPARED
    return "Prepare for fast answers" + _about(estimate, seconds)


# -- questions --------------------------------------------------------------------------------------------
def queue_position(ahead: int) -> str:
    """A question's place in the model's queue: "waiting for the model: 2 questions ahead", or
    "starting…" when it is next."""
    if not ahead:
        return "starting…"
    return f"waiting for the model: {ahead} question{'s' if ahead != 1 else ''} ahead"


def reading_note(notes: tuple[str, ...] | list[str] = (), stride: int | None = None) -> str:
    """How an answer's film or clip was read, when it was not read whole, for a line under the answer:
    the runtime's notes ("...using every 3rd frame (1,200 frames)"), or for a kept conversation its
    stride. Empty when every frame was read."""
    if notes:
        return "(" + "; ".join(notes) + ")"
    if stride == DIALOGUE_ONLY:
        return f"({DIALOGUE_NOTE})"
    if stride and stride > 1:
        return f"(the film was read with every {ordinal(stride)} frame: it has more frames than fit)"
    return ""


# -- the dialogue search ----------------------------------------------------------------------------------
NO_LINE = "No line of the library's subtitles says that."


def search_label(match: Any) -> str:
    """A search result in one line: a line said (:class:`indexer.search.CueMatch`), "Harbor · 0:00:40 ·
    the line", or a scene seen (:class:`indexer.scenes_search.SceneMatch`), "Harbor · 0:00:40 · [scene]"."""
    if getattr(match, "kind", "quote") == "scene":
        return f"{Path(match.rel_path).stem} · {clock(match.start)} · [scene that looks like it]"
    said = " / ".join(part.strip() for part in match.text.splitlines() if part.strip())
    return f"{Path(match.rel_path).stem} · {clock(match.start)} · {said}"
