"""``load_model``: one loading policy for every front end (chat, server, desktop app, evaluation).

:meth:`LlamaVid.load` opens a folder exactly as told. What a person means by "load
llama-vid-7b-full-224-video-fps-1 in 4 bit" takes more: the name is resolved through the
installed models, a stage-1 projector gets its base LLM from the catalogue, a folder converted
for llama.cpp picks that backend, a released 7B on a machine whose GPU cannot hold it in fp16 (or
that has none) runs on its llama.cpp conversion (:func:`choose_engine`), the shared parts are
searched in the data folder, and the conversation template can be overridden. Every failure is a
:class:`UserError` kind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llamavid.errors import NotEnoughMemory, UserError
from llamavid.files import gguf_files, is_stage1
from llamavid.hub import catalog
from llamavid.hub.installed import resolve_model, search_dirs
from llamavid.paths import resolve_data_dir
from llamavid.prompt.templates import get_template
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.device import pick_device
from llamavid.runtime.family import QWEN_VL, QwenVL, family_of, load_qwen
from llamavid.runtime.llm_choice import (
    CPU_GGUF_TYPE,
    conversion_disk_bytes,
    conversion_of,
    converted_folder,
    prefers_llamacpp,
    weights_bytes,
)
from llamavid.runtime.options import BACKENDS, LoadOptions
from llamavid.runtime.vision_engines import VisionEngines
from llamavid.storage import free_bytes, human_size

__all__ = ["BACKENDS", "Engine", "LoadOptions", "NeedsConversion", "base_model_of", "choose_engine", "load_model",
           "pick_backend"]


def base_model_of(name: str) -> str:
    """The catalogue's base LLM of a stage-1 projector checkpoint."""
    entry = catalog.get(Path(name).name)
    if entry is None or not entry.base_model:
        raise UserError(f"{name} holds only a stage-1 projector; name its base LLM with --base")
    return entry.base_model


def pick_backend(folder: Path, backend: str = "auto") -> str:
    """``auto``: llama.cpp for a folder written by ``llamavid models convert-gguf``, else transformers (what a
    folder is; :func:`choose_engine` also weighs this machine)."""
    if backend not in BACKENDS:
        raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "llama.cpp" if gguf_files(folder) else "transformers"
    return backend


@dataclass(frozen=True)
class Engine:
    """How a checkpoint's LLM will run: ``backend`` from ``folder`` (a checkpoint's llama.cpp
    conversion, for llama.cpp), or, when ``convert_to`` is set, the conversion that is still to be
    made there first (``llamavid models convert-gguf``). ``why``: the reason, in words."""

    backend: str
    folder: Path
    why: str
    convert_to: Path | None = None


class NeedsConversion(UserError):
    """The model runs on llama.cpp here and its GGUF conversion has not been made: the message says
    the command and the disk space; ``target`` is where the conversion goes."""

    def __init__(self, message: str, target: Path) -> None:
        super().__init__(message)
        self.target = target


def _gpu_bytes(options: LoadOptions) -> tuple[int | None, bool]:
    """(total memory of the CUDA GPU ``options.device`` means, None for none; whether it means MPS):
    the total, not the free memory, so every process of this machine decides alike."""
    try:
        device = pick_device(options.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device.index or 0).total_memory), False
    return None, device.type == "mps"


def _llamacpp_why(folder: Path, options: LoadOptions) -> str | None:
    """Why the rule runs this checkpoint on llama.cpp on this machine, in words; None: it does not."""
    gpu, mps = _gpu_bytes(options)
    size = weights_bytes(folder)
    if mps or not prefers_llamacpp(size, gpu):
        return None
    return (f"its GPU ({human_size(gpu)}) cannot hold its {human_size(size)} of weights in fp16 with room for a "
            f"film" if gpu else "no GPU")


def choose_engine(model: str | os.PathLike[str], folder: Path, options: LoadOptions,
                  data_dir: str | os.PathLike[str]) -> Engine:
    """The engine ``load_model`` runs ``folder`` (what ``model`` named) with (see :class:`Engine`).

    A converted folder runs on llama.cpp; an explicit backend is kept (``llama.cpp`` takes the
    checkpoint's conversion); ``auto`` with bitsandbytes bits, a stage-1 projector or on Apple's
    MPS is transformers; otherwise :func:`llamavid.runtime.llm_choice.prefers_llamacpp` decides,
    weighing the checkpoint against the GPU's total memory (none: the CPU).
    """
    if gguf_files(folder) or options.backend == "transformers":
        backend = pick_backend(folder, options.backend)
        return Engine(backend, folder, "as asked" if options.backend == backend else "a GGUF folder")
    if options.backend == "auto" and (options.bits or is_stage1(folder)):
        return Engine("transformers", folder, "bitsandbytes asked for" if options.bits else "a stage-1 projector")
    why = _llamacpp_why(folder, options)
    if options.backend == "auto" and why is None:
        return Engine("transformers", folder, "fp16 on the GPU, or a small model")
    why = why or "llama.cpp chosen"
    done = conversion_of(data_dir, model, folder)
    if done is not None:
        return Engine("llama.cpp", done, why)
    return Engine("llama.cpp", folder, why, convert_to=converted_folder(data_dir, model))


