"""Which model family and size to download for this computer, with the memory each needs.

:func:`app.hardware.recommend` says how to run a model already chosen; this says which one to
choose, across both families (docs/second-family.md), from the catalogue's memory figures (the
weights plus an hour of film in the model's cache, :mod:`llamavid.hub.catalog`):

* **a GPU** whose free memory holds a Qwen3-VL with an hour of film gets the largest that fits:
  the transformers weights (bf16) first, the published GGUF (q4_K_M) on llama.cpp's GPU layers
  next. Qwen3-VL answers long-video benchmarks far better than LLaMA-VID (MLVU 33 for LLaMA-VID-7B,
  68-85 for this year's small models) and a GPU reads its ~28K film tokens in seconds;
* **a CPU** gets Qwen3-VL-4B as a GGUF where the RAM holds it (the family's default size), else the
  2B. Prefill on a CPU is slow for both families: the advice names LLaMA-VID 7B q4 on llama.cpp as
  the alternative where it fits, because its prepared films ("fast answers") answer a new question in
  seconds, which Qwen3-VL cannot do yet;
* RAM too small for even the 2B: the 2B anyway, saying to close other programs.

The 8B is never advised for a CPU: it reads a film no better per second than the 4B reads it.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.hardware import GiB, Hardware
from llamavid.hub import catalog
from llamavid.hub.catalog import LLAMA_VID_7B_Q4_MEMORY

__all__ = ["Choice", "FamilyAdvice", "advise"]

#: Catalogue entries a GPU may take, the most capable first.
GPU_ORDER = ("qwen3-vl-8b-instruct", "qwen3-vl-4b-instruct", "qwen3-vl-8b-instruct-gguf",
             "qwen3-vl-4b-instruct-gguf", "qwen3-vl-2b-instruct", "qwen3-vl-2b-instruct-gguf")
#: The same for a CPU: GGUFs on llama.cpp only, and not the 8B.
CPU_ORDER = ("qwen3-vl-4b-instruct-gguf", "qwen3-vl-2b-instruct-gguf")
LLAMA_VID_FILM = "llama-vid-7b-full-224-long-video"


@dataclass(frozen=True)
class Choice:
    """One model the advice names: catalogue name, family, where it runs and the memory it needs."""

    model: str
    family: str
    device: str  # "gpu" or "cpu"
    memory: int  # bytes, with an hour of film in its cache
    runs_as: str  # "transformers, bf16" / "llama.cpp, q4_K_M"

    def line(self) -> str:
        where = "on the GPU" if self.device == "gpu" else "on the CPU"
        return f"{self.model} ({self.runs_as} {where}, about {self.memory / GiB:.1f} GiB with an hour of film)"


@dataclass(frozen=True)
class FamilyAdvice:
    """The model to pick (``best``), why, and the alternatives that also fit."""

    best: Choice
    reason: str
    alternatives: tuple[Choice, ...] = ()

    def text(self) -> str:
        """One paragraph for the first-run dialog and ``llamavid doctor``."""
        out = f"Suggested model: {self.best.line()}. {self.reason}"
        if self.alternatives:
            out += " Also fits: " + "; ".join(a.line() for a in self.alternatives) + "."
        return out


def _choice(name: str, device: str) -> Choice:
    entry = catalog.get(name)
    if entry is None or entry.memory is None:
        raise LookupError(f"the catalogue has no memory figure for {name}")
    runs_as = "llama.cpp, q4_K_M" if name.endswith("-gguf") else "transformers, bf16"
    return Choice(name, "qwen-vl", device, entry.memory, runs_as)


def _llama_vid_cpu() -> Choice:
    return Choice(LLAMA_VID_FILM, "llama-vid", "cpu", LLAMA_VID_7B_Q4_MEMORY, "llama.cpp, q4_K_M")


def _llama_vid_gpu() -> Choice:
    entry = catalog.get(LLAMA_VID_FILM)
    assert entry is not None and entry.memory is not None
    return Choice(LLAMA_VID_FILM, "llama-vid", "gpu", entry.memory, "transformers, fp16")


def advise(hw: Hardware) -> FamilyAdvice:
    """The family and size for ``hw``'s memory free now (see the module docstring)."""
    gpu = max(hw.gpus, key=lambda g: g.free, default=None)
    if gpu is not None:
        fits = [_choice(n, "gpu") for n in GPU_ORDER if _choice(n, "gpu").memory <= gpu.free]
        if fits:
            best = fits[0]
            others = [c for c in fits[1:] if c.runs_as != best.runs_as][:1]
            lv = _llama_vid_gpu()
            others += [lv] if lv.memory <= gpu.free else []
            return FamilyAdvice(best, f"{gpu.name} has {gpu.free / GiB:.1f} GiB free: Qwen3-VL reads a film's "
                                      "frames there in seconds and answers long-video questions far better "
                                      "than LLaMA-VID.", tuple(others))
    ram = hw.ram_available if hw.ram_available is not None else hw.ram_total
    gpu_note = f" ({gpu.name} has only {gpu.free / GiB:.1f} GiB free)" if gpu is not None else ""
    if ram is None:
        return FamilyAdvice(_choice(CPU_ORDER[0], "cpu"), f"The free memory is unknown{gpu_note}: the default "
                                                          "Qwen3-VL size, on the CPU.")
    fits = [_choice(n, "cpu") for n in CPU_ORDER if _choice(n, "cpu").memory <= ram]
    lv = _llama_vid_cpu()
    others = tuple([lv] if lv.memory <= ram else [])
    slow = (" On a CPU a new film conversation first reads the film: minutes for Qwen3-VL; LLaMA-VID's "
            "prepared films answer in seconds." if others else
            " On a CPU a new film conversation first reads the film: minutes.")
    if fits:
        best = fits[0]
        why = (f"{ram / GiB:.1f} GiB of RAM free and no GPU that holds a Qwen3-VL{gpu_note}: the "
               f"{'default' if best.model == CPU_ORDER[0] else 'smallest'} Qwen3-VL on llama.cpp.")
        return FamilyAdvice(best, why + slow, others + tuple(fits[1:]))
    smallest = _choice(CPU_ORDER[-1], "cpu")
    return FamilyAdvice(smallest, f"Only {ram / GiB:.1f} GiB of RAM is free{gpu_note}, less than even the smallest "
                                  f"model needs ({smallest.memory / GiB:.1f} GiB): close other programs first.")
