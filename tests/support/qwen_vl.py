"""The second family's test files: a tiny random Qwen3-VL (``llamavid.model.qwen_vl_tiny``) and its GGUF +
mmproj made by llama.cpp's own converter (``tests.support.llamacpp_converter``), each made once per
session in pytest's base temporary folder, whichever test module asks first; and the inputs the
tests ask about (an image, a clip, a library film with subtitles), the same for every backend.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from llamavid.prompt.qwen_vl import FilmBudget, FilmPlan, QwenPrompt, clip_prompt, film_prompt, image_prompt, plan_film
from llamavid.prompt.subtitles import Cue
from tests.support.llamacpp_converter import converter

#: A film of ten minutes at 1920x1080, planned with a budget the tiny model reads in a blink: 8
#: tokens per pair of frames (a 128x64 frame), 64 visual tokens, so 16 frames in 8 pairs.
FILM_SECONDS = 600.0
FILM_BUDGET = FilmBudget(visual_tokens=64, tokens_per_pair=8)
CUES = [Cue(12.0, 15.5, "Where are we going tonight?"), Cue(100.0, 104.0, "To the harbor, before the ship leaves."),
        Cue(101.0, 105.0, "Then hurry."), Cue(305.0, 309.0, "The captain is looking at the sea."),
        Cue(590.0, 598.0, "It's over.")]


def _made_once(base: Path, name: str, make) -> Path:
    """``base/name``, made by ``make(tmp)`` into a temporary sibling and renamed, unless it exists."""
    final = base / name
    if not final.exists():
        tmp = base / f".{name}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        make(tmp)
        try:
            tmp.rename(final)
        except OSError:  # made by someone else meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_qwen_vl(factory: pytest.TempPathFactory) -> Path:
    from llamavid.model.qwen_vl_tiny import write_tiny_qwen_vl

    return _made_once(factory.getbasetemp(), "qwen3-vl-tiny", lambda tmp: write_tiny_qwen_vl(tmp, seed=0))


@dataclass(frozen=True)
class TinyGguf:
    model: Path
    mmproj: Path


def tiny_qwen_vl_gguf(factory: pytest.TempPathFactory) -> TinyGguf:
    """The tiny model's GGUF (f32) and mmproj (f32), made by the installed llama-cpp-python's own
    converter; skips the test, saying why, where that converter's sdist is not found."""
    conv, why = converter()
    if conv is None:
        pytest.skip(why)
    folder = tiny_qwen_vl(factory)

    def make(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        conv.convert(folder, tmp / "qwen3-vl-tiny-f32.gguf", tokenizer_pre="qwen2")
        conv.convert(folder, tmp / "mmproj-qwen3-vl-tiny-f32.gguf", mmproj=True)

    out = _made_once(factory.getbasetemp(), "qwen3-vl-tiny-gguf", make)
    return TinyGguf(out / "qwen3-vl-tiny-f32.gguf", out / "mmproj-qwen3-vl-tiny-f32.gguf")


def frames(n: int, width: int = 128, height: int = 64, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def film_plan() -> FilmPlan:
    return plan_film(FILM_SECONDS, 1920, 1080, FILM_BUDGET)


def prompts() -> dict[str, QwenPrompt]:
    """The three questions both backends answer: an image, a 5-frame clip (an odd last frame), a film."""
    plan = film_plan()
    w, h = plan.size
    return {
        "image": image_prompt("What is in this picture?", frames(1, seed=2)[0]),
        "clip": clip_prompt("What happens in this video?", frames(5, seed=3), [0.0, 0.5, 1.0, 1.5, 2.0]),
        "film": film_prompt("Who is going to the harbor?", frames(len(plan.times), w, h, seed=4), plan.times, CUES),
    }
