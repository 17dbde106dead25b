"""Frames of a static shot reuse the features of the last frame EVA encoded (indexer.similar): the
difference measure, the anchor rule, what the library records, that skipping off is exactly the
encoder called on every chunk, that a resumed film makes the same decisions, and the benchmark."""
from __future__ import annotations

import json

import numpy as np
import pytest

import cli
from indexer import library as lib
from indexer.similar import DEFAULT_THRESHOLD, FrameSkipper, difference, encode_chunk, thumbnail
from llamavid.media.preprocess import CLIP_MEAN, CLIP_STD
from llamavid.media.synthetic import X264, shots, write_video

RUN = ("run", "--speech", "never", "--quiet", "--vision-engine", "fp32", "--batch-size", "2")


def pixels_of(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) grey levels -> (3, S, S) CLIP-normalised pixels, as the decoder hands them to EVA."""
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    return ((image.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1).copy()


def static_film(path, kinds=("still", "pan"), seconds=12.0):
    """6-second shots at 128x96: a still one (EVA can skip all but its first frame), then a pan. High
    quality (CRF 8): a small picture is enlarged for EVA, and with it the coding noise."""
    return write_video(path, shots(128, 96, 10, kinds=kinds, shot_seconds=6.0, grain=1), fps=10, seconds=seconds,
                       x264=X264(preset="ultrafast", crf=8, keyint=20, bframes=2))


def test_the_difference_is_the_largest_per_patch_change_in_grey_levels():
    rng = np.random.default_rng(0)
    image = rng.uniform(40, 200, (224, 224, 3)).astype(np.float32)
    base = thumbnail(pixels_of(image))
    assert difference(base, base) == 0
    assert difference(base, thumbnail(pixels_of(image + 3))) == pytest.approx(3, abs=1e-3)
    one_patch = image.copy()
    one_patch[28:42, 56:70] += 40  # exactly one 14-px EVA patch: 1/256 of the frame
    assert difference(base, thumbnail(pixels_of(one_patch))) == pytest.approx(40, abs=1e-3)
    grain = np.clip(image + rng.integers(-4, 5, image.shape), 0, 255)  # per-pixel noise averages out in a cell
    assert difference(base, thumbnail(pixels_of(grain))) < 1.0


def test_frames_are_compared_with_the_last_encoded_frame_not_the_previous_one():
    """A slow drift (1 level a frame) cannot carry one encoded frame over a whole shot."""
    image = np.full((224, 224, 3), 100, np.float32)
    frames = np.stack([pixels_of(image + i) for i in range(6)])
    calls = []

    def encoder(pixels):
        calls.append(len(pixels))
        return np.stack([np.full((2, 3), p[0, 0, 0], np.float16) for p in pixels])

    skipper = FrameSkipper(threshold=1.5)
    assert skipper.plan([thumbnail(p) for p in frames]) == [0, 0, 2, 2, 4, 4]
    rows, reused = encode_chunk(encoder, frames[:3], skipper)  # a chunk of 3, then one of 3
    assert reused.tolist() == [False, True, False] and calls == [2]
    assert np.array_equal(rows[1], rows[0]) and not np.array_equal(rows[2], rows[0])
    rows, reused = encode_chunk(encoder, frames[3:], skipper)
    assert reused.tolist() == [True, False, True] and calls == [2, 1]  # frame 3 reuses frame 2, from the last chunk
    assert skipper.encoded == 3 and skipper.reused == 3
    rows, reused = encode_chunk(encoder, frames[3:], None)  # skipping off: one call on the whole chunk
    assert reused.tolist() == [False] * 3 and calls == [2, 1, 3]


def _indexed(cli, movies, tiny_eva, *flags) -> tuple[np.ndarray, np.ndarray]:
    """(features, reused) of the one film in ``movies``, indexed into ``cli``'s data folder."""
    cli("add", movies)
    code, _, err = cli(*RUN, "--vision", tiny_eva, *flags)
    assert code == 0, err
    db = lib.open_library(cli.data_dir)
    (movie,) = lib.list_movies(db)
    return np.array(lib.open_features(movie)), lib.reused_frames(db, movie)


def test_a_still_shot_reuses_its_first_frame_and_the_library_records_it(cli, movies, tiny_eva, tmp_path, capsys):
    from tests.support.indexer_cli import Cli

    static_film(movies / "Film.mkv")
    feats, reused = _indexed(cli, movies, tiny_eva)
    assert reused.tolist() == [False] + [True] * 5 + [False] * 6  # the still shot, then the pan
    assert all(np.array_equal(feats[i], feats[0]) for i in range(1, 6))  # the stored rows are frame 0's

    real, reused = _indexed(Cli(tmp_path / "every-frame", capsys), movies, tiny_eva, "--no-skip-similar")
    assert not reused.any()
    assert np.array_equal(real[6:], feats[6:])  # the pan: the same chunks through EVA
    np.testing.assert_allclose(real[0].astype(np.float32), feats[0].astype(np.float32), atol=1e-2)  # batch 1 vs 2
    a, b = feats[1:6, 1:].astype(np.float64), real[1:6, 1:].astype(np.float64)
    cosine = (a * b).sum((1, 2)) / np.sqrt((a * a).sum((1, 2)) * (b * b).sum((1, 2)))
    assert cosine.min() > 0.99  # reused rows stay close to EVA's own (the real bound: docs/indexer.md)


