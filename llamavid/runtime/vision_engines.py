"""Which vision engine runs EVA and the Q-Former here: measured once per machine and weights, cached.

CPUs differ too much for a fixed choice: bf16 is 5x faster than float32 on an Intel Xeon with
AMX and 4x slower on an AMD EPYC without bf16 instructions; int8 gains 1.1x to 2.9x; OpenVINO wins
on some. So with ``vision_engine="auto"`` the first use on a machine runs a short calibration
(:func:`calibrate`) on a few real frames:

1. the float32 reference computes them once (its output is the yardstick) and is timed;
2. every engine that can run here (:mod:`llamavid.model.engines`) is built and run on the same
   input. It is *refused* when its output strays from the reference's by more than the bound
   (:data:`BOUNDS`: worst per-frame cosine 0.999 for EVA features, 0.9995 for the Q-Former's
   context tokens), else timed round-robin beside the reference;
3. the fastest accepted engine wins if it beats the reference by :data:`MARGIN`, else the reference.

Models under :data:`WORTH_PARAMETERS` (tiny test models) are not calibrated, and neither is a
reference that already takes under :data:`WORTH_SECONDS_PER_FRAME` (a big server): no engine could
save more than it costs to build. Both keep the reference.

The result is kept in ``<data>/cache/vision-engines.json`` under a key made of the CPU's identity
(model name, family, flag set, threads), the torch / OpenVINO / NNCF versions, the weights'
identity and the input shape; a later run with the same key reuses it, a new CPU or a new
library version calibrates again. ``llamavid doctor`` shows the entries of this machine.

``vision_engine`` also forces a choice (see :func:`parse_spec`): ``"int8"``,
``"eva=openvino-int8,qformer=bf16"``, or ``"auto,-int8"`` (choose, but never int8). Features the
indexer stored record the engine that made them; :meth:`VisionEngines.allows` says whether that
engine is still turned on, and the indexer rebuilds a film's features when it is not.

GPUs keep their own path (fp16 / bf16 as loaded): engines are CPU engines.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llamavid.errors import UserError
from llamavid.fingerprint import fingerprint
from llamavid.media.preprocess import preprocess_frame
from llamavid.media.synthetic import film
from llamavid.model.engines import (
    BUILD_MEMORY,
    ENGINES,
    REFERENCE,
    EngineUnavailable,
    EvaEngine,
    OpenVinoModule,
    QFormerEngine,
    build_eva,
    build_qformer,
    openvino_default_precision,
    unavailable_reason,
)
from llamavid.model.eva import EvaVisionTower
from llamavid.model.loading import checkpoint_files
from llamavid.paths import DataDir
from llamavid.storage import write_json_atomic
from llamavid.system import cpu_info, ram

log = logging.getLogger(__name__)

PARTS = ("eva", "qformer")
#: Worst per-frame cosine to the float32 reference an engine must keep to be used.
BOUNDS = {"eva": 0.999, "qformer": 0.9995}
#: A lossy engine replaces the reference only when at least this much faster (timing noise is ~5 %).
MARGIN = 1.05
#: Below this reference time per frame, calibration tries nothing (a 1-hour film costs < 36 s).
WORTH_SECONDS_PER_FRAME = 0.01
#: Below this many weights, nothing is calibrated: EVA-ViT-g has 1 B, the Q-Former 0.19 B, test models < 1 M.
WORTH_PARAMETERS = 20_000_000
#: Frames of a calibration: EVA (seconds each in float32 on 2 cores) and the Q-Former (~0.1 s each).
SAMPLE_FRAMES = {"eva": 2, "qformer": 16}
CACHE_FILE = "vision-engines.json"
#: Part of every cache key: bump it when engines or the procedure change.
CALIBRATION_VERSION = 1
#: The engine name features and tokens carry when no CPU engine is involved (a GPU's own path).
NATIVE = "native"
CPU = torch.device("cpu")  # where the engines run (the other devices keep their own path)

Timer = Callable[[str, Callable[[], Any]], float]


def wall_timer(name: str, call: Callable[[], Any]) -> float:  # noqa: ARG001 - the name is for injected timers
    """Seconds one call takes (the default :data:`Timer`; tests inject fixed timings instead)."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def worst_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The lowest per-sample cosine similarity of two (B, ...) tensors, in float64."""
    a, b = a.detach().flatten(1).double().cpu(), b.detach().flatten(1).double().cpu()
    return float(F.cosine_similarity(a, b, dim=1).min())


