"""``llamavid bench rehearse --size tiny``: the whole rehearsal pipeline, each step in its own process,
on tiny weights written in the released layout; the report has every step's time and memory."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli.bench.rehearse import STEPS


@pytest.mark.slow
def test_tiny_rehearsal_reports_every_step_with_time_memory_and_disk(tmp_path) -> None:
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "cli", "--data-dir", str(tmp_path / "data"), "bench", "rehearse", "--size", "tiny",
           "--work", str(work), "--frames", "12", "--threads", "1", "--vision-engine", "fp32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)  # ~2 min; minutes more under load
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((work / "report-tiny-12.json").read_text())
    assert list(report["steps"]) == [s for s in STEPS if s != "calibrate"]  # a forced engine: no calibration
    for step, record in report["steps"].items():
        process = record["process"]
        assert process["rc"] == 0 and process["wall_s"] > 0, step
        assert process["peak_rss_bytes"] > process["peak_anon_bytes"] > 0, step  # sampled while it ran
        assert process["written_bytes"] >= 0, step
        assert record["phases"] and all(p["seconds"] >= 0 for p in record["phases"].values()), step
    checkpoint = work / "checkpoint-tiny"
    assert {"config.json", "pytorch_model.bin.index.json", "eva_vit_g.pth", "tokenizer.model"} <= \
        {p.name for p in checkpoint.iterdir()}
    assert json.loads((checkpoint / "config.json").read_text())["rope_scaling"] == {"factor": 16.0, "type": "linear"}
    gguf = work / "gguf-tiny-q4_K_M"
    assert (gguf / "llm-q4_K_M.gguf").is_file() and not (gguf / "llm-f16.gguf").exists()  # f16 deleted
    fig = report["figures"]
    for key in ("exact_first_token_s", "exact_first_word_s", "prepare_s", "fast_first_token_s", "fast_first_word_s",
                "follow_up_first_token_s", "restart_first_token_s", "embedding_prefill_tokens_per_s",
                "token_prefill_tokens_per_s",
                "prefill_ratio", "chat_peak_anon_bytes", "prepared_state_bytes"):
        assert fig[key] and fig[key] > 0, key
    assert fig["embedding_prefill_tokens"] > 2 * 12  # the film's rows and the prompt's words
    assert report["steps"]["baseline"]["phases"]["token prefill"]["prefill_tokens"] == fig["embedding_prefill_tokens"]
    assert report["steps"]["restart"]["phases"]["resume and ask"]["turns_resumed"] == 3  # neutral, fast, follow-up
    assert [g["met"] is not None for g in report["goals"]] == [True] * 4
    assert "| **exact** |" in (work / "report-tiny-12.md").read_text()

    # a rerun reuses what was written (no process started for it); steps not asked for keep their figures
    again = subprocess.run([*cmd, "--steps", "weights,convert,features,prepare"], capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "weights: already done, reused" in again.stderr and "prepare: already done, reused" in again.stderr
    rerun = json.loads((work / "report-tiny-12.json").read_text())
    assert all(r["reused"] for r in rerun["steps"].values())
    assert rerun["figures"] == fig
