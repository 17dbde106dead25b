"""Configuration of a LLaMA-VID checkpoint.

Released ``config.json`` files say ``model_type: llava`` (which is another model in current
transformers) or ``llama``, carry relative paths to files on the authors' disks and, for the
long-video model, the old ``rope_scaling`` spelling. :class:`LlamaVidConfig` reads them as they
are, keeps the fields the model needs under their released names and ignores the rest.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import LlamaConfig

from llamavid.model.layout import tokens_per_frame

COMPRESS_TYPES = "None, 'mean', 'mean_concat' or 'grid:<g>' (g > 1)"
PROJECTOR_TYPES = "'linear', 'identity' or 'mlp<N>x_gelu'"


def image_size_from_processor(processor: str | None) -> int:
    """The released configs name the processor folder; only its crop size matters (224 or 336)."""
    return 336 if processor and "336" in str(processor) else 224


def check_compress_type(value: str | None) -> None:
    if value in (None, "None") or "mean" in str(value):
        return
    if str(value).startswith("grid:"):
        try:
            if int(str(value).split(":", 1)[1]) > 1:
                return
        except ValueError:
            pass
    raise ValueError(f"compress_type must be {COMPRESS_TYPES}, got {value!r}")


def rope_parameters(values: dict[str, Any]) -> dict[str, Any]:
    """Translate the released ``rope_scaling`` (linear x16 for the 64K model) to transformers 5."""
    theta = float(values.get("rope_theta", 10000.0))
    scaling = values.get("rope_scaling") or {}
    params = values.get("rope_parameters")
    if isinstance(params, dict) and params:
        return dict(params)
    kind = scaling.get("rope_type") or scaling.get("type")
    if not kind or kind == "default":
        return {"rope_type": "default", "rope_theta": theta}
    if kind != "linear":
        raise ValueError(f"unsupported rope_scaling type {kind!r}: LLaMA-VID checkpoints use 'linear'")
    return {"rope_type": "linear", "factor": float(scaling["factor"]), "rope_theta": theta}


class LlamaVidConfig(LlamaConfig):
    """A LLaMA config plus the multimodal fields of LLaMA-VID (names as in released files)."""

    model_type = "llamavid"

    def __init__(
        self,
        mm_hidden_size: int = 1408,
        mm_projector_type: str = "mlp2x_gelu",
        mm_vision_select_feature: str = "patch",
        mm_vision_tower: str | None = "eva_vit_g.pth",
        image_processor: str | None = None,
        image_size: int | None = None,
        image_aspect_ratio: str | None = "pad",
        vision_depth: int | None = None,
        vision_mlp_hidden: int = 6144,
        bert_type: str = "qformer_pretrain",
        num_query: int = 32,
        compress_type: str | None = None,
        max_token: int = 2048,
        qformer: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.mm_hidden_size = mm_hidden_size
        self.mm_projector_type = mm_projector_type
        self.mm_vision_select_feature = mm_vision_select_feature
        self.mm_vision_tower = mm_vision_tower
        self.image_processor = image_processor
        self.image_size = image_size or image_size_from_processor(image_processor)
        self.image_aspect_ratio = image_aspect_ratio
        self.vision_depth = vision_depth
        self.vision_mlp_hidden = vision_mlp_hidden
        self.bert_type = bert_type
        self.num_query = num_query
        self.compress_type = None if compress_type in (None, "None") else compress_type
        self.max_token = max_token
        self.qformer = dict(qformer or {})
        check_compress_type(self.compress_type)
        super().__init__(**kwargs)

    @property
    def uses_vlm_att_ln(self) -> bool:
        return "pretrain" in self.bert_type

    @property
    def rope_factor(self) -> float:
        """Linear RoPE scaling (16 for the 64K long-video model, 1 otherwise)."""
        rope = self.rope_parameters or {}
        return float(rope.get("factor", 1.0)) if rope.get("rope_type") == "linear" else 1.0

    @property
    def context_length(self) -> int:
        """Tokens the LLM can attend over: trained positions x the linear RoPE factor."""
        return int(self.max_position_embeddings * self.rope_factor)

    @property
    def tokens_per_frame(self) -> int:
        """LLM rows per frame or image: one context token plus the content tokens."""
        return tokens_per_frame(self.compress_type, self.image_size)

    @classmethod
    def from_released(cls, values: dict[str, Any], **overrides: Any) -> LlamaVidConfig:
        """Build from a released ``config.json`` dict (any ``model_type``, unknown fields dropped)."""
        values = {**values, **overrides}
        values.pop("model_type", None)
        values.pop("architectures", None)
        values.pop("transformers_version", None)
        values["rope_parameters"] = rope_parameters(values)
        values.pop("rope_scaling", None)
        values.pop("rope_theta", None)
        dtype = values.pop("torch_dtype", None) or values.pop("dtype", None)
        known = set(LlamaConfig().to_dict()) | set(cls.__init__.__code__.co_varnames)
        dropped = sorted(k for k in values if k not in known)
        kept = {k: v for k, v in values.items() if k in known}
        config = cls(**kept)
        config.released_dtype = dtype
        config.ignored_fields = dropped
        return config

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> LlamaVidConfig:
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: config.json not found; is this a LLaMA-VID checkpoint folder?") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); the file is corrupt") from exc
        if not isinstance(values, dict) or "hidden_size" not in values:
            raise ValueError(f"{path}: not a LLaMA config (no 'hidden_size')")
        return cls.from_released(values, **overrides)
