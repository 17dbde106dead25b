"""How long the library's indexing will take, from this machine's measured rate, in the order it runs.

One rule for every front end (``llamavid index status``, the web UI, the desktop): a film still to
index costs its frames not yet read divided by the feature rate last measured here (frames per
second, :meth:`indexer.store.LibraryStore.last_rate`); the library's estimate is the sum over the
films, listed in the order the queue takes them (:meth:`indexer.store.LibraryStore.queue_order`).
A film not yet probed (its length unknown) counts as long as the library's films are on average
(an hour and a half when none is known). Until one film has been read there is no rate, and the
estimate says so rather than guess.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from indexer.library import Movie
from indexer.store import LibraryStore
from llamavid.runtime.control import rough_duration

MAX_LISTED = 5  # films named in one line; the rest are counted
TYPICAL_FILM_SECONDS = 5400.0  # a film's length before any film of the library has been probed


@dataclass(frozen=True)
class FilmEstimate:
    movie: Movie
    seconds: float | None  # None: no rate measured on this machine yet


@dataclass(frozen=True)
class LibraryEstimate:
    films: list[FilmEstimate]   # in the order they will be indexed
    rate: float | None          # frames per second measured here

    @property
    def seconds(self) -> float | None:
        if self.rate is None:
            return None
        return sum(f.seconds or 0.0 for f in self.films)

    def describe(self) -> str:
        """One line: "3 films to index, about 2 h: Harbor.mp4 (40 min), Night.mkv (1 h 10 min)…"."""
        if not self.films:
            return "nothing to index"
        n = len(self.films)
        head = f"{n} film{'s' if n != 1 else ''} to index"
        if self.seconds is not None:
            head += f", about {long_duration(self.seconds)}"
        else:
            head += " (how long: known once the first film has been read on this computer)"
        names = [f.movie.rel_path + (f" ({long_duration(f.seconds)})" if f.seconds is not None else "")
                 for f in self.films[:MAX_LISTED]]
        more = f", and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
        return f"{head}: next {', then '.join(names)}{more}"


def film_seconds(movie: Movie, rate: float | None, typical: float = TYPICAL_FILM_SECONDS) -> float | None:
    """Seconds left for one film: its frames not yet read at ``rate`` frames per second (one frame
    per second of film; a film not probed yet is taken to last ``typical`` seconds)."""
    if not rate:
        return None
    expected = (movie.duration or typical) * (movie.fps or 1.0)
    return max(0.0, expected - movie.frames) / rate


def library_estimate(store: LibraryStore, movies: Sequence[Movie]) -> LibraryEstimate:
    """The films still to index, in queue order, each with its time at this machine's rate."""
    by_id = {m.id: m for m in movies}
    rate, typical = store.last_rate(), typical_duration(movies)
    films = [FilmEstimate(by_id[i], film_seconds(by_id[i], rate, typical)) for i in store.queue_order() if i in by_id]
    return LibraryEstimate(films, rate)


def typical_duration(movies: Sequence[Movie]) -> float:
    """The mean length of the library's probed films (what an unprobed one is taken to last)."""
    known = [m.duration for m in movies if m.duration]
    return sum(known) / len(known) if known else TYPICAL_FILM_SECONDS


def long_duration(seconds: float) -> str:
    """"40 min", "7 h 20 min", "3 days 4 h": how long indexing takes, for a person."""
    if seconds < 3600:
        return rough_duration(seconds)
    if seconds < 48 * 3600:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h" + (f" {minutes} min" if minutes and hours < 10 else "")
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} days" + (f" {hours} h" if hours else "")
