"""The three stages end to end on a tiny model: Vicuna + EVA + InstructBLIP -> stage 1 -> 2 -> 3 -> chat.

Each stage overfits a handful of samples; the tests check that the loss falls, that exactly the
stage's parts changed (frozen tensors bit-identical), that the saved folder holds what was
trained, and that the final model loads and answers through ``LlamaVid.load`` like a released one.
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
from train.config import TrainArgs, matches, trainable_prefixes
from train.init import build_model
from train.params import unused_qformer_params
from train.trainer import prepare_args, run


def stage_args(stage: int, data: Path, output: Path, **kw) -> TrainArgs:
    defaults = dict(batch_size=2, grad_accum=1, num_workers=0, save_steps=100)
    return TrainArgs(stage=stage, data=data, output=output, **{**defaults, **kw})


def initial_state(args: TrainArgs) -> dict[str, torch.Tensor]:
    """The run's starting weights, rebuilt the way the trainer builds them."""
    return {k: v.clone() for k, v in build_model(prepare_args(args, 1)).state_dict().items()}


def changed(before: dict, model: torch.nn.Module) -> set[str]:
    after = dict(model.named_parameters())
    return {k for k, v in after.items() if not torch.equal(before[k], v.detach().float().cpu())}


def check_freezing(before: dict, result, stage_prefixes: tuple[str, ...]) -> None:
    trained = {n for n, _ in result.model.named_parameters() if matches(n, stage_prefixes)}
    trained -= unused_qformer_params(result.model)
    moved = changed(before, result.model)
    # an attention key bias adds the same amount to every score of a query: softmax ignores it, its
    # gradient is zero in exact arithmetic, so it may stay as it was
    trained -= {n for n in trained - moved if n.endswith(".self.key.bias")}
    assert moved == trained, (f"changed but frozen: {sorted(moved - trained)[:5]}; "
                              f"trainable but unchanged: {sorted(trained - moved)[:5]}")
    assert not any(k.startswith("model.vision_tower.") for k in moved)


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
    check_freezing(before, result, trainable_prefixes(False, "qformer_pretrain_freeze"))


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
    check_freezing(before, result, trainable_prefixes(True, "qformer_pretrain"))


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
    check_freezing(before, result, trainable_prefixes(True, "qformer_pretrain_freeze_all"))
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
