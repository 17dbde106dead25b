"""Prompt builders, tokenizer_image_token and the movie-mode subtitle interleaving."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from llamavid.model.layout import IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llamavid.prompt.builders import (
    image_prompt,
    movie_prompt,
    qformer_prompts_for,
    tokenizer_image_token,
    video_prompt,
)
from llamavid.prompt.subtitles import assign_subtitle_frames, assign_subtitles, interleave_subtitles
from tests.support.golden import BUNDLED as GOLDEN_ROOT
from tests.support.golden import case_dirs as golden_case_dirs
from tests.support.golden import case_runs, recipe_for, run_arrays

VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
          "helpful, detailed, and polite answers to the user's questions.")


recipe = recipe_for(GOLDEN_ROOT / "tiny-224-video")


#: Runs of the case :func:`documented_case` writes: ``image0_again`` reads image0's files, and the
#: film's files are named after no run at all (runs.json names them; the run's name does not).
DOCUMENTED = "documented-format"
DOCUMENTED_RUNS = {"image0_again": "llm_prompt", "film": "movie_prompt"}


def golden_runs(field: str):
    """Every run with ``field`` in the golden cases, plus the documented-format case's runs with it."""
    out = [pytest.param(DOCUMENTED, name, id=f"{DOCUMENTED}-{name}")
           for name, has in DOCUMENTED_RUNS.items() if has == field]
    for case in golden_case_dirs():
        runs = case_runs(case)
        out += [pytest.param(case, name, id=f"{case.name}-{name}") for name, run in runs.items() if run.get(field)]
    return out


def load_run(case: Path, name: str) -> tuple[dict, dict]:
    """A run and the inputs.npz entries it names, under the names runs.json gives."""
    run = case_runs(case)[name]
    return run, run_arrays(case, run)


class ToyTokenizer:
    """HF-like wrapper around the golden recipe's toy encoder (BOS on every call)."""

    bos_token_id = recipe.TOY_BOS

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, text: str):
        return SimpleNamespace(input_ids=recipe.toy_encode(text, self.vocab_size))


@pytest.fixture(scope="module")
def documented_case(tmp_path_factory) -> Path:
    """A case in the documented format (tests/data/golden/README.md) holding a movie run.

    No movie case ships with the project, so its expected texts are the ones this file derives by
    hand from the reference's rules (``PER_FRAME``, ``MOVIE_PROMPT`` below); its files carry names
    that differ from the run's, as runs.json allows. ``image0_again`` is the bundled image0 run
    under another name, reading image0's files. Notes sit beside the fields at every level, as
    the format allows: nothing may read them.
    """
    source = GOLDEN_ROOT / "tiny-224-video"
    folder = tmp_path_factory.mktemp("golden") / DOCUMENTED
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    with np.load(source / "inputs.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update({"clip.frame_time": np.asarray(FRAME_TIMES, dtype=np.float64),
                   "clip.subtitles": np.asarray(json.dumps(SUBTITLES)),
                   "clip.per_frame_text": np.asarray(PER_FRAME),
                   "clip.llm_prompt": np.asarray(MOVIE_PROMPT),
                   "clip.qformer_prompts": np.asarray(json.dumps([["What happens?"]]))})
    np.savez(folder / "inputs.npz", **arrays)
    runs = json.loads((source / "runs.json").read_text())["runs"]
    film = {"mode": "features", "llm_prompt": "clip.llm_prompt", "qformer_prompts": "clip.qformer_prompts",
            "movie_prompt": {"frame_time": "clip.frame_time", "subtitles": "clip.subtitles",
                             "per_frame_text": "clip.per_frame_text", "note": "texts derived by hand"},
            "note": "no stored tensors: only the prompt texts are checked"}
    (folder / "runs.json").write_text(json.dumps({"note": "written by test_prompts.py", "runs": {
        "note": "two runs", "image0_again": runs["image0"], "film": film}}))
    return folder


def case_folder(case, request) -> Path:
    return request.getfixturevalue("documented_case") if case == DOCUMENTED else case