def conversion_needed(model: str | os.PathLike[str], engine: Engine, data_dir: str | os.PathLike[str]
                      ) -> NeedsConversion:
    """The error that says what to run before ``engine`` can load (its disk space, the way round it)."""
    assert engine.convert_to is not None
    name = Path(os.fspath(model)).name if os.sep in os.fspath(model) else os.fspath(model)
    try:
        size = f"about {human_size(conversion_disk_bytes(engine.folder, data_dir))} of disk, "
    except ValueError:
        size = ""
    return NeedsConversion(
        f"{name} runs on llama.cpp on this computer ({engine.why}), with its LLM in {CPU_GGUF_TYPE}, made once "
        f"from the checkpoint: run `llamavid models convert-gguf {os.fspath(model)}` ({size}"
        f"{human_size(free_bytes(engine.convert_to.parent))} free; the desktop app and the web UI offer it too), "
        f"or load it as it is with --backend transformers", engine.convert_to)


def load_model(model: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
               options: LoadOptions | None = None, **overrides: Any) -> LlamaVid | QwenVL:
    """Load an installed model name, a registered name or a checkpoint folder, ready to chat.

    The LLM's engine is :func:`choose_engine`'s: a checkpoint that runs on llama.cpp here loads from
    its conversion; without one, :class:`NeedsConversion` says what to run.

    Args:
        model: what ``--model`` says; resolved with :func:`llamavid.hub.installed.resolve_model`.
        data_dir: the data folder (installed models, the shared ``eva_vit_g.pth`` and vocabulary);
            None: ``$LLAMAVID_DATA_DIR``, else the platform's default, as the command line chooses.
        options: how to load it (:class:`LoadOptions`: device, dtype, bits, backend, base, vision,
            template, load_vision, gguf_type, kv_type, n_ctx, threads, vision_engine); None: the defaults.
        overrides: :class:`LoadOptions` fields laid over ``options``
            (``load_model(name, device="cpu", dtype="fp32")``).
    """
    opts = (options or LoadOptions()).replace(**overrides)
    if opts.template is not None:
        try:
            get_template(opts.template)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    data_dir = resolve_data_dir(data_dir)
    engines = VisionEngines.for_data(data_dir, opts.vision_engine)
    folder = resolve_model(model, data_dir)
    if family_of(folder) == QWEN_VL:
        return _load_qwen(folder, opts)
    base_folder = resolve_model(opts.base or base_model_of(os.fspath(model)), data_dir) if is_stage1(folder) else None
    engine = choose_engine(model, folder, opts, data_dir)
    if engine.convert_to is not None:
        raise conversion_needed(model, engine, data_dir)
    try:
        lv = LlamaVid.load(engine.folder, device=opts.device, dtype=opts.dtype, vision=opts.vision,
                           search_dirs=search_dirs(data_dir), load_vision=opts.load_vision, bits=opts.bits,
                           backend=engine.backend, gguf_type=opts.gguf_type,
                           kv_type=opts.kv_type, n_ctx=opts.n_ctx, threads=opts.threads, base=base_folder,
                           vision_engine=engines)
    except UserError:
        raise
    except MemoryError as exc:
        raise NotEnoughMemory(str(exc)) from None
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    if opts.template is not None:
        lv.template = opts.template
    return lv


def _load_qwen(folder: Path, opts: LoadOptions) -> QwenVL:
    """The second family (:mod:`llamavid.runtime.family`): the same backend rule, no EVA, no conversion
    step (the published GGUF + mmproj are pulled as they are)."""
    if opts.bits:
        raise UserError("--load-4bit/--load-8bit are for LLaMA-VID checkpoints; for a Qwen3-VL on a small GPU "
                        "or a CPU pull its GGUF model (q4_K_M) instead")
    gpu, _mps = _gpu_bytes(opts)
    try:
        return load_qwen(folder, backend=opts.backend, device=opts.device, dtype=opts.dtype, n_ctx=opts.n_ctx,
                         threads=opts.threads, kv_type=opts.kv_type, gpu_bytes=gpu)
    except UserError:
        raise
    except MemoryError as exc:
        raise NotEnoughMemory(str(exc)) from None
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        raise UserError(f"{folder}: could not load this Qwen3-VL ({exc})") from None
