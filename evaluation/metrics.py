"""Scores that every runner shares: accuracy overall and by a field, POPE's binary metrics, MME's
acc + acc+, mean judge scores, and Video-MME's duration buckets. Percentages are 0-100, as the papers
print them."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: Video-MME's video lengths: short < 2 min, medium 4-15 min, long 30-60 min. Films of other
#: benchmarks fall between those ranges too; they are put in the bucket whose upper bound they
#: are under (2-4 min counts as medium, 15-30 min as long).
DURATION_BUCKETS = (("short", 120.0), ("medium", 900.0), ("long", float("inf")))


def percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def accuracy(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return percent(sum(1 for f in flags if f), len(flags))


def accuracy_by(rows: Sequence[Any], key: Callable[[Any], Any], correct: Callable[[Any], bool]) -> dict[str, float]:
    """Accuracy of each value of ``key`` (a category, a split), in sorted order."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        groups[str(key(row))].append(bool(correct(row)))
    return {name: accuracy(flags) for name, flags in sorted(groups.items())}


def binary_metrics(predictions: Sequence[str], labels: Sequence[str], positive: str = "yes") -> dict[str, float]:
    """POPE's accuracy, precision, recall, F1 and yes-ratio ("yes" is the positive class)."""
    pairs = list(zip(predictions, labels, strict=True))
    tp = sum(p == positive and t == positive for p, t in pairs)
    fp = sum(p == positive and t != positive for p, t in pairs)
    tn = sum(p != positive and t != positive for p, t in pairs)
    fn = sum(p != positive and t == positive for p, t in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": percent(tp + tn, len(pairs)), "precision": 100 * precision, "recall": 100 * recall,
            "f1": 100 * f1, "yes_ratio": percent(tp + fp, len(pairs)), "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def acc_plus(pairs: Sequence[Sequence[bool]]) -> dict[str, float]:
    """MME for one subtask: acc over questions, acc+ over images (both right), score = acc + acc+."""
    questions = [flag for pair in pairs for flag in pair]
    acc = accuracy(questions)
    plus = accuracy(all(pair) for pair in pairs)
    return {"acc": acc, "acc_plus": plus, "score": acc + plus}


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def duration_bucket(seconds: float | None) -> str:
    """short / medium / long by Video-MME's upper bounds; "unknown" without a duration."""
    if seconds is None:
        return "unknown"
    return next(name for name, bound in DURATION_BUCKETS if seconds < bound)
