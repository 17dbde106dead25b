"""EVA-ViT-g, the frozen vision encoder of LLaMA-VID (BLIP-2's ``eva_vit_g.pth``).

Module and parameter names follow the released weight file exactly, so the flat state dict of
``eva_vit_g.pth`` (and the ``model.vision_tower.vision_tower.*`` copy inside full checkpoints)
loads by name. Attention runs through ``F.scaled_dot_product_attention``; with the query scale
passed to SDPA this matches the reference's "scale q, then q @ k^T" form to float rounding.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from llamavid.model.layout import PATCH_SIZE

EVA_HEAD_DIM = 88  # 1408 / 16 heads: every EVA width here is a multiple of it
EVA_LAYER_NORM_EPS = 1e-6


@dataclass
class EvaConfig:
    """Sizes of an EVA ViT; the released file is width 1408, 39 used blocks, MLP 6144, patch 14."""

    image_size: int = 224
    patch_size: int = PATCH_SIZE
    width: int = 1408
    depth: int = 39
    mlp_hidden: int = 6144

    @property
    def num_heads(self) -> int:
        return max(1, self.width // EVA_HEAD_DIM)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], image_size: int = 224,
                        depth: int | None = None) -> EvaConfig:
        """Infer sizes from tensor shapes; depth defaults to the file's blocks minus one.

        BLIP-2 (and so LLaMA-VID) uses the second-to-last block of the 40-block file, which is
        why an ``eva_vit_g.pth``-format file holds one block more than the model runs.
        """
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
        if "cls_token" not in state or "patch_embed.proj.weight" not in state or not blocks:
            raise ValueError("not an eva_vit_g.pth-format state dict (no cls_token, patch_embed or blocks)")
        patch = state["patch_embed.proj.weight"]
        return cls(
            image_size=image_size,
            patch_size=int(patch.shape[-1]),
            width=int(state["cls_token"].shape[-1]),
            depth=depth if depth is not None else max(1, len(blocks) - 1),
            mlp_hidden=int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        )


class PatchEmbed(nn.Module):
    def __init__(self, cfg: EvaConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C), row-major patches


class Attention(nn.Module):
    """qkv without bias plus separate q/v biases (k has none), as in the released weights."""

    def __init__(self, cfg: EvaConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.width // cfg.num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(cfg.width, cfg.width * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(cfg.width))
        self.v_bias = nn.Parameter(torch.zeros(cfg.width))
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.qkv_fused_bias = False  # set by fuse_qkv_bias()

    def fuse_qkv_bias(self) -> None:
        """Make ``qkv`` an ordinary biased Linear holding cat(q_bias, 0, v_bias); idempotent.

        The default forward passes ``qkv.weight`` to ``F.linear`` itself, which breaks as soon
        as a tool swaps ``qkv`` for another module (int8 dynamic quantization, for one). After
        this call forward just calls ``self.qkv(x)``: same numbers, and the weight is shared, not
        copied. For inference on a loaded model: the state dict gains ``qkv.bias`` (so do not save
        a fused model as a checkpoint), and later edits of ``q_bias`` / ``v_bias`` are not seen.
        """
        if self.qkv_fused_bias:
            return
        weight = self.qkv.weight
        if not isinstance(weight, nn.Parameter) or weight.is_meta:
            raise RuntimeError("fuse_qkv_bias() needs the loaded fp weights: call it after loading, "
                               "before quantizing")
        fused = nn.Linear(weight.shape[1], weight.shape[0], bias=True, device="meta")  # no init work
        fused.weight = weight
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias]).detach()
        fused.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=weight.requires_grad)
        self.qkv = fused
        self.qkv_fused_bias = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.qkv_fused_bias:
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        else:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
            qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, cfg: EvaConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: EvaConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=EVA_LAYER_NORM_EPS)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=EVA_LAYER_NORM_EPS)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EvaViT(nn.Module):
    """Pre-norm ViT without final norm or head: returns every token of the last block."""

    def __init__(self, cfg: EvaConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1 + N, width), row 0 being CLS."""
        size = self.cfg.image_size
        if pixels.shape[-2:] != (size, size):
            raise ValueError(f"EVA expects {size}x{size} pixels, got {tuple(pixels.shape[-2:])}")
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize the 16x16 table of the file to ``grid`` x ``grid`` (bicubic, in float32).

    This is what makes the 224-px weight file serve the 336-px checkpoints.
    """
    rows = pos_embed.shape[1] - 1
    old = int(math.isqrt(rows))
    if old * old != rows:
        raise ValueError(f"pos_embed has {rows} patch rows, not a square grid")
    if old == grid:
        return pos_embed
    width = pos_embed.shape[-1]
    table = pos_embed[:, 1:].float().reshape(1, old, old, width).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(grid, grid), mode="bicubic", align_corners=False)
    table = table.permute(0, 2, 3, 1).reshape(1, grid * grid, width)
    return torch.cat([pos_embed[:, :1].float(), table], dim=1)


def prepare_eva_state(state: Mapping[str, torch.Tensor], cfg: EvaConfig) -> dict[str, torch.Tensor]:
    """Keep the tensors the model uses and fit the position table to its image size.

    Raises ValueError naming missing tensors, since the reference silently ran with
    random weights in that case.
    """
    model_keys = EvaViT_keys(cfg)
    missing = [k for k in model_keys if k not in state]
    if missing:
        raise ValueError(f"missing {len(missing)} vision tensors, e.g. {missing[:3]}")
    out = {k: state[k] for k in model_keys}
    out["pos_embed"] = interpolate_pos_embed(out["pos_embed"], cfg.grid)
    return out


def EvaViT_keys(cfg: EvaConfig) -> list[str]:  # noqa: N802 - names the module it mirrors
    with torch.device("meta"):
        return list(EvaViT(cfg).state_dict().keys())


class EvaVisionTower(nn.Module):
    """Wrapper named as in the checkpoints (``vision_tower.vision_tower.*``), with no weights of its own."""

    def __init__(self, cfg: EvaConfig):
        super().__init__()
        self.vision_tower = EvaViT(cfg)

    @property
    def cfg(self) -> EvaConfig:
        return self.vision_tower.cfg

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def width(self) -> int:
        return self.cfg.width

    @property
    def num_patches(self) -> int:
        return self.cfg.num_patches

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features in the input's dtype, computed in the tower's dtype and device."""
        p = next(self.vision_tower.parameters())
        return self.vision_tower(pixels.to(device=p.device, dtype=p.dtype)).to(pixels.dtype)

    @classmethod
    def from_file(cls, path: str | Path, image_size: int = 224, depth: int | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                  ) -> EvaVisionTower:
        """Load an ``eva_vit_g.pth``-format file (flat state dict)."""
        state = load_eva_file(path)
        cfg = EvaConfig.from_state_dict(state, image_size=image_size, depth=depth)
        return cls.from_state_dict(state, cfg, device=device, dtype=dtype)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], cfg: EvaConfig,
                        device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float32) -> EvaVisionTower:
        with torch.device("meta"):
            tower = cls(cfg)
        tower.vision_tower.load_state_dict(prepare_eva_state(state, cfg), assign=True, strict=True)
        return tower.to(device=device or "cpu", dtype=dtype).eval().requires_grad_(False)