@pytest.mark.parametrize("case,name", golden_runs("llm_prompt"))
def test_golden_prompt_and_ids(case, name: str, request):
    case = case_folder(case, request)
    run, arrays = load_run(case, name)
    prompt = str(arrays[run["llm_prompt"]])
    if run["mode"] in ("image", "video"):  # chat prompts; movie text is checked further down
        questions = json.loads(str(arrays[run["qformer_prompts"]]))[0]
        answers = re.findall(r" ASSISTANT: (.*?)</s>", prompt)  # earlier turns' answers, as stored
        history = list(zip(questions[:-1], answers, strict=True))
        build = video_prompt if run["mode"] == "video" else image_prompt
        assert build(questions[-1], history=history) == prompt
        assert qformer_prompts_for(questions[-1], history) == questions
    if run.get("input_ids"):
        vocab = json.loads((case / "config.json").read_text())["vocab_size"]
        ids = tokenizer_image_token(prompt, ToyTokenizer(vocab))
        assert ids == recipe.toy_tokenizer_image_token(prompt, vocab)
        assert ids == arrays[run["input_ids"]][0].tolist()


def test_golden_multiturn_has_two_slots_and_one_eos():
    run, arrays = load_run(GOLDEN_ROOT / "tiny-224-video", "image0_multiturn")
    prompt = str(arrays[run["llm_prompt"]])
    assert prompt.count("<image>\n") == 2 and prompt.count("</s>") == 1
    assert "are 2 people.</s>USER: <image>\n" in prompt


@pytest.mark.parametrize("case,name", golden_runs("movie_prompt"))
def test_golden_movie_prompt(case, name: str, request):
    case = case_folder(case, request)
    run, arrays = load_run(case, name)
    names = run["movie_prompt"]
    per_frame_text = str(arrays[names["per_frame_text"]])
    assert interleave_subtitles(arrays[names["frame_time"]], str(arrays[names["subtitles"]])) == per_frame_text
    question = json.loads(str(arrays[run["qformer_prompts"]]))[0][0]
    assert movie_prompt(per_frame_text, question) == str(arrays[run["llm_prompt"]])


def test_image_prompt_single_turn():
    assert image_prompt("What is it?") == VICUNA + " USER: <image>\nWhat is it? ASSISTANT:"
    assert video_prompt("What is it?") == image_prompt("What is it?")


def test_image_in_placements():
    history = [("Q1", "A1"), ("Q2", "A2")]
    head = VICUNA + " USER: "
    assert image_prompt("Q3", history=history, image_in="latest") == \
        head + "Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>USER: <image>\nQ3 ASSISTANT:"
    assert image_prompt("Q3", history=history, image_in="first") == \
        head + "<image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>USER: Q3 ASSISTANT:"
    every = image_prompt("Q3", history=history)
    assert every.count("<image>\n") == 3
    assert qformer_prompts_for("Q3", history, "latest") == ["Q3"]
    assert qformer_prompts_for("Q3", history, "first") == ["Q1"]
    assert qformer_prompts_for("Q3", history) == ["Q1", "Q2", "Q3"]
    assert image_prompt("Q3", history=history, image_in="none") == \
        head + "Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>USER: Q3 ASSISTANT:"
    assert qformer_prompts_for("Q3", history, "none") == []
    with pytest.raises(ValueError, match="image_in"):
        image_prompt("Q", image_in="all")
    with pytest.raises(ValueError, match="pairs"):
        image_prompt("Q", history=[("only user",)])


def test_literal_image_token_in_user_text_is_removed():
    prompt = image_prompt("<image>What is it?", history=[("a<image>", "b<image>")])
    assert prompt.count("<image>") == 2
    assert qformer_prompts_for("<image>What?") == ["What?"]


def test_other_templates():
    assert image_prompt("Q", template="llava_v0").endswith("###Human: <image>\nQ###Assistant:")
    with pytest.raises(ValueError, match="vicuna_v1"):
        image_prompt("Q", template="nope")


