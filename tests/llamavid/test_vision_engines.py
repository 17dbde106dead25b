"""Vision engines: each one on tiny weights stays within its bound of float32 (or says why it cannot
run), the calibration picks the faster engine and refuses an unfaithful one (timings injected,
nothing timed here), its cache is keyed by the CPU and reused, a forced engine is used, and the
indexer re-extracts features made by an engine that was turned off."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llamavid.errors import UserError
from llamavid.model import engines as engines_mod
from llamavid.model.engines import (
    EVA_ENGINES,
    QFORMER_ENGINES,
    EngineUnavailable,
    EvaEngine,
    QFormerEngine,
    build_eva,
    build_qformer,
    unavailable_reason,
)
from llamavid.model.eva import EvaConfig, EvaVisionTower, random_eva_state
from llamavid.model.tiny import random_model, tiny_config
from llamavid.runtime import vision_engines as ve
from llamavid.runtime.vision_engines import (
    BOUNDS,
    CalibrationCache,
    VisionEngines,
    parse_spec,
    synthetic_pixels,
    worst_cosine,
)

OPENVINO = {name for name in {*EVA_ENGINES, *QFORMER_ENGINES} if name.startswith("openvino")}
#: auto without OpenVINO and autocast: the calibration tests only need two engines besides fp32
TORCH_ONLY = "auto," + ",".join(f"-{n}" for n in sorted(OPENVINO | {"bf16-autocast"}))


def _param(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name.startswith("openvino") else name


@pytest.fixture(scope="module")
def tower() -> EvaVisionTower:
    cfg = EvaConfig(224, 14, 176, 2, 256)
    return EvaVisionTower.from_state_dict(random_eva_state(cfg, std=0.05), cfg)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return synthetic_pixels(2, 224)


@pytest.fixture(scope="module")
def tiny_model():
    return random_model(tiny_config()).eval()


def _qformer_sample(model, frames: int = 4):
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(frames, 257, model.config.mm_hidden_size, generator=gen)
    ids = torch.randint(5, 30, (1, 7), generator=gen)
    return feats, ids, torch.ones_like(ids)


def _context_tokens(model, encoder, feats, ids, mask) -> torch.Tensor:
    inner = model.model
    original = inner.vlm_att_encoder
    inner._modules["vlm_att_encoder"] = encoder
    try:
        with torch.inference_mode():
            return model.visual_tokens(feats, ids, mask, keep_parts=True).part("context_tokens")
    finally:
        inner._modules["vlm_att_encoder"] = original


# ---------------------------------------------------------------- each engine


@pytest.mark.parametrize("name", [_param(n) for n in EVA_ENGINES])
def test_each_eva_engine_stays_within_the_feature_bound_of_fp32(name, tower, pixels, capsys):
    reason = unavailable_reason("eva", name)
    if reason:  # e.g. OpenVINO not installed: refused, saying why
        with pytest.raises(EngineUnavailable, match="not installed|no quantized"):
            build_eva(name, tower, pixels)
        return
    engine = build_eva(name, tower, pixels)
    got, want = engine(pixels), tower(pixels)
    assert isinstance(engine, EvaEngine) and engine.engine == name
    assert got.dtype == torch.float32 and got.shape == want.shape
    cosine = worst_cosine(got, want)
    assert cosine >= 0.99, "far off fp32: a broken engine (the bound the calibration enforces is tighter)"
    if cosine < BOUNDS["eva"]:
        # This CPU's kernels for the engine lose more than the bound (int8 without VNNI, say): features
        # from it are never stored here, because the calibration measures the same and refuses it.
        others = ",".join(f"-{n}" for n in EVA_ENGINES if n not in ("fp32", name))
        calibrated = VisionEngines(f"qformer=fp32,eva=auto,{others}", worth_parameters=0,
                                   timer=FakeTimer({"fp32": 1.0, name: 0.1}))
        assert calibrated.eva(tower, "w", pixels)[1] == "fp32"
        assert calibrated.calibrations["eva"].trial(name).status == "refused"
    assert next(tower.parameters()).dtype == torch.float32  # the reference is left as it was
    assert capsys.readouterr().out == ""  # stdout stays clean (the bench writes JSON lines there)


@pytest.mark.parametrize("name", [_param(n) for n in QFORMER_ENGINES])
def test_each_qformer_engine_stays_within_the_token_bound_of_fp32(name, tiny_model):
    feats, ids, mask = _qformer_sample(tiny_model)
    reference = tiny_model.model.vlm_att_encoder
    reason = unavailable_reason("qformer", name)
    if reason:
        with pytest.raises(EngineUnavailable, match="not installed|no quantized"):
            build_qformer(name, reference)
        return
    engine = build_qformer(name, reference)
    assert isinstance(engine, QFormerEngine) and engine.engine == name
    want = _context_tokens(tiny_model, reference, feats, ids, mask)
    got = _context_tokens(tiny_model, engine, feats, ids, mask)
    assert worst_cosine(got, want) >= BOUNDS["qformer"]
    # another question length and frame count than the engine was built (or traced) with
    longer = torch.randint(5, 30, (1, 11))
    got = _context_tokens(tiny_model, engine, feats[:3], longer, torch.ones_like(longer))
    assert worst_cosine(got, _context_tokens(tiny_model, reference, feats[:3], longer, torch.ones_like(longer))) \
        >= BOUNDS["qformer"]


def test_an_engine_whose_library_is_missing_is_refused_with_the_reason(monkeypatch, tower):
    monkeypatch.setattr(engines_mod, "installed", lambda package: package != "openvino")
    assert "openvino not installed (pip install openvino)" == unavailable_reason("eva", "openvino")
    with pytest.raises(EngineUnavailable, match="openvino not installed"):
        build_eva("openvino", tower)
    with pytest.raises(UserError, match="openvino cannot run the eva here: openvino not installed"):
        VisionEngines("eva=openvino").eva(tower, "w")


def test_gpu_and_unknown_engines_are_refused_with_the_reason():
    assert "CPU engine" in unavailable_reason("eva", "int8", "cuda")
    assert unavailable_reason("eva", "fp32", "cuda") is None  # the reference runs anywhere
    assert "unknown eva engine 'fp32-plain'" in unavailable_reason("eva", "fp32-plain")


# ---------------------------------------------------------------- the setting


def test_the_setting_reads_engines_per_part_and_exclusions():
    spec = parse_spec("eva=openvino-int8,qformer=bf16")
    assert (spec["eva"].engine, spec["qformer"].engine) == ("openvino-int8", "bf16")
    spec = parse_spec("int8")
    assert spec["eva"].engine == spec["qformer"].engine == "int8"
    spec = parse_spec("openvino-int8w")  # an EVA-only engine leaves the Q-Former on auto
    assert (spec["eva"].engine, spec["qformer"].engine) == ("openvino-int8w", "auto")
    spec = parse_spec("auto,-int8")
    assert not spec["eva"].forced and "int8" in spec["eva"].excluded and "int8" in spec["qformer"].excluded
    assert parse_spec(None)["eva"] == parse_spec("auto")["eva"]
    with pytest.raises(UserError, match="unknown vision engine 'int4'"):
        parse_spec("int4")
    with pytest.raises(UserError, match="eva or qformer"):
        parse_spec("llm=int8")


def test_the_setting_is_read_from_settings_json(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"vision_engine": "eva=int8", "model": "x"}))
    engines = VisionEngines.for_data(tmp_path)
    assert engines.spec["eva"].engine == "int8" and engines.cache.path.parent == tmp_path / "cache"
    assert VisionEngines.for_data(tmp_path, "fp32").spec["eva"].engine == "fp32"  # a flag wins


# ---------------------------------------------------------------- calibration


class FakeTimer:
    """Seconds per call by engine name, as if measured; counts the calls."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds, self.calls = seconds, 0

    def __call__(self, name, call) -> float:
        self.calls += 1
        return self.seconds[name]


