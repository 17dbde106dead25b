"""The released LLaMA-VID checkpoints, the shared parts they need, and the speech-recognition and
scene-search models of the indexer, as data in one place.

``llamavid models`` (list --available, pull, verify), the apps and ``doctor`` read this table
instead of hard-coding repo names, so "which weights go where" has one answer.

What is and is not known here, on purpose:

* **Sizes** are approximate (``approx_size``, for the catalogue listing and a first disk-space
  estimate) and say where they come from (``size_source``): the hub's file listing, or derived
  from parameter counts. ``pull`` always takes the exact sizes from the hub (or from the HTTP
  ``Content-Length`` for the EVA file) before it checks free disk space.
* **Hashes**: none of the LLaMA-VID repos publish a checksum file, and LAVIS publishes none for
  ``eva_vit_g.pth``. Every ``sha256`` below is therefore ``None`` (unknown), never made up. A hub
  pull verifies each file against the hub's own metadata instead (LFS files: the sha256 the hub
  stores; small git files: the git blob id), and the EVA file against its HTTP size; the sha256
  computed after that download is recorded next to the file so later ``verify --hash`` runs can
  detect corruption ("trust on first use").

No torch / transformers here: the CLI imports this module for ``--help``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol, TypeVar

from llamavid.files import CONFIG, EVA_FILE, VOCAB_FILE

__all__ = [
    "BASE_LLMS",
    "BERT_VOCAB",
    "CHAT_KINDS",
    "CatalogEntry",
    "EVA",
    "EVA_URL_ENV",
    "KINDS",
    "MODELS",
    "QWEN_VL_MODELS",
    "SHARED_PARTS",
    "SCENE_MODELS",
    "SPEECH_MODELS",
    "SharedPart",
    "can_chat",
    "chat_models",
    "entries",
    "get",
    "names",
    "select_repo_files",
    "shared_part_url",
]

GB = 1_000_000_000
MB = 1_000_000


class _HasKind(Protocol):
    @property
    def kind(self) -> str: ...


_Kinded = TypeVar("_Kinded", bound=_HasKind)

#: What each kind of checkpoint is for (shown by ``llamavid models list --available``).
KINDS: dict[str, str] = {
    "image": "images (all 256/576 patch tokens per image)",
    "video": "short videos (2 tokens per frame, up to a few minutes)",
    "long-video": "movies: hour-long videos with subtitles (64K context, precomputed features)",
    "pretrain": "stage-1 projector only (mm_projector.bin): input to stage-2 training, not a chat model; "
    "needs the base Vicuna LLM",
    "base-llm": "base Vicuna-v1.5 LLM that the stage-1 projectors were trained against",
    "speech": "speech recognition for the indexer (faster-whisper), used on films without text subtitles",
    "scenes": "image-text embeddings for the indexer (CLIP): search films by what is seen, and moments for any "
    "question",
    "qwen-vl": "Qwen3-VL (the second family, docs/second-family.md): images, short videos and library films, read "
    "as frames at question time; more accurate than LLaMA-VID, fewer frames per film",
}

#: The kinds of KINDS a chat can load: a LLaMA-VID checkpoint with its vision side and a chat LLM.
#: Not ``pretrain`` (a stage-1 projector alone), ``base-llm`` (no vision side), ``speech`` nor ``scenes``.
CHAT_KINDS = ("image", "video", "long-video", "qwen-vl")


def can_chat(kind: str | None) -> bool:
    """Whether an installed model of this kind can answer questions (the chat model lists of every
    front end offer it). The kinds of :data:`CHAT_KINDS` can; the other catalogue kinds cannot. A
    kind that is none of them (``"unknown"``: a registered folder that is gone, or whose
    config.json cannot be read; None) can: the list shows it with its status, and loading it says
    what is wrong, instead of the model vanishing without a word."""
    return kind in CHAT_KINDS or kind not in KINDS


def chat_models(models: Iterable[_Kinded]) -> list[_Kinded]:
    """The models (catalogue or installed entries, anything with a ``kind``) one can chat with, in order."""
    return [m for m in models if can_chat(m.kind)]


#: Environment variable that replaces the LAVIS URL of eva_vit_g.pth (a mirror, or a
#: ``file:///.../eva_vit_g.pth`` URL for a copy you already have).
EVA_URL_ENV = "LLAMAVID_EVA_URL"


@dataclass(frozen=True)
class SharedPart:
    """A file every LLaMA-VID model needs once, kept in ``<data>/models/shared/``.

    Exactly one source: a plain HTTP ``url`` or a hub ``repo_id`` + ``repo_file``.
    """

    filename: str
    description: str
    url: str | None = None
    repo_id: str | None = None
    repo_file: str | None = None
    approx_size: int | None = None
    size_source: str = ""
    sha256: str | None = None  # None: no published hash (see the module docstring)

    @property
    def source(self) -> str:
        return self.url or f"hf://{self.repo_id}/{self.repo_file}"


EVA = SharedPart(
    filename=EVA_FILE,
    description="EVA-ViT-g vision encoder (fp16) from LAVIS BLIP-2; frozen in every LLaMA-VID stage. "
    "The fine-tuned shards also hold a bf16 copy, but the reference loads this file.",
    url="https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth",
    approx_size=2_000 * MB,
    size_source="derived: ~1.0e9 parameters (40 blocks of width 1408) in fp16",
)

BERT_VOCAB = SharedPart(
    filename=VOCAB_FILE,
    description="Q-Former WordPiece vocabulary (vocab.txt of bert-base-uncased); the reference fetched it "
    "from the hub at every start",
    repo_id="google-bert/bert-base-uncased",
    repo_file="vocab.txt",
    approx_size=232_000,
    size_source="approximate (hub listing); the exact size and git blob id come from the hub at pull time",
)

SHARED_PARTS: dict[str, SharedPart] = {p.filename: p for p in (EVA, BERT_VOCAB)}


def shared_part_url(part: SharedPart) -> str | None:
    """The URL to fetch an HTTP part from: ``$LLAMAVID_EVA_URL`` overrides the EVA location."""
    if part is EVA and os.environ.get(EVA_URL_ENV):
        return os.environ[EVA_URL_ENV]
    return part.url


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable checkpoint."""

    name: str
    repo_id: str
    kind: str  # a key of KINDS
    llm: str  # "7B" / "13B"
    resolution: int | None  # EVA input size (224 / 336); None for the base LLMs
    purpose: str
    approx_size: int | None  # bytes, None where unknown
    size_source: str
    shared: tuple[str, ...] = (EVA_FILE, VOCAB_FILE)
    base_model: str | None = None  # catalogue name of the LLM a pretrain projector needs
    license: str = "CC BY-NC 4.0 (research use only; also bound by the LLaMA/Vicuna licences)"
    notes: tuple[str, ...] = field(default_factory=tuple)
    files: tuple[str, ...] = ()  # patterns of the repo's files to fetch (a GGUF repo's one quantization); (): all
    memory: int | None = None  # bytes of memory it runs in with an hour of film in its context; None: not said

    @property
    def kind_help(self) -> str:
        return KINDS[self.kind]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shared"] = list(self.shared)
        d["notes"] = list(self.notes)
        d["files"] = list(self.files)
        d["kind_help"] = self.kind_help
        return d


