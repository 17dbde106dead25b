"""The file names of a checkpoint folder, and the one rule for finding each part.

Loading, the model manager, GGUF conversion, the indexer and training all name the same files;
they take the names from here, so a folder means the same thing to every part of the program.
No torch: the CLI imports this for ``--help``.

A released folder::

    config.json  qformer_config.json?  tokenizer.model  [tokenizer_config.json ...]
    pytorch_model-0000N-of-0000M.bin + pytorch_model.bin.index.json   (or safetensors + index,
    or one pytorch_model.bin / model.safetensors)
    mm_projector.bin                    a stage-1 ("*-pretrain-*") folder holds only this
    eva_vit_g.pth, bert_vocab.txt       shared parts: here, or in <data>/models/shared/
    llm-<type>.gguf + vision.safetensors   written by `llamavid models convert-gguf`
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from llamavid.errors import CheckpointError

CONFIG = "config.json"
QFORMER_CONFIG = "qformer_config.json"
EVA_FILE = "eva_vit_g.pth"  # BLIP-2's EVA-ViT-g (fp16), shared by every model
VOCAB_FILE = "bert_vocab.txt"  # the Q-Former's WordPiece vocabulary (bert-base-uncased vocab.txt)
PROJECTOR_FILE = "mm_projector.bin"  # all a stage-1 checkpoint holds
VISION_FILE = "vision.safetensors"  # the vision side of a folder converted for llama.cpp
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")
SPEECH_FILES = ("config.json", "model.bin", "tokenizer.json")  # what faster-whisper opens
MANIFEST = ".llamavid-manifest.json"  # what `llamavid models pull` expects in a folder
GGUF_PATTERN = "llm-*.gguf"


def gguf_name(gguf_type: str) -> str:
    """File name of the LLM converted to GGUF ``gguf_type`` (f32, f16, q8_0, q4_K_M)."""
    return f"llm-{gguf_type}.gguf"


def gguf_files(folder: Path) -> list[Path]:
    """The GGUF LLM files of a converted folder, smallest first."""
    return sorted(Path(folder).glob(GGUF_PATTERN), key=lambda p: p.stat().st_size)


def weight_index(folder: Path) -> tuple[Path | None, dict[str, str], list[str]]:
    """(index file, its weight_map, weight file names) of a checkpoint folder.

    The names come from the index when there is one; else a single weight file, the stage-1
    projector, or the GGUF + vision files of a converted folder. No weights: an empty list.
    """
    folder = Path(folder)
    for name in INDEX_FILES:
        index = folder / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError("weight_map is not an object")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index}: not a valid weight index ({exc}); download it again") from exc
            return index, weight_map, sorted(set(weight_map.values()))
    for name in (*SINGLE_FILES, PROJECTOR_FILE):
        if (folder / name).is_file():
            return None, {}, [name]
    ggufs = sorted(p.name for p in folder.glob(GGUF_PATTERN))
    if ggufs:
        return None, {}, [*ggufs, VISION_FILE]
    return None, {}, []


def is_stage1(folder: Path) -> bool:
    """A ``*-pretrain-*`` folder: only the projector, the LLM comes from a base model."""
    return weight_index(folder)[2] == [PROJECTOR_FILE]


def find_part(name: str, folder: Path | None = None, explicit: Path | str | None = None,
              search_dirs: Iterable[Path] = ()) -> Path | None:
    """Where a shared part (``eva_vit_g.pth``, ``bert_vocab.txt``) is taken from, first match wins:

    a path the user gave (``--vision``), then the checkpoint folder's own copy, then the shared
    folders (``<data>/models/shared``). Loading, ``models verify`` and the indexer all ask here.
    """
    candidates = [Path(explicit).expanduser() if explicit else None,
                  Path(folder) / name if folder is not None else None,
                  *(Path(d) / name for d in search_dirs)]
    return next((c for c in candidates if c is not None and c.is_file()), None)