def _never(name, call) -> float:
    raise AssertionError(f"timed {name}: the calibration should have come from the cache")


def test_calibration_picks_the_faster_engine_when_the_other_is_made_slow(tower, pixels, tmp_path):
    slow_int8 = FakeTimer({"fp32": 1.0, "bf16": 0.5, "int8": 2.0})
    module, name = VisionEngines(TORCH_ONLY, worth_parameters=0, timer=slow_int8).eva(tower, "w", pixels)
    assert name == "bf16" and module.engine == "bf16"
    slow_bf16 = FakeTimer({"fp32": 1.0, "bf16": 2.0, "int8": 0.5})
    engines = VisionEngines(TORCH_ONLY, worth_parameters=0, timer=slow_bf16)
    module, name = engines.eva(tower, "w", pixels)
    assert name == "int8" and module.engine == "int8"
    trials = {t.engine: t for t in engines.calibrations["eva"].trials}
    assert trials["int8"].speedup == pytest.approx(2.0) and trials["bf16"].speedup == pytest.approx(0.5)
    assert trials["int8"].status == trials["bf16"].status == "accepted"


def test_calibration_keeps_the_reference_when_no_engine_beats_it_by_the_margin(tower, pixels, tmp_path):
    cache = CalibrationCache(tmp_path / "vision-engines.json")
    timer = FakeTimer({"fp32": 1.0, "bf16": 0.99, "int8": 1.5})
    module, name = VisionEngines(TORCH_ONLY, cache, worth_parameters=0, timer=timer).eva(tower, "w", pixels)
    assert name == "fp32" and module is tower
    module, name = VisionEngines(TORCH_ONLY, cache, worth_parameters=0, timer=_never).eva(tower, "w", pixels)
    assert name == "fp32" and module is tower  # read back: still the reference


