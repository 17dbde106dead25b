"""Prepared films on disk: made by the indexer after a film's features (or by the chat service on
first use), found again by the chat service, kept under a size cap with least-recently-used eviction.

A prepared film is the state of a chat that has read the whole film prompt with the neutral first
turn (:mod:`llamavid.runtime.prepared`), saved under ``<data>/cache/prepared/``. Its key ties it to
the model's weights, the film's content and features, the frame stride and context, the subtitle
track and the project version; a key that no longer matches (another model chosen, the film
re-indexed) makes the state useless, and it is rebuilt.

The stride and the context are the film's plan for the model (:func:`film_plan`), decided once from
the model's trained context and the film memory budget (the library setting ``film_memory_bytes``,
``llamavid index prepare --memory-gb``; by default half of the memory beside the model) and kept in
the library (``film_plans``): the chat service and the indexer read a film the same way whatever
memory each sees free, so the state one makes is the state the other looks for.

Its size is known before it is made (:mod:`indexer.prepared_size`, torch-free: from the model's
config.json or its GGUF header, with no weights loaded): the KV cache of two rows per frame plus
the text, about 4 GB per hour of film for a 7B model with llama.cpp's q8_0 cache. The front ends
show it before a person asks for a film to be prepared (:func:`mark_for_preparing`);
:func:`prepared_size_estimate` says the same for a loaded model.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from indexer.library import Movie, choose_track, dialogue_visual, film_visual
from indexer.prepared_size import DEFAULT_TEXT_TOKENS, LlmShape, estimate_prepared_bytes, kv_bytes_per_value, llm_shape
from indexer.store import LibraryStore
from llamavid.hub.installed import resolve_model
from llamavid.paths import DataDir
from llamavid.runtime.chat import DIALOGUE_ONLY, Chat, plan_film
from llamavid.runtime.control import Control
from llamavid.runtime.device import pick_device, pick_dtype
from llamavid.runtime.inputs import Visual
from llamavid.runtime.load import choose_engine
from llamavid.runtime.memory import BUDGET_SETTING, FilmPlan, default_budget
from llamavid.runtime.options import KEY_OPTIONS, LoadOptions
from llamavid.runtime.prepared import PREPARED_QUESTION, prepare
from llamavid.runtime.state import StateError, load_chat, save_chat, state_key, weights_fingerprint
from llamavid.storage import human_size

log = logging.getLogger(__name__)
DEFAULT_CAP_BYTES = 50 * 10**9  # settings key "prepared_cap_bytes" overrides


def film_identity(movie: Movie, chat: Chat | None = None) -> str:
    """The film as its features were made: its content, the vision weights and the frame count (for
    a ``chat`` about its dialogue alone: its content)."""
    if chat is not None and chat.visual.kind == "dialogue":
        return f"{movie.fingerprint}:dialogue"
    return f"{movie.fingerprint}:{movie.vision_id}:{movie.frames}"


def film_chat(lv, store: LibraryStore, movie: Movie, language: str | None = None, track_id: int | None = None,
              stride: int | None = None, plan: FilmPlan | None = None) -> tuple[Chat, int | None]:
    """A chat about a library film with the subtitle track chosen as the service chooses it, read
    as ``plan`` says (a kept conversation's stride and context), else as the film's plan for this
    model (:func:`film_plan`; ``stride``: a conversation kept before plans were, read with it)."""
    track = choose_track(movie, language, track_id)
    chosen = track["id"] if track else None
    if stride == DIALOGUE_ONLY or not movie.features_complete:  # its frames are not read (or were not then)
        return Chat(lv, dialogue_visual(store, movie, language, chosen), plan=plan), chosen
    visual = film_visual(store, movie, language, chosen)
    if plan is None:
        plan = film_plan(lv, store, movie, visual, chosen)
        if stride is not None:
            plan = FilmPlan(stride, plan.n_ctx)
    return Chat(lv, visual, plan=plan), chosen


def engine_id(lv) -> str:
    """The model as a film's plan depends on it: the backend, its KV cache's type, the weights."""
    backend = lv.backend
    return f"{backend.name}:{getattr(backend, 'kv_type', str(lv.model.dtype))}:{weights_fingerprint(lv)}"


def film_budget(store: LibraryStore, backend) -> int:
    """The film memory budget in bytes: the library's ``film_memory_bytes`` setting, else half of the
    device's memory beside the model's weights (the machine and the model, never what is free now)."""
    try:
        value = int(store.setting(BUDGET_SETTING) or 0)
    except ValueError:
        value = 0
    return value if value > 0 else default_budget(backend.total_memory(), backend.weights_bytes())


def budget_words(store: LibraryStore) -> str:
    """The film memory budget as the library keeps it, in words (no model needed)."""
    try:
        value = int(store.setting(BUDGET_SETTING) or 0)
    except ValueError:
        value = 0
    where = "`llamavid index prepare --memory-gb` sets it"
    if value > 0:
        return f"film memory budget {human_size(value)} ({where})"
    return f"film memory budget: half of the memory beside the model ({where})"


def film_plan(lv, store: LibraryStore, movie: Movie, visual: Visual, track_id: int | None) -> FilmPlan:
    """The film's plan for this model and subtitle track: the one kept in the library, else planned
    now (:func:`llamavid.runtime.chat.plan_film`) and kept. Planned again only when the film's
    features or the budget changed; whichever process plans first, every other reads its plan."""
    budget = film_budget(store, lv.backend)
    model, identity = engine_id(lv), film_identity(movie)
    kept = store.film_plan(movie.id, model, track_id)
    if kept is None or (kept["film"], kept["budget"]) != (identity, budget):
        plan = plan_film(lv, visual, budget)
        kept = store.keep_film_plan(movie.id, model, track_id, identity, budget, plan.stride, plan.n_ctx)
    return FilmPlan(kept["stride"], kept["n_ctx"], kept["budget"])


def prepared_key(chat: Chat, movie: Movie, track_id: int | None) -> dict:
    return state_key(chat, film=film_identity(movie), track=track_id, start=PREPARED_QUESTION)


def prepared_path(data: DataDir, movie: Movie) -> Path:
    return data.cache / "prepared" / f"movie-{movie.id}.state"


def is_current(store: LibraryStore, movie_id: int, key: dict) -> bool:
    """The film has a prepared state made for exactly this key."""
    row = next((r for r in store.prepared() if r["id"] == movie_id), None)
    return bool(row and row["prepared_key"] == json.dumps(key, sort_keys=True) and Path(row["prepared_path"]).is_file())


def make_prepared(chat: Chat, store: LibraryStore, data: DataDir, movie: Movie, key: dict,
                  control: Control | None = None) -> Path:
    """Read the film with the neutral turn, save the state, record it, keep the cache under its cap."""
    prepare(chat, control)
    return keep_prepared(chat, store, data, movie, key)


def keep_prepared(chat: Chat, store: LibraryStore, data: DataDir, movie: Movie, key: dict) -> Path:
    """Save a chat that has just read the film with the neutral turn as the film's prepared state,
    record it and keep the cache under its cap (OSError or MemoryError: nothing is kept)."""
    path = prepared_path(data, movie)
    size = save_chat(chat, path, key)
    store.record_prepared(movie.id, json.dumps(key, sort_keys=True), str(path), size)
    evict(store, keep=movie.id)
    return path


def open_prepared(chat: Chat, store: LibraryStore, data: DataDir, movie: Movie, key: dict) -> bool:
    """Fill a new chat from the film's prepared state; False (and the state forgotten) if there is
    none for this key or it is damaged."""
    path = prepared_path(data, movie)
    if not path.is_file():
        return False
    try:
        load_chat(chat, path, key, "this film's prepared state")  # MemoryInUse: kept, the question refused
    except StateError as exc:
        log.info("prepared state of %s not used: %s", movie.rel_path, exc)
        return False
    store.touch_prepared(movie.id)
    return True


def evict(store: LibraryStore, keep: int | None = None) -> list[str]:
    """Delete the least recently used prepared states until the total fits the cap; returns their films."""
    cap = int(store.setting("prepared_cap_bytes") or DEFAULT_CAP_BYTES)
    rows = store.prepared()
    total, removed = sum(r["prepared_bytes"] for r in rows), []
    for row in rows:
        if total <= cap:
            break
        if row["id"] == keep:
            continue
        Path(row["prepared_path"]).unlink(missing_ok=True)
        store.clear_prepared(row["id"])
        total -= row["prepared_bytes"]
        removed.append(row["rel_path"])
    return removed


# -- the size of a prepared film, with a loaded model --------------------------------------------
def loaded_kv_bytes(lv) -> float:
    """Bytes per cached value of a loaded model: its llama.cpp KV type, else the LLM's dtype."""
    kv_type = getattr(lv.backend, "kv_type", None)
    if kv_type is not None:
        return kv_bytes_per_value("llama.cpp", kv_type)
    return float(lv.model.lm_head.weight.element_size())


def prepared_size_estimate(lv, frames: int, text_tokens: int = DEFAULT_TEXT_TOKENS) -> int:
    """:func:`estimate_prepared_bytes` for a loaded model (its config, its KV cache's type)."""
    return estimate_prepared_bytes(lv.config, frames, text_tokens, loaded_kv_bytes(lv))


def model_kv_shape(model: str, data_root: str | Path, options: LoadOptions | None = None
                   ) -> tuple[LlmShape, float]:
    """An installed model's LLM shape and bytes per cached value once loaded with ``options``,
    read from its folder (config.json or GGUF header) without loading it: what a size estimate needs
    before anything is prepared."""
    options = options or LoadOptions()
    engine = choose_engine(model, resolve_model(model, data_root), options, data_root)  # as load_model chooses
    shape = llm_shape(engine.folder)
    if engine.backend == "llama.cpp":
        kv_bytes = kv_bytes_per_value(engine.backend, options.kv_type, head_dim=shape.head_dim)
    else:
        dtype = pick_dtype(options.dtype, pick_device(options.device))
        kv_bytes = kv_bytes_per_value(engine.backend, dtype_bytes=dtype.itemsize)
    return shape, kv_bytes


# -- asking the indexer -------------------------------------------------------------------------------
def choose_chat_model(store: LibraryStore, model: str, options: LoadOptions | None = None,
                      language: str | None = None) -> None:
    """Keep the model films are prepared with, and how it is loaded (:meth:`LoadOptions.key`): a
    prepared state is only used by a chat whose engine matches it (backend, KV type, weights), so the
    indexer loads the model as the chat service will."""
    store.set_setting("chat_model", model)
    store.set_setting("chat_load_options", json.dumps((options or LoadOptions()).key(), sort_keys=True))
    if language:
        store.set_setting("language", language)


def chat_load_options(store: LibraryStore) -> LoadOptions:
    """The load options kept by :func:`choose_chat_model` (none kept: ``load_model``'s defaults)."""
    try:
        options = json.loads(store.setting("chat_load_options") or "{}")
    except ValueError:
        return LoadOptions()
    if not isinstance(options, dict):
        return LoadOptions()
    return LoadOptions.from_dict({k: v for k, v in options.items() if k in KEY_OPTIONS})


def mark_for_preparing(store: LibraryStore, movie_ids: list[int], model: str, language: str | None = None,
                       options: LoadOptions | None = None) -> None:
    """Ask for these films to be prepared with ``model`` (kept as the library's chat model, as
    ``llamavid index prepare --model`` keeps it) and queue them: ``llamavid index run`` (the apps'
    indexer) does the work after their features."""
    choose_chat_model(store, model, options, language)
    store.set_prepare(movie_ids, True)
    store.control_jobs(movie_ids, "retry")


def forget_prepared(store: LibraryStore, movie_ids: list[int]) -> None:
    """Stop preparing these films and delete their prepared states (their conversations stay)."""
    store.set_prepare(movie_ids, False)
    delete_prepared(store, movie_ids)


def delete_prepared(store: LibraryStore, movie_ids: list[int]) -> None:
    """Delete these films' prepared states, leaving the choice to prepare them as it is."""
    for row in store.prepared():
        if row["id"] in movie_ids:
            Path(row["prepared_path"]).unlink(missing_ok=True)
            store.clear_prepared(row["id"])
