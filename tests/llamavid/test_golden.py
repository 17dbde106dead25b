"""Parity with the reference implementation on every golden case (select with ``-k golden``).

Generic over the case format: cases in tests/data/golden and in ``LLAMAVID_GOLDEN_DIRS``. Each
run goes end to end through the public code path (preprocessing, EVA, Q-Former, tokens,
splicing, LLM, greedy generation with the KV cache), comparing every stored tensor it produces.
A stored tensor that no comparison placed fails the run by name: the case then holds an output
this harness does not understand yet, and passing anyway would claim parity never checked.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llamavid.media.preprocess import preprocess_images
from llamavid.model.loading import load_llamavid
from llamavid.model.modeling import split_slots
from llamavid.model.qformer import load_qformer_tokenizer, tokenize_prompts
from llamavid.prompt.builders import movie_prompt
from llamavid.prompt.subtitles import interleave_subtitles
from llamavid.runtime.generate import SamplingOptions, stream
from tests.support.golden import read_runs, run_arrays, run_input, runs, text, weight_keys, write_checkpoint

_MODELS: dict = {}
_CHECKPOINTS: dict = {}


def checkpoint(case: Path, tmp_path_factory) -> Path:
    if case not in _CHECKPOINTS:
        _CHECKPOINTS[case] = write_checkpoint(case, tmp_path_factory.mktemp(case.name))
    return _CHECKPOINTS[case]


def model_for(case: Path, run: dict, tmp_path_factory):
    """One model per (case, image size, config overrides); loading is the slow part."""
    overrides = run.get("config_overrides") or {}
    key = (case, run.get("image_size"), json.dumps(overrides, sort_keys=True))
    if key not in _MODELS:
        if len(_MODELS) > 2:
            _MODELS.clear()
        folder = checkpoint(case, tmp_path_factory)
        _MODELS[key] = load_llamavid(folder, dtype=torch.float32, image_size=run.get("image_size"),
                                     config_overrides=overrides)
    return _MODELS[key]


class Expected:
    """The run's stored outputs; records which ones were compared."""

    def __init__(self, case: Path, name: str, tolerance: dict):
        self.prefix = name + "."
        self.tensors = {k[len(self.prefix):]: v for k, v in load_file(case / "outputs.safetensors").items()
                        if k.startswith(self.prefix)}
        self.tolerance = tolerance
        self.checked: set[str] = set()

    def check(self, name: str, actual: torch.Tensor) -> None:
        if name not in self.tensors:
            return
        want = self.tensors[name]
        got = actual.detach().cpu()
        assert tuple(got.shape) == tuple(want.shape), \
            f"{self.prefix}{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        if want.is_floating_point():
            tol = self.tolerance.get(name, self.tolerance.get("default_abs", 1e-4))
            diff = (got.float() - want.float()).abs().max().item()
            assert diff <= tol, f"{self.prefix}{name}: max |diff| {diff:.3g} > {tol}"
        else:
            assert torch.equal(got.to(want.dtype), want), f"{self.prefix}{name}: values differ"
        self.checked.add(name)


def compare_weights(model, expected: Expected) -> None:
    """``weights`` runs: tensors the loader derives (``eva.pos_embed_interpolated``: EVA's position
    table resized to the run's image size), found under the names :func:`weight_keys` maps them to."""
    state = model.state_dict()
    for name in expected.tensors:
        key = next((k for k in weight_keys(name) if k in state), None)
        if key is not None:
            expected.check(name, state[key])


