"""An interrupted run continues from its last checkpoint to exactly the weights of an uninterrupted one.

Two ways to be interrupted: SIGKILL of a training process (nothing saved at the kill; the run
continues from the last ``--save-steps`` checkpoint) and SIGTERM (a cluster pre-empting the job:
the step finishes, a checkpoint is saved, the process stops). Same seed, same data: the resumed
run must reproduce the uninterrupted run's losses and final float32 weights bit for bit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cli
from llamavid.errors import UserError
from llamavid.model.loading import load_llamavid
from train.config import TrainArgs
from train.progress import Progress
from train.trainer import run

ROOT = Path(__file__).resolve().parents[2]
COMMON = dict(stage=2, max_steps=10, batch_size=2, grad_accum=2, save_steps=3, learning_rate=2e-3, seed=7)


@pytest.fixture(scope="module")
def straight(tiny_init, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    return run(TrainArgs(data=dataset["stage2"], output=out, init=tiny_init, num_workers=0, **COMMON))


def assert_same_run(resumed, straight) -> None:
    start = straight.total_steps - len(resumed.losses)
    assert 0 < start < straight.total_steps, "the resumed run did not start from a checkpoint"
    assert resumed.losses == straight.losses[start:]
    theirs = dict(straight.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, theirs[name]), name


def logged_step(output: Path) -> int:
    log = output / "train_log.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    return json.loads(lines[-1])["step"] if lines else 0


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights(tiny_init, dataset, straight, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli", "train", "run", "--stage", "2", "--data", str(dataset["stage2"]),
           "--init", str(tiny_init), "--output", str(out), "--max-steps", "10", "--batch-size", "2",
           "--grad-accum", "2", "--save-steps", "3", "--lr", "2e-3", "--seed", "7", "--num-workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while logged_step(out) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{output}"
    at_kill = logged_step(out)
    assert 5 <= at_kill < 10, output
    resumed = run(TrainArgs(data=dataset["stage2"], output=out, init=tiny_init, num_workers=0, **COMMON))
    assert resumed.step == 10
    assert_same_run(resumed, straight)
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-10"]  # --save-total-limit 1
    assert not list(out.glob(".checkpoint-*"))


def test_sigterm_saves_and_stops_then_resumes(tiny_init, dataset, straight, tmp_path, monkeypatch):
    original = Progress.step

    def terminate_at_4(self, step, values):
        original(self, step, values)
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "run"
    args = dict(data=dataset["stage2"], output=out, init=tiny_init, num_workers=0, **COMMON)
    with monkeypatch.context() as patch:
        patch.setattr(Progress, "step", terminate_at_4)
        stopped = run(TrainArgs(**args))
    assert stopped.stopped_early and stopped.step == 4
    assert (out / "checkpoint-4").is_dir() and not (out / "config.json").exists()
    resumed = run(TrainArgs(**args))
    assert len(resumed.losses) == 6
    assert_same_run(resumed, straight)


def test_resume_refuses_changed_settings(tiny_init, dataset, straight):
    changed = {**COMMON, "learning_rate": 1e-3}
    with pytest.raises(UserError, match="learning_rate"):
        run(TrainArgs(data=dataset["stage2"], output=straight.output, init=tiny_init, **changed))


def test_export_turns_a_checkpoint_into_the_runs_model(straight, tmp_path):
    assert cli.main(["train", "export", str(straight.output / "checkpoint-10"), "--output", str(tmp_path / "x")]) == 0
    exported, final = load_llamavid(tmp_path / "x")[0].state_dict(), load_llamavid(straight.output)[0].state_dict()
    assert exported.keys() == final.keys()
    assert all(torch.equal(exported[k], final[k]) for k in final)