# ---------------------------------------------------------------- the setting


@dataclass(frozen=True)
class PartSpec:
    """What the setting says for one part: an engine, or "auto" minus the ``excluded`` ones."""

    engine: str = "auto"
    excluded: frozenset[str] = frozenset()

    @property
    def forced(self) -> bool:
        return self.engine != "auto"


def parse_spec(text: str | None) -> dict[str, PartSpec]:
    """Read a ``vision_engine`` setting: comma-separated items, each ``[PART=]VALUE``.

    PART is ``eva`` or ``qformer`` (none: every part that has such an engine); VALUE is ``auto``,
    an engine name, or ``-NAME`` to keep ``auto`` from choosing it. None or "" means ``auto``.
    """
    engines: dict[str, str] = {}
    excluded: dict[str, set[str]] = {part: set() for part in PARTS}
    for item in (text or "auto").replace(" ", "").split(","):
        if not item:
            continue
        part, _, value = item.rpartition("=")
        if part and part not in PARTS:
            raise UserError(f"vision engine {item!r}: the part before '=' must be eva or qformer")
        name = value.lstrip("-")
        parts = [part] if part else [p for p in PARTS if name == "auto" or name in ENGINES[p]]
        if not parts or (name != "auto" and any(name not in ENGINES[p] for p in parts)):
            known = sorted(set(ENGINES["eva"]) | set(ENGINES["qformer"]))
            raise UserError(f"unknown vision engine {name!r}: use auto or one of {', '.join(known)} "
                            "(eva=NAME / qformer=NAME for one part, -NAME to exclude one from auto)")
        for p in parts:
            if value.startswith("-"):
                excluded[p].add(name)
            else:
                engines[p] = name
    out = {}
    for p in PARTS:
        engine = engines.get(p, "auto")
        if engine != "auto" and engine in excluded[p]:
            raise UserError(f"vision engine: {p} engine {engine} is both chosen and excluded")
        out[p] = PartSpec(engine, frozenset(excluded[p]))
    return out


def spec_from_settings(data_dir: str | Path | None) -> str | None:
    """The ``vision_engine`` key of ``<data>/settings.json`` (the apps write it), if any."""
    if data_dir is None:
        return None
    path = DataDir(Path(data_dir)).settings
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("vision_engine")
    except (OSError, ValueError, AttributeError):
        return None  # no file, or a damaged one: the settings module reports that itself
    return value if isinstance(value, str) and value else None


# ---------------------------------------------------------------- calibration results


@dataclass
class Trial:
    """One engine's result in a calibration."""

    engine: str
    status: str  # accepted | refused | unavailable | failed | skipped | reference
    reason: str = ""
    cosine: float | None = None
    seconds_per_frame: float | None = None
    reference_seconds_per_frame: float | None = None  # timed beside it, in the same rounds
    speedup: float | None = None
    setup_s: float | None = None

    @property
    def frames_per_s(self) -> float | None:
        return 1 / self.seconds_per_frame if self.seconds_per_frame else None


