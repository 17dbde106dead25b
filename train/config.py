"""What each training stage trains, with which settings, and every option of a run.

The three stages of LLaMA-VID (spec 10.3-10.4):

=====  ==============  ============================================  =======  ==========  =============
stage  template        trained (EVA is frozen in every stage)         lr       max length  bert_type
=====  ==============  ============================================  =======  ==========  =============
1      plain_guided    mm_projector + the three vlm_att projectors   1e-3     2048        ..._freeze
2      imgsp_v1        LLM + mm_projector + the whole Q-Former stack  2e-5     4096 / 2048 qformer_pretrain
3      imgsp_v1        LLM + mm_projector                            2e-5     65536       ..._freeze_all
=====  ==============  ============================================  =======  ==========  =============

All stages: one epoch, AdamW without weight decay, cosine schedule with 3 % warmup, bf16, gradient
checkpointing. This module imports nothing heavy: the command line reads its defaults at ``--help`` time.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100

# Parameter-name prefixes of the model's parts (names as in the released checkpoints).
VISION = ("model.vision_tower.",)
LLM = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
QFORMER = ("model.vlm_att_encoder.", "model.vlm_att_query", "model.vlm_att_ln.")
ATT_PROJECTORS = ("model.vlm_att_projector.", "model.vlm_att_key_projector.", "model.vlm_att_val_projector.")
MM_PROJECTOR = ("model.mm_projector.",)
# What the reference's stage-1 ``mm_projector.bin`` holds: every name with mm_projector or vlm_att.
PROJECTOR_PARTS = MM_PROJECTOR + ATT_PROJECTORS + QFORMER


@dataclass(frozen=True)
class StagePreset:
    """The reference's settings for one stage (its training scripts, spec 10.4)."""

    stage: int
    template: str
    learning_rate: float
    max_length: int
    bert_type: str
    train_llm: bool
    image_aspect_ratio: str  # "square" = resize + centre crop, "pad" = pad to square first
    save_steps: int
    group_by_modality: bool
    global_batch: int  # per-GPU batch x accumulation x 8 GPUs in the 7B scripts
    summary: str


STAGES: dict[int, StagePreset] = {
    1: StagePreset(1, "plain_guided", 1e-3, 2048, "qformer_pretrain_freeze", False, "square", 1000, False, 256,
                   "align: captions for images and clips; trains the projectors only"),
    2: StagePreset(2, "imgsp_v1", 2e-5, 4096, "qformer_pretrain", True, "pad", 1000, True, 128,
                   "instruction tuning: multi-turn chat on images, clips and text; trains LLM + Q-Former"),
    3: StagePreset(3, "imgsp_v1", 2e-5, 65536, "qformer_pretrain_freeze_all", True, "pad", 200, False, 8,
                   "long video: film features interleaved with subtitles; trains LLM + mm_projector"),
}
VIDEO_STAGE2_MAX_LENGTH = 2048  # video models (compress mean / grid) trained stage 2 at 2048


def preset(stage: int) -> StagePreset:
    if stage not in STAGES:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
    return STAGES[stage]


def default_max_length(stage: int, compress_type: str | None) -> int:
    """Image models (all patches kept) use 4096 in stage 2; video models 2048 (spec 10.4)."""
    if stage == 2 and compress_type not in (None, "None"):
        return VIDEO_STAGE2_MAX_LENGTH
    return preset(stage).max_length


def trainable_prefixes(train_llm: bool, bert_type: str) -> tuple[str, ...]:
    """The parts a stage trains, derived the way the reference derives them from ``bert_type``.

    ``freeze`` in bert_type freezes the Q-Former, its queries and ``vlm_att_ln``; ``freeze_all``
    also the three attention projectors. ``mm_projector`` is always trained, the LLM from stage 2
    on, EVA never.
    """
    parts = MM_PROJECTOR
    if "freeze_all" not in bert_type:
        parts += ATT_PROJECTORS
    if "freeze" not in bert_type:
        parts += QFORMER
    if train_llm:
        parts += LLM
    return parts


def matches(name: str, prefixes: tuple[str, ...]) -> bool:
    """``name`` belongs to one of the parts (``model.vlm_att_query`` is a bare parameter)."""
    return any(name.startswith(p) or name == p.rstrip(".") for p in prefixes)


def rope_factor_for(max_length: int, context_length: int, factor: float = 1.0) -> float | None:
    """Linear RoPE factor for ``max_length`` tokens, None when the model already reaches that far.

    ``context_length`` and ``factor`` are the model's (:attr:`LlamaVidConfig.context_length`,
    :attr:`LlamaVidConfig.rope_factor`). The reference sets ``ceil(L / context_length)`` (16 for
    65536 on a 4096 LLaMA); a model that already has a factor gets it multiplied, not replaced.
    """
    if max_length <= context_length:
        return None
    return float(factor * math.ceil(max_length / context_length))


@dataclass
class TrainArgs:
    """Everything a run needs. ``None`` means "the stage preset's value" (see :meth:`resolved`)."""

    stage: int
    data: Path
    output: Path
    image_folder: Path | None = None
    video_folder: Path | None = None
    # initialisation: --init (a previous stage's checkpoint) or the component files
    init: Path | None = None
    llm: Path | None = None
    vision: Path | None = None
    qformer: Path | None = None
    projector: Path | None = None
    qformer_vocab: Path | None = None
    qformer_config: Path | None = None
    trust_pickle: bool = False
    # model shape (stage 1 from components; later stages take them from the checkpoint)
    image_size: int = 224
    compress_type: str | None = "mean"
    bert_type: str | None = None
    # data
    video_fps: float = 1.0
    video_token: int = 2
    max_frames: int | None = None
    num_workers: int = 2
    skip_bad_samples: bool = False
    validate: bool = True
    group_by_modality: bool | None = None
    # optimisation
    learning_rate: float | None = None
    max_length: int | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 1
    grad_accum: int | None = None
    global_batch: int | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    seed: int = 42
    # hardware
    device: str = "auto"
    bf16: bool | None = None
    gradient_checkpointing: bool = True
    attn: str = "auto"
    fsdp: str | None = None
    # LoRA / QLoRA
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_train_multimodal: bool = True
    bits: int = 16
    # checkpoints and logs
    save_steps: int | None = None
    save_total_limit: int = 1
    resume: str = "auto"
    log_every: int = 1
    tensorboard: bool = False

    @property
    def preset(self) -> StagePreset:
        return preset(self.stage)

    def resolved(self) -> TrainArgs:
        """A copy with every ``None`` default filled from the stage preset."""
        p = self.preset
        values = asdict(self)
        ct = self.compress_type
        values["bert_type"] = self.bert_type or p.bert_type
        values["learning_rate"] = self.learning_rate if self.learning_rate is not None else p.learning_rate
        values["max_length"] = self.max_length or default_max_length(self.stage, ct)
        values["save_steps"] = self.save_steps or p.save_steps
        values["global_batch"] = self.global_batch or p.global_batch
        if self.group_by_modality is None:
            values["group_by_modality"] = p.group_by_modality
        return TrainArgs(**values)

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TrainArgs:
        paths = {f.name for f in fields(cls) if "Path" in str(f.type)}
        known = {f.name for f in fields(cls)}
        return cls(**{k: (Path(v) if k in paths and v is not None else v) for k, v in values.items() if k in known})
