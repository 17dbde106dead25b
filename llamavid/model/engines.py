"""Vision engines: EVA-ViT-g and the Q-Former computed by another library or precision on the CPU.

An engine takes the loaded float32 torch module and returns a module with the same call and
the same output dtype, so the model, the indexer and the chat run it without knowing which one
it is:

* EVA (:func:`build_eva`): ``pixels (B, 3, S, S) -> features (B, 1 + N, C)``, as
  :class:`~llamavid.model.eva.EvaVisionTower`;
* the Q-Former (:func:`build_qformer`): ``(input_ids, attention_mask, queries, image) -> query rows``,
  as :class:`~llamavid.model.qformer.QFormer`; the cheap projections around it stay float32.

Which engine is fastest depends on the CPU (bf16 is 5x faster than fp32 on a CPU with AVX512-BF16
or AMX and 4x slower on one without), and every engine but the reference changes the numbers a
little, so :mod:`llamavid.runtime.vision_engines` measures speed and fidelity on the machine at
hand and picks one. This module only builds them. An engine that cannot run here (OpenVINO not
installed, a GPU model) raises :class:`EngineUnavailable` saying why.

The reference (``fp32``) is the module itself. Torch engines share the reference's weights where
they can (``fp32-plain``, ``bf16-autocast``) and copy them otherwise (``bf16``: half the bytes,
``int8``: a quarter); OpenVINO compiles its own copy.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llamavid.model.eva import EvaConfig, EvaVisionTower
from llamavid.model.qformer import QFormer, unfold
from llamavid.model.quantize_vision import int8_copy

REFERENCE = "fp32"

EVA_ENGINES: dict[str, str] = {
    "fp32": "torch float32 (the reference)",
    "bf16": "torch, bfloat16 weights (fast with AVX512-BF16 or AMX, slow without)",
    "bf16-autocast": "torch, float32 weights under bfloat16 autocast",
    "int8": "torch, dynamic int8 Linear layers",
    "openvino": "OpenVINO at its default precision for this CPU (bf16 where the CPU has bf16 instructions)",
    "openvino-f32": "OpenVINO in float32",
    "openvino-int8": "OpenVINO, weights and activations in int8 (NNCF, calibrated on sample frames)",
    "openvino-int8w": "OpenVINO, int8 weights (NNCF weight compression)",
}
QFORMER_ENGINES: dict[str, str] = {
    "fp32": "torch float32, folded cross-attention (the reference)",
    "fp32-plain": "torch float32, keys and values projected from every patch",
    "bf16": "torch, bfloat16 weights",
    "int8": "torch, dynamic int8 Linear layers",
    "openvino": "OpenVINO at its default precision for this CPU",
    "openvino-f32": "OpenVINO in float32",
}
ENGINES: dict[str, dict[str, str]] = {"eva": EVA_ENGINES, "qformer": QFORMER_ENGINES}
#: Memory an engine needs while it is built, beyond the float32 module, as a multiple of the module's
#: float32 bytes (estimates from EVA-ViT-g: NNCF int8 peaked near 3x, converting to OpenVINO near 1.5x).
BUILD_MEMORY = {"fp32": 0.0, "fp32-plain": 0.0, "bf16": 0.5, "bf16-autocast": 0.5, "int8": 0.3, "openvino": 1.5,
                "openvino-f32": 1.5, "openvino-int8": 3.0, "openvino-int8w": 2.0}
#: Engines that need a package beyond torch, and which.
_NEEDS = {"openvino": ("openvino",), "openvino-f32": ("openvino",), "openvino-int8": ("openvino", "nncf"),
          "openvino-int8w": ("openvino", "nncf")}


class EngineUnavailable(RuntimeError):
    """The engine cannot run here; the message says why and what would make it run."""


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def unavailable_reason(part: str, name: str, device: torch.device | str = "cpu") -> str | None:
    """Why engine ``name`` cannot compute ``part`` ("eva" or "qformer") here; None when it can."""
    if part not in ENGINES:
        raise ValueError(f"part must be one of {', '.join(ENGINES)}, got {part!r}")
    if name not in ENGINES[part]:
        return f"unknown {part} engine {name!r} (known: {', '.join(ENGINES[part])})"
    if name == REFERENCE:
        return None
    if torch.device(device).type != "cpu":
        return (f"{name} is a CPU engine; on {torch.device(device).type} the model runs in the dtype it was "
                "loaded in (--dtype)")
    missing = [p for p in _NEEDS.get(name, ()) if not installed(p)]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install {' '.join(missing)})"
    if name == "int8" and not set(torch.backends.quantized.supported_engines) & {"x86", "fbgemm", "qnnpack"}:
        return "this torch build has no quantized CPU kernels"
    return None


def _check_available(part: str, name: str, module: nn.Module) -> None:
    first = next(module.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    reason = unavailable_reason(part, name, device)
    if reason:
        raise EngineUnavailable(reason)
    if name != REFERENCE and first is not None and first.dtype != torch.float32:
        raise EngineUnavailable(f"{name} is built from float32 weights, but the {part} was loaded in {first.dtype}")


# ---------------------------------------------------------------- copies that share or convert weights


def shared_copy(module: nn.Module) -> nn.Module:
    """New module objects holding the same parameter and buffer tensors: free to change structure
    (class swaps, replaced children) without touching ``module`` or copying its weights."""
    memo: dict[int, Any] = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


def cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy with floating parameters and buffers in ``dtype``, built without a second float32 copy."""
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to(dtype), requires_grad=False)
    for b in module.buffers():
        memo[id(b)] = b.to(dtype) if b.is_floating_point() else b
    return copy.deepcopy(module, memo).eval()


