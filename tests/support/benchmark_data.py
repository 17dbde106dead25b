"""Tiny data sets in the benchmarks' official formats, written by the tests themselves."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from llamavid.media.synthetic import grey_ramp, write_video

COLORS = [(200, 30, 30), (30, 30, 200), (30, 160, 60), (220, 220, 40)]


def picture(path: Path, n: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40 + 8 * n, 30), COLORS[n % len(COLORS)]).save(path)
    return path


def clip(path: Path, seconds: int = 3) -> Path:
    return write_video(path, grey_ramp(96, 64), fps=10, seconds=seconds)


def b64_png(n: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), COLORS[n]).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def gqa(root: Path) -> Path:
    for i in range(2):
        picture(root / "images" / f"n{i}.jpg", i)
    questions = {
        "q1": {"imageId": "n0", "question": "What color is the car?", "answer": "red",
               "types": {"structural": "query", "semantic": "attr"}},
        "q2": {"imageId": "n0", "question": "Is there a dog?", "answer": "no",
               "types": {"structural": "verify", "semantic": "obj"}},
        "q3": {"imageId": "n1", "question": "What is the sky?", "answer": "blue",
               "types": {"structural": "query", "semantic": "attr"}},
    }
    (root / "testdev_balanced_questions.json").write_text(json.dumps(questions))
    return root


MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "source", "l2-category",
                   "comment", "split", "image"]


def mmbench(path: Path) -> Path:
    """Two questions and the circular copies of the first (its image cell points at row 0)."""
    rows = [
        [0, "What colour is it?", "A plain picture.", "red", "blue", "green", "yellow", "A", "color", "s", "attr",
         "nan", "dev", b64_png(0)],
        [1, "How many objects?", "nan", "one", "two", "nan", "nan", "B", "count", "s", "reason", "nan", "dev",
         b64_png(1)],
        [1000000, "What colour is it?", "A plain picture.", "blue", "green", "yellow", "red", "D", "color", "s", "attr",
         "nan", "dev", "0"],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(map(str, r)) for r in [MMBENCH_COLUMNS, *rows]) + "\n")
    return path


def mme(root: Path) -> Path:
    """existence (files side by side), artwork (images/ + questions_answers_YN/), code_reasoning."""
    for task, name, nested in (("existence", "e1", False), ("existence", "e2", False), ("artwork", "a1", True),
                               ("code_reasoning", "c1", False)):
        folder = root / task
        picture((folder / "images" if nested else folder) / f"{name}.png", len(name))
        text = folder / "questions_answers_YN" if nested else folder
        text.mkdir(parents=True, exist_ok=True)
        (text / f"{name}.txt").write_text(f"Is there a {name}? Please answer yes or no.\tYes\n"
                                          f"Is there no {name}? Please answer yes or no.\tNo\n")
    return root


def pope(root: Path) -> Path:
    for i in range(2):
        picture(root / "val2014" / f"COCO_val2014_{i:012d}.jpg", i)
    for split in ("random", "adversarial"):
        rows = [{"question_id": 1, "image": "COCO_val2014_000000000000.jpg", "text": "Is there a car in the image?",
                 "label": "yes"},
                {"question_id": 2, "image": "COCO_val2014_000000000000.jpg", "text": "Is there a dog in the image?",
                 "label": "no"},
                {"question_id": 3, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a cup in the image?",
                 "label": "yes"},
                {"question_id": 4, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a cat in the image?",
                 "label": "no"}]
        (root / "coco").mkdir(parents=True, exist_ok=True)
        (root / "coco" / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def seed(root: Path) -> Path:
    picture(root / "SEED-Bench-image" / "img1.jpg", 0)
    picture(root / "SEED-Bench-image" / "img2.jpg", 1)
    q = {"choice_a": "a cat", "choice_b": "a dog", "choice_c": "a car", "choice_d": "a cup"}
    data = {"question_type": {"Scene Understanding": 1, "Instance Identity": 2},
            "questions": [
                {**q, "question_id": "101", "question": "What is shown?", "answer": "A", "data_id": "img1.jpg",
                 "data_type": "image", "question_type_id": 1},
                {**q, "question_id": "102", "question": "What else?", "answer": "C", "data_id": "img2.jpg",
                 "data_type": "image", "question_type_id": 2},
                {**q, "question_id": "103", "question": "What else?", "answer": "D", "data_id": "img2.jpg",
                 "data_type": "image", "question_type_id": 2},
                {**q, "question_id": "v1", "question": "In the video?", "answer": "B", "data_id": "v.mp4",
                 "data_type": "video", "question_type_id": 2}]}
    (root / "SEED-Bench.json").write_text(json.dumps(data))
    return root


def sqa(root: Path) -> Path:
    picture(root / "test" / "11" / "image.png", 0)
    picture(root / "test" / "12" / "image.png", 1)
    base = {"lecture": "", "solution": "", "grade": "grade1", "split": "test"}
    problems = {
        "11": {**base, "question": "Which is red?", "choices": ["left", "right"], "answer": 0, "hint": "Look.",
               "image": "image.png", "subject": "natural science"},
        "12": {**base, "question": "Which is blue?", "choices": ["up", "down", "middle"], "answer": 2, "hint": "",
               "image": "image.png", "subject": "natural science"},
        "13": {**base, "question": "Which word is a noun?", "choices": ["run", "dog"], "answer": 1, "hint": "",
               "image": None, "subject": "language science"},
        "99": {**base, "question": "Train question", "choices": ["a", "b"], "answer": 0, "hint": "", "image": None,
               "subject": "language science", "split": "train"}}
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"test": ["11", "12", "13"], "train": ["99"]}))
    return root


def vqav2(root: Path) -> Path:
    for i in (7, 9):
        picture(root / "val2014" / f"COCO_val2014_{i:012d}.jpg", i % 4)
    questions = {"questions": [{"image_id": 7, "question": "How many cats?", "question_id": 7001},
                               {"image_id": 9, "question": "What is it?", "question_id": 9001}]}
    answers = {"annotations": [
        {"question_id": 7001, "image_id": 7, "answer_type": "number",
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                     for i, a in enumerate(["2"] * 4 + ["two"] * 2 + ["3"] * 4)]},
        {"question_id": 9001, "image_id": 9, "answer_type": "other",
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                     for i, a in enumerate(["dog"] * 2 + ["cat"] * 8)]}]}
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(questions))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(answers))
    return root


def vizwiz(root: Path) -> Path:
    picture(root / "val" / "VizWiz_val_00000000.jpg", 0)
    picture(root / "val" / "VizWiz_val_00000001.jpg", 1)
    rows = [{"image": "VizWiz_val_00000000.jpg", "question": "What is this?", "answerable": 1, "answer_type": "other",
             "answers": [{"answer": "soup", "answer_confidence": "yes"}] * 10},
            {"image": "VizWiz_val_00000001.jpg", "question": "What color?", "answerable": 0,
             "answer_type": "unanswerable", "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 10}]
    (root / "val.json").write_text(json.dumps(rows))
    return root


def msvd(root: Path) -> Path:
    clip(root / "video" / "vidA.avi", 2)
    clip(root / "video" / "vidB.mp4", 3)
    rows = [{"video_id": "vidA", "question": "what is alpha doing?", "answer": "running", "id": 0},
            {"video_id": "vidA", "question": "who is beta?", "answer": "a man", "id": 1},
            {"video_id": "vidB", "question": "what does gamma hold?", "answer": "a cup", "id": 2}]
    (root / "test_qa.json").write_text(json.dumps(rows))
    return root


def activitynet(root: Path) -> Path:
    clip(root / "all_test" / "v_abc.mp4", 2)
    (root / "test_q.json").write_text(json.dumps([
        {"video_name": "abc", "question_id": "v_abc_0", "question": "what is alpha doing"},
        {"video_name": "abc", "question_id": "v_abc_1", "question": "is beta outdoors"}]))
    (root / "test_a.json").write_text(json.dumps([
        {"answer": "dancing", "type": 0, "question_id": "v_abc_0"},
        {"answer": "yes", "type": 3, "question_id": "v_abc_1"}]))
    return root


def vcg(root: Path) -> Path:
    clip(root / "Test_Videos" / "v_one.mp4", 2)
    clip(root / "Test_Videos" / "v_two.mkv", 2)
    (root / "generic_qa.json").write_text(json.dumps([
        {"Q": "What happens in alpha?", "A": "A man runs.", "video_name": "v_one"},
        {"Q": "Describe beta.", "A": "A dog sits.", "video_name": "v_two"}]))
    (root / "temporal_qa.json").write_text(json.dumps([
        {"Q": "What happens first in gamma?", "A": "He stands up.", "video_name": "v_one"}]))
    (root / "consistency_qa.json").write_text(json.dumps([
        {"Q1": "What is delta wearing?", "Q2": "Describe the clothes in delta.", "A": "A red hat.",
         "video_name": "v_two"}]))
    return root


SRT = "1\n00:00:00,500 --> 00:00:01,400\nHello captain.\n\n2\n00:00:02,100 --> 00:00:03,000\nWe sail at night.\n"


def videomme(root: Path) -> Path:
    """Two films (4 s and 3 s) with three questions; the second film has subtitles."""
    clip(root / "data" / "vidAAA.mp4", 4)
    clip(root / "data" / "vidBBB.mp4", 3)
    (root / "subtitle").mkdir(parents=True)
    (root / "subtitle" / "vidBBB.srt").write_text(SRT)
    opts = ["A. red", "B. blue", "C. green", "D. grey"]
    rows = [
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy", "url": "u",
         "videoID": "vidAAA", "question_id": "001-1", "task_type": "Counting Problem", "question": "What colour?",
         "options": opts, "answer": "D"},
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy", "url": "u",
         "videoID": "vidAAA", "question_id": "001-2", "task_type": "OCR Problems", "question": "What text?",
         "options": opts, "answer": "A"},
        {"video_id": "002", "duration": "long", "domain": "Film & Television", "sub_category": "Movie & TV Show",
         "url": "u", "videoID": "vidBBB", "question_id": "002-1", "task_type": "Counting Problem",
         "question": "Who speaks?", "options": opts, "answer": "B"}]
    (root / "videomme").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "videomme" / "test-00000-of-00001.parquet")
    return root


def mlvu(root: Path) -> Path:
    clip(root / "video" / "1_plotQA" / "movie1.mp4", 3)
    clip(root / "video" / "4_count" / "count1.mp4", 2)
    (root / "json").mkdir(parents=True)
    (root / "json" / "1_plotQA.json").write_text(json.dumps([
        {"video": "movie1.mp4", "duration": 200.0, "question": "Who leaves?", "candidates": ["Ann", "Bob", "Cid"],
         "answer": "Bob", "question_type": "plotQA"},
        {"video": "movie1.mp4", "duration": 200.0, "question": "Where?", "candidates": ["home", "sea"],
         "answer": "sea", "question_type": "plotQA"}]))
    (root / "json" / "4_count.json").write_text(json.dumps([
        {"video": "count1.mp4", "duration": 1200.0, "question": "How many?", "candidates": ["1", "2", "3", "4"],
         "answer": "3", "question_type": "count"}]))
    (root / "json" / "9_summary.json").write_text(json.dumps([
        {"video": "movie1.mp4", "duration": 200.0, "question": "Summarize.", "answer": "A story.",
         "question_type": "summary"}]))
    return root


def egoschema(root: Path) -> Path:
    clip(root / "videos" / "uid-1.mp4", 3)
    clip(root / "videos" / "uid-2.mp4", 3)
    options = {f"option {i}": f"choice {i}" for i in range(5)}
    (root / "questions.json").write_text(json.dumps([
        {"q_uid": "uid-1", "google_drive_id": "x", "question": "What did C do?", **options},
        {"q_uid": "uid-2", "google_drive_id": "y", "question": "Why did C stop?", **options}]))
    (root / "subset_answers.json").write_text(json.dumps({"uid-1": 3}))
    return root


def longvideobench(root: Path) -> Path:
    clip(root / "videos" / "abc.mp4", 3)
    (root / "subtitles").mkdir(parents=True)
    (root / "subtitles" / "abc_en.json").write_text(json.dumps([
        {"start": "00:01:40.500", "end": "00:01:41.500", "line": "Look over there."},
        {"timestamp": [102.0, None], "text": "It is late."}]))
    (root / "lvb_val.json").write_text(json.dumps([
        {"id": "abc_0", "video_id": "abc", "video_path": "abc.mp4", "subtitle_path": "abc_en.json",
         "question": "What is said first?", "candidates": ["hello", "look", "bye"], "correct_choice": 1,
         "duration_group": 15, "duration": 3.0, "question_category": "S2E",
         "starting_timestamp_for_subtitles": 100.0}]))
    return root
