"""What every benchmark runner provides; the runner loop (``evaluation.runner``) does the rest."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.catalog import CATALOG
from evaluation.items import Item

Answers = dict[str, dict[str, Any]]     # item id -> answer record
Verdicts = dict[str, dict[str, Any]]    # verdict id -> judge record


@dataclass(frozen=True)
class Options:
    """Choices a benchmark may take; each reads only its own."""

    split: str | None = None        # VizWiz val/test, VQAv2 subtype, ScienceQA split
    subtitles: str = "both"         # long video: with, without or both
    lang: str | None = None         # MMBench: en or cn (default: from the file name)
    media: Path | None = None       # images or videos somewhere else than the default folder


class Benchmark:
    """One benchmark family: reads its official files, scores answered items, writes submissions."""

    name = ""
    title = ""
    layout = ""             # what --data must hold, shown by `llamavid eval list` and in errors
    input_kind = "image"    # image, video or film (films come from the indexer's library)
    max_new_tokens = 128
    judged = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Title, layout, input kind and judging come from :data:`evaluation.catalog.CATALOG`."""
        super().__init_subclass__(**kwargs)
        entry = CATALOG.get(cls.name)
        if entry is not None:
            cls.title, cls.layout, cls.input_kind, cls.judged = entry.title, entry.layout, entry.kind, entry.judged

    def __init__(self, data: Path, options: Options | None = None):
        self.data = Path(data).expanduser()
        self.options = options or Options()

    def items(self) -> list[Item]:
        raise NotImplementedError

    def score(self, items: Sequence[Item], answers: Answers, verdicts: Verdicts) -> dict[str, Any]:
        raise NotImplementedError

    def outputs(self, items: Sequence[Item], answers: Answers, out: Path) -> list[str]:
        """Write the benchmark's submission files into ``out``; their names."""
        return []

    def verdict_requests(self, items: Sequence[Item], answers: Answers) -> list[tuple[str, list[dict]]]:
        """(verdict id, chat messages) for each judge call the answered items need."""
        return []

    def video_folders(self) -> list[Path]:
        """Folders of the benchmark's videos (indexed for film benchmarks)."""
        return []

    def settings(self) -> dict[str, Any]:
        """The options that change the answers, for the run's identity."""
        return {}


def answered(items: Sequence[Item], answers: Answers) -> list[tuple[Item, dict[str, Any]]]:
    """(item, record) for the items that have an answer, in item order."""
    return [(item, answers[item.id]) for item in items if item.id in answers]
