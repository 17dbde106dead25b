"""Reading golden cases (the reference's outputs on tiny deterministic weights).

A case folder holds ``runs.json``, ``config.json``, ``qformer_config.json``, ``bert_vocab.txt``,
``keys.json``, ``inputs.npz`` and ``outputs.safetensors``; ``recipe.py`` (beside the case or in
its parent folder) turns parameter names into values. :func:`write_checkpoint` lays a case out
as a released checkpoint (sharded ``.bin`` + index, ``eva_vit_g.pth``, vocabulary) so that the
parity test goes through the same loader users use.

Only the documented fields are read (tests/data/golden/README.md). A ``note`` key is an
annotation for people and may sit at any level of ``runs.json``: :func:`read_runs` drops every
one, so a note can never be taken for a run, a file name or a config override.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "golden"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int64": torch.int64}


class GoldenDirError(ValueError):
    """A folder given as golden cases holds none (a typo in ``LLAMAVID_GOLDEN_DIRS``, an unpacked archive)."""


def cases_in(root: Path) -> list[Path]:
    """``root`` itself if it is a case, else the cases directly inside it; an error when there are none."""
    if (root / "runs.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.glob("*/runs.json"))
    if not found:
        what = "does not exist" if not root.exists() else "is not a folder" if not root.is_dir() else \
            "holds no golden case (no runs.json in it or in a folder directly inside it)"
        raise GoldenDirError(f"golden folder {root} {what}")
    return found


def case_dirs() -> list[Path]:
    """Bundled cases plus every folder in ``LLAMAVID_GOLDEN_DIRS`` (':'-separated).

    A listed folder may be a case itself or a folder of cases; one that holds no case is an error
    (:class:`GoldenDirError`), so a mistyped path cannot turn the parity run into a silent no-op.
    """
    found = cases_in(BUNDLED)
    for entry in filter(None, os.environ.get("LLAMAVID_GOLDEN_DIRS", "").split(":")):
        found += cases_in(Path(entry))
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p.resolve())
    return list(unique)


#: Keys that annotate a case for people, at any level of ``runs.json``; the harness never reads them.
ANNOTATIONS = frozenset({"note"})


def without_annotations(value):
    """``value`` (parsed JSON) with every annotation key removed, at every depth."""
    if isinstance(value, dict):
        return {k: without_annotations(v) for k, v in value.items() if k not in ANNOTATIONS}
    if isinstance(value, list):
        return [without_annotations(v) for v in value]
    return value


def read_runs(case: Path) -> dict:
    """The case's ``runs.json`` without its annotations: what every reader of a case goes through."""
    return without_annotations(json.loads((case / "runs.json").read_text(encoding="utf-8")))


def case_runs(case: Path) -> dict[str, dict]:
    """The case's runs by name (``runs.json``'s ``runs`` object, annotations dropped)."""
    return read_runs(case)["runs"]


def runs() -> list[tuple[Path, str]]:
    return [(case, name) for case in case_dirs() for name in case_runs(case)]


@cache
def recipe_for(case: Path) -> ModuleType:
    for candidate in (case / "recipe.py", case.parent / "recipe.py", BUNDLED / "recipe.py"):
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location(f"golden_recipe_{abs(hash(candidate))}", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f"no recipe.py for golden case {case}")


def buffer_value(key: str, shape: list[int], config: dict) -> torch.Tensor:
    """The buffers transformers 4.31 saved: RoPE inverse frequencies and BERT position ids."""
    if key.endswith("position_ids"):
        return torch.arange(shape[-1]).reshape(shape)
    if key.endswith("inv_freq"):
        dim = 2 * shape[0]
        return 1.0 / (float(config.get("rope_theta", 10000.0)) ** (torch.arange(0, dim, 2).float() / dim))
    raise ValueError(f"unknown buffer {key}")


def tensor_for(entry: dict, recipe: ModuleType, config: dict, eva_shapes: dict) -> torch.Tensor:
    key, shape, source = entry["key"], entry["shape"], entry.get("source", "recipe")
    dtype = DTYPES.get(entry.get("dtype", "float32"), torch.float32)
    if source == "buffer":
        return buffer_value(key, shape, config)
    if source.startswith("eva_vit_g.pth:"):
        file_key = source.split(":", 1)[1]
        if eva_shapes.get(file_key) == list(shape):
            return recipe.param_value(file_key, shape).to(dtype)
        return torch.zeros(shape, dtype=dtype)  # e.g. an interpolated table: the loader reads the .pth
    return recipe.param_value(key, shape).to(dtype)


