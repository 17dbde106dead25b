"""What this computer can run, and the settings a first run proposes for a model on it.

The desktop app's first run (and anyone else who asks) gets a device, a backend and a quantization
that fit the detected hardware and the memory free now, with one sentence saying why. The rule:

* a folder converted for llama.cpp (``llamavid models convert-gguf``) runs on llama.cpp;
* a CUDA GPU takes the model in fp16 if its free memory holds the weights plus room for a film's
  context (the KV cache of an hour of film with subtitles is several GiB for a 7B model);
* Apple's MPS takes it in fp16 (bitsandbytes does not run there);
* anywhere else a released 7B runs on llama.cpp with its LLM in q4_K_M (and a film's KV cache in
  q8_0), converted once from the checkpoint: :func:`llamavid.runtime.llm_choice.prefers_llamacpp`,
  the rule ``load_model`` follows too;
* a small model (under :data:`~llamavid.runtime.llm_choice.MIN_LLAMACPP_BYTES`) that a GPU cannot
  hold in fp16 goes in 8 bit, else in 4 bit (bitsandbytes); on the CPU it is fp32 (half precision is
  slower there, so it needs twice its size on disk), else 8 bit, else 4 bit.

Sizes come from the checkpoint on disk (released checkpoints are bf16: two bytes a parameter).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from llamavid.files import gguf_files
from llamavid.hub.installed import folder_size
from llamavid.runtime.llm_choice import BITS_PER_WEIGHT, CPU_GGUF_TYPE, gpu_holds, headroom, prefers_llamacpp
from llamavid.system import cpu_info, ram

GiB = 2**30
#: A 7B checkpoint on disk: the size assumed when a model's own is unknown.
DEFAULT_MODEL_BYTES = 15_890_000_000

__all__ = ["GiB", "Gpu", "Hardware", "Recommendation", "detect", "headroom", "model_size", "recommend"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total: int  # bytes
    free: int  # bytes free now


@dataclass(frozen=True)
class Hardware:
    cpu: str
    cores: int
    ram_total: int | None
    ram_available: int | None
    gpus: tuple[Gpu, ...] = ()
    mps: bool = False

    def describe(self) -> str:
        """One line: "2 CPU cores (Xeon), 23.4 GiB RAM (14.0 GiB free); no GPU"."""
        cpu = f"{self.cores} CPU cores" + (f" ({self.cpu})" if self.cpu else "")
        mem = "RAM unknown" if self.ram_total is None else f"{_gib(self.ram_total)} RAM" + (
            f" ({_gib(self.ram_available)} free)" if self.ram_available is not None else "")
        if self.gpus:
            gpu = "; ".join(f"GPU {g.index}: {g.name}, {_gib(g.total)} ({_gib(g.free)} free)" for g in self.gpus)
        else:
            gpu = "Apple GPU (MPS)" if self.mps else "no GPU"
        return f"{cpu}, {mem}; {gpu}"


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def detect() -> Hardware:
    """Look at this machine now (CUDA's first call takes a moment: call it off the GUI thread)."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            gpus.append(Gpu(i, torch.cuda.get_device_name(i), int(total), int(free)))
    mem = ram()
    return Hardware(cpu=cpu_info().get("model name", ""), cores=os.cpu_count() or 1, ram_total=mem.total,
                    ram_available=mem.available, gpus=tuple(gpus), mps=bool(torch.backends.mps.is_available()))


def model_size(folder: Path | None) -> tuple[int, bool]:
    """(bytes of the checkpoint's weights, whether it is a llama.cpp GGUF folder)."""
    if folder is None or not folder.is_dir():
        return DEFAULT_MODEL_BYTES, False
    ggufs = gguf_files(folder)
    if ggufs:
        return sum(p.stat().st_size for p in ggufs), True
    return folder_size(folder) or DEFAULT_MODEL_BYTES, False


@dataclass(frozen=True)
class Recommendation:
    device: str
    backend: str
    bits: int | None
    reason: str
    gguf_type: str | None = None  # llama.cpp's weights: the conversion the model runs from


def recommend(hw: Hardware, model_bytes: int | None = None, gguf: bool = False) -> Recommendation:
    """Device, backend and bits for a model of ``model_bytes`` on disk (see the module docstring)."""
    size = model_bytes or DEFAULT_MODEL_BYTES
    best = max(hw.gpus, key=lambda g: g.free, default=None)
    cuda = (f"cuda:{best.index}" if len(hw.gpus) > 1 else "cuda") if best else None
    if gguf:
        where = f"the GPU ({best.name})" if best else "the CPU"
        return Recommendation(cuda or "cpu", "llama.cpp", None,
                              f"a GGUF model: llama.cpp on {where}")
    if best is not None and gpu_holds(size, best.free):
        return Recommendation(cuda, "auto", None, f"{best.name} has {_gib(best.free)} free: the model in fp16 "
                                                  f"({_gib(size)}) leaves {_gib(best.free - size)} for a film")
    if hw.mps:
        return Recommendation("mps", "auto", None, "Apple GPU (MPS) in fp16; bitsandbytes does not run there")
    if prefers_llamacpp(size, best.free if best else None):
        return _llamacpp(hw, size, best, cuda)
    return _small_model(hw, size, best, cuda)


def _llamacpp(hw: Hardware, size: int, best: Gpu | None, cuda: str | None) -> Recommendation:
    """llama.cpp with the LLM in q4_K_M (the vision side on the GPU when there is one), and whether
    the memory free now holds it."""
    weights = int(size * BITS_PER_WEIGHT[CPU_GGUF_TYPE] / 16)
    why = (f"{best.name} has {_gib(best.free)} free, too little for the model in fp16 ({_gib(size)} and room for "
           f"a film)" if best else "no GPU")
    reason = (f"{why}: llama.cpp with the LLM in {CPU_GGUF_TYPE} ({_gib(weights)}, converted once from the "
              f"checkpoint) and a film's KV cache in q8_0")
    available = hw.ram_available if hw.ram_available is not None else hw.ram_total
    if best is None and available is not None and available < weights + headroom(size):
        reason += f", though {_gib(available)} of free RAM is tight for it: close other programs"
    return Recommendation(cuda or "cpu", "llama.cpp", None, reason, CPU_GGUF_TYPE)


def _small_model(hw: Hardware, size: int, best: Gpu | None, cuda: str | None) -> Recommendation:
    """A model too small to be worth a conversion: bitsandbytes on a GPU that cannot hold it in fp16,
    else the CPU in fp32, 8 or 4 bit as the RAM free now allows."""
    room = headroom(size)
    if best is not None:
        for bits in (8, 4):
            if gpu_holds(size, best.free, bits):
                need = size * bits // 16
                return Recommendation(cuda, "auto", bits,
                                      f"{best.name} has {_gib(best.free)} free: the model in {bits} bit ({_gib(need)}) "
                                      f"leaves {_gib(best.free - need)} for a film")
    available = hw.ram_available if hw.ram_available is not None else hw.ram_total
    gpu_note = f"; {best.name} has only {_gib(best.free)} free" if best is not None else ""
    if available is None:
        return Recommendation("cpu", "auto", None, f"on the CPU (free memory unknown){gpu_note}")
    for bits, need in ((None, 2 * size), (8, size // 2), (4, size // 4)):
        if available >= need + room:
            how = "fp32" if bits is None else f"{bits} bit"
            return Recommendation("cpu", "auto", bits,
                                  f"on the CPU in {how} ({_gib(need)} of {_gib(available)} free RAM){gpu_note}")
    return Recommendation("cpu", "auto", 4,
                          f"on the CPU in 4 bit, though {_gib(available)} of free RAM is less than this model "
                          f"needs ({_gib(size // 4 + room)}): close other programs or pick a smaller model{gpu_note}")
