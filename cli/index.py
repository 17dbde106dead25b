"""``llamavid index``: the movie library indexer (add, scan, run, status, watch, pause, resume...).

Examples:
  llamavid index add ~/Movies          register a folder and queue its films
  llamavid index run                   work the queue in the foreground until it is empty
  llamavid index status --json         one JSON object per movie, for scripts
  llamavid index watch                 index, then follow the folders for changes
  llamavid index pause / resume        stop and continue the queue (from another terminal too)
  llamavid index first MOVIE           index this film next (the status lists the order and how long)
  llamavid index clip MOVIE 1:05 1:09  save that moment (2 s either side) as a clip, its lines as .srt

The indexer's own modules are imported inside the commands: ``llamavid --help`` imports this
module, and they load sqlite-utils (which imports pandas), PyAV or torch.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from cli.options import add_load_arguments
from indexer.errors import IndexingError
from llamavid.errors import UserError
from llamavid.paths import DataDir
from llamavid.runtime.options import LoadOptions

HELP = "index movie folders: frames, EVA features and subtitles into the library (add, run, status...)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="index_command", metavar="ACTION", title="actions")
    sub.required = True
    sub.add_parser = _with_data_dir(sub.add_parser)
    p = sub.add_parser("add", help="add library folders and scan them")
    p.add_argument("paths", nargs="+", metavar="PATH", help="folder of movies (scanned recursively)")
    p.add_argument("--no-scan", action="store_true", help="only register the folders")
    sub.add_parser("scan", help="rescan every library folder: new, moved, changed and missing files")
    p = sub.add_parser("run", help="work the queue in the foreground until it is empty, then exit")
    _run_options(p)
    p = sub.add_parser("status", help="the movies, their state, progress and cache size")
    p.add_argument("movies", nargs="*", metavar="MOVIE", help="id or path (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object per movie (one per line)")
    p = sub.add_parser("watch", help="index, then follow the library folders and re-index what changes")
    _run_options(p)
    p.add_argument("--rescan-minutes", type=float, default=30.0,
                   help="full rescan interval, for shares where change events do not arrive")
    for name, text in (("pause", "pause movies (none given: the whole queue, the current chunk finishes)"),
                       ("resume", "resume paused or cancelled movies (none given: the whole queue)"),
                       ("cancel", "stop indexing movies and take them out of the queue"),
                       ("retry", "queue failed movies again (none given: all failed ones, and those whose speech "
                                 "recognition failed)"),
                       ("first", "index these movies next (the one being indexed yields at its next chunk)"),
                       ("last", "index these movies after all the others")):
        p = sub.add_parser(name, help=text)
        p.add_argument("movies", nargs="*", metavar="MOVIE", help="id or path")
    p = sub.add_parser("prepare", help="fast answers: read films ahead with a chat model so a new question "
                                       "costs seconds (done by `index run`)")
    p.add_argument("movies", nargs="*", metavar="MOVIE", help="id or path (see also --folder, --all)")
    p.add_argument("--folder", metavar="PATH", help="every film of this library folder, new ones too")
    p.add_argument("--all", action="store_true", help="every film of the library, new ones too")
    p.add_argument("--off", action="store_true", help="stop preparing these films and delete their states")
    p.add_argument("--model", metavar="NAME", help="the chat model to prepare with (kept for later runs)")
    p.add_argument("--language", metavar="XX", help="subtitle language to prefer (two letters; kept)")
    p.add_argument("--cap-gb", type=float, help="disk space for prepared films; the least recently used go first")
    p.add_argument("--memory-gb", type=float,
                   help="memory for a film's context (its KV cache): decides how many frames a film keeps and "
                        "its context, once per film; 0: the default, half of the memory beside the model")
    p = sub.add_parser("rm", help="remove a library folder or a movie from the index (files are kept)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = sub.add_parser("search", help="find the lines of dialogue that say something (a quote, a paraphrase, "
                                      "a question) and the scenes that look like a description: the film, the "
                                      "time and the line, best first")
    p.add_argument("query", help="what the line says, in any word forms (\"who hid the map\" finds \"I'll hide "
                                 "the map\"), or what is seen (\"a beach at night\")")
    p.add_argument("--limit", type=int, default=20, help="at most this many results (1 to 1000)")
    p.add_argument("--movie", metavar="MOVIE", help="only this film (id or path)")
    p.add_argument("--kind", choices=("quote", "scene", "all"), default="all",
                   help="quote: lines of dialogue; scene: what is seen (needs the scene model, "
                        "`llamavid models pull clip-vit-b-32`); all (default): both, by score")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line: kind (quote or scene), movie_id, path (relative to its library "
                        "folder), start, end, text (null for a scene), score (0 to 1: 1 says the query word for word)")
    p.add_argument("--clip", metavar="DIR",
                   help="also save each line found as a clip in DIR: the line with 2 s each side, and its .srt")
    p = sub.add_parser("clip", help="save a moment of a film as a short video with its subtitle lines (.srt)")
    p.add_argument("movie", metavar="MOVIE", help="id or path")
    p.add_argument("start", type=_seconds, help="where the moment starts: seconds, or H:MM:SS(.s) / M:SS")
    p.add_argument("end", type=_seconds, help="where it ends (at most 5 minutes after the start)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the clip (.mp4, .m4v, .mov or .mkv); default: \"<film> H-MM-SS.mp4\" in this folder")
    p.add_argument("--margin", type=float, default=2.0, help="seconds of film kept before and after the moment")


def _seconds(text: str) -> float:
    """A time on the command line: seconds (``65.5``) or a clock (``1:05.5``, ``0:01:05``)."""
    try:
        value = 0.0
        for part in text.strip().split(":"):
            value = value * 60 + float(part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: give seconds (65.5) or H:MM:SS (0:01:05)") from None
    return value


def _with_data_dir(add_parser):
    """Every action also takes --data-dir after its name (``llamavid index run --data-dir X``)."""
    def add(name, **kwargs):
        parser = add_parser(name, **kwargs)
        parser.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS,
                            help="the data folder (database and caches); default $LLAMAVID_DATA_DIR")
        return parser
    return add


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of film")
    p.add_argument("--batch-size", type=int, help="frames per EVA batch and per saved chunk (default 4 CPU, 32 GPU)")
    add_load_arguments(p, which=("device", "dtype", "vision", "vision_engine"),
                       notes={"vision_engine": "(here EVA's; films made by an engine turned off are indexed again)"})
    p.add_argument("--speech", choices=("auto", "always", "never"), default="auto",
                   help="speech recognition: auto = only for movies without text subtitles")
    p.add_argument("--whisper-model", default="small",
                   help="speech model: tiny, base, small, medium or large-v3 once installed with "
                        "`llamavid models pull whisper-NAME` (indexing never downloads), or a faster-whisper folder")
    p.add_argument("--whisper-beam", type=int, default=5, help="beam size (1 is faster, 5 more accurate)")
    p.add_argument("--no-vad", action="store_true", help="transcribe silence and music too")
    p.add_argument("--scenes", choices=("auto", "never"), default="auto",
                   help="scene vectors (search by description, frame evidence for every question): auto = where "
                        "the scene model is installed (`llamavid models pull clip-vit-b-32`; never downloaded here)")
    p.add_argument("--scene-model", default="clip-vit-b-32",
                   help="the scene model: an installed name or a CLIP folder (default clip-vit-b-32)")
    p.add_argument("--decode-workers", type=int, default=0, help="parallel decoding processes (0: auto)")
    p.add_argument("--idle", type=float, default=0.0, help="seconds to rest between chunks (lighter load)")
    p.add_argument("--priority", choices=("low", "normal"), default=None,
                   help="low (default, or `index_priority` in settings.json): nice 19, lowest disk priority, and "
                        "wait while a question is answered on this machine; normal: compete like any program")
    p.add_argument("--skip-similar", dest="skip_similar", action="store_true", default=None,
                   help="frames of a static shot reuse the features of the last frame EVA encoded (default, or "
                        "`index_skip_similar` in settings.json; docs/indexer.md gives the accuracy bound)")
    p.add_argument("--no-skip-similar", dest="skip_similar", action="store_false",
                   help="run EVA on every sampled frame")
    p.add_argument("--frames-first", action="store_true",
                   help="index each film whole in turn, instead of every film's dialogue (subtitles, speech) first")
    p.add_argument("--max-attempts", type=int, default=3, help="tries before a failing movie is given up")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    data = DataDir(Path(args.data_dir)).create()
    try:
        return COMMANDS[args.index_command](args, data)
    except IndexingError as exc:
        raise UserError(str(exc)) from exc


def _open(data: DataDir):
    """The data folder's LibraryStore (use it in a ``with`` block)."""
    from indexer.store import LibraryStore

    return LibraryStore.open(data.database)


