"""A small vision transformer in one readable file (in the spirit of nanoGPT's model.py).

It is the standard ViT of Dosovitskiy et al. (2021) as timm implements it -- pre-norm blocks, a learned
CLS token, learned position embeddings that cover the CLS token, a final LayerNorm and a linear head on
the CLS token -- so that the weights of a timm ``VisionTransformer`` of the same configuration can be
copied into it (`state_dict_from_timm`) and give the same logits. On top of the standard model it offers
what the paper needs:

- ``forward_intermediates(x)``: the tokens after every block, stacked (L, B, T, d), without hooks;
- optional multi-exit heads (``multi_exit=True``): blocks 1..L-1 get a freshly initialised linear head
  of their own (block L keeps ``head``), kept here as the saved format of a multi-exit model; they are
  read through `layersim.models.ExitHeads` (``ExitHeads.for_adapter(adapt(model))``), like any model's.

Every layer is read through the adapter (``adapt(model)``: ``hidden_states``, ``head_inputs``, ``reader``).

Shapes: B batch, T = 1 + number of patches tokens (CLS first), d width, L depth (blocks numbered 1..L),
C classes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..storage import atomic_save
from ..validate import real_number, whole_number
from .inputs import check_images


@dataclass
class ViTConfig:
    """Size of a `VisionTransformer`. The defaults fit 28x28 grey images (Fashion-MNIST)."""

    image_size: int = 28
    in_chans: int = 1
    patch_size: int = 7
    depth: int = 6
    width: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 10
    multi_exit: bool = False

    def __post_init__(self):
        for name in ("image_size", "in_chans", "patch_size", "depth", "width", "heads", "num_classes"):
            value = getattr(self, name)
            whole_number(value, f"ViTConfig.{name}", low=1)
        real_number(self.mlp_ratio, "ViTConfig.mlp_ratio", low=0, low_open=True, what="a positive number")
        if not isinstance(self.multi_exit, bool):
            raise ValueError(f"ViTConfig.multi_exit must be True or False, got {self.multi_exit!r}")
        if self.patch_size > self.image_size:
            raise ValueError(f"patch_size {self.patch_size} is larger than image_size {self.image_size}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class Attention(nn.Module):
    """Multi-head self-attention: one qkv projection, scaled dot-product attention, output projection."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        B, T, d = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, d / heads)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a per-layer readout. ``forward(x)``: (B, C_in, H, W) images -> (B, C) logits."""

    def __init__(self, config: ViTConfig | None = None, **overrides):
        super().__init__()
        config = config or ViTConfig()
        if overrides:
            config = ViTConfig(**{**asdict(config), **overrides})
        self.config = c = config
        self.patch_embed = nn.Conv2d(c.in_chans, c.width, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.num_patches, c.width))
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.width, eps=1e-6)
        self.head = nn.Linear(c.width, c.num_classes)
        # multi-exit baseline: blocks 1..L-1 get a head of their own, block L uses `head`
        self.exit_heads = (nn.ModuleList(nn.Linear(c.width, c.num_classes) for _ in range(c.depth - 1))
                           if c.multi_exit else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's default initialisation: truncated normal (std 0.02) weights, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_layers(self) -> int:
        return self.config.depth

    @property
    def width(self) -> int:
        return self.config.width

    # ---- forward passes -------------------------------------------------------------------------
    def _check_images(self, x: torch.Tensor) -> torch.Tensor:
        """Check the shape, cast floating images to the weights' dtype, refuse integer or non-finite ones."""
        c = self.config
        return check_images(x, (c.in_chans, c.image_size, c.image_size), self.patch_embed.weight.dtype,
                            self.patch_embed.weight.device, "this VisionTransformer")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) images -> (B, T, d) tokens entering block 1 (CLS first, position added)."""
        x = self._check_images(x)
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, num_patches, d)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed

    def forward_intermediates(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """(B, C_in, H, W) images -> (upto, B, T, d): the tokens after each block 1..upto (default L; no
        final norm). Blocks after `upto` are not run."""
        upto = self.config.depth if upto is None else upto
        if not 1 <= upto <= self.config.depth:
            raise ValueError(f"upto must be a layer in 1..{self.config.depth}, got {upto}")
        h = self.embed(x)
        states = []
        for block in self.blocks[:upto]:
            h = block(h)
            states.append(h)
        return torch.stack(states)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) images -> (B, C) logits of the final head on the last block's CLS token."""
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, 0]))

    # ---- saving ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Save config and weights to one file (atomically: a temporary file renamed into place)."""
        atomic_save({"format": "layersim.vit", "config": asdict(self.config), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> "VisionTransformer":
        """Load a model written by `save` (or any dict with 'config' and 'state_dict' of this class)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ViT checkpoint at {path}")
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # unpickling errors of every kind: truncated, not a torch file, foreign objects
            raise ValueError(f"{path} is not a readable layersim ViT checkpoint (written by "
                             f"VisionTransformer.save): {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
        if not isinstance(checkpoint, dict) or "config" not in checkpoint or "state_dict" not in checkpoint:
            raise ValueError(f"{path} is not a layersim ViT checkpoint (a dict with 'config' and 'state_dict')")
        try:
            model = cls(ViTConfig(**checkpoint["config"]))
            model.load_state_dict(checkpoint["state_dict"])
        except (TypeError, RuntimeError) as e:
            raise ValueError(f"{path} holds a config or weights that do not fit a layersim ViT: {e}") from e
        return model.eval()


# ---- timm correspondence ------------------------------------------------------------------------------
def timm_kwargs(config: ViTConfig) -> dict:
    """Arguments of timm's ``VisionTransformer`` that build the same network as `config`."""
    return dict(img_size=config.image_size, in_chans=config.in_chans, patch_size=config.patch_size,
                embed_dim=config.width, depth=config.depth, num_heads=config.heads,
                mlp_ratio=config.mlp_ratio, num_classes=config.num_classes, qkv_bias=True,
                class_token=True, global_pool="token")


def state_dict_from_timm(timm_state: dict) -> dict:
    """Rename a timm ViT state dict to ours (the only difference: ``patch_embed.proj.`` -> ``patch_embed.``)."""
    return {k.replace("patch_embed.proj.", "patch_embed."): v for k, v in timm_state.items()}


def state_dict_to_timm(state: dict) -> dict:
    """Rename our state dict to timm's names (multi-exit heads have no timm counterpart and are dropped)."""
    return {k.replace("patch_embed.", "patch_embed.proj."): v for k, v in state.items()
            if not k.startswith("exit_heads.")}
