"""Which subtitle lines say what a text says: the one search of the library's dialogue, behind
``llamavid index search``, the server's ``GET /v1/search`` and the moments of a film's answers.

A text (a quote someone remembers, a question, an answer) becomes its terms (:mod:`indexer.terms`:
stemmed as the index stems, irregular forms joined, stop words out, so "the" alone finds nothing
and "hid" finds "hide"). FTS5 finds the lines that hold any of them, its bm25 ranking picking the
candidates; each candidate is then scored by :func:`closeness`, from 0 to 1:

* ``recall``: the share of the text's terms the line holds, each weighted by its BM25 inverse
  document frequency in the searched cues (a film's track, a film, or the whole library), so a
  rare word counts for more than a common one;
* ``precision``: the share of the line's own terms the text holds, so a line that says the text
  and nothing else ranks above a long one that also says it;
* ``closeness`` is their F2 measure, ``5 P R / (4 P + R)``: recall counts four times as much, since
  a question holds words of its own ("who said...") while a line matched by all of the question's
  words is the line meant. A line quoted word for word scores 1; one shared word of five, about 0.2.

Lines of equal closeness keep FTS5's bm25 order.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import sqlite_utils

from indexer.store import LibraryStore
from indexer.terms import query_terms, term_words

CANDIDATES = 200  # lines FTS5 hands over per search at least, its best bm25 first
MAX_TERMS = 64  # a longer text (a model's long answer) is searched for by its first 64 terms
MAX_LIMIT = 1000  # lines one search returns at most


@dataclass(frozen=True)
class CueMatch:
    """One subtitle line found for a text."""

    movie_id: int
    path: str        # the film's file (absolute)
    rel_path: str    # the film's path relative to its library folder
    track_id: int
    start: float
    end: float
    text: str
    source: str      # sidecar, embedded, asr
    score: float     # closeness to the text searched for, 0 to 1 (1: says it word for word)
    bm25: float      # FTS5's bm25 of the candidate (lower is better)
    kind: str = "quote"  # what the library's one search found (indexer.scenes_search: quote or scene)

    def to_dict(self) -> dict:
        """The script-facing shape (``index search --json``, ``GET /v1/search``): no absolute path."""
        return {"kind": self.kind, "movie_id": self.movie_id, "path": self.rel_path, "start": round(self.start, 3),
                "end": round(self.end, 3), "text": self.text, "score": round(self.score, 4)}

    def describe(self) -> str:
        """One line for a person: the film, the time and the line ("Harbor.mkv  0:00:40-0:00:43  I will...")."""
        said = " / ".join(part.strip() for part in self.text.splitlines() if part.strip())
        return f"{self.rel_path}  {_clock(self.start)}-{_clock(self.end)}  {said}"


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def closeness(wanted: Iterable[str], said: Iterable[str], weights: dict[str, float] | None = None) -> float:
    """How closely a line with terms ``said`` says a text with terms ``wanted`` (see the module
    docstring); ``weights``: a term's inverse document frequency (missing terms weigh 1)."""
    wanted, said = set(wanted), set(said)
    shared = wanted & said
    if not shared:
        return 0.0
    weight = (weights or {}).get
    recall = sum(weight(t, 1.0) for t in shared) / sum(weight(t, 1.0) for t in wanted)
    precision = len(shared) / len(said)
    return 5 * precision * recall / (4 * precision + recall)


def idf(cues: int, having: int) -> float:
    """BM25's inverse document frequency of a term ``having`` of ``cues`` lines hold (always > 0)."""
    return math.log(1 + (cues - having + 0.5) / (having + 0.5))


def _fts_query(words: Iterable[str]) -> str:
    """An FTS5 query for any of these words, each a quoted string (FTS5 stems it as it stems the index)."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def search_cues(db: sqlite_utils.Database | LibraryStore, text: str, movie_id: int | None = None,
                track_id: int | None = None, limit: int = 20) -> list[CueMatch]:
    """The ``limit`` lines that say ``text`` most closely, best first: in the whole library, one
    film (``movie_id``) or one of its subtitle tracks (``track_id``)."""
    store = db if isinstance(db, LibraryStore) else LibraryStore(db)
    terms = dict(list(term_words(text).items())[:MAX_TERMS])
    if not terms or limit < 1:
        return []
    limit = min(limit, MAX_LIMIT)
    rows = store.match_cues(_fts_query(w for words in terms.values() for w in words), movie_id, track_id,
                            max(CANDIDATES, 10 * limit))
    if not rows:
        return []
    cues = store.count_cues(None, movie_id, track_id)
    weights = {t: idf(cues, store.count_cues(_fts_query(words), movie_id, track_id)) for t, words in terms.items()}
    found = [CueMatch(r["movie_id"], r["path"], r["rel_path"], r["track_id"], r["start"], r["end"], r["text"],
                      r["source"], closeness(terms, query_terms(r["text"]), weights), r["bm25"]) for r in rows]
    found = [m for m in found if m.score > 0]  # FTS5 and Python agree on words; a stray difference drops out
    found.sort(key=lambda m: (-m.score, m.bm25, m.movie_id, m.start))
    return found[:limit]