# ---------------------------------------------------------------- the two interfaces


class EvaEngine(nn.Module):
    """``pixels -> features`` like :class:`EvaVisionTower`, computed by engine ``name``."""

    def __init__(self, name: str, cfg: EvaConfig, run: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.engine = name
        self._cfg = cfg
        self.run = run  # an nn.Module is registered as a child (moves and frees with this one)

    @property
    def cfg(self) -> EvaConfig:
        return self._cfg

    @property
    def image_size(self) -> int:
        return self._cfg.image_size

    @property
    def width(self) -> int:
        return self._cfg.width

    @property
    def num_patches(self) -> int:
        return self._cfg.num_patches

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.run(pixels).to(pixels.dtype)

    def extra_repr(self) -> str:
        return f"engine={self.engine!r}"


class QFormerEngine(nn.Module):
    """``(input_ids, attention_mask, queries, image) -> query rows`` like :class:`QFormer`, in the
    queries' dtype, computed by engine ``name``."""

    def __init__(self, name: str, run: Callable[..., torch.Tensor]):
        super().__init__()
        self.engine = name
        self.run = run

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, queries: torch.Tensor,
                image: torch.Tensor) -> torch.Tensor:
        return self.run(input_ids, attention_mask, queries, image).to(queries.dtype)

    def extra_repr(self) -> str:
        return f"engine={self.engine!r}"


class _Autocast(nn.Module):
    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, *args: Any) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.dtype):
            return self.inner(*args)


class _CastInputs(nn.Module):
    """Runs a module converted to ``dtype`` on float inputs of another dtype."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.inner(*(a.to(self.dtype) if a.is_floating_point() else a for a in args))


# ---------------------------------------------------------------- OpenVINO

_core = None
_core_lock = threading.Lock()


def no_telemetry() -> None:
    """Keep OpenVINO's model converter and NNCF from reporting usage to Google Analytics.

    Both send events unless a consent file says no (``opt_in_out --opt_out``); both fall back
    to a stub when ``openvino_telemetry`` cannot be imported. A local-first app reaches the
    network only for a download the user asked for, so the package is made unimportable
    before either is imported (``None`` in ``sys.modules`` makes ``import`` raise ImportError).
    """
    for name in ("openvino_telemetry", "openvino_telemetry.backend"):
        sys.modules.setdefault(name, None)


def _openvino():
    # Inside a function: OpenVINO is an optional engine (the torch paths work without it), and
    # importing it (and NNCF, which pulls scipy and scikit-learn) costs seconds nobody else should pay.
    no_telemetry()
    import openvino

    return openvino


def openvino_core():
    """The process's one ``openvino.Core`` (it owns the CPU plugin and its thread pool)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = _openvino().Core()
        return _core


def openvino_default_precision() -> str:
    """What OpenVINO computes in by default on this CPU: "bf16" where it has bf16 instructions, else "f32"."""
    capabilities = openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in capabilities else "f32"


