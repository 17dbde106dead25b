"""``llamavid bench`` (smoke mode through the CLI), int8 vision quantization and EVA's fused q/v bias."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch
import torch.nn.functional as F

import cli
from cli.bench.vision import reference_attention_in
from llamavid.model.eva import Attention, EvaConfig, EvaVisionTower, random_eva_state
from llamavid.model.quantize_vision import quantize_vision, quantized_linears
from llamavid.model.tiny import random_model, tiny_config


def small_tower(depth: int = 2, image_size: int = 224) -> EvaVisionTower:
    cfg = EvaConfig(image_size=image_size, width=176, depth=depth, mlp_hidden=256)
    return EvaVisionTower.from_state_dict(random_eva_state(cfg, seed=3), cfg)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


@pytest.mark.slow
def test_smoke_llamacpp_stage_compares_both_backends_and_both_prefixes(llamavid_cmd: list[str]) -> None:
    proc = subprocess.run([*llamavid_cmd, "bench", "--smoke", "--only", "llamacpp"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    got = {(r["backend"], r["prefix"], r["phase"]): r for r in records if r["bench"] == "llamacpp"}
    assert set(got) == {(b, p, ph) for b in ("transformers", "llama.cpp-f16", "llama.cpp-q8_0")
                        for p in ("tokens", "embeddings") for ph in ("prefill", "decode")}
    assert all(r["tokens_per_s"] > 0 for r in got.values())
    # the same prompt as ids or as spliced embedding rows (the backend's own table, for llama.cpp the
    # GGUF's dequantized rows): the same greedy answer in each backend, quantized ones included
    assert all(got[b, "embeddings", "decode"]["same_tokens_as_token_prefix"] == 1.0
               for b in ("transformers", "llama.cpp-f16", "llama.cpp-q8_0"))
    sizes = {b: got[b, "tokens", "prefill"]["gguf_bytes"] for b in ("llama.cpp-f16", "llama.cpp-q8_0")}
    assert sizes["llama.cpp-q8_0"] < sizes["llama.cpp-f16"]
    assert not any(r["bench"] in ("eva", "qformer", "llm") for r in records)  # only the stage asked for


@pytest.mark.slow
def test_smoke_bench_through_the_cli(llamavid_cmd: list[str]) -> None:
    proc = subprocess.run([*llamavid_cmd, "bench", "--smoke"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout is JSON lines only
    assert records[0]["bench"] == "env"
    assert not [r for r in records if "error" in r], records
    eva = {(r["image_size"], r["variant"]): r for r in records if r["bench"] == "eva"}
    for size in (224, 336):
        for variant in ("eager-fp32", "sdpa-fp32", "sdpa-int8"):
            r = eva[size, variant]
            assert r["frames_per_s"] > 0 and r["median_s"] >= r["min_s"] > 0
            assert r["cosine_vs_fp32"] > 0.99 and r["speedup_vs_eager"] > 0
        assert eva[size, "sdpa-fp32"]["cosine_vs_fp32"] > 0.99999  # SDPA is the same maths
    qformer = {r["variant"]: r for r in records if r["bench"] == "qformer"}
    assert set(qformer) == {"fp32", "fp32-unfolded", "int8"}
    assert all(r["frames_per_s"] > 0 and r["cosine_vs_fp32"] > 0.99 for r in qformer.values())
    assert qformer["fp32-unfolded"]["cosine_vs_fp32"] > 0.99999  # the folded shortcut is the same maths
    preprocess = {(r["image_size"], r["variant"]) for r in records if r["bench"] == "preprocess"}
    assert preprocess == {(size, mode) for size in (224, 336) for mode in ("crop", "pad")}  # a default stage
    llm = {(r["variant"], r["phase"]): r for r in records if r["bench"] == "llm"}
    assert set(llm) == {(v, p) for v in ("ours-stream", "hf-generate") for p in ("prefill", "decode")}
    assert all(r["tokens_per_s"] > 0 for r in llm.values())
    assert llm["hf-generate", "decode"]["same_tokens_as_ours"] == 1.0  # greedy, same weights


def test_preprocess_stage_times_full_hd_frames_per_size_and_mode(capsys, monkeypatch) -> None:
    import cli.bench.preprocess as stage

    calls = []
    real = stage.preprocess_frame

    def counted(frame, image_size, mode):
        calls.append((frame.shape, image_size, mode))
        return real(frame, image_size, mode)

    monkeypatch.setattr(stage, "preprocess_frame", counted)
    assert cli.main(["bench", "--smoke", "--only", "preprocess", "--repeats", "2", "--sizes", "224,336"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["bench"] for r in records] == ["env"] + ["preprocess"] * 4  # only the stage asked for
    got = {(r["image_size"], r["variant"]): r for r in records[1:]}
    assert set(got) == {(224, "crop"), (224, "pad"), (336, "crop"), (336, "pad")}
    for r in got.values():
        assert r["frame"] == "1920x1080" and r["repeats"] == 2
        assert r["median_s"] >= r["min_s"] > 0
        # median_s is rounded to 0.1 ms, the other two come from the unrounded median
        assert abs(r["ms_per_frame"] - 1000 * r["median_s"]) <= 0.05 + 0.005
        assert r["frames_per_s"] == pytest.approx(1 / r["median_s"], rel=0.5e-4 / r["median_s"] + 1e-6)
    # what was timed: one warm-up and 2 rounds of the real preprocessing per size and mode, on 1080p frames
    assert sorted(calls) == sorted([((1080, 1920, 3), size, mode) for size in (224, 336)
                                    for mode in ("crop", "pad")] * 3)


def test_bad_stage_is_a_one_line_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--only", "eva,nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamavid: error: --only: unknown stage(s) nope") and err.count("\n") == 1


def test_other_benchmarks_are_bench_subcommands(llamavid_cmd: list[str]) -> None:
    """`llamavid bench decode|film|server` parse their own options (and the global ones) once named;
    without a name `llamavid bench` times the stages."""
    from cli.bench import BENCHMARKS

    parser = cli.build_parser()
    stages = parser.parse_args(["bench", "--only", "eva", "--smoke"])
    assert stages.benchmark is None and stages.only == ["eva"]
    film = parser.parse_args(["--data-dir", "/d", "bench", "film", "--frames", "6", "--prepared"])
    assert (film.benchmark, film.frames, film.prepared, film.data_dir) == ("film", 6, True, "/d")
    served = parser.parse_args(["bench", "server", "--model", "m", "--data-dir", "/e"])
    assert (served.benchmark, served.model, served.data_dir, served.tokens) == ("server", "m", "/e", 300)
    for name in BENCHMARKS:
        proc = subprocess.run([*llamavid_cmd, "bench", name, "--help"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: llamavid bench {name}"), proc.stderr
        assert "--data-dir" in proc.stdout


def test_engines_option_limits_the_engines_timed_and_names_unknown_ones(capsys) -> None:
    from cli.bench import add_arguments, make_plan

    def plan(*argv: str):
        import argparse

        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return make_plan(parser.parse_args(["--device", "cpu", *argv]))

    assert plan("--engines", "int8,openvino-int8").engines == ("int8", "openvino-int8")
    assert plan("--engines", "none").engines == ()
    assert plan().engines is None  # every engine that can run here
    assert cli.main(["bench", "--engines", "int8,fast"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamavid: error: --engines: unknown engine(s) fast") and "openvino-int8" in err


def test_unknown_model_name_says_what_to_do(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--data-dir", str(tmp_path), "bench", "--model", "no-such-model", "--smoke"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamavid: error: unknown model 'no-such-model'") and "models list" in err


def test_fused_qkv_bias_equals_default_attention() -> None:
    torch.manual_seed(0)
    attn = Attention(EvaConfig(width=176)).eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, 17, 176)
    with torch.no_grad():
        want = attn(x)
        weight = attn.qkv.weight
        attn.fuse_qkv_bias()
        attn.fuse_qkv_bias()  # idempotent
        got = attn(x)
    assert attn.qkv_fused_bias and attn.qkv.bias is not None
    assert attn.qkv.weight is weight  # shared, not copied
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_reference_attention_matches_ours_and_is_restored() -> None:
    tower = small_tower()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = tower(x)
        with reference_attention_in(tower):
            eager = tower(x)
        again = tower(x)
    torch.testing.assert_close(eager, ours, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, ours)
    assert all("forward" not in vars(m) for m in tower.modules())


def test_quantize_vision_keeps_eva_features() -> None:
    tower = small_tower(depth=2)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = tower(x)
        assert quantize_vision(tower, "int8") is tower
        got = tower(x)
    names = [name for name, _ in quantized_linears(tower)]
    assert len(names) == 2 * 4  # qkv, proj, fc1, fc2 per block
    assert not any(type(m) is torch.nn.Linear for m in tower.modules())
    assert cos(got, want) >= 0.999


def test_quantize_qformer_side_only_on_a_model() -> None:
    model = random_model(tiny_config())
    feats = torch.randn(3, 257, 176, generator=torch.Generator().manual_seed(2))
    ids, mask = torch.randint(5, 90, (1, 7)), torch.ones(1, 7, dtype=torch.long)
    with torch.inference_mode():
        want = model.visual_tokens(feats, ids, mask).tokens
    quantize_vision(model, vision=False, qformer=True)
    names = [name for name, _ in quantized_linears(model)]
    assert names and not any("vision_tower" in n or "layers." in n or "lm_head" in n for n in names)
    assert any("vlm_att_encoder" in n for n in names) and any("vlm_att_key_projector" in n for n in names)
    assert not any("mm_projector" in n or "val_projector" in n for n in names)  # one row per frame: kept fp32
    with torch.inference_mode():
        got = model.visual_tokens(feats, ids, mask).tokens
    assert cos(got, want) >= 0.999


def test_quantize_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="float32"):
        quantize_vision(small_tower(depth=1).to(torch.bfloat16))
    with pytest.raises(ValueError, match="unknown quantization mode"):
        quantize_vision(small_tower(depth=1), "int4")
    tower = small_tower(depth=1)
    assert quantize_vision(tower, "none") is tower and not list(quantized_linears(tower))


@pytest.mark.slow
def test_film_bench_times_a_new_question_and_a_follow_up_on_the_engine_asked_for() -> None:
    import io

    from cli.bench import film

    out = io.StringIO()
    records = film.time_film(frames=6, llm_size="tiny", threads=1, stream=out, vision_engine="int8")
    assert [json.loads(line) for line in out.getvalue().splitlines()] == records
    new, follow = records
    assert new["question"] == "new question" and follow["question"] == "follow-up"
    assert new["qformer_engine"] == follow["qformer_engine"] == "int8"
    assert new["qformer_s"] > 0 and follow["qformer_s"] == 0  # only the first question reads the film
    assert new["prompt_tokens"] >= 2 * 6 and follow["prompt_tokens"] > new["prompt_tokens"]
    assert film.time_film(frames=6, llm_size="tiny", threads=1, stream=io.StringIO())[0]["qformer_engine"] == "fp32"
