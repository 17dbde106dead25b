"""The command line's model-loading flags, defined once: ``llamavid chat``, ``eval``, ``index run`` and
``bench`` take the ones they need, and :func:`load_options_from` turns them into one
:class:`~llamavid.runtime.options.LoadOptions`.

Each flag's ``dest`` is the :class:`LoadOptions` field it sets (``--ctx`` sets ``n_ctx``,
``--conv-mode`` ``template``), except ``--load-4bit``/``--load-8bit``, which set ``bits``.
No torch here (``llamavid --help`` imports every command module).
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any

from llamavid.errors import UserError
from llamavid.runtime.options import BACKENDS, LoadOptions

GGUF_TYPES = ("f32", "f16", "q8_0", "q4_K_M")
KV_TYPES = ("auto", "f16", "q8_0", "q4_0", "f32")

#: LoadOptions field -> (flag, argparse keywords), in the order --help lists them. ``bits`` is the
#: two flags --load-4bit and --load-8bit (see :func:`add_load_arguments`).
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "device": ("--device", {"default": "auto", "help": "auto (a GPU if there is one), cuda, cuda:N, mps or cpu"}),
    "dtype": ("--dtype", {"default": "auto", "help": "auto (fp16 on GPUs, fp32 on CPU), fp32, fp16 or bf16"}),
    "vision": ("--vision", {"metavar": "PATH", "help": "eva_vit_g.pth to use instead of the installed one"}),
    "vision_engine": ("--vision-engine", {
        "metavar": "ENGINE",
        "help": "how EVA and the Q-Former run on a CPU: auto (measured once per machine), fp32, fp32-plain, bf16, "
                "int8, openvino, openvino-int8...; eva=X,qformer=Y for each; 'auto,-int8' excludes one "
                "(default: settings.json's vision_engine, else auto)"}),
    "base": ("--base", {"metavar": "MODEL", "help": "base LLM of a stage-1 *-pretrain-* checkpoint "
                                                    "(default: the catalogue's, e.g. vicuna-7b-v1.5)"}),
    "backend": ("--backend", {"choices": BACKENDS, "default": "auto",
                              "help": "LLM engine; auto = llama.cpp for a folder from `llamavid models convert-gguf`, "
                                      "and for a 7B on a machine whose GPU cannot hold it in fp16 (or without one: "
                                      "its q4_K_M conversion), else transformers"}),
    "gguf_type": ("--gguf-type", {"choices": GGUF_TYPES,
                                  "help": "which GGUF file of a converted folder (default: the smallest)"}),
    "kv_type": ("--kv-type", {"choices": KV_TYPES, "default": "auto",
                              "help": "llama.cpp KV cache type (default auto: q8_0, half of f16's memory, where the "
                                      "model's head size allows it, else f16)"}),
    "n_ctx": ("--ctx", {"type": int, "metavar": "TOKENS",
                        "help": "llama.cpp context length (default: the model's, at most 8192)"}),
    "threads": ("--threads", {"type": int, "help": "llama.cpp threads (default: the CPU cores, at most 8)"}),
    "template": ("--conv-mode", {"help": "conversation template (default: the one the model was trained with)"}),
}
#: Every flag, by the field it sets: what ``which`` takes.
LOAD_FLAGS = ("bits", *FLAGS)


def add_load_arguments(parser: argparse.ArgumentParser, *, which: Iterable[str] = LOAD_FLAGS,
                       notes: Mapping[str, str] | None = None) -> None:
    """Add the flags of the :class:`LoadOptions` fields named in ``which`` (all by default) to ``parser``.

    ``notes`` adds a command's own words to a flag's help (by field name), e.g. what ``--vision``
    also means for ``eval --index``.
    """
    wanted, notes = tuple(which), dict(notes or {})
    unknown = sorted((set(wanted) | set(notes)) - set(LOAD_FLAGS))
    if unknown:
        raise ValueError(f"no load flag for {', '.join(unknown)}; known: {', '.join(LOAD_FLAGS)}")
    for name in LOAD_FLAGS:
        if name not in wanted:
            continue
        note = f" {notes[name]}" if name in notes else ""
        if name == "bits":
            parser.add_argument("--load-4bit", action="store_true",
                                help=f"LLM weights in 4 bit (bitsandbytes NF4){note}")
            parser.add_argument("--load-8bit", action="store_true", help=f"LLM weights in 8 bit (bitsandbytes){note}")
            continue
        flag, kwargs = FLAGS[name]
        parser.add_argument(flag, dest=name, **{**kwargs, "help": kwargs["help"] + note})


def load_options_from(args: argparse.Namespace) -> LoadOptions:
    """The :class:`LoadOptions` the parsed flags say; a flag the command lacks keeps the default."""
    values = {name: getattr(args, name) for name in FLAGS if hasattr(args, name)}
    four, eight = getattr(args, "load_4bit", False), getattr(args, "load_8bit", False)
    if four and eight:
        raise UserError("choose one of --load-4bit and --load-8bit")
    return LoadOptions(**values, bits=4 if four else 8 if eight else None)
