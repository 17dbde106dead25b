"""The golden harness itself: it places every stored output or fails by name, reads ``weights`` runs,
and refuses a golden folder that holds no case.

Each test writes a case in the documented format (``tests/data/golden/README.md``) next to the
bundled one, reusing its weights, inputs and stored outputs, and runs it through
:func:`test_golden.check_run`, the function the parity tests run.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tests.support.golden import BUNDLED, GoldenDirError, case_dirs, recipe_for, runs

from .test_golden import check_run

SOURCE = BUNDLED / "tiny-224-video"
SHARED = ("config.json", "qformer_config.json", "bert_vocab.txt", "keys.json", "inputs.npz")


def make_case(folder: Path, runs: dict, outputs: dict[str, torch.Tensor], **top) -> Path:
    """A case folder: the bundled case's model and inputs, these runs and these stored outputs
    (``top``: more or other top-level fields of runs.json)."""
    folder.mkdir(parents=True)
    for name in SHARED:
        shutil.copy(SOURCE / name, folder / name)
    shutil.copy(BUNDLED / "recipe.py", folder / "recipe.py")
    spec = json.loads((SOURCE / "runs.json").read_text())
    (folder / "runs.json").write_text(json.dumps({**spec, "case": folder.name, **top, "runs": runs}, indent=1))
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(folder / "outputs.safetensors"))
    return folder


def pos_table_for(image_size: int, mode: str = "bicubic") -> torch.Tensor:
    """EVA's position table for ``image_size``, derived as the reference's loader does (spec 2.1, step 2):
    the file's 16x16 grid rows resized with ``F.interpolate(mode, align_corners=False)`` in float32,
    flattened row-major, the CLS row put back in front."""
    table = recipe_for(SOURCE).param_value("pos_embed", [1, 257, 1408])
    grid = image_size // 14
    patches = table[:, 1:].float().reshape(1, 16, 16, 1408).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode=mode, align_corners=False)
    return torch.cat([table[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, 1408)], dim=1)


def test_weights_run_in_the_documented_format_is_compared(tmp_path, tmp_path_factory):
    runs = {"pos336": {"mode": "weights", "image_size": 336}}
    case = make_case(tmp_path / "weights-336", runs, {"pos336.eva.pos_embed_interpolated": pos_table_for(336)})
    expected = check_run(case, "pos336", tmp_path_factory)
    assert expected.checked == {"eva.pos_embed_interpolated"}

    # negative control: a table resized another way (bilinear) is a different tensor, and the harness says so
    wrong = make_case(tmp_path / "weights-336-bilinear", runs,
                      {"pos336.eva.pos_embed_interpolated": pos_table_for(336, "bilinear")})
    with pytest.raises(AssertionError, match=r"pos336\.eva\.pos_embed_interpolated: max \|diff\|"):
        check_run(wrong, "pos336", tmp_path_factory)


def test_weights_run_name_the_loader_does_not_derive_fails_by_name(tmp_path, tmp_path_factory):
    runs = {"pos336": {"mode": "weights", "image_size": 336}}
    case = make_case(tmp_path / "weights-unknown", runs, {
        "pos336.eva.pos_embed_interpolated": pos_table_for(336),
        "pos336.eva.rel_pos_bias_interpolated": torch.zeros(3)})
    with pytest.raises(AssertionError, match=r"no code compared: \['eva\.rel_pos_bias_interpolated'\]"):
        check_run(case, "pos336", tmp_path_factory)


def test_a_stored_output_no_code_compares_fails_the_run_by_name(tmp_path, tmp_path_factory):
    stored = {k: v for k, v in load_file(SOURCE / "outputs.safetensors").items() if k.startswith("image1.")}
    run = json.loads((SOURCE / "runs.json").read_text())["runs"]["image1"]
    case = make_case(tmp_path / "extra-output", {"image1": run}, stored)
    assert len(check_run(case, "image1", tmp_path_factory).checked) == len(stored)  # control: all placed

    save_file({**stored, "image1.qformer_attention_probs": torch.zeros(1, 2)}, str(case / "outputs.safetensors"))
    with pytest.raises(AssertionError, match=r"no code compared: \['qformer_attention_probs'\]"):
        check_run(case, "image1", tmp_path_factory)


def test_a_run_may_use_another_runs_inputs(tmp_path, tmp_path_factory):
    """``runs.json`` names the inputs.npz entries; the run's own name is only the outputs' prefix."""
    runs = json.loads((SOURCE / "runs.json").read_text())["runs"]
    stored = {"again." + k.split(".", 1)[1]: v for k, v in load_file(SOURCE / "outputs.safetensors").items()
              if k.startswith("image2.")}
    case = make_case(tmp_path / "reuse", {"again": runs["image2"]}, stored)
    assert len(check_run(case, "again", tmp_path_factory).checked) == len(stored)


def test_golden_folder_without_a_case_is_an_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("the cases were not unpacked here")
    monkeypatch.setenv("LLAMAVID_GOLDEN_DIRS", str(empty))
    with pytest.raises(GoldenDirError, match=re.escape(f"{empty} holds no golden case")):
        case_dirs()
    monkeypatch.setenv("LLAMAVID_GOLDEN_DIRS", str(tmp_path / "typo"))
    with pytest.raises(GoldenDirError, match="typo does not exist"):
        case_dirs()

    # controls: a case folder and a folder of cases are both accepted
    shutil.copytree(SOURCE, empty / "copied")
    monkeypatch.setenv("LLAMAVID_GOLDEN_DIRS", f"{empty}:{SOURCE}")
    found = case_dirs()
    assert (empty / "copied").resolve() in found and SOURCE.resolve() in found
    assert len(found) == 2  # the bundled case listed again is not run twice


def test_notes_at_any_level_of_runs_json_are_ignored_and_the_run_still_compared(tmp_path, tmp_path_factory,
                                                                               monkeypatch):
    """A ``note`` annotates a case for people, at any level of runs.json: the top level, the runs object,
    a run, and the objects nested in them (tolerance, config_overrides). None is read as a field, a run
    or a config override, and every stored output of the run is still compared."""
    source = json.loads((SOURCE / "runs.json").read_text())
    stored = {k: v for k, v in load_file(SOURCE / "outputs.safetensors").items() if k.startswith("image1.")}
    run = {**source["runs"]["image1"], "note": "the third image, padded",
           "config_overrides": {"note": "nothing overridden: this object holds only a note"}}
    annotated = {"runs": {"note": "one run", "image1": run}, "note": "a copy of the bundled case",
                 "tolerance": {**source["tolerance"], "note": "absolute tolerances"}}

    case = make_case(tmp_path / "notes", outputs=stored, **annotated)
    written = json.loads((case / "runs.json").read_text())
    assert written["note"] and written["tolerance"]["note"] and written["runs"]["note"]  # the notes are there
    assert written["runs"]["image1"]["note"] and written["runs"]["image1"]["config_overrides"]["note"]
    assert check_run(case, "image1", tmp_path_factory).checked == {k.split(".", 1)[1] for k in stored}
    monkeypatch.setenv("LLAMAVID_GOLDEN_DIRS", str(case))
    assert [name for c, name in runs() if c == case.resolve()] == ["image1"]  # a note is no run

    # negative control: the same annotated case with one expected value changed fails, by name
    changed = dict(stored)
    changed["image1.logits"] = stored["image1.logits"].clone()
    changed["image1.logits"][0, -1, 0] += 0.01
    wrong = make_case(tmp_path / "notes-changed", outputs=changed, **annotated)
    with pytest.raises(AssertionError, match=r"image1\.logits: max \|diff\| 0\.01"):
        check_run(wrong, "image1", tmp_path_factory)