def options_from(args: argparse.Namespace):
    from indexer.pipeline import IndexOptions
    from indexer.scenes import SceneOptions
    from indexer.whisper import SpeechOptions

    if args.fps <= 0:
        raise UserError(f"--fps must be positive, got {args.fps}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.vision_engine:
        from llamavid.runtime.vision_engines import parse_spec

        parse_spec(args.vision_engine)  # a typo fails here, before any film
    return IndexOptions(fps=args.fps, batch_size=args.batch_size, vision=args.vision, device=args.device,
                        dtype=args.dtype, vision_engine=args.vision_engine, speech=args.speech,
                        decode_workers=args.decode_workers, idle=args.idle, max_attempts=args.max_attempts,
                        whisper=SpeechOptions(model=args.whisper_model, vad=not args.no_vad,
                                              beam_size=args.whisper_beam),
                        skip_similar=args.skip_similar, yield_to_chat=args.priority == "low",
                        dialogue_first=not args.frames_first,
                        scenes=SceneOptions(mode=args.scenes, model=args.scene_model))


def _indexer_settings(args: argparse.Namespace, data: DataDir) -> None:
    """Fill ``--priority`` and ``--skip-similar`` left unsaid: the priority from
    ``$LLAMAVID_INDEX_PRIORITY``, then ``<data>/settings.json`` (the apps' ``index_priority`` and
    ``index_skip_similar``), else their defaults: low, on."""
    import logging
    import os

    from app.settings import Settings, load_settings

    try:
        settings = load_settings(data)
    except UserError as exc:  # a damaged file: the apps say so; the indexer keeps its defaults
        logging.getLogger(__name__).warning("%s", exc)
        settings = Settings()
    if getattr(args, "priority", None) is None:
        args.priority = os.environ.get("LLAMAVID_INDEX_PRIORITY") or settings.index_priority
        if args.priority not in ("low", "normal"):
            raise UserError(f"LLAMAVID_INDEX_PRIORITY={args.priority}: use low or normal")
    if getattr(args, "skip_similar", None) is None:
        args.skip_similar = settings.index_skip_similar


def cmd_add(args, data: DataDir) -> int:
    from indexer.controls import add_folders

    with _open(data) as store:
        added = add_folders(store, args.paths, scan_now=not args.no_scan)
    if added.report is not None:
        print(f"scanned: {added.report.summary()}")
    return 0


def cmd_scan(args, data: DataDir) -> int:
    from indexer.scan import scan

    with _open(data) as store:
        report = scan(store)
    print(f"scanned: {report.summary()}")
    for line in report.errors:
        print(f"  {line}", file=sys.stderr)
    return 0


def cmd_run(args, data: DataDir, wait=None, stop=None) -> int:
    from indexer.encoder import find_vision_weights
    from indexer.progress import Progress
    from indexer.runner import run_queue

    _indexer_settings(args, data)
    if args.priority == "low":
        from indexer.sharing import lower_priority

        lowered = lower_priority()  # before torch and FFmpeg start their threads: they inherit it
        if not args.quiet:
            print(f"indexer: low priority ({', '.join(lowered) or 'not permitted here'}); "
                  "it waits while a question is answered", file=sys.stderr)
    options = options_from(args)
    if _has_work(data):
        find_vision_weights(data, options.vision)  # fail before the first film, not in the middle
    progress = Progress(enabled=not args.quiet)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        summary = run_queue(data, options, progress.update, progress.event, wait=wait, stop=stop)
    finally:
        progress.close()
    print(f"indexer: {summary.text()}")
    return 0


def _has_work(data: DataDir) -> bool:
    from indexer.controls import has_work

    with _open(data) as store:
        return has_work(store)


def _sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def cmd_watch(args, data: DataDir) -> int:
    from indexer.encoder import find_vision_weights
    from indexer.watch import Watcher

    find_vision_weights(data, args.vision)  # new films can arrive at any time
    watcher = Watcher(data, rescan_seconds=args.rescan_minutes * 60)
    watcher.start()
    try:
        return cmd_run(args, data, wait=watcher.wait, stop=watcher.stopped)
    except KeyboardInterrupt:
        return 130
    finally:
        watcher.stop()


def cmd_status(args, data: DataDir) -> int:
    from indexer.library import list_movies
    from indexer.status import print_table

    with _open(data) as store:
        found = [_find(store, ref) for ref in args.movies] if args.movies else list_movies(store)
        if args.json:
            for movie in found:
                print(json.dumps(status_object(movie), ensure_ascii=False))
            return 0
        print_table(store, found, data.features)
    return 0


def status_object(movie) -> dict:
    """The per-movie JSON of ``status --json`` (a stable, script-facing shape)."""
    return {
        "id": movie.id, "path": movie.rel_path, "library": movie.library, "state": movie.state,
        "error": movie.error, "warning": movie.warning, "stage": movie.stage,
        "progress": {"done": movie.progress[0], "total": movie.progress[1]}, "eta_seconds": movie.eta_seconds,
        "frames": movie.frames, "cues": movie.cue_count, "subtitle_sources": movie.subtitle_sources,
        "subtitle_tracks": movie.subtitle_tracks, "duration": movie.duration,
        "features_complete": movie.features_complete, "feature_shape": movie.feature_shape,
        "cache_bytes": movie.cache_bytes, "prepared_bytes": movie.prepared_bytes,
        "scenes": {"state": movie.scenes_state, "frames": movie.scene_frames, "bytes": movie.scenes_bytes},
    }


def _find(store, ref: str):
    from indexer.library import find_movie

    try:
        return find_movie(store, ref)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None


def _control(action: str):
    def command(args, data: DataDir) -> int:
        from indexer.controls import control

        with _open(data) as store:
            ids = [_find(store, ref).id for ref in args.movies] if args.movies else None
            outcomes = control(store, action, ids)  # no movies: the whole queue (retry: the failed ones)
        if ids is None and action in ("pause", "resume"):
            print("queue paused (the current chunk finishes)" if action == "pause" else "queue resumed")
        for outcome, n in outcomes.items():
            print(f"{n} {outcome}")
        return 0
    return command


def cmd_rm(args, data: DataDir) -> int:
    from indexer import movies
    from indexer.controls import find_folder, remove_folder

    with _open(data) as store:
        for ref in args.paths:
            library_id = find_folder(store, ref)
            if library_id is not None:
                removed = remove_folder(store, library_id)
                print(f"removed library {removed.path} ({len(removed.movie_ids)} movies, caches deleted)")
                continue
            try:
                movie = _find(store, ref)
            except UserError:
                raise UserError(f"{ref}: neither a library folder nor a movie of the library") from None
            movies.delete(store, movie.id)
            print(f"removed {movie.rel_path} (cache deleted; a scan adds it back while the file exists)")
    return 0


def cmd_prepare(args, data: DataDir) -> int:
    """Mark films for preparation (or not) and queue them; `index run` does the work."""
    from indexer.prepare import budget_words, chat_load_options, choose_chat_model, delete_prepared, model_kv_shape
    from llamavid.runtime.memory import BUDGET_SETTING

    wanted = not args.off
    kv_shape = None
    with _open(data) as store:
        if args.model:
            options = _app_load_options(data)
            # read once: an unknown model stops here, before anything is kept, and it sizes the films below
            kv_shape = model_kv_shape(args.model, data.root, options)
            choose_chat_model(store, args.model, options, args.language)
        elif args.language:
            store.set_setting("language", args.language)
        if args.cap_gb is not None:
            store.set_setting("prepared_cap_bytes", str(int(args.cap_gb * 1e9)))
        if args.memory_gb is not None:
            store.set_setting(BUDGET_SETTING, str(int(args.memory_gb * 1e9)) if args.memory_gb > 0 else None)
        model = store.setting("chat_model")
        if wanted and (args.all or args.folder or args.movies) and not model:
            raise UserError("preparing needs a chat model: add --model NAME (an installed chat model)")
        ids = _prepare_scope(args, store, wanted)
        if not wanted:
            delete_prepared(store, ids)
            print(f"{_films(len(ids))} will not be prepared")
            return 0
        if ids:
            kv_shape = kv_shape or model_kv_shape(model, data.root, chat_load_options(store))
            print(_prepared_size_line(store, ids, model, kv_shape))
        for outcome, n in store.control_jobs(ids, "retry").items():
            print(f"{n} {outcome}")
        if ids:
            print(f"films are prepared with {model} by `llamavid index run`; {budget_words(store)}")
    return 0


def _films(n: int) -> str:
    return f"{n} film" if n == 1 else f"{n} films"


def _prepare_scope(args, store, wanted: bool) -> list[int]:
    """Record the choice for the films, folder or library named; returns their ids."""
    if args.all:
        store.set_setting("prepare_all", "1" if wanted else None)
        return [m["id"] for m in store.movie_views()]
    if args.folder:
        from indexer.controls import find_folder

        library_id = find_folder(store, args.folder)
        if library_id is None:
            raise UserError(f"{args.folder} is not a library folder (`llamavid index add` it first)")
        store.set_library_prepare(library_id, wanted)
        return [m["id"] for m in store.library_movies(library_id)]
    ids = [_find(store, ref).id for ref in args.movies]
    store.set_prepare(ids, wanted)
    return ids


def _app_load_options(data: DataDir) -> LoadOptions:
    """How the apps load the chat model (``<data>/settings.json``): films are prepared the same way,
    or the apps could not use the states."""
    from app.settings import load_settings

    return load_settings(data).load_options()


def _prepared_size_line(store, ids: list[int], model: str, kv_shape: tuple) -> str:
    """What preparing these films will take on disk, said before the work starts."""
    from indexer.library import get_movie
    from indexer.prepare import DEFAULT_CAP_BYTES
    from indexer.prepared_size import estimate_prepared_bytes, film_tokens
    from llamavid.storage import human_size

    shape, kv_bytes = kv_shape
    language = store.setting("language")
    total = sum(estimate_prepared_bytes(shape, *film_tokens(store, get_movie(store, i), language), kv_bytes)
                for i in ids)
    cap = int(store.setting("prepared_cap_bytes") or DEFAULT_CAP_BYTES)
    line = f"{_films(len(ids))}: about {human_size(total)} on disk when prepared with {model}"
    if total > cap:
        line += f" (over the {human_size(cap)} cap: the least recently used are deleted; --cap-gb changes it)"
    return line


def cmd_search(args, data: DataDir) -> int:
    """The library's lines closest to the query and scenes that look like it
    (``indexer.scenes_search.search_library``, as the server's /v1/search)."""
    from indexer.scenes_search import ScenesUnavailable, search_library
    from indexer.search import MAX_LIMIT

    if not 1 <= args.limit <= MAX_LIMIT:
        raise UserError(f"--limit must be from 1 to {MAX_LIMIT}, got {args.limit}")
    with _open(data) as store:
        movie_id = _find(store, args.movie).id if args.movie else None
        try:
            found = search_library(store, args.query, args.kind, movie_id, args.limit, data.root)
        except ScenesUnavailable as exc:
            raise UserError(str(exc)) from None
    for hit in found:
        print(json.dumps(hit.to_dict(), ensure_ascii=False) if args.json else hit.describe())
    if not found and not args.json:
        print("no line of the library's subtitles says that" if args.kind != "scene"
              else "no film has scene vectors yet (`llamavid index run` makes them)", file=sys.stderr)
    if args.clip:
        for hit in found:
            with _open(data) as store:
                movie = _find(store, str(hit.movie_id))
            _save_clip(data, movie, hit.start, hit.end, None, 2.0, Path(args.clip), getattr(hit, "track_id", None))
    return 0


def cmd_clip(args, data: DataDir) -> int:
    """A moment of a film as a clip and its lines (``app.clips``, as the server's clip route)."""
    with _open(data) as store:
        movie = _find(store, args.movie)
    _save_clip(data, movie, args.start, args.end, args.output, args.margin, Path.cwd())
    return 0


def _save_clip(data: DataDir, movie, start: float, end: float, output: str | None, margin: float, folder: Path,
               track_id: int | None = None) -> None:
    """Cut one clip, saying on stderr how far it is, and print where it went."""
    from app.clips import clip_name, export_moment

    dst = Path(output) if output else folder / clip_name(movie, start)
    shown = sys.stderr.isatty()  # a bar in a terminal; nothing in a log
    with _open(data) as store:
        made = export_moment(store, movie, start, end, dst, margin=margin, track_id=track_id,
                             progress=(lambda share: print(f"\r{dst.name}: {share:4.0%}", end="", file=sys.stderr))
                             if shown else None)
    if shown:
        print(file=sys.stderr)
    clip = made.clip
    said = f", {made.lines} subtitle lines in {made.subtitles}" if made.subtitles else ", no subtitle lines"
    print(f"{clip.path}: {clip.start:.2f}-{clip.end:.2f} s of {movie.rel_path} ({clip.method}{said})")


COMMANDS = {"add": cmd_add, "scan": cmd_scan, "run": cmd_run, "status": cmd_status, "watch": cmd_watch,
            "pause": _control("pause"), "resume": _control("resume"), "cancel": _control("cancel"),
            "retry": _control("retry"), "first": _control("first"), "last": _control("last"), "rm": cmd_rm,
            "search": cmd_search, "prepare": cmd_prepare, "clip": cmd_clip}