def test_toy_tokenizer_semantics():
    tok = ToyTokenizer(1000)
    enc = lambda s: recipe.toy_encode(s, 1000, add_bos=False)  # noqa: E731
    ids = tokenizer_image_token("<image><image>a<image>", tok)
    assert ids == [1, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX] + enc("a") + [IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("no image", tok) == [1] + enc("no image")
    assert tokenizer_image_token("", tok) == [1]


def test_tokenizer_protocols():
    enc = {"x": [1, 7], "": [1], "y": [1, 8]}
    assert tokenizer_image_token("x<image>y", lambda s: enc[s], bos_token_id=1) == [1, 7, -200, 8]
    assert tokenizer_image_token("x<image>y", lambda s: {"input_ids": enc[s]}, bos_token_id=1) == [1, 7, -200, 8]
    # BOS unknown: nothing is dropped (what the reference does when ids[0] != bos)
    assert tokenizer_image_token("x<image>y", lambda s: enc[s]) == [1, 7, -200, 1, 8]
    assert tokenizer_image_token("x<image>y", lambda s: enc[s], image_token_index=-1, bos_token_id=1) == [1, 7, -1, 8]
    with pytest.raises(TypeError, match="flat"):
        tokenizer_image_token("x", lambda s: [[1, 2]])


@pytest.fixture(scope="module")
def llama_sp(tmp_path_factory):
    """A tiny LLaMA-style SentencePiece model (BOS 1, EOS 2, byte fallback, dummy prefix)."""
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("spm")
    lines = ["What is the man doing in this video?", "Describe the image in detail.",
             "USER: ASSISTANT: The umbrella is red and there are 2 people.",
             "A chat between a curious user and an artificial intelligence assistant."] * 20
    (folder / "corpus.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(folder / "corpus.txt"), model_prefix=str(folder / "tokenizer"), vocab_size=400,
        model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        split_digits=True, minloglevel=2)
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")), folder


class RawSentencePiece:
    """The thinnest adapter to the tokenizer protocol: BOS + SentencePiece ids."""

    def __init__(self, sp):
        self.sp, self.bos_token_id = sp, sp.bos_id()

    def __call__(self, text: str) -> list[int]:
        return [self.bos_token_id] + self.sp.encode(text)


def _hf_tokenizer(folder: Path):
    """transformers' LLaMA tokenizer loaded offline from a checkpoint-like folder, if it works."""
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "legacy": False}))
    try:
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # pragma: no cover - depends on the installed converters
        pytest.skip(f"transformers cannot load a SentencePiece LLaMA tokenizer offline: {exc}")


@pytest.fixture(params=["raw", "hf"])
def sp_tokenizer(request, llama_sp):
    sp, folder = llama_sp
    return sp, (RawSentencePiece(sp) if request.param == "raw" else _hf_tokenizer(folder))


def test_sentencepiece_per_chunk_behaviour(sp_tokenizer):
    sp, tok = sp_tokenizer
    prompt = VICUNA + " USER: <image>\nWhat is the man doing?<image><image>\nDescribe it. ASSISTANT:"
    ids = tokenizer_image_token(prompt, tok)
    chunks = prompt.split("<image>")
    expected = [1] + sp.encode(chunks[0])
    for chunk in chunks[1:]:
        expected += [IMAGE_TOKEN_INDEX] + sp.encode(chunk)
    assert ids == expected
    assert ids.count(1) == 1 and ids[0] == 1
    positions = [i for i, t in enumerate(ids) if t == IMAGE_TOKEN_INDEX]
    assert len(positions) == 3 and positions[2] == positions[1] + 1  # empty chunk adds nothing
    first = positions[0]
    # "USER: " ends in a lone dummy-prefix piece, "\nWhat" starts with "▁" then the newline byte
    assert sp.id_to_piece(ids[first - 1]) == "▁"
    assert [sp.id_to_piece(i) for i in ids[first + 1:first + 3]] == ["▁", "<0x0A>"]


