"""``llamavid bench moments``: how often an answer's first moment (and any of its five) is the line
of dialogue, or the scene, the question is about, measured on a generated set of films (figures, not
tests).

The set: three films written with PyAV (``llamavid.media.synthetic``), each with an English
subtitle file of 15 or 16 lines of dialogue and six scripted scenes of distinct looks (a sky over a
field, a drawn sun, moon, circle, square or triangle: :func:`~llamavid.media.synthetic.scripted`),
indexed by the real indexer (``llamavid index``, in a child process, scene vectors included); a tiny
model in the released layout (``llamavid.model.tiny``, random weights) and a scene model: a tiny CLIP
with random weights (``indexer.scene_model.write_tiny_scene_model``), or with ``--scene-model`` an
installed one (``llamavid models pull clip-vit-b-32``; the set's films are given its vectors). The
questions, written here:

* a **quote**: the line as said ("Hello captain, the wind is rising.");
* a **paraphrase**: a question in other word forms and words of its own ("When does the wind rise
  for the captain?": "rise" for "rising", "hid" for "hide", "men" for "man"...);
* a **scene**: a description of what is seen ("a yellow sun in an orange sky"), no line saying it.

Each is asked through the chat service as a person's question is (:class:`app.chat_service.ChatService`):

* ``exact``: a new conversation per question (the film read with that question);
* ``fast``: a new "fast answers" conversation per question, from the film's prepared state (read
  once with the neutral question);
* ``follow-up``: later turns of a conversation whose first question was about another line.

A question scores a hit at k when one of its first k moments starts within 3 s of its line (for a
scene: from 3 s before the scene to its end). With random weights the frames the question weighed
are noise, and so are the tiny CLIP's vectors (they fall below any caption's cosine and give no scene
moment): only the subtitle part of the ranking can find the line, and this measures it against that
noise; the scene rows then score what chance and the other evidence give. With a real scene model
(``--scene-model clip-vit-b-32``) the scene rows measure it.

    llamavid bench moments                     # the whole set: 5 to 15 minutes on 2 busy CPU cores
    llamavid bench moments --quick             # one film, four lines, two scenes (the test's run)
    llamavid bench moments --work DIR --misses # keep the set in DIR (made once), print every miss
    llamavid bench moments --scene-model clip-vit-b-32   # the installed scene model's vectors

One JSON line per mode and kind of question: ``questions``, ``hit@1`` and ``hit@5`` (percent),
``seconds`` per question.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from app.chat_service import ChatService
from app.moments import Moment
from indexer import library
from indexer.controls import find_folder
from indexer.scene_model import DEFAULT_SCENE_MODEL, scene_model_folder, write_tiny_scene_model
from indexer.store import LibraryStore
from llamavid.media.synthetic import Look, scripted, srt_text, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.options import LoadOptions

MODEL = "llama-vid-tiny-224-long-video"
TOLERANCE = 3.0  # seconds between a moment's start and its line's for a hit
ANSWER = SamplingOptions(temperature=0, max_new_tokens=4)  # the answer's words matter little: random weights
MODES = ("exact", "fast", "follow-up")
KINDS = ("quote", "paraphrase", "scene")


@dataclass(frozen=True)
class Line:
    """A line of dialogue and the two questions asked about it."""

    start: float
    end: float
    text: str
    paraphrase: str


@dataclass(frozen=True)
class Scene:
    """A scripted scene and the description asked about it."""

    start: float
    end: float
    look: Look
    description: str


@dataclass(frozen=True)
class Film:
    name: str
    seconds: int
    lines: tuple[Line, ...]
    scenes: tuple[Scene, ...] = ()


def _lines(*rows: tuple[float, float, str, str]) -> tuple[Line, ...]:
    return tuple(Line(*row) for row in rows)


SKY, GRASS, NIGHT, WHITE = (110, 170, 235), (60, 150, 60), (15, 20, 60), (245, 245, 245)
SCENES = (  # six looks, one per 30 s of a film; each film takes them in its own order
    Scene(0, 0, Look(SKY, GRASS, 0.5), "a blue sky over a green field"),
    Scene(0, 0, Look((240, 140, 40), shapes=(("circle", (250, 230, 40), 0.5, 0.45, 0.5),)),
          "a yellow sun in an orange sky"),
    Scene(0, 0, Look(NIGHT, shapes=(("circle", WHITE, 0.7, 0.3, 0.3),)), "a white moon in a dark night sky"),
    Scene(0, 0, Look(WHITE, shapes=(("circle", (220, 30, 30), 0.5, 0.5, 0.6),)), "a red circle on a white background"),
    Scene(0, 0, Look((245, 220, 40), shapes=(("square", (20, 20, 20), 0.5, 0.5, 0.6),)),
          "a black square on a yellow background"),
    Scene(0, 0, Look((90, 90, 90), shapes=(("triangle", (40, 200, 60), 0.5, 0.5, 0.7),)),
          "a green triangle on a grey background"),
)


def _scenes(order: tuple[int, ...], length: float = 30.0, first: float = 0.0) -> tuple[Scene, ...]:
    """The looks of :data:`SCENES` in this order, ``length`` seconds each from ``first`` on."""
    return tuple(Scene(first + i * length, first + (i + 1) * length, SCENES[k].look, SCENES[k].description)
                 for i, k in enumerate(order))


FILMS = (
    Film("Harbor.mp4", 180, _lines(
        (4, 7, "Hello captain, the wind is rising.", "When does the wind rise for the captain?"),
        (9, 12, "Then we stay in the harbor tonight.", "Did they decide to stay at the harbor for the night?"),
        (13.5, 17, "The treasure is buried under the old lighthouse.", "Where was the treasure buried?"),
        (18, 21, "Who told you about the lighthouse?", "Who was telling him about the lighthouse?"),
        (22, 25, "An old fisherman who drinks too much.", "Which fisherman was drinking too much?"),
        (40, 44, "I will hide the map in the chapel.", "Who hid the map inside the chapel?"),
        (45, 48, "Nobody searches a chapel.", "Would anybody search the chapels?"),
        (49, 52, "The priest searched it twice last winter.",
         "How many times did the priest search it during the winter?"),
        (70, 73, "Keep your voice down, the guards are listening.",
         "Why must he keep his voice down while guards listen?"),
        (74, 77, "Let them listen, they understand nothing.", "Do the guards understand anything?"),
        (95, 99, "We sail at night when the moon is hidden.", "Will they be sailing at night while the moon hides?"),
        (100, 103, "And if the sea freezes?", "What if the sea froze?"),
        (104, 108, "Then we walk across the ice to the island.", "Did they walk across the ice towards the islands?"),
        (130, 134, "The storm broke the mast of our boat.", "What did the storm break on the boat?"),
        (135, 138, "We can still row to the island.", "Could they still be rowing to an island?"),
        (160, 164, "Give me the key, and I will open the chest.", "Who gave the key to open the chest?"),
    ), _scenes((0, 1, 2, 3, 4, 5))),
    Film("Orchard.mkv", 180, _lines(
        (3, 6, "Grandmother planted these apple trees before the war.", "When did grandmother plant the apple tree?"),
        (7, 10, "She never told us why she moved away from the city.", "Why did grandmother move away from the city?"),
        (11, 14, "Because the city was burning.", "Was the city burned?"),
        (30, 34, "The letters are hidden in the piano.", "Where did someone hide the letters?"),
        (35, 38, "Your brother sold the piano last spring.", "Who sells the pianos?"),
        (39, 42, "Then we must find the man who bought it.", "Can they find the men who buy it?"),
        (60, 63, "The harvest will be late this year.", "Why is the harvest so late this year?"),
        (64, 67, "The rain ruined half of the apples.", "What did the rains ruin?"),
        (68, 71, "Then we sell the orchard.", "Are they selling their orchard?"),
        (90, 94, "Father would never forgive us.", "Would their father ever forgive them?"),
        (95, 98, "Father is gone, and the bank wants its money.", "What does the bank want?"),
        (99, 102, "I wrote to the bank yesterday.", "Who writes to the bank?"),
        (125, 129, "A stranger is waiting at the gate.", "Who was waiting by the gate?"),
        (130, 133, "He says he knew our grandmother.", "Did the stranger know grandmother?"),
        (150, 154, "She sang this song every evening.", "Who sings that song in the evening?"),
        (155, 159, "Then the letters were written for him.", "For whom did she write the letters?"),
    ), _scenes((3, 5, 0, 4, 2, 1))),
    Film("Station.mkv", 150, _lines(
        (5, 8, "The last train leaves at midnight.", "When is the last train leaving?"),
        (9, 12, "I bought two tickets with cash.", "Who buys the ticket with cash?"),
        (13, 16, "Nobody saw you at the station?", "Did anyone see him at the stations?"),
        (17, 20, "Only the old guard with the dog.", "Was there a guard with dogs?"),
        (35, 39, "The suitcase is heavier than it looks.", "Why is the suitcase so heavy?"),
        (40, 43, "Don't open it before we cross the border.", "When can they open it, after crossing the borders?"),
        (44, 47, "What is inside, gold?", "Is there gold inside?"),
        (65, 69, "The police stopped the train in the tunnel.", "Where do the police stop the train?"),
        (70, 73, "Stay calm and keep reading your newspaper.", "Who keeps calm, reading a newspaper?"),
        (74, 77, "They are checking every passenger.", "Did they check all the passengers?"),
        (95, 99, "The woman in the red coat is watching us.", "Which women wore red coats and watched them?"),
        (100, 103, "She works for the bank, I am sure.", "Does she work for a bank?"),
        (104, 107, "Give her the suitcase and run.", "Did he give the suitcase to her and run away?"),
        (125, 129, "You forgot your gloves on the seat.", "Who forgets the glove on a seat?"),
        (130, 133, "Keep them, I have no fingerprints to hide.", "Why does he have no fingerprint to hide?"),
    ), _scenes((5, 4, 1, 2, 0), length=30.0)),
)
QUICK = (Film(FILMS[0].name, 60, FILMS[0].lines[2:6], FILMS[0].scenes[:2]),)  # four lines, two scenes


def make_set(root: Path, films: Sequence[Film], scene_model: Path | None = None) -> Path:
    """``root/data``: the tiny model and a scene model installed (``scene_model``'s folder, linked, else
    a tiny random CLIP) and the films of ``root/films`` indexed. Made once: a set already there is used
    as it is (given the scene model's vectors if it changed), and one left half made (an interrupted
    run) is finished."""
    data, folder = root / "data", root / "films"
    if not (data / "models" / MODEL).is_dir():
        write_tiny_checkpoint(data / "models" / MODEL)
    installed = data / "models" / DEFAULT_SCENE_MODEL
    if scene_model is not None and installed.resolve() != scene_model.resolve():
        if installed.is_symlink() or installed.is_file():
            installed.unlink()
        elif installed.is_dir():
            shutil.rmtree(installed)
        installed.parent.mkdir(parents=True, exist_ok=True)
        installed.symlink_to(scene_model.resolve(), target_is_directory=True)
    elif not installed.exists():
        write_tiny_scene_model(installed)
    for film in films:
        if not (folder / film.name).is_file():
            write_video(folder / film.name, scripted(160, 120, [(c.start, c.end, c.look) for c in film.scenes]),
                        fps=5, seconds=film.seconds)
            cues = [(line.start, line.end, line.text) for line in film.lines]
            (folder / (Path(film.name).stem + ".en.srt")).write_text(srt_text(cues))
    if _indexed(data) >= {film.name for film in films}:
        _index(data, [["index", "run", "--speech", "never", "--quiet"]])  # scene vectors of a new scene model
        return data
    with LibraryStore.open(data / "library.db") as store:
        added = find_folder(store, folder) is not None  # before: a scan finds what is new, the run the rest
    _index(data, [["index", "scan"] if added else ["index", "add", str(folder)],
                  ["index", "run", "--speech", "never", "--quiet"]])
    return data


def _index(data: Path, commands: list[list[str]]) -> None:
    for args in commands:
        proc = subprocess.run([sys.executable, "-m", "cli", "--data-dir", str(data), *args],
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"llamavid {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def _indexed(data: Path) -> set[str]:
    """The films of the set's library whose features are complete."""
    if not (data / "library.db").is_file():
        return set()
    with LibraryStore.open(data / "library.db") as store:
        return {m.rel_path for m in library.list_movies(store) if m.features_complete}


