"""Items per minute of ``llamavid eval`` on this machine: an image benchmark (GQA format) and a
long-video benchmark (Video-MME format, films from the indexer), with the tiny LLM and full-size vision
(EVA-ViT-g, 39 blocks, and a BERT-base-sized Q-Former) with random weights. Not a test (it takes
minutes); run ``python -m tests.evaluation.measure_throughput [WORK_DIR [FILM_SECONDS]]`` from the
repository's root. A run folder already there is resumed, so a second call measures only what is missing.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cli.bench.harness import random_eva
from evaluation.answering import Answerer
from evaluation.benchmarks import BENCHMARKS, Options
from evaluation.films import Films, index_videos
from evaluation.runner import RunSettings, run_benchmark
from evaluation.visuals import VisualLoader
from llamavid.media.synthetic import film, write_video
from llamavid.model.eva import EvaConfig, random_eva_state
from llamavid.model.tiny import bert_vocab, random_model, tiny_config, write_tiny_checkpoint
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.load import load_model
from tests.support import benchmark_data as fx


def full_vision_model(work: Path) -> LlamaVid:
    tiny = load_model(write_tiny_checkpoint(work / "tiny"), work / "data", device="cpu", dtype="fp32")
    config = tiny_config(eva_width=1408)
    config.qformer = {"vocab_size": len(bert_vocab()) + 1}  # BERT-base sizes, the tiny vocabulary
    model = random_model(config)
    model.model.vision_tower = random_eva(EvaConfig(), torch.device("cpu"))
    return LlamaVid(model.eval(), tiny.tokenizer, tiny.qformer_tokenizer, tiny.report)


def image_run(lv: LlamaVid, work: Path) -> dict:
    root = work / "gqa"
    questions = {}
    for i in range(6):
        fx.picture(root / "images" / f"n{i}.jpg", i)
        for j, q in enumerate(("What color is it?", "Is there a dog?")):
            questions[f"q{i}-{j}"] = {"imageId": f"n{i}", "question": q, "answer": "red"}
    (root / "testdev_balanced_questions.json").write_text(json.dumps(questions))
    bench = BENCHMARKS["gqa"](root, Options())
    return run_benchmark(bench, Answerer(lv, 8), VisualLoader(lv), work / "gqa-run", RunSettings("full-vision"))


def film_run(lv: LlamaVid, work: Path, seconds: int) -> dict:
    root = work / "videomme"
    rows = []
    for n, vid in enumerate(("filmA", "filmB")):
        write_video(root / "data" / f"{vid}.mp4", film(320, 240, 25), fps=25, seconds=seconds)
        for q in range(3):
            rows.append({"video_id": f"{n}", "duration": "short", "domain": "d", "sub_category": "s",
                         "videoID": vid, "question_id": f"{n}-{q}", "task_type": "t", "question": f"Question {q}?",
                         "options": ["A. a", "B. b", "C. c", "D. d"], "answer": "A"})
    (root / "subtitle").mkdir(parents=True, exist_ok=True)
    (root / "subtitle" / "filmA.srt").write_text(fx.SRT)
    (root / "videomme").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "videomme" / "test.parquet")
    eva = work / "eva_vit_g.pth"
    torch.save({k: v.half() for k, v in random_eva_state(EvaConfig(), seed=1).items()}, eva)
    start = time.perf_counter()
    print("indexer:", index_videos(work / "data", [root / "data"], str(eva), "cpu"), file=sys.stderr)
    print(f"indexing {2 * seconds} frames took {time.perf_counter() - start:.1f} s", file=sys.stderr)
    bench = BENCHMARKS["videomme"](root, Options())
    return run_benchmark(bench, Answerer(lv, 1), VisualLoader(lv, Films(work / "data")), work / "film-run",
                         RunSettings("full-vision"))


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    lv = full_vision_model(work)
    for name, results in (("image (GQA format)", image_run(lv, work)),
                          ("film (Video-MME format)", film_run(lv, work, seconds))):
        print(json.dumps({"benchmark": name, "items": results["items"], **results["timing"],
                          "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
