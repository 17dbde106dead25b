"""A tiny random Whisper converted for faster-whisper, entirely offline (dependencies.md recipe).

English-only (vocabulary below 51865 tokens), so faster-whisper needs no language tokens and
detects "en". The weights are random: the model produces gibberish, which is all the tests need
(cue times, storage, resume, FTS), and nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def _tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the movie starts here and the hero talks to his friend about the plan"] * 50
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tok.add_special_tokens(SPECIALS + timestamps)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def build_tiny_whisper(folder: Path) -> Path:
    """Write the CTranslate2 model to ``folder / "ct2"`` and return that path."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    hf = folder / "hf"
    tok = _tokenizer(hf)
    sot, eot = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|endoftext|>"])
    config = WhisperConfig(vocab_size=len(tok), d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
                           max_target_positions=448, decoder_start_token_id=sot, bos_token_id=eot,
                           eos_token_id=eot, pad_token_id=eot, suppress_tokens=[], begin_suppress_tokens=[])
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(hf)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(hf)
    out = folder / "ct2"
    TransformersConverter(str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(out), quantization="int8", force=True)
    return out
