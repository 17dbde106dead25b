"""What a ``llamavid bench`` run measures: its stages, sizes and options (no torch: the command line
imports this for ``--help``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("preprocess", "eva", "qformer", "llm", "llamacpp")
# preprocess: a fraction of a second; llamacpp writes GGUF files of the LLM (GBs at 1b): opt-in
DEFAULT_STAGES = ("preprocess", "eva", "qformer", "llm")
DTYPE_NAMES = ("auto", "fp32", "fp16", "bf16")
#: LLaMA sizes for random weights: "1b" is TinyLlama-shaped (docs: cpu-anchors section 4), "7b" Vicuna-7B.
LLM_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4),
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
               num_attention_heads=32, num_key_value_heads=4),
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32),
}
#: ``--smoke`` sizes: every code path in a few seconds, for the test suite and CI.
SMOKE_EVA = dict(width=176, depth=2, mlp_hidden=256)
SMOKE_QFORMER = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     vocab_size=200)
#: Defaults of the options whose ``--smoke`` value differs.
FULL = dict(repeats=3, frames=64, question_tokens=20, prompt_tokens=512, new_tokens=64)
SMOKE = dict(repeats=1, frames=4, question_tokens=8, prompt_tokens=16, new_tokens=4)
INIT_STD = 0.02  # the reference's trunc_normal_(std=.02); truncation at +-2 never bites at this std

@dataclass
class BenchPlan:
    """Everything a benchmark run needs, validated; build it with :func:`make_plan` or directly."""
    stages: tuple[str, ...] = DEFAULT_STAGES
    device: Any = None  # torch.device; None = pick
    dtype: Any = None  # torch.dtype of the timed variants; None = pick for the device
    repeats: int = 3
    sizes: tuple[int, ...] = (224, 336)
    batches: tuple[int, ...] = (1, 4)
    frames: int = 64
    question_tokens: int = 20
    prompt_tokens: int = 512
    new_tokens: int = 64
    llm_size: str = "1b"
    compile: bool = False
    smoke: bool = False
    model_folder: Path | None = None
    search_dirs: tuple[Path, ...] = ()  # where the loader also looks for eva_vit_g.pth / bert_vocab.txt
    threads: int | None = None
    seed: int = 0
    extra: dict = field(default_factory=dict)  # copied into every record (e.g. a run label)
    #: vision engines (llamavid.model.engines) timed beside float32, one pair at a time to bound memory:
    #: None = every engine that can run here in a full CPU run, none with --smoke; () = none.
    engines: tuple[str, ...] | None = None
