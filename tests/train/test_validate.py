"""``llamavid train validate``: every kind of bad data is reported with the record it is in."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import cli
from llamavid.model.tiny import write_tiny_checkpoint
from tests.support.train_data import gpt, human
from train.validate import CheckOptions, use_model, validate


def write(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def folder(dataset, tmp_path) -> Path:
    for name in ("red.png", "red.mp4", "film1.npy", "film1.subtitles.json", "film2.npz"):
        shutil.copy(dataset["stage1"].parent / name, tmp_path / name)
    return tmp_path


def test_the_example_data_is_clean(dataset, tokenizer):
    for stage in (1, 2, 3):
        report = validate(dataset[f"stage{stage}"], CheckOptions(stage, tokenizer=tokenizer, max_length=8192))
        assert report.ok, report.text()
        assert report.lengths_checked and report.longest > 0


def test_bad_json_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "a", "conversations": []}\n {"id": "b"}]')
    report = validate(bad, CheckOptions())
    assert report.errors == [f"{bad}: not valid JSON: Expecting ',' delimiter (line 2, column 2)"]
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"id": "a"}\n{"id": oops}\n')
    assert "line 2 is not valid JSON" in validate(lines, CheckOptions()).errors[0]


def test_missing_files_and_wrong_placeholder_counts(folder, tokenizer):
    ok = [human("<image>\nWhat is it?"), gpt("A red square.")]
    data = write(folder / "data.json", [
        {"id": "fine", "image": "red.png", "conversations": ok},
        {"id": "lost", "image": "missing.png", "conversations": ok},
        {"id": "lost-clip", "video": "missing.mp4", "conversations": ok},
        {"id": "none", "image": "red.png", "conversations": [human("What is it?"), gpt("Red.")]},
        {"id": "two", "image": "red.png", "conversations": [human("<image><image> What?"), gpt("Red.")]},
        {"id": "text", "conversations": [human("<image> What?"), gpt("Red.")]},
        {"id": "film", "video": "film1.npy", "conversations": [human("<image> and <image>"), gpt("Sea.")]},
    ])
    report = validate(data, CheckOptions(2))
    assert report.errors == [
        f"record 1 (id=lost): image file not found: {folder / 'missing.png'}",
        f"record 2 (id=lost-clip): video file not found: {folder / 'missing.mp4'}",
        "record 3 (id=none): has an image but no <image> placeholder in a human turn",
        "record 4 (id=two): turn 1 has 2 <image> placeholders; put one per turn",
        "record 5 (id=text): has 1 <image> placeholders but no 'image' or 'video'",
        "record 6 (id=film): a film record needs exactly one <image> (where the film goes), found 2",
    ]
    stage1 = validate(data, CheckOptions(1))
    assert "record 4 (id=two): stage 1 needs one human turn with exactly one <image>" in "\n".join(stage1.errors)


def test_film_frames_must_match_their_text(folder, tokenizer):
    feats = np.zeros((4, 257, 8), np.float16)
    np.savez(folder / "short.npz", feats=feats, inputs=np.array("<image>a<image>b<image>"))  # 3 for 4 frames
    data = write(folder / "films.json", [
        {"id": "f", "video": "short.npz", "conversations": [human("<image>\nWhy?"), gpt("Because.")]}])
    report = validate(data, CheckOptions(3, tokenizer=tokenizer, max_length=65536))
    assert report.errors == ["record 0 (id=f): the features have 4 frames but the per-frame text holds 3 <image> "
                             "placeholders; they must match one to one"]


def test_over_long_samples_are_reported_with_their_length(dataset, tokenizer):
    report = validate(dataset["stage2"], CheckOptions(2, tokenizer=tokenizer, max_length=60))
    long = [m for m in report.errors if "exceed the maximum length 60" in m]
    assert long and long[0].startswith("record 0 (id=chat-red): ") and "(text " in long[0]
    relaxed = validate(dataset["stage2"], CheckOptions(2, tokenizer=tokenizer, max_length=60, allow_truncation=True))
    assert relaxed.ok and len(relaxed.warnings) == len(long)


def test_validate_command_exit_status_and_json(folder, dataset, capsys):
    data = write(folder / "data.json", [{"id": "lost", "image": "missing.png",
                                         "conversations": [human("<image>\nWhat?"), gpt("Red.")]}])
    assert cli.main(["train", "validate", str(data)]) == 1
    out = capsys.readouterr().out
    assert "error: record 0 (id=lost): image file not found" in out and "1 errors" in out
    assert cli.main(["train", "validate", str(dataset["stage2"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["records"] == 4 and report["kinds"]["text"] == 1
    no_tokenizer = dataset["stage1"].parent
    assert cli.main(["train", "validate", str(dataset["stage2"]), "--model", str(no_tokenizer)]) == 1
    assert "no tokenizer.model" in capsys.readouterr().err


def test_model_folder_gives_the_tokenizer_and_a_checkpoints_token_layout(components, tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "image-model", compress_type=None, shards=1, with_eva=False)
    options = CheckOptions(2)  # compress_type "mean" until a model says otherwise
    use_model(options, checkpoint)
    assert options.tokenizer is not None and options.compress_type is None and options.image_size == 224
    plain = CheckOptions(2)
    use_model(plain, components["llm"])  # a LLaMA folder: its tokenizer, the given layout
    assert plain.tokenizer is not None and plain.compress_type == "mean"