def write_checkpoint(case: Path, out: Path) -> Path:
    """Write the case as a released-layout checkpoint folder and return it."""
    keys = json.loads((case / "keys.json").read_text())
    config = json.loads((case / "config.json").read_text())
    recipe = recipe_for(case)
    out.mkdir(parents=True, exist_ok=True)
    eva_entries = keys["eva_vit_g_pth"]
    eva_shapes = {e["key"]: list(e["shape"]) for e in eva_entries}
    torch.save({e["key"]: recipe.param_value(e["key"], e["shape"]) for e in eva_entries}, out / "eva_vit_g.pth")
    shards: dict[str, dict[str, torch.Tensor]] = {}
    for entry in keys["checkpoint"]:
        shard = entry.get("shard", "pytorch_model-00001-of-00001.bin")
        shards.setdefault(shard, {})[entry["key"]] = tensor_for(entry, recipe, config, eva_shapes)
    weight_map = {}
    for shard, tensors in shards.items():
        torch.save(tensors, out / shard)
        weight_map.update({k: shard for k in tensors})
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for name in ("config.json", "qformer_config.json"):
        if (case / name).is_file():
            shutil.copy(case / name, out / name)
    shutil.copy(case / "bert_vocab.txt", out / "bert_vocab.txt")
    return out


#: Where the tensors of a ``weights`` run live in the loaded model. A stored name is
#: ``<part>.<tensor>[_<how derived>]``: ``eva.pos_embed_interpolated`` is EVA's position table
#: after the loader resized it to the run's image size.
WEIGHT_PARTS = {"eva.": "model.vision_tower.vision_tower.", "vision_tower.": "model.vision_tower.vision_tower.",
                "qformer.": "model.vlm_att_encoder.", "mm_projector.": "model.mm_projector.",
                "llm.": "model."}
DERIVED_SUFFIXES = ("_interpolated", "_resized", "_derived", "_loaded")


def weight_keys(name: str) -> list[str]:
    """State-dict keys a ``weights`` run's stored ``name`` may stand for, most specific first."""
    base = name
    for suffix in DERIVED_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    keys = [full + base[len(part):] for part, full in WEIGHT_PARTS.items() if base.startswith(part)]
    keys += [base, "model." + base, "model.vision_tower.vision_tower." + base]
    return list(dict.fromkeys(keys))


#: The documented fields of a run's ``movie_prompt`` object: names of entries in inputs.npz.
MOVIE_PROMPT_FIELDS = ("frame_time", "subtitles", "per_frame_text")


def run_arrays(case: Path, run: dict) -> dict[str, np.ndarray]:
    """The ``inputs.npz`` entries a run names (``input``, ``input_ids``, ``llm_prompt``,
    ``qformer_prompts``, ``movie_prompt``), under the names ``runs.json`` gives: a run may use
    another run's files."""
    names = [run.get(f) for f in ("input", "input_ids", "llm_prompt", "qformer_prompts")]
    movie = run.get("movie_prompt") or {}
    names += [movie.get(f) for f in MOVIE_PROMPT_FIELDS] if isinstance(movie, dict) else []
    wanted = [n for n in names if isinstance(n, str)]
    with np.load(case / "inputs.npz", allow_pickle=False) as npz:
        missing = [n for n in wanted if n not in npz.files]
        if missing:
            raise KeyError(f"{case.name}: runs.json names {missing}, which inputs.npz does not hold")
        return {n: npz[n] for n in wanted}


def run_input(case: Path, spec, inputs) -> np.ndarray | torch.Tensor:
    """A run's ``input``: a name in inputs.npz or a recipe call."""
    if isinstance(spec, dict):
        recipe = recipe_for(case)
        kind = spec.get("recipe", "random_normal")
        if kind == "random_normal":
            return recipe.random_normal(spec["name"], spec["shape"], spec.get("std", 1.0))
        if kind == "random_uint8":
            return recipe.random_uint8(spec["name"], spec["shape"])
        raise ValueError(f"unknown input recipe {kind!r}")
    return inputs[spec]


def text(inputs, name: str) -> str:
    return str(inputs[name][()])
