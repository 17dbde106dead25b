"""The three stages end to end on a tiny model: Vicuna + EVA + InstructBLIP -> stage 1 -> 2 -> 3 -> chat.

Each stage overfits a handful of samples; the tests check that the loss falls, that exactly the
stage's parts changed (frozen tensors bit-identical), that the saved folder holds what was
trained, and that the final model loads and answers through ``LlamaVid.load`` like a released one.
Which parts each stage trains is written out below from the reference (spec 10.3), not read from
``train.config``, so a wrong preset there fails here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llamavid.model.layout import drop_cls
from llamavid.model.loading import load_llamavid
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.generate import SamplingOptions
from train.config import TrainArgs
from train.init import build_model
from train.trainer import prepare_args, run

# The model's parts, by parameter-name prefix (names as in the released checkpoints).
LLM_PARTS = ("model.embed_tokens", "model.layers", "model.norm", "lm_head")
QFORMER_STACK = ("model.vlm_att_encoder", "model.vlm_att_query", "model.vlm_att_ln")
ATT_PROJECTORS = ("model.vlm_att_projector", "model.vlm_att_key_projector", "model.vlm_att_val_projector")
PARTS = (*LLM_PARTS, *QFORMER_STACK, *ATT_PROJECTORS, "model.mm_projector", "model.vision_tower")
# Spec 10.3, "Trainable sets": stage 1 the four projectors (Q-Former, queries, vlm_att_ln, EVA and LLM
# frozen); stage 2 LLM + mm_projector + the entire Q-Former stack (EVA frozen); stage 3
# (qformer_pretrain_freeze_all) LLM + mm_projector only. EVA is never trained.
STAGE_TRAINS = {
    1: {"model.mm_projector", *ATT_PROJECTORS},
    2: {*LLM_PARTS, "model.mm_projector", *QFORMER_STACK, *ATT_PROJECTORS},
    3: {*LLM_PARTS, "model.mm_projector"},
}


def part_of(name: str) -> str:
    found = [p for p in PARTS if name == p or name.startswith(p + ".")]
    assert len(found) == 1, f"{name}: belongs to {found or 'no known part'}"
    return found[0]


def never_updated(names: set[str]) -> set[str]:
    """Trainable weights that get no gradient, so stay as they were, by the model's maths.

    * The Q-Former's last layer has separate FFNs for query and text rows, and only the query rows
      leave it (spec 3.1): its text FFN (``intermediate.`` / ``output.``) never affects the loss.
    * An attention key bias adds the same amount to every score of a query; softmax ignores it, so
      its gradient is zero in exact arithmetic (rounding may still move it a little).
    """
    layers = {n.split(".")[5] for n in names if n.startswith("model.vlm_att_encoder.bert.encoder.layer.")}
    last = f"model.vlm_att_encoder.bert.encoder.layer.{max(map(int, layers))}." if layers else None
    text_ffn = {n for n in names if last and n.startswith((last + "intermediate.", last + "output."))}
    return text_ffn | {n for n in names if n.endswith(".self.key.bias")}


def stage_args(stage: int, data: Path, output: Path, **kw) -> TrainArgs:
    defaults = dict(batch_size=2, grad_accum=1, num_workers=0, save_steps=100)
    return TrainArgs(stage=stage, data=data, output=output, **{**defaults, **kw})


def initial_state(args: TrainArgs) -> dict[str, torch.Tensor]:
    """The run's starting weights, rebuilt the way the trainer builds them."""
    return {k: v.clone() for k, v in build_model(prepare_args(args, 1)).state_dict().items()}


def changed(before: dict, model: torch.nn.Module) -> set[str]:
    after = dict(model.named_parameters())
    return {k for k, v in after.items() if not torch.equal(before[k], v.detach().float().cpu())}


def check_freezing(before: dict, result, stage: int) -> None:
    """Exactly the stage's parts changed: every weight of a trained part moved (but those the maths
    never updates), and every weight of a frozen part is bit-identical."""
    names = {n for n, _ in result.model.named_parameters()}
    trained = {n for n in names if part_of(n) in STAGE_TRAINS[stage]}
    moved = changed(before, result.model)
    assert {part_of(n) for n in moved} == STAGE_TRAINS[stage]
    frozen_moved = moved - trained
    still = trained - moved - never_updated(names)
    assert not frozen_moved and not still, (f"changed but frozen: {sorted(frozen_moved)[:5]}; "
                                            f"trainable but unchanged: {sorted(still)[:5]}")
    assert not any(part_of(k) == "model.vision_tower" for k in moved)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_presets_select_the_reference_parts(stage):
    """The presets' bert_type and train_llm pick the spec's parts (the trained runs below check the same
    on real runs; this names the preset at fault in a second)."""
    from llamavid.model.tiny import random_model, tiny_config
    from train.config import matches, preset, trainable_prefixes

    p = preset(stage)
    prefixes = trainable_prefixes(p.train_llm, p.bert_type)
    names = [n for n, _ in random_model(tiny_config()).named_parameters()]
    assert {part_of(n) for n in names} == set(PARTS)  # every part exists in the model
    assert {part_of(n) for n in names if matches(n, prefixes)} == STAGE_TRAINS[stage]