@dataclass
class Calibration:
    """What one calibration measured and chose for one part."""

    part: str
    chosen: str
    trials: list[Trial]
    bound: float
    frames: int
    seconds: float = 0.0
    key: str = ""
    identity: dict = field(default_factory=dict)
    created: float = 0.0

    def trial(self, engine: str) -> Trial | None:
        return next((t for t in self.trials if t.engine == engine), None)

    @property
    def refused(self) -> set[str]:
        """Engines whose output strayed past the bound here."""
        return {t.engine for t in self.trials if t.status == "refused"}

    def ranked(self, margin: float = MARGIN) -> list[str]:
        """The chosen engine, then the other accepted ones that beat the reference by ``margin``,
        fastest first, then the reference: the order to fall back in when one cannot be built."""
        ok = sorted((t for t in self.trials if t.status == "accepted" and (t.speedup or 0) >= margin),
                    key=lambda t: -(t.speedup or 0))
        return list(dict.fromkeys([self.chosen, *(t.engine for t in ok), REFERENCE]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        trials = [Trial(**t) for t in data.get("trials", [])]
        return cls(**{**data, "trials": trials})

    def summary(self) -> str:
        """One line: the choice and each engine's rate or why it was not used."""
        bits = []
        for t in self.trials:
            if t.status in ("accepted", "reference") and t.frames_per_s:
                bits.append(f"{t.engine} {t.frames_per_s:.3g} f/s"
                            + (f" x{t.speedup:.2f} cos {t.cosine:.5f}" if t.status == "accepted" else ""))
            else:
                bits.append(f"{t.engine} {t.status}" + (f" ({t.reason})" if t.reason else ""))
        return f"{self.part}: {self.chosen} [{'; '.join(bits)}]"


def calibrate(part: str, candidates: Sequence[str], build: Callable[[str], Any], run: Callable[[Any], torch.Tensor],
              frames: int, *, timer: Timer = wall_timer, repeats: int = 1, bound: float | None = None,
              margin: float = MARGIN, worth: float = WORTH_SECONDS_PER_FRAME,
              skip: dict[str, str] | None = None, on_try: Callable[[], None] | None = None,
              ) -> tuple[Calibration, Any]:
    """Measure ``candidates`` against the reference and choose; returns (calibration, built chosen engine).

    ``build(name)`` makes an engine (raising :class:`EngineUnavailable` when it cannot), ``run(engine)``
    computes the sample with it, ``frames`` is the sample's frame count (rates are per frame).
    ``timer(name, call)`` returns the seconds of one call: the wall clock, or fixed figures in tests.
    Only the reference and the fastest engine so far are kept in memory; each other engine is
    freed once measured. ``skip`` maps engines not to try to the reason; ``on_try()`` is called once
    the reference proved slow enough for engines to be tried.
    """
    bound = BOUNDS[part] if bound is None else bound
    started = time.perf_counter()
    reference = build(REFERENCE)
    want = run(reference)  # warm-up, and the yardstick
    ref_s = min(timer(REFERENCE, lambda: run(reference)) for _ in range(max(1, repeats)))
    trials = [Trial(REFERENCE, "reference", cosine=1.0, seconds_per_frame=ref_s / frames, speedup=1.0)]
    best, best_engine = REFERENCE, reference
    best_speed = margin  # what the reference is worth: an engine must beat it by the margin
    if ref_s / frames < worth:
        reason = f"the reference takes {1e3 * ref_s / frames:.2g} ms a frame here: nothing worth trying"
        trials += [Trial(n, "skipped", reason) for n in candidates if n != REFERENCE]
        return Calibration(part, REFERENCE, trials, bound, frames, time.perf_counter() - started), reference
    if on_try is not None:
        on_try()
    for name in candidates:
        if name == REFERENCE:
            continue
        if skip and name in skip:
            trials.append(Trial(name, "skipped", skip[name]))
            continue
        t0 = time.perf_counter()
        try:
            engine = build(name)
            got = run(engine)  # warm-up (OpenVINO's first call finishes compiling)
        except EngineUnavailable as exc:
            trials.append(Trial(name, "unavailable", str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - an engine that breaks is reported and passed over
            log.warning("vision engine %s failed on the %s: %s: %s", name, part, type(exc).__name__, exc)
            trials.append(Trial(name, "failed", f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        setup = time.perf_counter() - t0
        cos = worst_cosine(got, want)
        if not cos >= bound:  # NaN is refused too
            trials.append(Trial(name, "refused", f"cosine {cos:.6f} to float32 is below {bound}", cosine=cos,
                                setup_s=setup))
            del engine, got
            continue
        ref_times, times = [], []
        for _ in range(max(1, repeats)):  # round-robin: a burst of other load hits both alike
            ref_times.append(timer(REFERENCE, lambda: run(reference)))
            times.append(timer(name, lambda e=engine: run(e)))
        speed = min(ref_times) / min(times)
        trials.append(Trial(name, "accepted", cosine=cos, seconds_per_frame=min(times) / frames,
                            reference_seconds_per_frame=min(ref_times) / frames, speedup=speed, setup_s=setup))
        if speed > best_speed:
            best, best_engine, best_speed = name, engine, speed
        del engine, got
    return Calibration(part, best, trials, bound, frames, time.perf_counter() - started), best_engine


# ---------------------------------------------------------------- the cache


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_identity() -> dict[str, Any]:
    """What makes speeds comparable: the CPU, its flags, the threads and the libraries' versions."""
    info = cpu_info()
    flags = " ".join(sorted(info.get("flags", "").split()))
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cpu_family": info.get("cpu family"), "cpu_model": info.get("model"),
            "flags": hashlib.blake2b(flags.encode(), digest_size=8).hexdigest(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "openvino": _package_version("openvino"), "nncf": _package_version("nncf")}


def cache_key(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True).encode()
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


def weights_identity(paths: Iterable[str | Path]) -> str:
    """Names and content fingerprints of weight files: changes when any file does."""
    digest = hashlib.blake2b(digest_size=12)
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode() + b"\0" + fingerprint(path).encode())
    return digest.hexdigest()


class CalibrationCache:
    """``<data>/cache/vision-engines.json``: calibrations by key (rebuildable, safe to delete)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of(cls, data_dir: str | Path) -> CalibrationCache:
        return cls(DataDir(Path(data_dir)).cache / CACHE_FILE)

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Calibration | None:
        entry = self._read().get(key)
        try:
            return Calibration.from_dict(entry) if isinstance(entry, dict) else None
        except TypeError:  # written by another version
            return None

    def put(self, calibration: Calibration) -> None:
        data = self._read()
        data[calibration.key] = calibration.to_dict()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, data)
        except OSError as exc:  # a read-only data folder: calibrate again next time
            log.warning("cannot save the vision engine calibration to %s: %s", self.path, exc)

    def entries(self) -> list[Calibration]:
        out = []
        for entry in self._read().values():
            try:
                out.append(Calibration.from_dict(entry))
            except TypeError:
                continue
        return out


def this_machine(calibrations: Iterable[Calibration]) -> list[Calibration]:
    """The calibrations made on this CPU with these library versions (for ``doctor``)."""
    here = machine_identity()
    return [c for c in calibrations if all(c.identity.get(k) == v for k, v in here.items())]


# ---------------------------------------------------------------- samples


def synthetic_pixels(count: int, image_size: int) -> torch.Tensor:
    """Film-like frames (moving gradients, texture, grain), CLIP-preprocessed: a calibration input
    when the caller has no real frames."""
    picture = film(320, 240, 1.0, seed=0)
    return torch.stack([preprocess_frame(picture(i, 7.0 * i), image_size, mode="crop") for i in range(count)])


# ---------------------------------------------------------------- the policy object


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class VisionEngines:
    """The engine choice of one process: parses the setting, calibrates or reads the cache, builds.

    ``spec`` is the ``vision_engine`` setting (:func:`parse_spec`); ``cache`` the calibration cache
    (None: nothing kept, every ``auto`` process measures again); ``timer`` and ``worth_parameters``
    are for tests (injected timings; calibrating tiny models).
    """

    def __init__(self, spec: str | None = "auto", cache: CalibrationCache | None = None, *,
                 timer: Timer = wall_timer, repeats: int = 1, worth_parameters: int = WORTH_PARAMETERS):
        self.text = spec or "auto"
        self.spec = parse_spec(spec)
        self.cache = cache
        self.timer = timer
        self.repeats = repeats
        self.worth_parameters = worth_parameters
        self.calibrations: dict[str, Calibration] = {}  # this process's, by part
        self.chosen: dict[str, str] = {}
        self._lock = threading.RLock()  # one choice at a time (a server's first requests may race)

    @classmethod
    def for_data(cls, data_dir: str | Path | None, spec: str | None = None) -> VisionEngines:
        """``spec``, else ``vision_engine`` of ``<data>/settings.json``, else auto; cached in ``data_dir``."""
        spec = spec or spec_from_settings(data_dir) or "auto"
        return cls(spec, CalibrationCache.of(data_dir) if data_dir is not None else None)

    def allows(self, part: str, engine: str | None) -> bool:
        """Whether results made by ``engine`` may still be used: the reference and a GPU's own path
        always; otherwise the engine must not be turned off (another one forced, excluded, or
        refused by this machine's calibration)."""
        if engine in (None, "", REFERENCE, NATIVE):
            return True
        spec = self.spec[part]
        if spec.forced:
            return engine == spec.engine
        calibration = self.calibrations.get(part)
        return engine not in spec.excluded and not (calibration and engine in calibration.refused)

    # -------------------------------------------------------------- choosing

    def _candidates(self, part: str, device: torch.device, weight_bytes: int) -> tuple[list[str], dict[str, str]]:
        """(engines to try, {engine: why not}) for ``auto``: not excluded, and buildable in the free memory."""
        names, skip = [], {}
        free = ram().available
        for name in ENGINES[part]:
            names.append(name)
            need = int(BUILD_MEMORY.get(name, 1.0) * weight_bytes)
            if name in self.spec[part].excluded:
                skip[name] = "excluded by the vision_engine setting"
            elif free is not None and need > 0.8 * free:
                skip[name] = f"needs about {need / 1e9:.1f} GB to build, {free / 1e9:.1f} GB are free"
        if "openvino-f32" in names and not unavailable_reason(part, "openvino", device):
            if openvino_default_precision() == "f32":
                skip["openvino-f32"] = "the same as openvino on this CPU (no bf16 instructions)"
        return names, skip

    def _saved(self, key: str, part: str, name: str) -> Path | None:
        """Where a built OpenVINO engine is kept (``<data>/cache/vision-engines/KEY/``), None without a cache."""
        if self.cache is None or not name.startswith("openvino"):
            return None
        return self.cache.path.parent / "vision-engines" / key / f"{part}-{name}.xml"

    def _choose(self, part: str, device: torch.device, key_parts: dict[str, Any],
                build_as: Callable[[str, str], Any], run: Callable[[Any], torch.Tensor], frames: Callable[[], int],
                parameters: int) -> tuple[str, Any]:
        """(engine name, built engine) for ``part``: forced, read from the cache, or calibrated here.
        ``build_as(name, key)`` builds an engine (``key``: this calibration's cache key)."""
        spec = self.spec[part]
        identity = {**machine_identity(), **key_parts, "part": part, "version": CALIBRATION_VERSION}
        key = cache_key(identity)

        def build(name: str) -> Any:
            return build_as(name, key)

        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            self.calibrations[part] = cached
        if spec.forced:
            reason = unavailable_reason(part, spec.engine, device)
            if reason:
                raise UserError(f"vision engine {spec.engine} cannot run the {part} here: {reason}")
            if cached is not None and spec.engine in cached.refused:
                log.warning("vision engine %s was refused for the %s by this machine's calibration (%s); "
                            "using it because the setting asks for it", spec.engine, part,
                            cached.trial(spec.engine).reason)
            return spec.engine, build(spec.engine)
        if cached is not None:
            for name in cached.ranked():
                if name not in spec.excluded and not unavailable_reason(part, name, device):
                    try:
                        return name, build(name)
                    except EngineUnavailable as exc:
                        log.warning("vision engine %s: %s; trying the next best", name, exc)
        if parameters < self.worth_parameters:
            return REFERENCE, build(REFERENCE)  # a test model: nothing to gain, and no timing to depend on
        names, skip = self._candidates(part, device, 4 * parameters)

        def note() -> None:
            log.warning("measuring the vision engines for the %s once on this machine (%s); this takes a "
                        "few minutes and is remembered", part,
                        ", ".join(n for n in names if n not in skip and n != REFERENCE))

        calibration, engine = calibrate(part, names, build, run, frames(), timer=self.timer,
                                        repeats=self.repeats, skip=skip, on_try=note)
        calibration.key, calibration.identity, calibration.created = key, identity, time.time()
        self.calibrations[part] = calibration
        if any(t.status != "skipped" for t in calibration.trials[1:]):  # a skipped one costs nothing to repeat
            log.warning("vision engine for the %s: %s (calibrated in %.0f s)", part, calibration.chosen,
                        calibration.seconds)
            if self.cache is not None:
                self.cache.put(calibration)
        return calibration.chosen, engine

    def eva(self, tower: EvaVisionTower, weights_id: str,
            sample: torch.Tensor | Callable[[], torch.Tensor | np.ndarray] | None = None) -> tuple[nn.Module, str]:
        """(module to run, engine name) for EVA. ``sample``: a few preprocessed frames, or a function
        giving them (called only when a calibration or OpenVINO int8 needs them); default synthetic."""
        with self._lock:
            return self._eva(tower, weights_id, sample)

    def _runs_natively(self, part: str, module: nn.Module, name: str) -> bool:
        """A module not in float32 on the CPU (a GPU, a half-precision load) keeps its own path: engines
        are CPU engines built from float32 weights, so forcing one there is an error."""
        param = next(module.parameters())
        if param.device.type == "cpu" and param.dtype == torch.float32:
            return False
        spec = self.spec[part]
        if spec.forced and spec.engine != REFERENCE:
            raise UserError(f"vision engine {spec.engine} runs on the CPU from float32 weights, but {name} is "
                            f"{param.dtype} on {param.device}; leave vision_engine at auto there (the GPU's own path)")
        self.chosen[part] = NATIVE
        return True

    def _eva(self, tower: EvaVisionTower, weights_id: str, sample: Any) -> tuple[nn.Module, str]:
        if self._runs_natively("eva", tower, "the vision tower"):
            return tower, NATIVE
        pixels: list[torch.Tensor] = []

        def frames() -> torch.Tensor:
            if not pixels:
                got = sample() if callable(sample) else sample
                got = torch.as_tensor(got) if got is not None else None
                if got is None or len(got) == 0:
                    got = synthetic_pixels(SAMPLE_FRAMES["eva"], tower.image_size)
                pixels.append(got[:SAMPLE_FRAMES["eva"]].float())
            return pixels[0]

        saved: dict[str, Path | None] = {}

        def build(name: str, key: str) -> EvaEngine:
            saved[name] = self._saved(key, "eva", name)
            needs_frames = name == "openvino-int8" and not (saved[name] and saved[name].is_file())
            return build_eva(name, tower, frames() if needs_frames else None, saved=saved[name])

        name, engine = self._choose("eva", CPU, {"weights": weights_id, "image_size": tower.image_size},
                                    build, lambda e: e(frames()), lambda: len(frames()), _count(tower))
        self.chosen["eva"] = name
        if isinstance(getattr(engine, "run", None), OpenVinoModule) and saved.get(name) is not None:
            try:  # now, while the torch weights it may share are alive: later processes read it in seconds
                if engine.run.save(saved[name]):
                    log.info("saved the %s EVA engine to %s", name, saved[name])
            except (OSError, RuntimeError) as exc:
                log.warning("cannot save the %s EVA engine to %s: %s", name, saved[name], exc)
            engine.run.forget_source()
        return (tower if name == REFERENCE else engine), name

    def qformer(self, model: nn.Module, weights_id: str,
                sample: Callable[[], tuple[Any, torch.Tensor, torch.Tensor]]) -> str:
        """Choose the Q-Former's engine and install it in ``model`` (a ``LlamaVidForCausalLM``);
        returns its name. ``sample()`` gives (features (T, rows, C), prompt ids (1, L), mask (1, L))."""
        with self._lock:
            return self._qformer(model, weights_id, sample)

    def _qformer(self, model: nn.Module, weights_id: str, sample: Callable[[], tuple]) -> str:
        inner = model.model
        reference = inner.vlm_att_encoder
        if isinstance(reference, QFormerEngine):
            return reference.engine  # installed already
        if self._runs_natively("qformer", reference, "the Q-Former"):
            return NATIVE
        data: list[tuple] = []

        def inputs() -> tuple:
            if not data:
                feats, ids, mask = sample()
                count = SAMPLE_FRAMES["qformer"]
                index = np.arange(count) % len(feats)  # a short input repeats its frames
                picked = feats[torch.as_tensor(index)] if torch.is_tensor(feats) else np.asarray(feats[index])
                data.append((torch.as_tensor(picked).float(), ids[:1], mask[:1]))
            return data[0]

        def build(name: str, key: str) -> QFormerEngine:  # noqa: ARG001 - Q-Former engines build in seconds
            example = None
            if name.startswith("openvino"):
                feats, ids, mask = inputs()
                q = inner.vlm_att_query.expand(2, -1, -1).detach()
                image = inner.vlm_att_ln(feats[:2]) if inner.vlm_att_ln is not None else feats[:2]
                example = (ids.expand(2, -1), mask.expand(2, -1), q, image)
            return build_qformer(name, reference, example)

        def run(engine: QFormerEngine) -> torch.Tensor:
            feats, ids, mask = inputs()
            inner._modules["vlm_att_encoder"] = engine
            try:
                with torch.inference_mode():
                    out = model.visual_tokens(feats, ids, mask, block_size=len(feats), keep_parts=True)
            finally:
                inner._modules["vlm_att_encoder"] = reference
            return out.part("context_tokens")

        name, engine = self._choose("qformer", CPU, {"weights": weights_id}, build, run,
                                    lambda: len(inputs()[0]), _count(reference))
        self.chosen["qformer"] = name
        inner._modules["vlm_att_encoder"] = engine  # the reference too, wrapped: marks the choice as made
        return name


# ---------------------------------------------------------------- a loaded LlamaVid


def _eva_weights(lv: Any) -> list[Path]:
    return [lv.report.eva_file] if lv.report.eva_file is not None else checkpoint_files(lv.report.folder)


def ready_eva(lv: Any, pixels: torch.Tensor) -> None:
    """Before ``lv`` runs EVA: put the chosen engine in place (once; again if the tower was swapped)."""
    engines: VisionEngines | None = lv.vision_engines
    tower = lv.model.model.vision_tower
    if engines is None or tower is None or tower is getattr(lv, "_eva_engine", None):
        return
    module, _ = engines.eva(tower, weights_identity(_eva_weights(lv)), sample=lambda: pixels[:SAMPLE_FRAMES["eva"]])
    lv.model.model.vision_tower = module
    lv._eva_engine = module


def ready_qformer(lv: Any, features: Any, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Before ``lv`` runs the Q-Former: put the chosen engine in place (once), calibrating on these inputs."""
    engines: VisionEngines | None = lv.vision_engines
    if engines is None or isinstance(lv.model.model.vlm_att_encoder, QFormerEngine):
        return
    engines.qformer(lv.model, weights_identity(checkpoint_files(lv.report.folder)),
                    sample=lambda: (features, ids, mask))