_FULL_7B = 15_890 * MB  # long-video repo: 9.98 GB + 5.91 GB shards
_SRC_7B_DERIVED = ("derived: same modules as the 7B long-video checkpoint (LLaMA-7B + EVA-g + Q-Former, "
                   "7.94e9 parameters in bf16 = 15.9 GB)")
_FULL_13B = 28_400 * MB
_SRC_13B = ("derived: LLaMA-13B + EVA-g + Q-Former ~1.42e10 parameters in bf16; the hub lists 3 shards, "
            "the first two 9.95 GB and 9.9 GB")
_TOKENIZER_NOTE = "ships its LLaMA tokenizer (tokenizer.model) in the repo"
#: LLaMA-VID 7B with an hour of film in fp16 (a GPU): the weights plus 9,728 cached tokens (7,200
#: visual, the dialogue, the turns) at 512 KiB a token.
_MEMORY_7B_HOUR_FP16 = _FULL_7B + 9_728 * 512 * 1024
#: LLaMA-VID 7B converted for llama.cpp (q4_K_M LLM, q8_0 KV cache, the vision side in fp16) with an
#: hour of film: the chat process's peak resident memory measured by ``llamavid bench rehearse`` at an
#: hour's context (docs/performance.md, 12.3 GB; memory-mapped weights included).
LLAMA_VID_7B_Q4_MEMORY = 12_300 * MB