class OpenVinoModule(nn.Module):
    """A compiled OpenVINO model called with torch tensors (float inputs as float32); returns output 0.

    ``source`` (the ``openvino.Model`` it was compiled from) is kept until :meth:`save` writes it or
    :meth:`forget_source` drops it, so a chosen engine can be stored without being built again.
    """

    def __init__(self, compiled: Any, source: Any = None):
        super().__init__()
        self.compiled = compiled
        self.source = source
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns

    def save(self, path: Path) -> bool:
        """Write the source model as OpenVINO IR (``path`` .xml + .bin, atomically); False if none is kept."""
        if self.source is None:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}-partial.xml")
        _openvino().save_model(self.source, tmp, compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        tmp.replace(path)  # the .xml last: its presence means the pair is whole
        self.forget_source()
        return True

    def forget_source(self) -> None:
        self.source = None

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        inputs = [(a.float() if a.is_floating_point() else a).contiguous().cpu().numpy() for a in args]
        with self._lock:
            out = self.compiled(inputs)[0]
        return torch.from_numpy(out.copy())


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """OpenVINO traces with torch.jit, which warns about every shape check in the model (the traced
    graph is right for the shapes we give: batch, text length and patches stay dynamic) and about
    its own deprecation; those warnings say nothing to a user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=DeprecationWarning)
        yield


def _compile(model: Any, name: str, keep_source: bool = False) -> OpenVinoModule:
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
    if name == "openvino-f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return OpenVinoModule(openvino_core().compile_model(model, "CPU", config), model if keep_source else None)


def _nncf_int8(model: Any, name: str, samples: Sequence[Any]) -> Any:
    # Inside a function: see _openvino.
    no_telemetry()
    import nncf

    nncf.set_log_level(logging.ERROR)  # else it logs bit-width tables
    if name == "openvino-int8" and not samples:
        raise EngineUnavailable("openvino-int8 needs sample frames to calibrate its activation ranges")
    # NNCF draws progress bars on stdout, where `llamavid bench` writes JSON and the indexer its own bars
    with contextlib.redirect_stdout(io.StringIO()):
        if name == "openvino-int8w":
            return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        return nncf.quantize(model, nncf.Dataset(list(samples)), subset_size=len(samples),
                             model_type=nncf.ModelType.TRANSFORMER)


# ---------------------------------------------------------------- builders


def build_eva(name: str, tower: EvaVisionTower, sample: torch.Tensor | None = None,
              saved: Path | None = None) -> EvaEngine:
    """EVA computed by engine ``name`` from the float32 ``tower`` (left unchanged).

    ``sample``: a few preprocessed frames (B, 3, S, S); ``openvino-int8`` sets its activation
    ranges from them (real frames of the film are best), the other engines only trace with one.
    ``saved``: for OpenVINO engines, an IR file (``.xml``) written by :meth:`OpenVinoModule.save`:
    read when it exists (seconds, where converting and quantizing take minutes), else the built
    model is kept to be saved there.
    """
    _check_available("eva", name, tower)
    cfg = tower.cfg
    if name == "fp32":
        return EvaEngine(name, cfg, tower)
    if name == "bf16":
        return EvaEngine(name, cfg, cast_copy(tower, torch.bfloat16))  # the tower casts its input itself
    if name == "bf16-autocast":
        return EvaEngine(name, cfg, _Autocast(tower, torch.bfloat16))
    if name == "int8":
        return EvaEngine(name, cfg, int8_copy(tower))
    if saved is not None and saved.is_file():
        return EvaEngine(name, cfg, _compile(openvino_core().read_model(saved), name))
    size = cfg.image_size
    frames = sample if sample is not None else torch.zeros(1, 3, size, size)
    ov = _openvino()
    with torch.no_grad(), _quiet_tracing():
        model = ov.convert_model(tower.vision_tower, example_input=frames[:1].float().cpu(),
                                 input=[(-1, 3, size, size)])
    if name in ("openvino-int8", "openvino-int8w"):
        model = _nncf_int8(model, name, [f[None].float().numpy() for f in sample] if sample is not None else [])
    return EvaEngine(name, cfg, _compile(model, name, keep_source=saved is not None))


def qformer_example(encoder: QFormer, frames: int = 2, text: int = 8, patches: int = 257,
                    image_width: int | None = None) -> tuple[torch.Tensor, ...]:
    """Inputs of the Q-Former's shape (for tracing when the caller has none)."""
    cfg = encoder.bert.config
    queries = 32
    width = image_width or cfg.encoder_width
    ids = torch.full((frames, text), 1000 % cfg.vocab_size, dtype=torch.long)
    return (ids, torch.ones_like(ids), torch.zeros(frames, queries, cfg.hidden_size),
            torch.zeros(frames, patches, width))


def build_qformer(name: str, encoder: QFormer, sample: tuple[torch.Tensor, ...] | None = None) -> QFormerEngine:
    """The Q-Former computed by engine ``name`` from the float32 ``encoder`` (left unchanged).

    ``sample``: ``(input_ids, attention_mask, queries, image)`` of a real call, used to trace
    OpenVINO's graph (any shapes work afterwards: batch, question length and patches are dynamic).
    """
    _check_available("qformer", name, encoder)
    if name == "fp32":
        return QFormerEngine(name, encoder)
    if name == "fp32-plain":
        return QFormerEngine(name, unfold(shared_copy(encoder)))
    if name == "bf16":
        return QFormerEngine(name, _CastInputs(cast_copy(encoder, torch.bfloat16), torch.bfloat16))
    if name == "int8":
        return QFormerEngine(name, int8_copy(encoder))
    example = tuple(t[:2].cpu() for t in sample) if sample is not None else qformer_example(encoder)
    example = tuple(t.float() if t.is_floating_point() else t for t in example)
    ov = _openvino()
    # Traced on the plain attention: OpenVINO fuses it into its own attention kernels.
    plain = unfold(shared_copy(encoder))
    with torch.no_grad(), _quiet_tracing():
        model = ov.convert_model(plain, example_input=example,
                                 input=[(-1, -1), (-1, -1), (-1, example[2].shape[1], example[2].shape[2]),
                                        (-1, -1, example[3].shape[2])])
    return QFormerEngine(name, _compile(model, name))
