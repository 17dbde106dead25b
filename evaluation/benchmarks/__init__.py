"""One runner per benchmark family; :data:`BENCHMARKS` maps the command-line names to them."""
from __future__ import annotations

from evaluation.benchmarks.base import Benchmark, Options
from evaluation.benchmarks.egoschema import EgoSchema
from evaluation.benchmarks.gqa import GQA
from evaluation.benchmarks.longvideobench import LongVideoBench
from evaluation.benchmarks.mlvu import MLVU
from evaluation.benchmarks.mmbench import MMBench
from evaluation.benchmarks.mme import MME
from evaluation.benchmarks.pope import POPE
from evaluation.benchmarks.scienceqa import ScienceQA
from evaluation.benchmarks.seed import SEED
from evaluation.benchmarks.vcg import VideoChatGPT
from evaluation.benchmarks.videomme import VideoMME
from evaluation.benchmarks.videoqa import MSRVTT, ActivityNetQA, VideoQA
from evaluation.benchmarks.vqa import VizWiz, VQAv2

BENCHMARKS: dict[str, type[Benchmark]] = {cls.name: cls for cls in (
    GQA, MMBench, MME, POPE, SEED, ScienceQA, VizWiz, VQAv2,
    VideoQA, MSRVTT, ActivityNetQA, VideoChatGPT,
    VideoMME, MLVU, EgoSchema, LongVideoBench)}

__all__ = ["BENCHMARKS", "Benchmark", "Options"]