def falls(losses: list[float], by: float) -> bool:
    return np.mean(losses[-3:]) < np.mean(losses[:3]) - by


@pytest.fixture(scope="module")
def stage1(components, dataset, tmp_path_factory):
    args = stage_args(1, dataset["stage1"], tmp_path_factory.mktemp("s") / "stage1", max_steps=12,
                      learning_rate=1e-2, **{k: components[k] for k in
                                              ("llm", "vision", "qformer", "qformer_vocab", "qformer_config")})
    return args, initial_state(args), run(args)


@pytest.fixture(scope="module")
def stage2(stage1, dataset):
    args = stage_args(2, dataset["stage2"], stage1[2].output.parent / "stage2", init=stage1[2].output,
                      max_steps=12, learning_rate=2e-3)
    return args, initial_state(args), run(args)


@pytest.fixture(scope="module")
def stage3(stage2, dataset):
    args = stage_args(3, dataset["stage3"], stage2[2].output.parent / "stage3", init=stage2[2].output,
                      max_steps=10, batch_size=1, grad_accum=2, learning_rate=2e-3, max_length=8192)
    return args, initial_state(args), run(args)


def test_stage1_trains_only_the_projectors(stage1):
    args, before, result = stage1
    assert result.step == 12 and falls(result.losses, 0.2), result.losses
    check_freezing(before, result, 1)


def test_stage1_saves_a_loadable_model_and_the_reference_projector_file(stage1):
    args, _, result = stage1
    out = result.output
    assert (out / "pytorch_model.bin.index.json").is_file() and (out / "tokenizer.model").is_file()
    loaded, _ = load_llamavid(out)
    trained = dict(result.model.named_parameters())
    assert (out / "eva_vit_g.pth").is_file()  # the loader prefers it, as for released folders
    for name, tensor in loaded.state_dict().items():
        if name in trained and not name.startswith("model.vision_tower."):  # saved in bf16, like released files
            assert torch.equal(tensor, trained[name].detach().to(torch.bfloat16).float()), name
    projector = torch.load(out / "mm_projector.bin", weights_only=True)
    assert "model.mm_projector.0.weight" in projector and "model.vlm_att_query" in projector
    assert all(k.startswith(("model.mm_projector.", "model.vlm_att")) for k in projector)
    assert loaded.config.bert_type == "qformer_pretrain_freeze" and loaded.config.image_aspect_ratio == "square"


def test_stage2_trains_llm_and_qformer(stage2):
    args, before, result = stage2
    assert falls(result.losses, 0.3), result.losses
    check_freezing(before, result, 2)


def test_stage2_from_the_reference_projector_file(stage1, components, dataset, tmp_path):
    """Stage 2 the reference's way: Vicuna + EVA + stage 1's mm_projector.bin gives the same start."""
    args = stage_args(2, dataset["stage2"], tmp_path / "s2", llm=components["llm"], vision=components["vision"],
                      projector=stage1[2].output / "mm_projector.bin", qformer_vocab=components["qformer_vocab"],
                      qformer_config=components["qformer_config"])
    from_bin = initial_state(args)
    from_folder = load_llamavid(stage1[2].output)[0].state_dict()
    assert from_folder.keys() == from_bin.keys()
    for name in from_bin:
        if name.startswith(("model.mm_projector.", "model.vlm_att")):
            assert torch.equal(from_bin[name], from_folder[name].float()), name


def test_stage3_trains_llm_and_mm_projector_with_long_rope(stage3):
    args, before, result = stage3
    assert falls(result.losses, 0.2), result.losses
    check_freezing(before, result, 3)
    assert result.model.config.rope_parameters["factor"] == 2.0  # 8192 tokens on a 4096-position LLaMA


def test_final_model_chats_through_the_users_loader(stage3, dataset):
    lv = LlamaVid.load(stage3[2].output, device="cpu", dtype="fp32")
    assert lv.config.rope_parameters["rope_type"] == "linear"
    greedy = SamplingOptions(max_new_tokens=6, temperature=0)
    folder = dataset["stage1"].parent
    image = np.asarray(Image.open(folder / "red.png"))
    film = drop_cls(np.load(folder / "film1.npy"))  # films are fed without their CLS row
    for answer in (lv.ask("What color is it?", greedy, images=[image]), lv.ask("Where is the ship going?", greedy),
                   lv.ask("Where are they going?", greedy, features=film)):
        assert isinstance(answer, str) and answer.strip()