def test_sentencepiece_image_at_edges(sp_tokenizer):
    sp, tok = sp_tokenizer
    assert tokenizer_image_token("<image>", tok) == [1, IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("<image>What", tok) == [1, IMAGE_TOKEN_INDEX] + sp.encode("What")
    assert tokenizer_image_token("What<image>", tok) == [1] + sp.encode("What") + [IMAGE_TOKEN_INDEX]


FRAME_TIMES = [0.5, 1.5, 2.5, 3.5]
SUBTITLES = [
    {"start_time": 0.0, "end_time": 0.4, "text": "Intro."},          # ends before the first frame
    {"start_time": 0.6, "end_time": 1.2, "text": "Hello there."},    # frame 0
    {"start_time": 1.3, "end_time": 1.5, "text": "How are you?"},    # ends exactly at frame 1: frame 0
    {"start_time": 1.6, "end_time": 3.4, "text": "Fine."},           # frame 2
    {"start_time": 3.6, "end_time": 9.0, "text": "Bye."},            # after the last frame: frame 3
]
PER_FRAME = "<image>Hello there. How are you?<image><image>Fine.<image>Intro. Bye."


def test_assignment_reference_quirk():
    assert assign_subtitle_frames(FRAME_TIMES, SUBTITLES) == [3, 0, 0, 2, 3]
    assert assign_subtitles(FRAME_TIMES, SUBTITLES) == \
        [["Hello there.", "How are you?"], [], ["Fine."], ["Intro.", "Bye."]]
    assert interleave_subtitles(FRAME_TIMES, SUBTITLES) == PER_FRAME


def test_assignment_sane_first_frame():
    assert assign_subtitle_frames(FRAME_TIMES, SUBTITLES, reference_quirk=False) == [0, 0, 0, 2, 3]
    assert interleave_subtitles(FRAME_TIMES, SUBTITLES, reference_quirk=False) == \
        "<image>Intro. Hello there. How are you?<image><image>Fine.<image>Bye."


def test_subtitle_forms_agree():
    as_objects = [SimpleNamespace(**s) for s in SUBTITLES]
    as_tuples = [(s["start_time"], s["end_time"], s["text"]) for s in SUBTITLES]
    as_json = json.dumps(SUBTITLES)
    for form in (as_objects, as_tuples, as_json, np.array(as_json), iter(SUBTITLES)):
        assert interleave_subtitles(np.array(FRAME_TIMES, dtype=np.float32), form) == PER_FRAME


def test_subtitle_edge_cases():
    assert interleave_subtitles(FRAME_TIMES, []) == "<image>" * 4
    assert interleave_subtitles([], []) == ""
    with pytest.raises(ValueError, match="no frames"):
        interleave_subtitles([], SUBTITLES)
    with pytest.raises(ValueError, match="end_time"):
        interleave_subtitles(FRAME_TIMES, [{"start_time": 0, "text": "x"}])
    assert interleave_subtitles([0.0], [{"start_time": 0, "end_time": 1, "text": "a <image>b"}]) == "<image>a b"


MOVIE_PROMPT = (VICUNA + " USER: Below is a movie. Memorize the content and answer my question after "
                "watching this movie.<image><image>Hello there. How are you?<image><image><image><image>"
                "Fine.<image><image>Intro. Bye.Now the movie end.\nWhat happens? ASSISTANT:")


def test_movie_prompt_layout():
    expected = MOVIE_PROMPT
    assert movie_prompt(PER_FRAME, "What happens?") == expected
    assert movie_prompt(np.array(PER_FRAME), "What happens?") == expected
    assert movie_prompt(["<image>Hello there. How are you?", "<image>", "<image>Fine.", "<image>Intro. Bye."],
                        "What happens?") == expected
    assert movie_prompt(PER_FRAME, "What happens?", video_token=1).count("<image>") == 4
    assert "<image>" not in movie_prompt(PER_FRAME, "What happens?", pure_text=True)
    with pytest.raises(ValueError, match="video_token"):
        movie_prompt(PER_FRAME, "Q", video_token=0)


def test_movie_prompt_ids_have_two_slots_per_frame():
    prompt = movie_prompt(PER_FRAME, "What happens?")
    ids = tokenizer_image_token(prompt, ToyTokenizer(1000))
    assert ids.count(IMAGE_TOKEN_INDEX) == 2 * len(FRAME_TIMES) and ids.count(1) == 1
    assert IMAGE_TOKEN == "<image>"
