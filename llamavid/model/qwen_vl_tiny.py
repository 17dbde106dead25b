"""Tiny random Qwen3-VL checkpoints in the released layout, made offline in about a second.

The second model family (docs/second-family.md) is tested the way LLaMA-VID is (``tiny.py``): a
random model with small sizes, saved as the released ``Qwen/Qwen3-VL-*-Instruct`` repos are:
``config.json`` (the released keys: ``rope_scaling`` with ``mrope_section``, ``rope_theta``, the
vision token ids), ``generation_config.json``, ``model.safetensors`` under the released tensor
names, and the tokenizer and processor files (``tokenizer.json``, ``vocab.json``, ``merges.txt``,
``tokenizer_config.json``, ``chat_template.json``, ``preprocessor_config.json``,
``video_preprocessor_config.json``). llama.cpp's converter and transformers read it as they read a
released model.

The tokenizer is a byte-level BPE trained here with the ``tokenizers`` library on a small corpus,
with Qwen2's pre-tokenizer (the regex llama.cpp knows as ``qwen2``) and Qwen3-VL's added tokens in
their released order; only the ids differ (a 400-piece vocabulary instead of 151,643), and the
config's token ids follow them.

Sizes: the text model is a 3-layer Qwen3 (hidden 64, 4 heads, 2 KV heads of 16); the vision tower a
2-block ViT (hidden 32) with the released patch (16 px), spatial merge (2) and temporal patch (2),
so one visual token still covers 32x32 pixels of two frames, and DeepStack taps on both blocks. The
text model has more layers than there are taps, as every released size has (3 taps, 28-36 layers):
llama.cpp adds tap ``i`` after layer ``i`` and cannot add one after the last layer (whose rows it has
already cut to the outputs), a case no released model meets.
``initializer_range`` is raised from 0.02 so that random logits have margins wide enough for two
backends' greedy choices to be compared.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

__all__ = ["QWEN2_PRETOKENIZE_REGEX", "SPECIAL_TOKENS", "TINY_BPE_SIZE", "tiny_qwen_vl_config",
           "write_tiny_qwen_vl", "write_qwen_tokenizer"]

#: Qwen2's pre-tokenizer (its tokenizer.json, and llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_QWEN2``).
QWEN2_PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                           r"|\s*[\r\n]+|\s+(?!\S)|\s+")

#: Qwen3-VL's added tokens in their released order (151643...151668 there), and whether each is
#: special (the released ``added_tokens_decoder``: tool and think tags are not).
SPECIAL_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", True), ("<|fim_middle|>", True), ("<|fim_suffix|>", True), ("<|fim_pad|>", True),
    ("<|repo_name|>", True), ("<|file_sep|>", True), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]
TINY_BPE_SIZE = 400
#: The config's vocabulary, padded past the added tokens as the released 151,936 is.
TINY_VOCAB_SIZE = 448

CORPUS = """Below is a movie. Memorize the content and answer my question after watching this movie.
What is happening in this image? Describe the video. Who is the woman in the red coat?
The captain looks at the sea. The ship sails into the harbor at night. Where are they going?
Now the movie ends. What does the man say at the start? Why does the dog run away?
<0.5 seconds> <1.5 seconds> <12.0 seconds> <3605.0 seconds> 0 1 2 3 4 5 6 7 8 9 . , ! ? ' " : ; ( ) -
I've been told he's there. You're sure? We'll make it. They'd like some tea. It's 10:42 pm.
the a an of to in on at by for with from and or but not is are was were he she it they we you
"""

#: Qwen3-VL-Instruct's chat template, reduced to what the tests and the prompt builders use:
#: system, user and assistant turns whose content is a string or a list of text, image and video
#: parts (tools and reasoning are left out). The released template renders these the same way.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content['type'] == 'video' or 'video' in content %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in content %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def token_id(name: str) -> int:
    """Id of one of :data:`SPECIAL_TOKENS` in the tiny vocabulary."""
    return TINY_BPE_SIZE + [t for t, _ in SPECIAL_TOKENS].index(name)


def write_qwen_tokenizer(folder: Path) -> Tokenizer:
    """A byte-level BPE with Qwen2's pre-tokenizer and Qwen3-VL's added tokens, in the released files."""
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=TINY_BPE_SIZE, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.splitlines() * 8, trainer=trainer)
    if tok.get_vocab_size() != TINY_BPE_SIZE:
        raise RuntimeError(f"the tiny BPE has {tok.get_vocab_size()} pieces, not {TINY_BPE_SIZE}")
    for text, special in SPECIAL_TOKENS:
        tok.add_tokens([AddedToken(text, special=special, normalized=False, single_word=False,
                                   lstrip=False, rstrip=False)])
    assert tok.token_to_id("<|endoftext|>") == TINY_BPE_SIZE
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    model = json.loads(tok.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    decoder = {str(token_id(text)): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                                     "single_word": False, "special": special}
               for text, special in SPECIAL_TOKENS}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": decoder,
        "additional_special_tokens": [t for t, s in SPECIAL_TOKENS[:14]],
        "bos_token": None, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "errors": "replace", "model_max_length": 262144, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
    }, indent=2), encoding="utf-8")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2),
                                              encoding="utf-8")
    return tok


def tiny_qwen_vl_config(*, initializer_range: float = 0.25) -> dict:
    """``config.json`` of the tiny model, with the keys and layout of the released Qwen3-VL-4B-Instruct."""
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "image_token_id": token_id("<|image_pad|>"),
        "video_token_id": token_id("<|video_pad|>"),
        "vision_start_token_id": token_id("<|vision_start|>"),
        "vision_end_token_id": token_id("<|vision_end|>"),
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "qwen3_vl_text", "vocab_size": TINY_VOCAB_SIZE, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "hidden_act": "silu", "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
            "attention_bias": False, "attention_dropout": 0.0, "initializer_range": initializer_range,
            "bos_token_id": token_id("<|endoftext|>"), "eos_token_id": token_id("<|im_end|>"),
            "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            "rope_theta": 5000000, "tie_word_embeddings": True, "use_cache": True, "dtype": "float32",
        },
        "vision_config": {
            "model_type": "qwen3_vl", "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
            "hidden_act": "gelu_pytorch_tanh", "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "out_hidden_size": 64, "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0, 1], "initializer_range": initializer_range,
        },
        "dtype": "float32",
        "transformers_version": "4.57.0.dev0",
    }


def _processor_files(folder: Path) -> None:
    """The released preprocessor files. Pixel bounds are the tiny model's own: the released ones
    (64K to 16M pixels per image) would upscale the tests' small frames."""
    common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
              "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps({
        **common, "size": {"shortest_edge": 8 * 32 * 32, "longest_edge": 4096 * 32 * 32},
        "image_processor_type": "Qwen2VLImageProcessorFast"}, indent=2), encoding="utf-8")
    (folder / "video_preprocessor_config.json").write_text(json.dumps({
        **common, "size": {"shortest_edge": 8 * 32 * 32, "longest_edge": 4096 * 32 * 32},
        "fps": 2, "min_frames": 4, "max_frames": 768, "do_sample_frames": True,
        "video_processor_type": "Qwen3VLVideoProcessor"}, indent=2), encoding="utf-8")


def write_tiny_qwen_vl(folder: Path, *, seed: int = 0, initializer_range: float = 0.25) -> Path:
    """Write a random tiny Qwen3-VL into ``folder`` (created) and return it. Deterministic in ``seed``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_qwen_tokenizer(folder)
    raw = tiny_qwen_vl_config(initializer_range=initializer_range)
    (folder / "config.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    eos = [token_id("<|im_end|>"), token_id("<|endoftext|>")]
    (folder / "generation_config.json").write_text(json.dumps({
        "bos_token_id": token_id("<|endoftext|>"), "pad_token_id": token_id("<|endoftext|>"),
        "eos_token_id": eos, "do_sample": True, "top_k": 20, "top_p": 0.8, "temperature": 0.7,
        "repetition_penalty": 1.0, "transformers_version": "4.57.0.dev0"}, indent=2), encoding="utf-8")
    _processor_files(folder)
    torch.manual_seed(seed)
    config = Qwen3VLConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if raw["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)  # the released tied checkpoints store the embedding once
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