def llm_forward(model, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, plus the ``inputs_embeds`` and attention mask the decoder (``LlamaModel``) was handed.

    No mask means attend to every position (transformers' rule), i.e. ones over what it received.
    """
    seen: dict = {}

    def grab(module, args, kwargs):
        seen.update(embeds=kwargs.get("inputs_embeds"), mask=kwargs.get("attention_mask"))

    handle = model.model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        logits = model(inputs_embeds=embeds).logits
    finally:
        handle.remove()
    received = seen["embeds"]
    mask = seen["mask"]
    if mask is None:
        mask = torch.ones(received.shape[:2], dtype=torch.int64)
    return logits, received, mask


def check_movie_prompt(run: dict, inputs, question: str, llm_prompt: str | None) -> None:
    names = run["movie_prompt"]
    frame_times = np.asarray(inputs[names["frame_time"]], dtype=np.float64).tolist()
    subtitles = json.loads(text(inputs, names["subtitles"]))
    per_frame = interleave_subtitles(frame_times, subtitles)
    assert per_frame == text(inputs, names["per_frame_text"])
    if llm_prompt is not None:
        assert movie_prompt(per_frame, question) == llm_prompt


def visual_features(model, run: dict, inputs, case: Path, expected: Expected) -> torch.Tensor:
    raw = run_input(case, run["input"], inputs)
    if run["mode"] == "features":
        return torch.as_tensor(np.asarray(raw), dtype=torch.float32)
    images = [raw] if run["mode"] == "image" else raw
    pixels = preprocess_images(images, run.get("image_size", 224), mode=run.get("preprocess", "crop"))
    expected.check("pixel_values", pixels)
    feats = model.encode_images(pixels)
    expected.check("eva_features", feats)
    return feats


def run_case(case: Path, name: str, tmp_path_factory) -> Expected:
    spec = read_runs(case)
    run = spec["runs"][name]
    expected = Expected(case, name, spec.get("tolerance", {}))
    model, report = model_for(case, run, tmp_path_factory)
    if run["mode"] == "weights":
        compare_weights(model, expected)
        return expected
    inputs = run_arrays(case, run)
    prompts = json.loads(text(inputs, run["qformer_prompts"]))[0]
    llm_prompt = text(inputs, run["llm_prompt"]) if run.get("llm_prompt") else None
    if run.get("movie_prompt"):
        check_movie_prompt(run, inputs, prompts[0], llm_prompt)
    feats = visual_features(model, run, inputs, case, expected)
    tok = load_qformer_tokenizer(report.vocab_file)
    ids, mask = tokenize_prompts(tok, prompts)
    expected.check("bert_input_ids", ids)
    expected.check("bert_attention_mask", mask)
    with torch.inference_mode():
        vt = model.visual_tokens(feats, ids, mask, keep_parts=True)
        expected.check("qformer_query_output", vt.query_output)
        for part in ("ctx_pooled", "content_pooled", "context_tokens", "content_tokens"):
            expected.check(part, vt.part(part))
        expected.check("visual_tokens_sample0", vt.tokens)
        input_ids = torch.as_tensor(inputs[run["input_ids"]])[0]
        slots = split_slots(vt.tokens, int((input_ids == -200).sum()))
        embeds = model.embed_inputs(input_ids, slots)
        logits, received, mask = llm_forward(model, embeds)
        expected.check("inputs_embeds", received)
        expected.check("llm_attention_mask", mask)
        expected.check("logits", logits)
    if run.get("generate_new_tokens"):
        opts = SamplingOptions(max_new_tokens=run["generate_new_tokens"], temperature=0, stop_ids=())
        steps = list(stream(model, embeds, opts))
        expected.check("generate_new_ids", torch.tensor([[s.token for s in steps]]))
        expected.check("generate_scores", torch.stack([s.scores for s in steps]).unsqueeze(0))
    return expected


def check_run(case: Path, name: str, tmp_path_factory) -> Expected:
    """Run one golden run; fail on a mismatch, or naming every stored output nothing compared."""
    expected = run_case(case, name, tmp_path_factory)
    unplaced = sorted(set(expected.tensors) - expected.checked)
    assert not unplaced, f"{case.name}-{name}: stored outputs that no code compared: {unplaced}"
    assert expected.checked, f"{case.name}-{name}: the run stores no output"
    return expected


@pytest.mark.parametrize("case,name", runs(), ids=[f"{c.name}-{n}" for c, n in runs()])
def test_golden(case: Path, name: str, tmp_path_factory) -> None:
    check_run(case, name, tmp_path_factory)