def load_eva_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weight file and say which file is wrong when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vision weights not found (expected an eva_vit_g.pth file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise ValueError(f"{path}: cannot read vision weights ({exc.__class__.__name__}: {exc}); "
                         "the file is corrupt or incomplete, download it again") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or "cls_token" not in state:
        raise ValueError(f"{path}: not an eva_vit_g.pth-format state dict (no 'cls_token')")
    return state


def random_eva_state(cfg: EvaConfig, extra_blocks: int = 1, seed: int = 0,
                     std: float = 0.02) -> dict[str, torch.Tensor]:
    """Random weights in the released file layout (one spare block, 224-px table): for tests and benchmarks."""
    file_cfg = EvaConfig(224, cfg.patch_size, cfg.width, cfg.depth + extra_blocks, cfg.mlp_hidden)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in EvaViT(file_cfg).state_dict().items():
        if key.endswith("norm1.weight") or key.endswith("norm2.weight"):
            state[key] = 1 + std * torch.randn(tensor.shape, generator=gen)
        else:
            state[key] = std * torch.randn(tensor.shape, generator=gen)
    return state


def write_tiny_eva(path: str | Path, width: int = 176, depth: int = 1, mlp: int = 256,
                   seed: int = 0) -> Path:
    """Write a small random ``eva_vit_g.pth``-format file (``depth`` used blocks + 1 spare)."""
    if width % EVA_HEAD_DIM:
        raise ValueError(f"EVA width must be a multiple of {EVA_HEAD_DIM}, got {width}")
    state = random_eva_state(EvaConfig(224, 14, width, depth, mlp), seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
