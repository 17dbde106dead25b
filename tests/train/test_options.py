"""Run options around the core loop: bad data handling, 336-px models, TensorBoard, clear refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llamavid.errors import UserError
from tests.support.train_data import gpt, human
from train.config import TrainArgs
from train.init import build_model
from train.trainer import prepare_args, run

QUICK = dict(stage=2, max_steps=2, batch_size=2, grad_accum=1, num_workers=0, save_steps=100)


@pytest.fixture
def data_with_a_missing_image(dataset, tmp_path) -> Path:
    records = json.loads(dataset["stage2"].read_text())
    records.append({"id": "gone", "image": "gone.png", "conversations": [human("<image>\nWhat?"), gpt("Red.")]})
    path = dataset["stage2"].parent / "with-missing.json"
    path.write_text(json.dumps(records))
    return path


def test_bad_data_stops_the_run_before_training(tiny_init, data_with_a_missing_image, tmp_path):
    with pytest.raises(UserError, match=r"record 4 \(id=gone\): image file not found"):
        run(TrainArgs(data=data_with_a_missing_image, output=tmp_path / "r", init=tiny_init, **QUICK))
    assert not (tmp_path / "r" / "train_log.jsonl").exists()


def test_skip_bad_samples_trains_around_them(tiny_init, data_with_a_missing_image, tmp_path, capsys):
    result = run(TrainArgs(data=data_with_a_missing_image, output=tmp_path / "r", init=tiny_init,
                           skip_bad_samples=True, group_by_modality=False, **{**QUICK, "max_steps": 3}))
    assert result.step == 3 and all(loss == loss for loss in result.losses)
    assert "skipped: record 4 (id=gone): image file not found" in capsys.readouterr().out


def test_tensorboard_scalars_and_json_log(tiny_init, dataset, tmp_path):
    pytest.importorskip("tensorboard")
    result = run(TrainArgs(data=dataset["stage2"], output=tmp_path / "r", init=tiny_init, tensorboard=True, **QUICK))
    assert list((result.output / "tensorboard").glob("events.out.tfevents.*"))
    log = [json.loads(line) for line in (result.output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and {"loss", "lr", "grad_norm", "tokens"} <= set(log[0])


def test_stage1_at_336_px_interpolates_eva_positions(components, dataset, tmp_path):
    args = prepare_args(TrainArgs(stage=1, data=dataset["stage1"], output=tmp_path, image_size=336, compress_type=None,
                                  **{k: components[k] for k in ("llm", "vision", "qformer", "qformer_vocab",
                                                                "qformer_config")}), 1)
    model = build_model(args)
    assert model.model.vision_tower.vision_tower.pos_embed.shape[1] == 577
    assert model.config.compress_type is None and model.config.image_size == 336
    feats = model.encode_images(torch.zeros(1, 3, 336, 336))
    ids = torch.tensor([[2, 30, 3]])
    assert model.visual_tokens(feats, ids, torch.ones_like(ids)).tokens.shape == (1, 577, 64)


@pytest.mark.parametrize("change, message", [
    (dict(stage=1, lora_r=8), "stage 1 does not train"),
    (dict(bits=4), "needs LoRA adapters"),
    (dict(lora_r=8, fsdp="full_shard"), "LoRA with --fsdp"),
    (dict(grad_accum=None, global_batch=5), "not a multiple of batch size"),
])
def test_impossible_combinations_are_refused(tiny_init, dataset, tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        prepare_args(TrainArgs(**{**QUICK, "data": dataset["stage2"], "output": tmp_path, "init": tiny_init,
                                  **change}), 1)
