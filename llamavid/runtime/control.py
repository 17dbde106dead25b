"""Long work that a person watches and may stop: progress events, a cancel flag, measured rates.

A film question runs the Q-Former over thousands of frames and prefills thousands of tokens before
the first word; on a CPU that takes minutes. The caller hands the engine a :class:`Control`: it may
call :meth:`Control.cancel` from any thread, and the engine checks it between Q-Former blocks,
prefill chunks and answer tokens, ending the work with :class:`llamavid.errors.Cancelled`. Progress
arrives as :class:`Progress` events with an estimate of the time left, so a window can say
"reading the film: 1,200 / 3,600 frames, about 3 min left".
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llamavid.errors import Cancelled
from llamavid.storage import write_json_atomic

log = logging.getLogger(__name__)

PHASES = ("visual", "prefill", "answer")  # Q-Former pass, reading the prompt, writing the answer


@dataclass(frozen=True)
class Progress:
    """How far one phase of a request has come."""

    phase: str  # one of PHASES
    done: int
    total: int
    unit: str  # "frames", "tokens"
    eta_seconds: float | None  # None until there is a rate to go by

    def describe(self) -> str:
        """One line for a status bar: "reading the film: 1,200 / 3,600 frames, about 3 min left"."""
        what = {"visual": "reading the film", "prefill": "reading the prompt", "answer": "answering"}[self.phase]
        left = "" if self.eta_seconds is None else f", about {rough_duration(self.eta_seconds)} left"
        return f"{what}: {self.done:,} / {self.total:,} {self.unit}{left}"


def rough_duration(seconds: float) -> str:
    """"40 s" under a minute and a half, else "3 min": how long a wait is, for a person."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


@dataclass
class Rates:
    """Throughput measured on this machine, per phase (units per second), for estimates before
    a phase has started: the pre-flight's expected time and the first progress event's ETA. Kept
    on disk per model (:meth:`read`, :meth:`write`), so the first estimate after a restart, such as
    the time a film's preparation will take, is this machine's and not a guess."""

    per_second: dict[str, float] = field(default_factory=dict)
    changed: bool = False  # since the last read or write

    def record(self, phase: str, units: int, seconds: float) -> None:
        if units <= 0 or seconds <= 0:
            return
        rate = units / seconds
        old = self.per_second.get(phase)
        self.per_second[phase] = rate if old is None else 0.5 * old + 0.5 * rate  # follows load changes
        self.changed = True

    def seconds(self, phase: str, units: int) -> float | None:
        rate = self.per_second.get(phase)
        return None if rate is None else units / rate

    def read(self, path: Path) -> None:
        """Take the rates a file kept (the ones measured since stay); a missing or damaged file is
        no rate known, never an error: rates are measured again."""
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            rates = {str(k): float(v) for k, v in kept.items() if float(v) > 0}
        except (OSError, ValueError, TypeError, AttributeError):
            return
        self.per_second = {**rates, **self.per_second}

    def write(self, path: Path) -> None:
        """Keep the rates if they changed; a failed write is logged (they are measured again)."""
        if not self.changed:
            return
        try:
            write_json_atomic(path, self.per_second)
            self.changed = False
        except OSError as exc:
            log.warning("the measured rates could not be kept in %s: %s", path, exc)


class Control:
    """A cancel flag and a progress sink for one request; safe to cancel from another thread."""

    def __init__(self, on_progress: Callable[[Progress], None] | None = None, rates: Rates | None = None):
        self._cancelled = threading.Event()
        self.on_progress = on_progress
        self.rates = rates if rates is not None else Rates()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop."""
        if self._cancelled.is_set():
            raise Cancelled("stopped by request")

    def phase(self, name: str, total: int, unit: str) -> PhaseTracker:
        return PhaseTracker(self, name, total, unit)


class PhaseTracker:
    """Progress of one phase: checks for a cancel at every step, reports done/total with an ETA from
    the rate seen so far in this phase (before the first step: the machine's last measured rate)."""

    def __init__(self, control: Control, phase: str, total: int, unit: str):
        self.control, self.phase, self.total, self.unit = control, phase, total, unit
        self.start = time.monotonic()
        self.done = 0
        self._emit(self.control.rates.seconds(phase, total))

    def update(self, done: int) -> None:
        self.control.check()
        self.done = done
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (self.total - done) if done else self.control.rates.seconds(self.phase, self.total)
        self._emit(eta)

    def finish(self) -> None:
        """Remember this phase's rate for the next estimate."""
        self.control.rates.record(self.phase, self.done, time.monotonic() - self.start)

    def _emit(self, eta: float | None) -> None:
        if self.control.on_progress is not None:
            self.control.on_progress(Progress(self.phase, self.done, self.total, self.unit, eta))
