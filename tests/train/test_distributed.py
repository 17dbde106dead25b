"""Several processes under torchrun on the CPU (gloo): DDP, and FSDP2 with a resumed run.

These start real ``torchrun`` jobs (two processes each), so they take tens of seconds each on a
small machine; on GPUs the same commands use NCCL.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llamavid.model.loading import load_llamavid
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.generate import SamplingOptions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``llamavid train run`` under torchrun, or as one plain process with ``processes=1``."""
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] if processes == 2 else []
    cmd = [sys.executable, *launch, "-m", "cli", "train", "run", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def common(tiny_init: Path, data: Path, output: Path) -> list[str]:
    return ["--stage", "2", "--init", str(tiny_init), "--data", str(data), "--output", str(output),
            "--batch-size", "1", "--grad-accum", "2", "--num-workers", "0", "--lr", "1e-3", "--device", "cpu"]


def test_ddp_two_processes_train_and_save_a_model_that_chats(tiny_init, dataset, tmp_path):
    out = tmp_path / "ddp"
    proc = torchrun(*common(tiny_init, dataset["stage2"], out), "--max-steps", "3")
    assert proc.stdout.count("done: 3 steps") == 1, proc.stdout  # rank 0 reports, rank 1 is quiet
    assert "1 x 2 processes x 2 accumulation" in proc.stdout
    lv = LlamaVid.load(out, device="cpu", dtype="fp32")
    assert lv.ask("Where is the ship going?", SamplingOptions(max_new_tokens=4, temperature=0)).strip()


@pytest.fixture(scope="module")
def init_without_dropout(tiny_init: Path, tmp_path_factory) -> Path:
    """A copy of the tiny checkpoint with the Q-Former's dropout off: dropout draws its masks from each
    rank's own seed, so with it two processes cannot compute what one does."""
    folder = shutil.copytree(tiny_init, tmp_path_factory.mktemp("init") / "no-dropout")
    qformer = folder / "qformer_config.json"
    qformer.write_text(json.dumps({**json.loads(qformer.read_text()), "hidden_dropout_prob": 0.0,
                                   "attention_probs_dropout_prob": 0.0}))
    return folder


def step_losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "train_log.jsonl").read_text().splitlines()]


def test_ddp_matches_one_process_with_the_same_global_batch(init_without_dropout, dataset, tmp_path):
    """2 processes x 2 accumulation x batch 1 and 1 process x 4 accumulation x batch 1 see the same 4
    samples per step (plain shuffling: the modality grouping depends on the process count) and
    average the same 4 micro-batch gradients, so they train the same weights."""
    runs = {}
    for name, processes, accum in (("ddp", 2, "2"), ("one", 1, "4"), ("half", 1, "2")):
        args = common(init_without_dropout, dataset["stage2"], tmp_path / name)
        args[args.index("--grad-accum") + 1] = accum
        torchrun(*args, "--max-steps", "3", "--no-group-by-modality", processes=processes)
        runs[name] = (step_losses(tmp_path / name), load_llamavid(tmp_path / name)[0].state_dict())
    (ddp_losses, ddp), (one_losses, one), (half_losses, half) = runs["ddp"], runs["one"], runs["half"]
    # float32 sums in another order (gloo's all-reduce vs local accumulation): ~1e-7 relative
    assert ddp_losses == pytest.approx(one_losses, rel=1e-5)
    assert half_losses != pytest.approx(one_losses, rel=1e-5)  # negative control: global batch 2

    def off_by_more_than_a_bf16_step(a: torch.Tensor, b: torch.Tensor) -> int:
        """Elements further apart than one bf16 step (the saved files are bf16: 8 significant bits)."""
        return int(((a - b).abs() > 2.0 ** -7 * torch.maximum(a.abs(), b.abs()) + 1e-30).sum())

    start = load_llamavid(init_without_dropout)[0].state_dict()
    trained = [k for k in one if not torch.equal(one[k], start[k])]
    # attention key biases get no gradient in exact arithmetic; AdamW turns their rounding noise into
    # steps of size lr, which differ between any two summation orders
    compared = [k for k in trained if not k.endswith(".self.key.bias")]
    assert len(compared) > 20 and any(k.startswith("model.layers.") for k in compared)
    assert {k: n for k in compared if (n := off_by_more_than_a_bf16_step(ddp[k], one[k]))} == {}
    assert sum(off_by_more_than_a_bf16_step(half[k], one[k]) for k in compared) > 1000  # negative control


def test_fsdp_run_resumes_from_its_sharded_checkpoint(tiny_init, dataset, tmp_path):
    out = tmp_path / "fsdp"
    args = [*common(tiny_init, dataset["stage2"], out), "--max-steps", "4", "--save-steps", "2",
            "--save-total-limit", "2", "--fsdp", "full_shard"]
    torchrun(*args)
    assert sorted(p.name for p in (out / "checkpoint-2").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    straight = load_llamavid(out)[0].state_dict()
    shutil.rmtree(out / "checkpoint-4")  # as if killed between the checkpoints at steps 2 and 4
    for f in [*out.glob("pytorch_model*"), out / "config.json"]:
        f.unlink()
    proc = torchrun(*args)
    assert "resuming from checkpoint-2" in proc.stdout, proc.stdout
    resumed = load_llamavid(out)[0].state_dict()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name