def test_calibration_refuses_an_engine_below_the_cosine_bound(monkeypatch, tower, pixels):
    real_build = ve.build_eva

    def build(name, tower, sample=None, saved=None):
        engine = real_build(name, tower, sample, saved)
        if name == "int8":  # a broken engine: fast, but its features are off
            def noisy(x):
                y = tower(x)
                return y + 0.3 * y.std() * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
            engine = EvaEngine("int8", tower.cfg, noisy)
        return engine

    monkeypatch.setattr(ve, "build_eva", build)
    engines = VisionEngines(TORCH_ONLY, worth_parameters=0, timer=FakeTimer({"fp32": 1.0, "bf16": 0.8, "int8": 0.1}))
    _, name = engines.eva(tower, "w", pixels)
    trial = engines.calibrations["eva"].trial("int8")
    assert name == "bf16"
    assert trial.status == "refused" and "below 0.999" in trial.reason and trial.cosine < BOUNDS["eva"]
    assert not engines.allows("eva", "int8") and engines.allows("eva", "bf16")


def test_calibration_tries_nothing_when_the_reference_is_already_fast(tower, pixels):
    timer = FakeTimer({"fp32": 0.001, "bf16": 0.0001, "int8": 0.0001})
    engines = VisionEngines(TORCH_ONLY, worth_parameters=0, timer=timer)
    module, name = engines.eva(tower, "w", pixels)
    assert name == "fp32" and module is tower and timer.calls == 1
    assert {t.status for t in engines.calibrations["eva"].trials[1:]} == {"skipped"}


def test_tiny_models_are_not_calibrated(tower, pixels, tmp_path):
    cache = CalibrationCache(tmp_path / "vision-engines.json")
    module, name = VisionEngines("auto", cache, timer=_never).eva(tower, "w", pixels)
    assert name == "fp32" and module is tower and not cache.path.exists()


