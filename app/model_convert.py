"""Convert a downloaded model for llama.cpp, in a child process that reports JSON lines.

    python -m app.model_convert --data-dir DIR NAME [--types q4_K_M]

On a computer whose GPU cannot hold a 7B model in fp16 (or that has none) the chat runs on
llama.cpp with the LLM in q4_K_M (:mod:`llamavid.runtime.llm_choice`), made once from the
downloaded checkpoint into ``<data>/models/<NAME>-gguf`` (:mod:`llamavid.runtime.gguf_export`).
That takes minutes and several GB of disk, so the desktop app and the web UI run it as this child:
their window never waits on it, and it can be stopped at any moment. SIGTERM stops it like Ctrl-C:
the files already complete stay, the one under way (a ``.part``) goes, and the next run goes on
from there. Its disk space is said (and checked) before anything is written. Progress is the
bytes written, watched as the files grow. One JSON object per line on stdout:

    {"event": "plan", "name": ..., "folder": ..., "files": 3, "total": bytes at the end, "done": bytes
     already complete, "needed": bytes still to write at the peak, "free": bytes free on that disk}
    {"event": "file", "label": "llm-q4_K_M.gguf", "index": 2, "count": 3}
    {"event": "progress", "done": ..., "total": ...}
    {"event": "done", "folder": ...}
    {"event": "error", "message": ...}           (exit status 1)
    {"event": "cancelled", "kept": bytes}        (exit status 130)
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from app.model_pull import POLL_SECONDS, emit, stop_like_ctrl_c
from llamavid.errors import UserError
from llamavid.hub.installed import resolve_model, search_dirs
from llamavid.paths import DataDir
from llamavid.runtime.gguf_export import ConversionPlan, plan_conversion, run_conversion
from llamavid.runtime.llm_choice import CPU_GGUF_TYPE, converted_folder
from llamavid.runtime.load import choose_engine
from llamavid.runtime.options import LoadOptions
from llamavid.storage import check_free_space, free_bytes, human_size

log = logging.getLogger(__name__)


def plan_for(data: DataDir, name: str, types: tuple[str, ...] = (CPU_GGUF_TYPE,)) -> ConversionPlan:
    """The conversion of installed model ``name`` into its ``-gguf`` folder (what the front ends
    show before starting it). UserError for a model that is not there or cannot be converted."""
    folder = resolve_model(name, data)
    try:
        return plan_conversion(folder, converted_folder(data, name), types, search_dirs=search_dirs(data))
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None


@dataclass(frozen=True)
class Offer:
    """A conversion the chat needs before it can load its model (what the setup views offer, with
    a button): the model, why it runs on llama.cpp here, and the disk it takes."""

    name: str
    why: str
    folder: Path  # where the conversion goes
    needed: int  # bytes still to write, at the peak (the f16 file the quantizer reads included)
    final: int  # bytes it takes once done
    free: int  # bytes free on that disk
    present: int  # bytes already complete from a stopped conversion

    @property
    def fits(self) -> bool:
        return self.needed <= self.free

    def describe(self) -> str:
        """One sentence for every front end (Markdown)."""
        done = (f"; {human_size(self.present)} of it is already done from a stopped conversion, which goes on "
                f"from there" if self.present else "")
        size = f"about {human_size(self.needed)} of disk while it runs, {human_size(self.final)} once done"
        disk = (f"{size} ({human_size(self.free)} free{done})" if self.fits else
                f"{size}, but only {human_size(self.free)} is free: free some space first")
        return (f"**{self.name}** runs on llama.cpp on this computer ({self.why}), with its LLM in {CPU_GGUF_TYPE} "
                f"and a film's KV cache in q8_0. That takes a one-time conversion of the downloaded checkpoint: "
                f"{disk}.")

    def button(self) -> str:
        return f"Convert for llama.cpp ({human_size(self.final)})"


def conversion_offer(data: DataDir, name: str | None, options: LoadOptions) -> Offer | None:
    """The conversion ``name`` needs before the chat can load it with ``options`` (``load_model``'s
    own choice, :func:`llamavid.runtime.load.choose_engine`), or None: none needed, no model, or a
    model that cannot be read (loading it says why)."""
    if not name:
        return None
    try:
        folder = resolve_model(name, data)
        engine = choose_engine(name, folder, options, data.root)
        if engine.convert_to is None:
            return None
        plan = plan_for(data, name)
    except (UserError, OSError):
        return None
    return Offer(name, engine.why, plan.out, plan.needed, plan.final, free_bytes(plan.out), plan.present)


class _Reporter:
    """Turns the bytes on disk into ``file`` events (when the next file starts) and ``progress``
    events against the total the plan said, never going back (the quantizer's input is deleted at
    the end, and an estimate is not exact)."""

    def __init__(self, plan: ConversionPlan, total: int) -> None:
        first = next((i for i, s in enumerate(plan.steps) if not s.done), len(plan.steps))
        self.plan, self.total, self.current, self.done = plan, total, first - 1, 0

    def __call__(self, on_disk: int) -> None:
        steps = self.plan.steps
        index = next((i for i in range(max(self.current, 0), len(steps)) if not steps[i].done), len(steps) - 1)
        self._files_up_to(index)
        self.done = max(self.done, min(on_disk, self.total))
        emit(event="progress", done=self.done, total=self.total)

    def finish(self) -> None:
        """Every file is written (the quantizer's input already deleted): name those not named yet."""
        self._files_up_to(len(self.plan.steps) - 1)

    def _files_up_to(self, index: int) -> None:
        steps = self.plan.steps
        for passed in range(self.current + 1, index + 1):  # a quick file may start and end between two looks
            emit(event="file", index=passed + 1, count=len(steps), label=steps[passed].path.name)
        self.current = max(self.current, index)


def convert(data: DataDir, name: str, types: tuple[str, ...]) -> int:
    """Plan, check the disk, convert; every outcome is one event (see the module docstring)."""
    plan = plan_for(data, name, types)
    total = plan.total
    emit(event="plan", name=name, folder=str(plan.out), files=len(plan.steps), total=total, done=plan.present,
         needed=plan.needed, free=plan.free())
    check_free_space(plan.out, plan.needed, f"converting {name} for llama.cpp")
    reporter = _Reporter(plan, total)
    try:
        run_conversion(plan, reporter, POLL_SECONDS)
        reporter.finish()  # a conversion quicker than one look still names its files
    except KeyboardInterrupt:
        emit(event="cancelled", kept=plan.kept())
        return 130
    emit(event="progress", done=total, total=total)
    emit(event="done", folder=str(plan.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.model_convert", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--types", default=CPU_GGUF_TYPE, help=f"comma-separated GGUF types (default {CPU_GGUF_TYPE})")
    parser.add_argument("name", help="an installed model (llamavid models list)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    try:
        return convert(DataDir(Path(args.data_dir)), args.name, tuple(t for t in args.types.split(",") if t))
    except KeyboardInterrupt:  # before the work started: nothing was written
        emit(event="cancelled", kept=0)
        return 130
    except UserError as exc:
        emit(event="error", message=str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - the parent shows it; the traceback goes to stderr
        log.exception("converting %s failed", args.name)
        emit(event="error", message=f"{exc.__class__.__name__}: {exc}")
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # a stopped conversion leaves its worker thread inside llama.cpp: do not wait for it
