"""Terminal progress for ``llamavid index run``: one tqdm bar per movie stage, one line per outcome."""
from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """Receives the pipeline's progress callbacks and the runner's outcomes."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bar = None
        self.key = None

    def update(self, movie: dict, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        key = (movie["id"], stage)
        if key != self.key:
            self.close()
            unit = "frame" if stage in ("features", "scenes") else "window"
            self.bar = tqdm(total=total, desc=f"{movie['rel_path']} [{stage}]", unit=unit,
                            file=self.stream, dynamic_ncols=True, leave=False)
            self.key = key
        if total and total != self.bar.total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def event(self, movie: dict, outcome: str, message: str | None) -> None:
        self.close()
        line = f"{outcome:>9}  {movie['path']}" + (f": {message}" if message else "")
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None