MODELS: tuple[CatalogEntry, ...] = (
    CatalogEntry("llama-vid-7b-full-224", "YanweiLi/llama-vid-7b-full-224", "image", "7B", 224,
                 "image chat, Vicuna-7B, 224 px", _FULL_7B, _SRC_7B_DERIVED, notes=(_TOKENIZER_NOTE,)),
    CatalogEntry("llama-vid-7b-full-336", "YanweiLi/llama-vid-7b-full-336", "image", "7B", 336,
                 "image chat, Vicuna-7B, 336 px (more detail, 577 tokens per image)", _FULL_7B,
                 _SRC_7B_DERIVED, notes=(_TOKENIZER_NOTE,)),
    CatalogEntry("llama-vid-13b-full-336", "YanweiLi/llama-vid-13b-full-336", "image", "13B", 336,
                 "image chat, Vicuna-13B, 336 px", _FULL_13B, _SRC_13B, notes=(_TOKENIZER_NOTE,)),
    CatalogEntry("llama-vid-7b-full-224-video-fps-1", "YanweiLi/llama-vid-7b-full-224-video-fps-1", "video",
                 "7B", 224, "short-video chat (frames at 1 fps), Vicuna-7B", _FULL_7B,
                 "hub listing: shards 9.98 GB + 5.91 GB", notes=(_TOKENIZER_NOTE,)),
    CatalogEntry("llama-vid-13b-full-224-video-fps-1", "YanweiLi/llama-vid-13b-full-224-video-fps-1", "video",
                 "13B", 224, "short-video chat (frames at 1 fps), Vicuna-13B", _FULL_13B, _SRC_13B,
                 notes=(_TOKENIZER_NOTE,)),
    CatalogEntry("llama-vid-7b-full-224-long-video", "YanweiLi/llama-vid-7b-full-224-long-video", "long-video",
                 "7B", 224, "movies: hour-long video with subtitles (64K context), Vicuna-7B", _FULL_7B,
                 "hub listing: shards 9.98 GB + 5.91 GB, index 115 kB", notes=(_TOKENIZER_NOTE,),
                 memory=_MEMORY_7B_HOUR_FP16),
    CatalogEntry("llama-vid-7b-pretrain-224", "YanweiLi/llama-vid-7b-pretrain-224", "pretrain", "7B", 224,
                 "stage-1 projector for the 7B 224 px image model", 434 * MB, "hub listing: mm_projector.bin 434 MB",
                 base_model="vicuna-7b-v1.5"),
    CatalogEntry("llama-vid-7b-pretrain-336", "YanweiLi/llama-vid-7b-pretrain-336", "pretrain", "7B", 336,
                 "stage-1 projector for the 7B 336 px image model", 434 * MB, "hub listing: mm_projector.bin 434 MB",
                 base_model="vicuna-7b-v1.5"),
    CatalogEntry("llama-vid-13b-pretrain-336", "YanweiLi/llama-vid-13b-pretrain-336", "pretrain", "13B", 336,
                 "stage-1 projector for the 13B 336 px image model", None, "unknown (not checked on the hub)",
                 base_model="vicuna-13b-v1.5"),
    CatalogEntry("llama-vid-7b-pretrain-224-video-fps-1", "YanweiLi/llama-vid-7b-pretrain-224-video-fps-1",
                 "pretrain", "7B", 224, "stage-1 projector for the 7B short-video model", 434 * MB,
                 "derived: same projector shapes as llama-vid-7b-pretrain-224", base_model="vicuna-7b-v1.5"),
    CatalogEntry("llama-vid-13b-pretrain-224-video-fps-1", "YanweiLi/llama-vid-13b-pretrain-224-video-fps-1",
                 "pretrain", "13B", 224, "stage-1 projector for the 13B short-video model", None,
                 "unknown (not checked on the hub)", base_model="vicuna-13b-v1.5"),
)

