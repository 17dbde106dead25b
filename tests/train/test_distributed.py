"""Several processes under torchrun on the CPU (gloo): DDP, and FSDP2 with a resumed run.

These start real ``torchrun`` jobs (two processes each), so they take tens of seconds each on a
small machine; on GPUs the same commands use NCCL.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llamavid.model.loading import load_llamavid
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.generate import SamplingOptions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("init") / "stage1")


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "llamavid", "train", "run", *args]
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
