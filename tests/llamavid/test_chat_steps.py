"""Public steps of the runtime that front ends build on: a chat reading earlier turns it did not
answer (``Chat.replay``), and a model loaded for films getting its vision tower when a picture
comes (``LlamaVid.attach_vision``). Tiny released-layout checkpoint, real tokenizer and EVA file."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llamavid.errors import CheckpointError, ContextOverflow
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat, Turn
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual

GREEDY = SamplingOptions(max_new_tokens=5, temperature=0)
HISTORY = [("What colour is the sky?", "It is blue today."), ("And the sea?", "Green and grey.")]


@pytest.fixture(scope="module")
def lv(tiny_checkpoint: Path) -> LlamaVid:
    return LlamaVid.load(tiny_checkpoint, device="cpu", dtype="fp32", load_vision=False)


def _kept(lv: LlamaVid, question: str, answer: str) -> Turn:
    ids = lv.tokenizer.encode(answer, add_special_tokens=False) + [lv.tokenizer.eos_token_id]
    return Turn(question, answer, len(ids), False, ids)


def test_replayed_turns_leave_the_cache_a_restore_of_the_same_tokens_leaves(lv: LlamaVid) -> None:
    replayed, restored = Chat(lv, Visual("none")), Chat(lv, Visual("none"))
    replayed.replay(HISTORY)
    restored.restore([_kept(lv, q, a) for q, a in HISTORY])
    assert replayed.state.seen_ids == restored.state.seen_ids and replayed.state.length == restored.state.length
    assert [t.answer for t in replayed.turns] == [a for _, a in HISTORY]
    assert "".join(replayed.ask("What next?", GREEDY)) == "".join(restored.ask("What next?", GREEDY))


def test_other_earlier_answers_make_another_cache(lv: LlamaVid) -> None:
    """Negative control: the replay reads the answers it is given."""
    one, other = Chat(lv, Visual("none")), Chat(lv, Visual("none"))
    one.replay(HISTORY)
    other.replay([HISTORY[0], ("And the sea?", "Dark blue, with waves.")])
    assert one.state.seen_ids != other.state.seen_ids


def test_earlier_turns_beyond_the_context_are_refused_before_anything_is_read(lv: LlamaVid) -> None:
    chat = Chat(lv, Visual("none"))
    limit = chat.backend.context_length()
    with pytest.raises(ContextOverflow, match="send fewer of them") as refused:
        chat.replay([("Tell me everything.", "word " * limit)])
    assert refused.value.limit == limit and refused.value.needed > limit
    assert chat.turns == [] and chat.state.length == 0


def test_replay_starts_a_new_chat_only(lv: LlamaVid) -> None:
    chat = Chat(lv, Visual("none"))
    chat.replay(HISTORY[:1])
    with pytest.raises(ValueError, match="already has turns"):
        chat.replay(HISTORY[1:])


def test_a_model_loaded_for_films_encodes_a_picture_as_a_model_loaded_with_eva_does(tiny_checkpoint: Path) -> None:
    films_only = LlamaVid.load(tiny_checkpoint, device="cpu", dtype="fp32", load_vision=False)
    with_eva = LlamaVid.load(tiny_checkpoint, device="cpu", dtype="fp32")
    picture = np.random.default_rng(3).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    assert films_only.model.model.vision_tower is None
    films_only.attach_vision()
    tower = films_only.model.model.vision_tower
    films_only.attach_vision()  # a second call keeps the tower it has
    assert films_only.model.model.vision_tower is tower
    torch.testing.assert_close(films_only.visual(images=[picture]).features, with_eva.visual(images=[picture]).features)


def test_attaching_vision_without_the_eva_file_says_where_to_put_it(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-eva"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "eva_vit_g.pth").unlink()
    lv = LlamaVid.load(folder, device="cpu", dtype="fp32", load_vision=False, search_dirs=[tmp_path / "shared"])
    with pytest.raises(CheckpointError, match="eva_vit_g.pth") as missing:
        lv.attach_vision()
    assert str(folder) in str(missing.value) and str(tmp_path / "shared") in str(missing.value)