def moments_of(service: ChatService, conversation_id: int, question: str) -> list[Moment]:
    """The moments of one question's answer in a kept conversation."""
    events = list(service.ask(conversation_id, question, ANSWER))
    failed = next((e for e in events if e.type == "error"), None)
    if failed is not None:
        raise RuntimeError(f"{question!r}: {failed.kind}: {failed.text}")
    return list(next((e.moments for e in events if e.type == "moments"), ()))


def hit(moments: Sequence[Moment], truth: Line | Scene, k: int) -> bool:
    """A line: a moment starts within TOLERANCE of it; a scene: one starts inside it (or TOLERANCE before)."""
    if isinstance(truth, Scene):
        return any(truth.start - TOLERANCE <= m.start < truth.end for m in moments[:k])
    return any(abs(m.start - truth.start) <= TOLERANCE for m in moments[:k])


@dataclass
class Asked:
    mode: str
    kind: str  # quote, paraphrase or scene
    film: str
    line: Line | Scene
    question: str
    moments: list[Moment]
    seconds: float


def _questions(line: Line) -> Iterable[tuple[str, str]]:
    yield "quote", line.text
    yield "paraphrase", line.paraphrase


def _asked(film: Film) -> Iterable[tuple[str, str, Line | Scene]]:
    """Every question about a film: two per line, one per scene."""
    for line in film.lines:
        for kind, question in _questions(line):
            yield kind, question, line
    for scene in film.scenes:
        yield "scene", scene.description, scene


