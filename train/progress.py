"""What a run shows while it trains: a progress bar, log lines, a JSON-lines log and TensorBoard.

On a terminal: a tqdm bar with loss, learning rate and speed. Redirected to a file (cluster jobs):
one plain line per ``--log-every`` steps instead of carriage-return noise. Always: one JSON object
per step in ``OUTPUT/train_log.jsonl``. With ``--tensorboard``: scalars under ``OUTPUT/tensorboard``.
Only rank 0 reports.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llamavid.errors import require


class Progress:
    def __init__(self, output: Path, total: int, start: int, enabled: bool, log_every: int = 1,
                 tensorboard: bool = False):
        self.enabled, self.total, self.log_every = enabled, total, max(1, log_every)
        self.started = time.monotonic()
        self.first_step = start
        self.bar = None
        self.writer = None
        self.log_file = None
        if not enabled:
            return
        # a fresh run starts a new log; a resumed one continues it
        self.log_file = open(Path(output) / "train_log.jsonl", "a" if start else "w", encoding="utf-8")
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=start, desc="training", unit="step", dynamic_ncols=True)
        if tensorboard:  # an optional dependency, imported only when asked for
            board = require("torch.utils.tensorboard", "tensorboard", "--tensorboard")
            self.writer = board.SummaryWriter(str(Path(output) / "tensorboard"))

    def step(self, step: int, values: dict[str, Any]) -> None:
        """Report optimizer step ``step`` (1-based) and its values (loss, lr, grad_norm, ...)."""
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        rate = (step - self.first_step) / elapsed if elapsed > 0 else 0.0
        record = {"step": step, **{k: _plain(v) for k, v in values.items()}, "elapsed_s": round(elapsed, 2)}
        self.log_file.write(json.dumps(record) + "\n")
        self.log_file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{values.get('loss', 0):.4f}", lr=f"{values.get('lr', 0):.2e}")
            self.bar.update(1)
        elif step % self.log_every == 0 or step == self.total:
            eta = (self.total - step) / rate if rate > 0 else 0.0
            print(f"step {step}/{self.total}  loss {values.get('loss', 0):.4f}  lr {values.get('lr', 0):.2e}  "
                  f"grad_norm {values.get('grad_norm', 0):.3f}  {rate:.2f} steps/s  eta {_duration(eta)}", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.log_file is not None:
            self.log_file.close()


def _plain(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"
