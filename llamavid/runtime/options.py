"""``LoadOptions``: how a model is loaded, as one frozen value every front end passes along.

The command line fills it from its flags (:mod:`cli.options`), the apps from
``<data>/settings.json``, the server from its settings, the indexer from the library's chosen chat
model; :func:`llamavid.runtime.load.load_model` takes it. :meth:`LoadOptions.key` is the one rule for
which options change what a loaded model computes (a prepared film's state is only used by a chat
loaded the same way). No torch here: ``llamavid --help``, the settings and the indexer's size
estimates import this module.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llamavid.errors import UserError
from llamavid.runtime.kv_size import DEFAULT_LLAMACPP_KV, KV_TYPES

BACKENDS = ("auto", "transformers", "llama.cpp")
#: The options that change what a loaded model computes, so a prepared film's state is tied to them
#: (the LLM engine, its weights' precision, the device, the KV cache's type).
KEY_OPTIONS = ("backend", "bits", "device", "dtype", "kv_type", "gguf_type")


@dataclass(frozen=True)
class LoadOptions:
    """Everything :func:`llamavid.runtime.load.load_model` needs besides the model and the data folder.

    Attributes:
        device: ``auto`` (a GPU if there is one), ``cuda``, ``cuda:1``, ``mps`` or ``cpu``.
        dtype: ``auto`` (fp16 on GPUs, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        bits: 4 or 8 quantizes the LLM with bitsandbytes (transformers backend); None: not quantized.
        backend: ``auto`` (llama.cpp for a folder from ``llamavid models convert-gguf``, and from a
            checkpoint's conversion where no GPU holds it in fp16: :func:`llamavid.runtime.load.choose_engine`),
            ``transformers`` or ``llama.cpp``.
        base: base LLM (name or folder) of a stage-1 projector; None: the catalogue's.
        vision: an ``eva_vit_g.pth`` to use instead of the installed one.
        template: conversation template; None: the one the checkpoint was trained with.
        load_vision: False for chats about indexed films, whose EVA features are cached.
        gguf_type, kv_type, n_ctx, threads: llama.cpp's GGUF file, KV cache type, context, threads.
            ``kv_type="auto"`` is q8_0 where the model allows it (:func:`llamavid.runtime.kv_size.llamacpp_kv_type`):
            a film's cache is most of a chat's memory, and q8_0 halves it; an explicit type is kept.
        vision_engine: how EVA and the Q-Former run on a CPU (``auto``, ``int8``...); None:
            ``vision_engine`` of ``<data>/settings.json``, else ``auto``.
    """

    device: str = "auto"
    dtype: str = "auto"
    bits: int | None = None
    backend: str = "auto"
    base: str | None = None
    vision: str | None = None  # a path-like is kept as its string
    template: str | None = None
    load_vision: bool = True
    gguf_type: str | None = None
    kv_type: str = "auto"
    n_ctx: int | None = None
    threads: int | None = None
    vision_engine: str | None = None

    def __post_init__(self) -> None:
        if self.vision is not None and not isinstance(self.vision, str):
            object.__setattr__(self, "vision", os.fspath(self.vision))  # equal options compare equal
        if self.bits not in (None, 4, 8):
            raise UserError(f"bits must be 4 or 8 (the LLM quantized with bitsandbytes: --load-4bit or "
                            f"--load-8bit), or None for unquantized weights; got {self.bits!r}")
        if self.backend not in BACKENDS:
            raise UserError(f"backend must be one of {', '.join(BACKENDS)} (auto: llama.cpp for a folder from "
                            f"`llamavid models convert-gguf`, else transformers); got {self.backend!r}")
        if self.kv_type not in KV_TYPES:
            raise UserError(f"kv_type must be one of {', '.join(KV_TYPES)} (auto: {DEFAULT_LLAMACPP_KV} on llama.cpp "
                            f"where the model allows it); got {self.kv_type!r}")

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(LoadOptions))

    def replace(self, **changes: Any) -> LoadOptions:
        """A copy with ``changes`` (field names); checked again."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError(f"unknown load option(s) {', '.join(unknown)}; known: {', '.join(self.names())}")
        return dataclasses.replace(self, **changes)

    def key(self) -> dict[str, Any]:
        """The options that change what a loaded model computes (:data:`KEY_OPTIONS`, those not None):
        what a prepared film's state is kept with (the library's ``chat_load_options``)."""
        return {name: getattr(self, name) for name in KEY_OPTIONS if getattr(self, name) is not None}

    def changed(self) -> dict[str, Any]:
        """The options that differ from the defaults: ``base.replace(**options.changed())`` lays them
        over other options (a server's over ``settings.json``'s, say)."""
        default = LoadOptions()
        return {name: getattr(self, name) for name in self.names() if getattr(self, name) != getattr(default, name)}

    def to_dict(self) -> dict[str, Any]:
        """Every option, JSON-ready."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LoadOptions:
        """Options from JSON (:meth:`to_dict`, :meth:`key`, or any part of them; the rest keeps its default)."""
        if not isinstance(values, Mapping):
            raise UserError(f"load options must be a JSON object of {', '.join(cls.names())}; got {values!r}")
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise UserError(f"unknown load option(s) {', '.join(unknown)}; use {', '.join(cls.names())}")
        return cls(**values)