def ask_all(service: ChatService, films: Sequence[Film], modes: Sequence[str]) -> Iterable[Asked]:
    """Every question of every film in every mode (see the module docstring)."""
    for film in films:
        movie = service.movie(Path(film.name).name)
        for mode in modes:
            if mode == "follow-up":
                yield from _follow_ups(service, movie.id, film)
                continue
            for kind, question, truth in _asked(film):
                conv = service.new_conversation(movie.id, fast=mode == "fast")
                start = time.perf_counter()
                found = moments_of(service, conv.id, question)
                yield Asked(mode, kind, film.name, truth, question, found, time.perf_counter() - start)


def _follow_ups(service: ChatService, movie_id: int, film: Film) -> Iterable[Asked]:
    """Conversations whose first question quotes a line of another group; then both questions of
    each line of the group (at most four lines a conversation: the turns fit the tiny context); the
    scenes the same way, two a conversation after a quote."""
    lines = film.lines
    size = min(4, max(1, len(lines) // 2))
    groups = [[(kind, question, line) for line in lines[first:first + size] for kind, question in _questions(line)]
              for first in range(0, len(lines), size)]
    groups += [[("scene", s.description, s) for s in film.scenes[first:first + 2]]
               for first in range(0, len(film.scenes), 2)]
    for n, group in enumerate(groups):
        conv = service.new_conversation(movie_id)
        moments_of(service, conv.id, lines[((n + 1) * size) % len(lines)].text)
        for kind, question, truth in group:
            start = time.perf_counter()
            found = moments_of(service, conv.id, question)
            yield Asked("follow-up", kind, film.name, truth, question, found, time.perf_counter() - start)


def summarize(asked: Sequence[Asked]) -> list[dict]:
    """Hit@1 and Hit@5 (percent) per mode and kind of question."""
    out = []
    for mode in MODES:
        for kind in KINDS:
            rows = [a for a in asked if a.mode == mode and a.kind == kind]
            if rows:
                n = len(rows)
                out.append({"bench": "moments", "mode": mode, "kind": kind, "questions": n,
                            "hit@1": round(100 * sum(hit(a.moments, a.line, 1) for a in rows) / n, 1),
                            "hit@5": round(100 * sum(hit(a.moments, a.line, 5) for a in rows) / n, 1),
                            "seconds": round(sum(a.seconds for a in rows) / n, 3)})
    return out


def miss_record(a: Asked) -> dict:
    said = a.line.text if isinstance(a.line, Line) else f"[scene {a.line.start:g}-{a.line.end:g} s]"
    return {"miss": a.mode, "kind": a.kind, "film": a.film, "question": a.question, "line": said,
            "line_start": a.line.start, "moments": [m.to_dict() for m in a.moments[:3]]}


def _time_moment_lists(service: ChatService) -> list[float]:
    """Seconds each answer's moment list takes (the cue search, the question's scene evidence, the
    ranking), measured where the service makes it: what a moment list adds to an answer."""
    seconds: list[float] = []
    make = service._chats.moments  # noqa: SLF001 - the one place an answer's moments are made

    def timed(live, turn):
        start = time.perf_counter()
        try:
            return make(live, turn)
        finally:
            seconds.append(time.perf_counter() - start)

    service._chats.moments = timed  # noqa: SLF001
    return seconds


def run_bench(root: Path, films: Sequence[Film] = FILMS, modes: Sequence[str] = MODES,
              stream: TextIO = sys.stdout, misses: bool = False, device: str = "cpu",
              scene_model: Path | None = None) -> list[dict]:
    """Make (or reuse) the set under ``root``, ask every question, print and return the figures."""
    data = make_set(root, films, scene_model)
    service = ChatService(data, model=MODEL, language="en", load=LoadOptions(device=device, dtype="fp32"))
    listing = _time_moment_lists(service)
    try:
        asked = []
        for a in ask_all(service, films, modes):
            asked.append(a)
            if misses and not hit(a.moments, a.line, 1):
                print(json.dumps(miss_record(a), ensure_ascii=False), file=stream, flush=True)
    finally:
        service.close()
    records = summarize(asked)
    if listing:
        ordered = sorted(listing)
        records.append({"bench": "moment-list", "answers": len(ordered),
                        "median_ms": round(1000 * ordered[len(ordered) // 2], 2),
                        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
                        "max_ms": round(1000 * ordered[-1], 2)})
    for record in records:
        print(json.dumps(record), file=stream, flush=True)
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="one film and four of its lines (seconds, not minutes)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)} (default: all)")
    parser.add_argument("--work", metavar="DIR",
                        help="make the set here and keep it (a set already there is used); default: a temp folder")
    parser.add_argument("--misses", action="store_true", help="also print each question whose first moment missed")
    parser.add_argument("--device", default="cpu", help="where the tiny model runs (default cpu)")
    parser.add_argument("--scene-model", metavar="NAME_OR_FOLDER",
                        help="an installed scene model (clip-vit-b-32 once pulled) or a CLIP folder for the "
                             "scene vectors; default: a tiny one with random weights (only lines can score)")


def run(args: argparse.Namespace) -> int:
    from llamavid.errors import UserError

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise UserError(f"--modes: choose from {', '.join(MODES)}")
    films = QUICK if args.quick else FILMS
    scene_model = None
    if args.scene_model:
        from llamavid.paths import resolve_data_dir

        scene_model = scene_model_folder(args.scene_model, resolve_data_dir(getattr(args, "data_dir", None)))
    if args.work:
        run_bench(Path(args.work), films, modes, misses=args.misses, device=args.device, scene_model=scene_model)
        return 0
    with tempfile.TemporaryDirectory(prefix="llamavid-moments-bench-") as tmp:
        run_bench(Path(tmp), films, modes, misses=args.misses, device=args.device, scene_model=scene_model)
    return 0
