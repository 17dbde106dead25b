"""How an answer's moments are ranked (app/moments.py): lines found by stem and scored by closeness,
frames on a bounded scale, the bonus for evidence that agrees, and moments kept inside the film."""
from __future__ import annotations

import numpy as np
import pytest

from app.moments import FRAME_Z, CueHit, cue_score, frame_score, rank_moments

TIMES = [float(t) for t in range(100)]
QUOTE = "The treasure is buried under the old lighthouse."


def spike(*frames: int, height: float = 50.0) -> np.ndarray:
    """Relevance that stands out, far above the film, at these frames."""
    relevance = np.zeros(len(TIMES))
    relevance[list(frames)] = height
    return relevance


def test_a_quoted_line_ranks_above_any_frame_cluster():
    lines = [CueHit(40.0, 44.0, QUOTE), CueHit(60.0, 62.0, "The lighthouse is old.")]
    relevance = spike(10, 11)  # z about 7: far above the film
    for question in (QUOTE, "Where was the treasure buried?"):  # word for word, and in other word forms
        ranked = rank_moments(TIMES, relevance, lines, question, duration=100.0)
        assert (ranked[0].start, ranked[0].end) == (40.0, 44.0), question
        assert ranked[0].why == [f'subtitle: "{QUOTE}"']
        frames = next(m for m in ranked if m.start == 10.0)
        assert frames.score < 3 < ranked[0].score
    assert frame_score(FRAME_Z) == pytest.approx(1.0) and frame_score(1e9) < 3 <= cue_score(0.5)


def test_agreeing_evidence_counts_for_more_than_either_part():
    line = CueHit(40.0, 43.0, "I will hide the map in the chapel.")
    question = "Who hid the map?"
    agreeing = rank_moments(TIMES, spike(41), [line], question, duration=100.0)
    apart = rank_moments(TIMES, spike(80), [line], question, duration=100.0)  # the same evidence, not agreeing
    joined = next(m for m in agreeing if m.start == 40.0)
    line_alone = next(m for m in apart if m.start == 40.0)
    frames_alone = next(m for m in apart if m.start == 80.0)
    assert len(joined.why) == 2 and len(line_alone.why) == 1
    assert joined.score == pytest.approx(line_alone.score + 0.5 * frames_alone.score)
    assert joined.score > max(line_alone.score, frames_alone.score)


def test_lines_said_close_together_stay_apart():
    lines = [CueHit(13.5, 17.0, QUOTE), CueHit(18.0, 21.0, "Who told you about the lighthouse?"),
             CueHit(22.0, 25.0, "An old fisherman who drinks too much.")]
    ranked = rank_moments(TIMES, None, lines, "Who told you about the lighthouse?", duration=100.0)
    assert [(m.start, m.end) for m in ranked] == [(18.0, 21.0), (13.5, 17.0)]


def test_words_are_matched_by_stem_and_irregular_form_and_stop_words_match_nothing():
    hide = CueHit(30.0, 33.0, "I will hide the map in the chapel.")
    assert rank_moments(TIMES, None, [hide], "Who hid it?", duration=100.0)[0].start == 30.0
    assert rank_moments(TIMES, None, [hide], "Is she hiding something?", duration=100.0)[0].start == 30.0
    the = CueHit(50.0, 52.0, "The the the.")
    assert rank_moments(TIMES, None, [hide, the], "the", duration=100.0) == []
    assert rank_moments(TIMES, None, [hide, the], "What is it?", duration=100.0) == []


def test_moments_stay_inside_the_film():
    lines = [CueHit(200.0, 203.0, QUOTE), CueHit(98.0, 104.0, QUOTE), CueHit(99.5, 101.0, "The old lighthouse.")]
    ranked = rank_moments(TIMES, spike(97), lines, QUOTE, duration=100.0)
    assert ranked and all(0 <= m.start <= m.end <= 100.0 for m in ranked)
    assert [(m.start, m.end) for m in ranked if "subtitle" in m.why[0]] == [(97.0, 100.0), (99.5, 100.0)]
    # without a duration the frames bound the film (its last frame's second)
    assert rank_moments(TIMES, None, lines[:1], QUOTE) == []
    assert rank_moments(TIMES, None, lines[1:2], QUOTE)[0].end == 100.0


def looks_like(*frames: int, cosine: float = 0.33, elsewhere: float = 0.12) -> tuple[list[float], np.ndarray]:
    """Scene evidence: each frame's cosine with the question's text, high at these frames."""
    cosines = elsewhere + 0.01 * np.random.default_rng(0).standard_normal(len(TIMES))
    cosines[list(frames)] = cosine
    return TIMES, cosines


def test_frames_that_look_like_the_question_are_a_scene_moment_that_never_outranks_a_quoted_line():
    lines = [CueHit(40.0, 44.0, QUOTE)]
    scenes = looks_like(70, 71, 72)
    ranked = rank_moments(TIMES, None, lines, QUOTE, duration=100.0, scenes=scenes)
    assert (ranked[0].start, ranked[0].end, ranked[0].kind) == (40.0, 44.0, "line")
    scene = next(m for m in ranked if m.start == 70.0)
    assert (scene.end, scene.kind) == (73.0, "scene") and 1 < scene.score < 3 < ranked[0].score
    assert scene.why == [scene.why[0]] and scene.why[0].startswith("scene: the picture looks like the question "
                                                                    "(similarity 0.33")
    described = rank_moments(TIMES, None, lines, "a red kite over the sea at dawn", duration=100.0, scenes=scenes)
    assert (described[0].start, described[0].kind) == (70.0, "scene")  # no line says it: the scene comes first
    assert rank_moments(TIMES, None, lines, QUOTE, duration=100.0) == [ranked[0]]  # without vectors: as before


def test_a_scene_that_agrees_with_a_line_joins_its_moment_with_both_reasons():
    line = CueHit(40.0, 43.0, "I will hide the map in the chapel.")
    joined = rank_moments(TIMES, None, [line], "Who hid the map?", duration=100.0, scenes=looks_like(41))[0]
    apart = rank_moments(TIMES, None, [line], "Who hid the map?", duration=100.0, scenes=looks_like(80))
    line_alone, scene_alone = (next(m for m in apart if m.start == t) for t in (40.0, 80.0))
    assert [w.split(":")[0] for w in joined.why] == ["subtitle", "scene"]
    assert joined.score == pytest.approx(line_alone.score + 0.5 * scene_alone.score)
    longer = rank_moments(TIMES, None, [line], "Who hid the map?", duration=100.0, scenes=looks_like(36, 37, 38))[0]
    assert (longer.start, longer.end) == (40.0, 43.0) and len(longer.why) == 2  # the line's span: it says where


def test_frames_that_stand_out_but_look_like_nothing_give_no_scene_moment():
    faint = looks_like(70, cosine=0.14, elsewhere=0.05)  # far above the film, but below any caption's cosine
    assert rank_moments(TIMES, None, [], "a red kite", duration=100.0, scenes=faint) == []
    flat = (TIMES, np.full(len(TIMES), 0.3))  # every frame alike: none stands out
    assert rank_moments(TIMES, None, [], "a red kite", duration=100.0, scenes=flat) == []
