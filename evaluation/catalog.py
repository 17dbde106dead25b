"""The benchmarks by command-line name: title, what ``--data`` holds, input kind, judged or not.

Plain data with no imports, so ``llamavid --help`` (which must import no third-party package) can list
them; each runner class in :mod:`evaluation.benchmarks` takes its title and layout from here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    title: str
    layout: str          # what --data must hold
    kind: str = "image"  # image, video or film (films come from the indexer)
    judged: bool = False


CATALOG: dict[str, Entry] = {
    "gqa": Entry("GQA (testdev-balanced)", "testdev_balanced_questions.json and images/<imageId>.jpg"),
    "mmbench": Entry("MMBench", "the benchmark's .tsv (index, question, hint, A-D, answer, category, base64 image)"),
    "mme": Entry("MME", "MME_Benchmark_release_version/<subtask>/: images and question<TAB>answer .txt files"),
    "pope": Entry("POPE", "coco_pope_{random,popular,adversarial}.json (JSON Lines) and val2014/ images"),
    "seed": Entry("SEED-Bench (image)", "SEED-Bench.json and SEED-Bench-image/<data_id>"),
    "sqa": Entry("ScienceQA", "problems.json, pid_splits.json and <split>/<pid>/image.png"),
    "vizwiz": Entry("VizWiz", "<split>.json (image, question, answers) and <split>/ images (--split, default test)"),
    "vqav2": Entry("VQAv2", "v2_OpenEnded_mscoco_<split>_questions.json (+ annotations) and COCO images "
                            "(--split, default test-dev2015)"),
    "msvd": Entry("MSVD-QA", "test_qa.json and video/<video_id>.*", "video", True),
    "msrvtt": Entry("MSRVTT-QA", "test_qa.json and video/<video_id>.*", "video", True),
    "activitynet": Entry("ActivityNet-QA", "test_q.json, test_a.json and all_test/v_<video_name>.*", "video", True),
    "vcg": Entry("Video-ChatGPT benchmark", "generic_qa.json, temporal_qa.json, consistency_qa.json and "
                                            "Test_Videos/", "video", True),
    "videomme": Entry("Video-MME", "videomme/test-00000-of-00001.parquet, data/<videoID>.mp4, "
                                   "subtitle/<videoID>.srt", "film"),
    "mlvu": Entry("MLVU (multiple choice)", "json/<n>_<task>.json and video/<n>_<task>/<video>", "film"),
    "egoschema": Entry("EgoSchema", "questions.json, subset_answers.json and videos/<q_uid>.mp4", "film"),
    "longvideobench": Entry("LongVideoBench", "lvb_val.json, videos/ and subtitles/", "film"),
}