def test_with_skipping_off_the_features_are_the_encoder_on_every_chunk(cli, movies, tiny_eva):
    """What the indexer stored before frames could be skipped: EVA on every chunk of sampled frames."""
    from indexer.encoder import Encoder
    from llamavid.media.decode import DecodeStats, decode_segment, prepare_frame, video_spec
    from llamavid.media.probe import probe

    path = static_film(movies / "Film.mkv", seconds=9.0)
    cli("add", movies)
    code, _, err = cli(*RUN, "--vision", tiny_eva, "--no-skip-similar")
    assert code == 0, err
    pixels = np.stack([prepare_frame(image, 224) for _, image in
                       decode_segment(video_spec(path, probe(path)), 1.0, 0, None, DecodeStats())])
    encoder = Encoder(tiny_eva, "cpu", "fp32")  # the float32 reference, no engine
    expected = np.concatenate([encoder(pixels[k:k + 2]) for k in range(0, len(pixels), 2)])
    db = lib.open_library(cli.data_dir)
    (movie,) = lib.list_movies(db)
    assert np.array_equal(np.array(lib.open_features(movie)), expected)
    assert lib.reused_frames(db, movie).tolist() == [False] * 9


def test_a_resumed_film_makes_the_same_decisions(cli, movies, tiny_eva, monkeypatch, tmp_path, capsys):
    """Paused with the anchor in an earlier chunk: the resumed run decodes it again and goes on as an
    uninterrupted run does, to bit-identical features and the same reused frames."""
    from indexer import pipeline
    from indexer.store import LibraryStore
    from tests.support.indexer_cli import Cli

    static_film(movies / "Film.mkv")
    reference = Cli(tmp_path / "reference-data", capsys)
    reference("add", movies)
    assert reference(*RUN, "--vision", tiny_eva)[0] == 0
    ref_db = lib.open_library(reference.data_dir)
    (ref_movie,) = lib.list_movies(ref_db)

    cli("add", movies)
    original, commits = pipeline.Pipeline._commit, []

    def commit_then_pause(self, job, movie, *args):
        done = original(self, job, movie, *args)
        commits.append(done)
        if len(commits) == 2:  # frames 0-3 stored: 0 encoded, 1-3 reused; the pause lands before frame 4
            with LibraryStore.open(cli.data_dir / "library.db") as store:
                store.control_jobs([movie["id"]], "pause")
        return done

    monkeypatch.setattr(pipeline.Pipeline, "_commit", commit_then_pause)
    assert cli(*RUN, "--vision", tiny_eva)[0] == 0
    assert cli.status()["Film.mkv"]["state"] == "paused" and commits == [2, 4]
    monkeypatch.setattr(pipeline.Pipeline, "_commit", original)
    decoded, decode_again = [], pipeline.frame_pixels
    monkeypatch.setattr(pipeline, "frame_pixels", lambda *a: decoded.append(a[2]) or decode_again(*a))
    cli("resume", "Film.mkv")
    assert cli(*RUN, "--vision", tiny_eva)[0] == 0
    assert decoded == [0.0]  # the anchor, frame 0, decoded again
    db = lib.open_library(cli.data_dir)
    (movie,) = lib.list_movies(db)
    assert lib.reused_frames(db, movie).tolist() == lib.reused_frames(ref_db, ref_movie).tolist()
    assert lib.reused_frames(db, movie)[4:6].all()  # still reusing frame 0 after the resume
    assert np.array_equal(np.array(lib.open_features(movie)), np.array(lib.open_features(ref_movie)))


def test_frames_indexed_before_the_reused_column_read_as_not_reused(tmp_path):
    from indexer import db as dbmod
    from indexer.store import LibraryStore

    before = next(i for i, m in enumerate(dbmod.MIGRATIONS) if "reused" in (m.__doc__ or ""))
    db = dbmod.connect(tmp_path / "library.db", migrations=dbmod.MIGRATIONS[:before])
    db.execute("INSERT INTO libraries (id, path, added_at) VALUES (1, '/films', 0)")
    db.execute("INSERT INTO movies (id, library_id, path, rel_path, size, mtime, fingerprint, added_at, changed_at)"
               " VALUES (1, 1, '/films/a.mkv', 'a.mkv', 1, 0, 'f', 0, 0)")
    db.execute("INSERT INTO frames (movie_id, idx, time) VALUES (1, 0, 0.0), (1, 1, 1.0)")
    db.close()
    with LibraryStore.open(tmp_path / "library.db") as store:
        assert store.reused_frames(1) == [False, False]
        assert store.last_encoded_frame(1, 2) == (1, 1.0)


def test_the_benchmark_reports_savings_and_cosines_at_tiny_size(capsys):
    assert cli.main(["bench", "skip", "--size", "tiny", "--seconds", "12", "--threads", "1"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    films = {r["film"]: r for r in records if r["bench"] == "skip"}
    static, moving = films["static"], films["moving"]
    assert static["skipped_fraction_by_shot"]["still"] > 0.5 and static["skipped_fraction_by_shot"]["talk"] == 0
    assert moving["skipped"] == 0 and moving["cos_min"] is None
    assert static["threshold"] == DEFAULT_THRESHOLD and 0 < static["cos_min"] <= 1
    assert static["feature_s_per_film_hour_off"] > 0 and static["feature_s_per_film_hour_on"] > 0
    sweep = [r for r in records if r["bench"] == "skip-sweep"]
    assert [r["threshold"] for r in sweep] == sorted(r["threshold"] for r in sweep)
    assert [r["skipped"] for r in sweep] == sorted(r["skipped"] for r in sweep)  # a higher threshold skips more
    (pairs,) = [r for r in records if r["bench"] == "skip-pairs"]
    assert pairs["pairs"] > 0 and sum(b["pairs"] for b in pairs["bins"]) == pairs["pairs"]
