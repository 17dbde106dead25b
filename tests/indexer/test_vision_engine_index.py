"""The indexer and the vision engines: a forced engine makes the features and is recorded with them,
features made by an engine since turned off are extracted again (and kept while it stays on), and
decoding reads ahead one chunk at most."""
from __future__ import annotations

import numpy as np
import torch

from indexer import library as lib
from indexer.encoder import split_vision_id
from llamavid.media.decode import DecodeStats, decode_segment, video_spec
from llamavid.media.preprocess import preprocess_images
from llamavid.media.probe import probe
from llamavid.model.eva import EvaVisionTower
from tests.support.media import make_video

RUN = ("run", "--speech", "never", "--quiet", "--batch-size", "2")


def _movie(cli) -> lib.Movie:
    return lib.list_movies(lib.open_library(cli.data_dir))[0]


def _fp32_features(path, tiny_eva) -> np.ndarray:
    frames = [img for _, img in decode_segment(video_spec(path, probe(path)), 1.0, 0, None, DecodeStats())]
    return EvaVisionTower.from_file(tiny_eva)(preprocess_images(frames)).to(torch.float16).numpy()


def test_a_forced_engine_makes_the_features_and_is_recorded(cli, movies, tiny_eva):
    path = make_video(movies / "A.mkv", seconds=3)
    cli("add", movies)
    code, _, err = cli(*RUN, "--vision", tiny_eva, "--vision-engine", "int8")
    assert code == 0, err
    movie = _movie(cli)
    assert split_vision_id(movie.vision_id)[1] == "int8" and movie.vision_id.endswith("@int8")
    got = lib.open_features(movie).astype(np.float32)
    want = _fp32_features(path, tiny_eva).astype(np.float32)
    assert not np.array_equal(got, want)  # int8 numbers, not the reference's ...
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() > 0.999  # ... within its bound


def test_features_of_a_turned_off_engine_are_extracted_again(cli, movies, tiny_eva):
    path = make_video(movies / "A.mkv", seconds=3)
    cli("add", movies)
    cli(*RUN, "--vision", tiny_eva, "--vision-engine", "int8")
    made_by_int8 = _movie(cli).vision_id
    # auto keeps int8 on (these tiny weights are too fast to be worth calibrating: auto runs fp32 itself)
    cli("retry", "A.mkv")
    code, _, err = cli(*RUN, "--vision", tiny_eva, "--vision-engine", "auto")
    assert code == 0, err
    assert _movie(cli).vision_id == made_by_int8
    # excluding int8 turns it off: the film is indexed again, by the reference
    cli("retry", "A.mkv")
    code, _, err = cli(*RUN, "--vision", tiny_eva, "--vision-engine", "auto,-int8")
    assert code == 0, err
    movie = _movie(cli)
    assert split_vision_id(movie.vision_id) == (made_by_int8.rsplit("@", 1)[0], "fp32")
    np.testing.assert_allclose(lib.open_features(movie).astype(np.float32),
                               _fp32_features(path, tiny_eva).astype(np.float32), rtol=0, atol=1e-3)


def test_a_mistyped_engine_fails_before_any_film(cli, movies, tiny_eva):
    make_video(movies / "A.mkv", seconds=1)
    cli("add", movies)
    code, _, err = cli(*RUN, "--vision", tiny_eva, "--vision-engine", "int4")
    assert code == 1 and "unknown vision engine 'int4'" in err
    assert _movie(cli).frames == 0


def test_decoding_reads_ahead_one_chunk_at_most(cli, movies, tiny_eva, monkeypatch):
    import indexer.pipeline as pipeline

    seen = []

    class Recording(pipeline.SampleStream):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.prefetch)

    monkeypatch.setattr(pipeline, "SampleStream", Recording)
    make_video(movies / "A.mkv", seconds=3)
    cli("add", movies)
    code, _, err = cli(*RUN, "--vision", tiny_eva)
    assert code == 0, err
    assert seen == [2]  # the queue between the decoding thread and EVA holds one chunk (--batch-size 2)