def test_the_calibration_cache_is_keyed_by_cpu_identity_and_reused(monkeypatch, tower, pixels, tmp_path):
    cache = CalibrationCache(tmp_path / "cache" / "vision-engines.json")
    first = FakeTimer({"fp32": 1.0, "bf16": 2.0, "int8": 0.5})
    assert VisionEngines(TORCH_ONLY, cache, worth_parameters=0, timer=first).eva(tower, "w", pixels)[1] == "int8"
    assert first.calls > 0 and len(cache.entries()) == 1
    # the same machine, weights and versions: read back, nothing measured
    again = VisionEngines(TORCH_ONLY, cache, worth_parameters=0, timer=_never)
    assert again.eva(tower, "w", pixels)[1] == "int8"
    assert again.calibrations["eva"].trial("int8").speedup == pytest.approx(2.0)
    # another CPU: measured again, and kept beside the first
    other_cpu = {**ve.cpu_info(), "model name": "Another CPU", "flags": "sse2 avx2 amx_bf16"}
    monkeypatch.setattr(ve, "cpu_info", lambda: other_cpu)
    second = FakeTimer({"fp32": 1.0, "bf16": 0.25, "int8": 0.5})
    assert VisionEngines(TORCH_ONLY, cache, worth_parameters=0, timer=second).eva(tower, "w", pixels)[1] == "bf16"
    assert second.calls > 0 and len(cache.entries()) == 2
    assert [c.identity["cpu"] for c in ve.this_machine(cache.entries())] == ["Another CPU"]
    # other weights on the same machine: measured again
    third = FakeTimer({"fp32": 1.0, "bf16": 0.25, "int8": 0.5})
    VisionEngines(TORCH_ONLY, cache, worth_parameters=0, timer=third).eva(tower, "other weights", pixels)
    assert third.calls > 0 and len(cache.entries()) == 3


def test_a_forced_engine_is_used_without_calibrating(tower, pixels, tiny_model):
    module, name = VisionEngines("int8", timer=_never).eva(tower, "w", pixels)
    assert name == "int8" and module.engine == "int8"
    feats, ids, mask = _qformer_sample(tiny_model)
    model = random_model(tiny_config()).eval()
    assert VisionEngines("qformer=bf16", timer=_never).qformer(model, "w", lambda: (feats, ids, mask)) == "bf16"
    assert model.model.vlm_att_encoder.engine == "bf16"
    assert not VisionEngines("int8").allows("eva", "bf16") and VisionEngines("int8").allows("eva", "fp32")


def test_the_qformer_calibration_chooses_on_visual_tokens(tiny_model):
    model = random_model(tiny_config()).eval()
    feats, ids, mask = _qformer_sample(model)
    spec = "qformer=auto," + ",".join(f"-{n}" for n in ("openvino", "openvino-f32", "bf16"))
    timer = FakeTimer({"fp32": 1.0, "fp32-plain": 0.8, "int8": 0.9})
    engines = VisionEngines(spec, worth_parameters=0, timer=timer)
    assert engines.qformer(model, "w", lambda: (feats, ids, mask)) == "fp32-plain"
    trial = engines.calibrations["qformer"].trial("int8")
    assert trial.status == "accepted" and trial.cosine >= BOUNDS["qformer"]
    assert engines.calibrations["qformer"].frames == ve.SAMPLE_FRAMES["qformer"]


def test_a_loaded_model_runs_the_chosen_engines(tiny_checkpoint):
    from llamavid.runtime.api import LlamaVid

    plain = LlamaVid.load(tiny_checkpoint, device="cpu", dtype="fp32")
    lv = LlamaVid.load(tiny_checkpoint, device="cpu", dtype="fp32", vision_engine="int8")
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    want = plain.encode(plain.preprocess(frames, mode="crop"))
    got = lv.encode(lv.preprocess(frames, mode="crop"))
    assert lv.model.model.vision_tower.engine == "int8" and worst_cosine(got, want) >= BOUNDS["eva"]
    tokens = lv.visual_tokens(want, ["What happens?"], keep_parts=True).part("context_tokens")
    assert lv.model.model.vlm_att_encoder.engine == "int8"
    reference = plain.visual_tokens(want, ["What happens?"], keep_parts=True).part("context_tokens")
    assert worst_cosine(tokens, reference) >= BOUNDS["qformer"]
    assert plain.vision_engines is None and type(plain.model.model.vision_tower) is EvaVisionTower


def test_the_bench_times_each_engine_beside_fp32():
    import io

    from cli.bench.model import run_bench
    from cli.bench.plan import BenchPlan

    plan = BenchPlan(stages=("eva", "qformer"), device=torch.device("cpu"), dtype=torch.float32, repeats=1,
                     sizes=(224,), batches=(1,), frames=4, question_tokens=8, llm_size="tiny", smoke=True,
                     engines=("bf16", "int8", "fp32-plain"))
    records = run_bench(plan, io.StringIO())
    engines = {(r["bench"], r["variant"]): r for r in records if r.get("variant", "").startswith("engine-")}
    assert set(engines) == {("eva", "engine-bf16"), ("eva", "engine-int8"), ("qformer", "engine-bf16"),
                            ("qformer", "engine-int8"), ("qformer", "engine-fp32-plain")}
    for (bench, _), r in engines.items():
        assert r["frames_per_s"] > 0 and r["fp32_median_s"] > 0 and r["speedup_vs_fp32"] > 0
        assert r["cosine_vs_fp32"] >= BOUNDS[bench]


