"""llamavid: the LLaMA-VID model library (vision, Q-Former, visual tokens, loading, engines).

The names below are imported on first use, so ``import llamavid`` (and the CLI's ``--help``)
stays fast; see README.md "Python API".
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LlamaVid": "llamavid.runtime.api",
    "load_model": "llamavid.runtime.load",
    "LoadOptions": "llamavid.runtime.options",
    "Prepared": "llamavid.runtime.api",
    "Chat": "llamavid.runtime.chat",
    "Visual": "llamavid.runtime.inputs",
    "SamplingOptions": "llamavid.runtime.generate",
    "LlamaVidConfig": "llamavid.model.config",
    "LlamaVidForCausalLM": "llamavid.model.modeling",
    "load_llamavid": "llamavid.model.loading",
    "save_released": "llamavid.model.saving",
    "preprocess_images": "llamavid.media.preprocess",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llamavid' has no attribute {name!r}")
