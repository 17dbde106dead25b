"""``load_model``: one loading policy for every front end (chat, server, desktop app, evaluation).

:meth:`LlamaVid.load` opens a folder exactly as told. What a person means by "load
llama-vid-7b-full-224-video-fps-1 in 4 bit" takes more: the name is resolved through the
installed models, a stage-1 projector gets its base LLM from the catalogue, a folder converted
for llama.cpp picks that backend, the shared parts are searched in the data folder, and the
conversation template can be overridden. Every failure is a :class:`UserError` kind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llamavid.errors import NotEnoughMemory, UserError
from llamavid.files import gguf_files, is_stage1
from llamavid.hub import catalog
from llamavid.hub.installed import resolve_model, search_dirs
from llamavid.paths import resolve_data_dir
from llamavid.prompt.templates import get_template
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.options import BACKENDS, LoadOptions
from llamavid.runtime.vision_engines import VisionEngines

__all__ = ["BACKENDS", "LoadOptions", "base_model_of", "load_model", "pick_backend"]


def base_model_of(name: str) -> str:
    """The catalogue's base LLM of a stage-1 projector checkpoint."""
    entry = catalog.get(Path(name).name)
    if entry is None or not entry.base_model:
        raise UserError(f"{name} holds only a stage-1 projector; name its base LLM with --base")
    return entry.base_model


def pick_backend(folder: Path, backend: str = "auto") -> str:
    """``auto``: llama.cpp for a folder written by ``llamavid models convert-gguf``, else transformers."""
    if backend not in BACKENDS:
        raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "llama.cpp" if gguf_files(folder) else "transformers"
    return backend


def load_model(model: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
               options: LoadOptions | None = None, **overrides: Any) -> LlamaVid:
    """Load an installed model name, a registered name or a checkpoint folder, ready to chat.

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
    base_folder = resolve_model(opts.base or base_model_of(os.fspath(model)), data_dir) if is_stage1(folder) else None
    try:
        lv = LlamaVid.load(folder, device=opts.device, dtype=opts.dtype, vision=opts.vision,
                           search_dirs=search_dirs(data_dir), load_vision=opts.load_vision, bits=opts.bits,
                           backend=pick_backend(folder, opts.backend), gguf_type=opts.gguf_type,
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