BASE_LLMS: tuple[CatalogEntry, ...] = (
    CatalogEntry("vicuna-7b-v1.5", "lmsys/vicuna-7b-v1.5", "base-llm", "7B", None,
                 "base LLM for the 7B stage-1 projectors (stage-2 training)", 13_500 * MB,
                 "derived: 6.74e9 parameters in fp16", shared=(), license="Llama 2 Community License"),
    CatalogEntry("vicuna-13b-v1.5", "lmsys/vicuna-13b-v1.5", "base-llm", "13B", None,
                 "base LLM for the 13B stage-1 projectors (stage-2 training)", 26_000 * MB,
                 "derived: 1.30e10 parameters in fp16", shared=(), license="Llama 2 Community License"),
)

_WHISPER_LICENSE = "MIT (OpenAI Whisper weights, converted to CTranslate2 by Systran)"
_WHISPER_SIZE = "approximate (hub listing of model.bin, float16)"


def _whisper(size: str, approx: int, purpose: str) -> CatalogEntry:
    return CatalogEntry(f"whisper-{size}", f"Systran/faster-whisper-{size}", "speech", "", None, purpose,
                        approx, _WHISPER_SIZE, shared=(), license=_WHISPER_LICENSE)


#: Speech-recognition models for the indexer (``llamavid index run --whisper-model small`` uses
#: ``whisper-small``). They are only ever downloaded by ``llamavid models pull``, never by indexing.
SPEECH_MODELS: tuple[CatalogEntry, ...] = (
    _whisper("tiny", 75 * MB, "fastest, least accurate; fine for a quick search index"),
    _whisper("base", 145 * MB, "fast; good for clear dialogue"),
    _whisper("small", 484 * MB, "the indexer's default: a good balance on a CPU"),
    _whisper("medium", 1_530 * MB, "more accurate, ~3x slower than small"),
    _whisper("large-v3", 3_090 * MB, "most accurate; meant for a GPU"),
)

#: Image-text embedding models for the indexer's optional scene stage (``indexer.scene_model``): one
#: vector per sampled frame, so films can be searched by description and every question gets frame
#: evidence. CLIP ViT-B/32 at 224 px: the smallest image side of the CLIP/SigLIP family (50 tokens of
#: width 768, ~4.4 GFLOPs a frame, about 2 % of EVA-ViT-g's), CLIP's own preprocessing (the frames EVA
#: gets), 512-wide vectors (1 KB a frame in fp16) and a causal text side that reads a short question
#: without padding. Like the speech models, only ``llamavid models pull`` downloads it, never indexing.
SCENE_MODELS: tuple[CatalogEntry, ...] = (
    CatalogEntry("clip-vit-b-32", "openai/clip-vit-base-patch32", "scenes", "", 224,
                 "search films by description; frame evidence for every question (CLIP ViT-B/32, 224 px)",
                 605 * MB, "hub listing: pytorch_model.bin 605 MB (1.51e8 parameters in fp32)", shared=(),
                 license="MIT (OpenAI CLIP)"),
)

_QWEN_LICENSE = "Apache 2.0 (Qwen3-VL)"
_QWEN_SIZE = ("approximate (hub listing); the exact sizes and hashes come from the hub at pull time")
_QWEN_KV_HOUR = 28_000  # tokens of an hour's default plan: 16,380 visual, ~3K of markers, the dialogue