@pytest.mark.slow
@pytest.mark.skipif(bool(unavailable_reason("eva", "openvino-int8w")), reason="OpenVINO / NNCF not installed")
def test_a_chosen_openvino_engine_is_saved_and_read_back(monkeypatch, tower, pixels, tmp_path):
    cache = CalibrationCache(tmp_path / "cache" / "vision-engines.json")
    module, _ = VisionEngines("eva=openvino-int8w", cache).eva(tower, "w", pixels)
    want = module(pixels)
    saved = list((tmp_path / "cache" / "vision-engines").glob("*/eva-openvino-int8w.xml"))
    assert len(saved) == 1 and saved[0].with_suffix(".bin").is_file()

    def no_quantizing(*args, **kwargs):
        raise AssertionError("quantized again instead of reading the saved engine")

    monkeypatch.setattr(engines_mod, "_nncf_int8", no_quantizing)
    again, _ = VisionEngines("eva=openvino-int8w", cache).eva(tower, "w", pixels)
    assert torch.equal(again(pixels), want)


def test_the_qformer_calibration_samples_a_films_memory_mapped_features(tmp_path):
    model = random_model(tiny_config()).eval()
    feats, ids, mask = _qformer_sample(model, frames=3)
    film = np.lib.format.open_memmap(tmp_path / "film.npy", mode="w+", dtype=np.float16,
                                     shape=(3, 256, feats.shape[-1]))
    film[:] = feats[:, 1:].numpy()  # a film's cached rows: fp16, without the CLS row
    spec = "qformer=auto," + ",".join(f"-{n}" for n in ("openvino", "openvino-f32", "fp32-plain", "int8"))
    engines = VisionEngines(spec, worth_parameters=0, timer=FakeTimer({"fp32": 1.0, "bf16": 0.5}))
    assert engines.qformer(model, "w", lambda: (film, ids, mask)) == "bf16"
    assert engines.calibrations["qformer"].frames == ve.SAMPLE_FRAMES["qformer"]  # 3 frames, repeated to 16


def test_calibration_skips_engines_that_do_not_fit_in_free_memory(monkeypatch, tower, pixels):
    from llamavid.system import Ram

    weight_bytes = 4 * sum(p.numel() for p in tower.parameters())
    free = int(weight_bytes * 0.5)  # room for int8 (0.3x) only
    monkeypatch.setattr(ve, "ram", lambda: Ram(total=10 * free, available=free))
    engines = VisionEngines(TORCH_ONLY, worth_parameters=0, timer=FakeTimer({"fp32": 1.0, "bf16": 0.1, "int8": 0.5}))
    _, name = engines.eva(tower, "w", pixels)
    bf16 = engines.calibrations["eva"].trial("bf16")
    assert name == "int8" and bf16.status == "skipped" and "GB to build" in bf16.reason


def test_openvino_and_nncf_send_no_telemetry():
    """Both report usage to Google Analytics unless their telemetry package is missing; the engines
    make it unimportable first. Without that, the same imports get the real reporter (the control)."""
    import subprocess
    import sys

    probe = ("import nncf.telemetry.wrapper as w; from openvino.tools.ovc import telemetry_utils as t; "
             "print(isinstance(w.telemetry, w.NNCFTelemetry), t.tm.__name__)")
    guarded = subprocess.run([sys.executable, "-c", "from llamavid.model.engines import no_telemetry; "
                              "no_telemetry(); " + probe], capture_output=True, text=True, check=True)
    assert guarded.stdout.split() == ["False", "openvino.tools.ovc.telemetry_stub"]
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "CI": "false"})
    assert plain.stdout.split() == ["True", "openvino_telemetry"]
