"""Visual-token modes, splicing, generation and the public API on a tiny released-layout model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llamavid.model.config import LlamaVidConfig
from llamavid.model.layout import IMAGE_TOKEN_INDEX, patch_count, tokens_per_frame
from llamavid.model.loading import load_llamavid
from llamavid.model.modeling import split_slots
from llamavid.model.qformer import tokenize_prompts
from llamavid.model.visual_tokens import pool_content
from llamavid.runtime.generate import SamplingOptions, apply_repetition_penalty, sample, stream


def visual(lv, feats, prompts, **kw):
    return lv.visual_tokens(feats, prompts, **kw)


@pytest.mark.parametrize("compress,count",
                         [(None, 256), ("grid:4", 16), ("grid:2", 4), ("mean", 1), ("mean_concat", 1)])
def test_content_tokens_per_compress_type(compress, count):
    patches = torch.randn(3, 256, 8)
    pooled = pool_content(patches, compress)
    assert pooled.shape == (3, count, 8)
    if compress == "grid:2":  # top-left 8x8 block of the 16x16 grid, row-major
        assert torch.allclose(pooled[:, 0], patches.reshape(3, 16, 16, 8)[:, :8, :8].mean((1, 2)), atol=1e-6)


@pytest.mark.parametrize("compress,size", [(None, 224), (None, 336), ("mean", 224), ("mean_concat", 336),
                                           ("grid:4", 224), ("grid:6", 224), ("grid:5", 336)])
def test_tokens_per_frame_counts_what_pool_content_makes(compress, size):
    """The one counting rule (context planning, training-data checks) against the pooling itself;
    grid:6 at 224 px and grid:5 at 336 px do not divide the patch grid, so they pool to 8x8 and 6x6."""
    patches = torch.randn(1, patch_count(size), 4)
    assert tokens_per_frame(compress, size) == 1 + pool_content(patches, compress).shape[1]
    assert LlamaVidConfig(image_size=size, compress_type=compress).tokens_per_frame == tokens_per_frame(compress, size)


def test_image_tokens_drop_cls_but_qformer_sees_it(tiny):
    feats = torch.randn(1, 257, 176)
    out = visual(tiny, feats, ["what is here"], keep_parts=True)
    assert out.tokens.shape == (1, 2, 64)
    changed = feats.clone()
    changed[:, 0] += 5  # CLS only reaches the Q-Former, so only the context token may move
    out2 = visual(tiny, changed, ["what is here"], keep_parts=True)
    assert torch.equal(out.part("content_pooled"), out2.part("content_pooled"))
    assert not torch.equal(out.query_output, out2.query_output)


def test_video_tokens_are_frame_major_and_per_frame(tiny):
    feats = torch.randn(4, 257, 176)
    out = visual(tiny, feats, ["what happens"])
    assert out.tokens.shape == (1, 8, 64)
    third = visual(tiny, feats[2:3], ["what happens"])
    assert torch.allclose(out.tokens[0, 4:6], third.tokens[0], atol=1e-5)


def test_two_prompts_fill_two_slots(tiny):
    feats = torch.randn(1, 257, 176)
    out = visual(tiny, feats, ["first question", "a second and longer question"])
    assert out.tokens.shape == (2, 2, 64)
    alone = visual(tiny, feats, ["first question"])
    assert torch.allclose(out.tokens[0], alone.tokens[0], atol=1e-5)  # padding does not leak


def test_film_features_in_blocks_equal_one_pass_and_work_from_memmap(tiny, tmp_path):
    feats = np.random.default_rng(0).standard_normal((70, 256, 176)).astype(np.float16)
    path = tmp_path / "film.npy"
    np.save(path, feats)
    mm = np.load(path, mmap_mode="r")
    with torch.inference_mode():
        ids, mask = tokenize_prompts(tiny.qformer_tokenizer, ["who is the captain"])
        blocked = tiny.model.visual_tokens(mm, ids, mask, block_size=8)
        whole = tiny.model.visual_tokens(torch.from_numpy(feats), ids, mask, block_size=1000)
    assert blocked.tokens.shape == (1, 140, 64)
    assert torch.allclose(blocked.tokens, whole.tokens, atol=1e-5)
    slots = split_slots(blocked.tokens, 140)
    assert len(slots) == 140 and slots[3].shape == (1, 64)


def test_splice_puts_rows_at_placeholders(tiny):
    ids = [1, 5, IMAGE_TOKEN_INDEX, 7, IMAGE_TOKEN_INDEX, 9]
    a, b = torch.randn(3, 64), torch.randn(2, 64)
    emb = tiny.model.embed_inputs(ids, [a, b])[0]
    text = tiny.model.model.embed_tokens(torch.tensor([1, 5, 7, 9]))
    assert emb.shape == (4 + 3 + 2, 64)
    assert torch.equal(emb[2:5], a) and torch.equal(emb[6:8], b)
    assert torch.equal(emb[[0, 1, 5, 8]], text)
    with pytest.raises(ValueError, match="2 <image> placeholders but 1 visual"):
        tiny.model.embed_inputs(ids, [a])


def test_greedy_stream_with_cache_matches_full_recompute(tiny):
    model = tiny.model
    emb = model.embed_inputs([1, 20, 30, 40], [])
    steps = list(stream(model, emb, SamplingOptions(max_new_tokens=6, temperature=0, stop_ids=())))
    ids = [1, 20, 30, 40]
    for step in steps:
        with torch.inference_mode():
            logits = model(inputs_embeds=model.embed_inputs(ids, [])).logits[0, -1]
        assert step.token == int(logits.argmax())
        assert torch.allclose(step.scores, logits, atol=1e-4)
        ids.append(step.token)


def test_sampling_is_seeded_and_top_k_1_is_greedy(tiny):
    emb = tiny.model.embed_inputs([1, 20, 30], [])
    opts = SamplingOptions(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=7, stop_ids=())
    first = [s.token for s in stream(tiny.model, emb, opts)]
    assert first == [s.token for s in stream(tiny.model, emb, opts)]
    greedy = [s.token for s in stream(tiny.model, emb, SamplingOptions(max_new_tokens=8, temperature=0, stop_ids=()))]
    top1_opts = SamplingOptions(max_new_tokens=8, temperature=1.0, top_k=1, seed=3, stop_ids=())
    top1 = [s.token for s in stream(tiny.model, emb, top1_opts)]
    assert top1 == greedy


def test_top_p_keeps_the_smallest_set_above_p():
    scores = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    opts = SamplingOptions(temperature=1.0, top_p=0.7, top_k=0)
    seen = {sample(scores, opts, torch.Generator().manual_seed(i)) for i in range(200)}
    assert seen == {0, 1}


def test_repetition_penalty_as_transformers_applies_it():
    scores = torch.tensor([2.0, -2.0, 1.0])
    out = apply_repetition_penalty(scores, [0, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_stream_stops_at_eos_and_session_continues(tiny):
    from llamavid.runtime.generate import Session

    emb = tiny.model.embed_inputs([1, 20, 30], [])
    eos = list(stream(tiny.model, emb, SamplingOptions(max_new_tokens=1, temperature=0, stop_ids=())))[0].token
    steps = list(stream(tiny.model, emb, SamplingOptions(max_new_tokens=5, temperature=0, stop_ids=(eos,))))
    assert [s.token for s in steps] == [eos]
    session = Session()
    list(stream(tiny.model, emb, SamplingOptions(max_new_tokens=2, temperature=0, stop_ids=()), session))
    assert session.length == 3 + 1  # the prompt and the first token were fed; the last is pending


def test_api_image_video_and_film_prompts(tiny):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)
    one = tiny.prepare("What is this?", images=[image])
    assert one.text.count("<image>") == 1 and one.input_ids.count(IMAGE_TOKEN_INDEX) == 1
    assert one.embeds.shape[1] == len(one.input_ids) - 1 + 2
    two = tiny.prepare("Compare them.", images=[image, image[:, ::-1].copy()])
    assert two.input_ids.count(IMAGE_TOKEN_INDEX) == 2 and two.embeds.shape[1] == len(two.input_ids) - 2 + 4
    clip = rng.integers(0, 255, (3, 90, 160, 3), dtype=np.uint8)
    vid = tiny.prepare("What happens?", video=clip)
    assert vid.embeds.shape[1] == len(vid.input_ids) - 1 + 6
    film = rng.standard_normal((4, 256, 176)).astype(np.float16)
    subs = [{"start_time": 0.2, "end_time": 1.5, "text": "Hello captain."}]
    movie = tiny.prepare("Who speaks?", features=film, frame_times=[0, 1, 2, 3], subtitles=subs)
    assert "Below is a movie." in movie.text and "Hello captain." in movie.text
    assert movie.input_ids.count(IMAGE_TOKEN_INDEX) == 8 and movie.embeds.shape[1] == len(movie.input_ids)
    with pytest.raises(ValueError, match="not several"):
        tiny.prepare("x", images=[image], video=clip)


def test_ask_streams_decoded_text(tiny):
    opts = SamplingOptions(max_new_tokens=6, temperature=0)
    pieces = list(tiny.stream("Describe the scene.", opts, images=[np.zeros((50, 50, 3), np.uint8)]))
    prepared = tiny.prepare("Describe the scene.", images=[np.zeros((50, 50, 3), np.uint8)])
    ids = [s.token for s in tiny.generate(prepared, SamplingOptions(max_new_tokens=6, temperature=0))]
    ids = [i for i in ids if i != tiny.tokenizer.eos_token_id]
    assert "".join(pieces) == tiny.tokenizer.decode(ids, skip_special_tokens=True)


def test_vision_free_load_for_feature_chats(tiny_checkpoint):
    model, report = load_llamavid(tiny_checkpoint, load_vision=False)
    assert model.model.vision_tower is None and report.eva_file is None
    with pytest.raises(RuntimeError, match="without its vision tower"):
        model.encode_images(torch.zeros(1, 3, 224, 224))