def _qwen(size: str, hf_bytes: int, q4_bytes: int, mmproj_bytes: int, kv_per_token: int, purpose: str
          ) -> tuple[CatalogEntry, CatalogEntry]:
    """A Qwen3-VL size as two entries: the transformers repo (bf16; a GPU) and the published GGUF repo
    (its q4_K_M LLM and f16 mmproj; llama.cpp, the CPU default). ``memory``: weights plus an hour of
    film in an f16 KV cache (``kv_per_token`` bytes a token)."""
    hour = _QWEN_KV_HOUR * kv_per_token
    name = f"qwen3-vl-{size.lower()}-instruct"
    hf = CatalogEntry(name, f"Qwen/Qwen3-VL-{size}-Instruct", "qwen-vl", size, None, purpose + " (transformers, bf16)",
                      hf_bytes, _QWEN_SIZE, shared=(), license=_QWEN_LICENSE, memory=hf_bytes + hour)
    gguf = CatalogEntry(f"{name}-gguf", f"Qwen/Qwen3-VL-{size}-Instruct-GGUF", "qwen-vl", size, None,
                        purpose + " (llama.cpp: q4_K_M LLM, f16 mmproj)", q4_bytes + mmproj_bytes, _QWEN_SIZE,
                        shared=(), license=_QWEN_LICENSE, files=(f"Qwen3VL-{size}-Instruct-Q4_K_M.gguf",
                                                                 f"mmproj-Qwen3VL-{size}-Instruct-F16.gguf"),
                        memory=q4_bytes + mmproj_bytes + hour)
    return hf, gguf


#: The second family (docs/second-family.md): three sizes, each as transformers weights and as the
#: published GGUF + mmproj. A cached token costs 112 KiB (2B) or 144 KiB (4B, 8B) in f16.
QWEN_VL_MODELS: tuple[CatalogEntry, ...] = (
    *_qwen("2B", 4_260 * MB, 1_110 * MB, 820 * MB, 112 * 1024, "fastest Qwen3-VL: a CPU that must answer quickly"),
    *_qwen("4B", 8_880 * MB, 2_500 * MB, 840 * MB, 144 * 1024, "the default Qwen3-VL: films, clips, images"),
    *_qwen("8B", 17_500 * MB, 5_030 * MB, 1_160 * MB, 144 * 1024, "the most accurate Qwen3-VL, for a GPU"),
)

_BY_NAME: dict[str, CatalogEntry] = {e.name: e for e in (*MODELS, *QWEN_VL_MODELS, *BASE_LLMS, *SPEECH_MODELS,
                                                          *SCENE_MODELS)}


def entries(include_base: bool = True) -> list[CatalogEntry]:
    """Every downloadable model: LLaMA-VID checkpoints, base LLMs, speech recognition, then scene search."""
    return [*MODELS, *QWEN_VL_MODELS, *(BASE_LLMS if include_base else ()), *SPEECH_MODELS, *SCENE_MODELS]


def names() -> list[str]:
    return [e.name for e in entries()]


def get(name: str) -> CatalogEntry | None:
    """The entry called ``name``; also accepts the hub id (``YanweiLi/<name>``)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    return next((e for e in _BY_NAME.values() if e.repo_id.lower() == name.lower()), None)


# Files of a hub repo that no llamavid code reads: training logs, an unsafe pickle of the training
# arguments (it imports llava.* classes), git metadata and other frameworks' weights.
_SKIP = (".gitattributes", "training_args.bin", "trainer_state.json", "*.msgpack", "*.h5", "*.ot",
         "flax_model*", "tf_model*", "rust_model*", "*.onnx", "*.gguf", "optimizer.pt", "*/*")


def select_repo_files(filenames: list[str], patterns: tuple[str, ...] = ()) -> list[str]:
    """The files of a repo that ``pull`` fetches, in download order.

    ``patterns`` (an entry's ``files``): only the files they match, the LLM first and the mmproj
    last (a GGUF repo holds a dozen quantizations; a folder is a model once both are there).

    Skips what nothing reads (see ``_SKIP``; sub-folders too), keeps only one weight format
    (safetensors wins over ``pytorch_model*.bin`` when a repo has both), and puts ``config.json``
    last: a folder without it is not yet listed as a model by :func:`llamavid.hub.installed.list_models`,
    so other parts of the program never see a half-downloaded checkpoint.
    """
    if patterns:
        chosen = [f for f in filenames if any(fnmatch.fnmatch(f.lower(), p.lower()) for p in patterns)]
        return sorted(chosen, key=lambda f: (f.lower().startswith("mmproj"), f))
    keep = [f for f in filenames if not any(fnmatch.fnmatch(f, pat) for pat in _SKIP)]
    if any(f.endswith(".safetensors") for f in keep):
        keep = [f for f in keep if not fnmatch.fnmatch(f, "pytorch_model*.bin*")]
    return sorted(keep, key=lambda f: (f == CONFIG, f))
