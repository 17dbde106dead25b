"""``llamavid bench family --size tiny``: random Qwen3-VL weights in the released layout, llama.cpp's own
converter, q4_K_M, a film asked about by seeking, each step in its own process; the report's figures
follow from the steps' records, and LLaMA-VID's are read from a rehearsal report beside them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.llamacpp_converter import converter

REHEARSAL = {"settings": {"frames": 600},
             "figures": {"frames": 600, "exact_first_token_s": 605.0, "fast_first_token_s": 15.9,
                         "follow_up_first_token_s": 14.4, "chat_peak_anon_bytes": 7_910_000_000,
                         "prepared_state_bytes": 438_000_000}}


@pytest.mark.slow
def test_tiny_family_bench_reports_first_words_memory_and_disk_per_prepared_hour(tmp_path) -> None:
    conv, why = converter()
    if conv is None:
        pytest.skip(why)
    rehearsal = tmp_path / "rehearsal"
    rehearsal.mkdir()
    (rehearsal / "report-7b-600.json").write_text(json.dumps(REHEARSAL))
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "cli", "bench", "family", "--size", "tiny", "--work", str(work), "--threads", "1",
           "--rehearsal", str(rehearsal)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # ~40 s; longer under load
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((work / "report-family-tiny-1min.json").read_text())
    assert list(report["steps"]) == ["weights", "convert", "film", "ask"]
    for step, record in report["steps"].items():
        assert record["process"]["rc"] == 0 and record["process"]["peak_anon_bytes"] > 0, step
    assert json.loads((work / "checkpoint-tiny" / "config.json").read_text())["model_type"] == "qwen3_vl"
    files = set(report["steps"]["convert"]["files"])
    assert files == {"qwen3-vl-q4_K_M.gguf", "mmproj-qwen3-vl-f16.gguf"}  # the f16 text model is deleted
    ask = report["steps"]["ask"]["phases"]
    new, state = ask["new question"], ask["state"]
    # a 1-minute film at the tiny budget (64 visual tokens, 8 a pair): 8 pairs, 16 frames seeked
    assert new["frames"] == 16 and new["visual_tokens"] == 64 and new["prompt_tokens"] > 64
    assert new["seconds"] >= new["decode_s"] + new["prefill_s"] - 0.01
    qwen = report["qwen3_vl"]
    assert qwen["new_question_first_token_s"] == new["seconds"]
    assert qwen["follow_up_first_token_s"] == ask["follow-up"]["seconds"]
    assert qwen["chat_peak_anon_bytes"] == report["steps"]["ask"]["process"]["peak_anon_bytes"]
    assert state["bytes_per_token"] == round(state["state_bytes"] / state["cached_tokens"], 1)
    # an hour at this budget is the same 8 pairs, so the hour's first turn is this one's tokens
    assert qwen["hour_first_turn_tokens"] == new["prompt_tokens"]
    assert qwen["disk_per_prepared_hour_bytes"] == round(state["bytes_per_token"] * new["prompt_tokens"])
    lv = report["llama_vid_7b"]
    assert lv["new_question_first_token_s"] == 605.0 and lv["follow_up_first_token_s"] == 14.4
    assert lv["disk_per_prepared_hour_bytes"] == 438_000_000 * 6  # 600 frames: a tenth of an hour
