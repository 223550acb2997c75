"""Adapters for vision transformers: our ViT and timm's ViT/DeiT, read by explicit loops over their blocks
(``forward_intermediates``; no hooks)."""
from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn as nn

from .base import BlockState, Hidden, LayerAdapter, check_upto
from .inputs import check_images
from .vit import VisionTransformer


def _probe_images(shape: tuple) -> torch.Tensor:
    """Two random images of (C, H, W) `shape` from an own generator (the global RNG stays untouched)."""
    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))


class ViTAdapter(LayerAdapter):
    """Adapter for `layersim.models.VisionTransformer`: pre-norm, head(norm(h_l[CLS]))."""

    modality = "image"

    def __init__(self, model: VisionTransformer, *, name: str | None = None, final_norm: bool = True):
        super().__init__(model, name=name or "layersim-vit", final_norm=final_norm)
        self.num_layers = model.config.depth
        self.width = model.config.width
        self.num_classes = model.config.num_classes

    def settings(self) -> dict:
        return {**super().settings(), "config": asdict(self.model.config)}

    def structure(self) -> dict:
        return {**super().structure(), "family": "layersim ViT", "final norm at": "norm", "head": "head",
                "blocks run by": "layersim's explicit loop (VisionTransformer.hidden_states)"}

    def _images(self, batch) -> torch.Tensor:
        c = self.model.config
        return check_images(batch, (c.in_chans, c.image_size, c.image_size), self.dtype, self.device, self.name)

    def probe_batch(self) -> torch.Tensor:
        c = self.model.config
        return _probe_images((c.in_chans, c.image_size, c.image_size))

    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        states = self.model.forward_intermediates(self._images(batch), upto=check_upto(upto, self.num_layers))
        mask = torch.ones(states.shape[1:3], dtype=torch.bool, device=states.device)
        return Hidden(states, mask, num_prefix=1)

    def logits(self, batch) -> torch.Tensor:
        return self.model(self._images(batch))

    def norm(self, h):
        return self.model.norm(h)

    def head_linear(self):
        return self.model.head

    def own_exit_heads(self):
        return self.model.exit_heads

    def block_modules(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def begin(self, batch) -> BlockState:
        tokens = self.model.embed(self._images(batch))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return BlockState(tokens, 0, mask, torch.arange(tokens.shape[0], device=tokens.device), num_prefix=1)


class TimmViTAdapter(LayerAdapter):
    """Adapter for timm ``VisionTransformer`` (ViT, DeiT incl. distilled, with or without class token, token or
    average pooling).

    Block outputs come from timm's own ``forward_intermediates``. The readout of block l is the model's own
    final norm, pooling and head, in the model's order: token pooling reads ``head(fc_norm(norm(h_l)[CLS]))``;
    average pooling with ``fc_norm`` pools first (``head(fc_norm(mean(h_l)))``, the norm being an identity);
    average pooling without it (``*_gap_*`` models) normalises every token first (``head(mean(norm(h_l)))``).
    A distilled DeiT's head reads two tokens (class and distillation) and averages its two heads, as in eval.
    """

    modality = "image"

    def __init__(self, model: nn.Module, *, name: str | None = None, final_norm: bool = True):
        for attribute in ("forward_intermediates", "forward_head", "norm", "blocks", "patch_embed"):
            if not hasattr(model, attribute):
                raise ValueError(f"{type(model).__name__} is not a timm VisionTransformer (no {attribute!r}); "
                                 "wrap it in your own LayerAdapter subclass")
        super().__init__(model, name=name or getattr(model, "default_cfg", {}).get("architecture"),
                         final_norm=final_norm)
        self.num_layers = len(model.blocks)
        self.width = model.embed_dim
        self.num_classes = model.num_classes or None
        self.num_prefix = model.num_prefix_tokens
        self.has_class_token = bool(getattr(model, "has_class_token", getattr(model, "cls_token", None) is not None))
        self.distilled = getattr(model, "head_dist", None) is not None
        self.head_tokens = 2 if self.distilled else 1
        pool = getattr(model, "global_pool", "token")
        if pool not in ("token", "avg"):
            raise ValueError(f"{self.name} pools with global_pool={pool!r}; supported: 'token' and 'avg'")
        self.readout_pooling = "cls" if pool == "token" else "mean"
        # the model normalises every token, then pools (avg pooling without fc_norm): the norm comes first
        self.norm_before_pool = pool == "avg" and not isinstance(model.norm, nn.Identity)

    def settings(self) -> dict:
        return {**super().settings(), "class": f"{type(self.model).__module__}.{type(self.model).__name__}"}

    def structure(self) -> dict:
        fc_norm = not isinstance(getattr(self.model, "fc_norm", nn.Identity()), nn.Identity)
        return {**super().structure(), "family": "timm " + type(self.model).__name__,
                "blocks run by": "timm's explicit loop (forward_intermediates, stopping after block upto)",
                "final norm at": "norm" if not isinstance(self.model.norm, nn.Identity) else "fc_norm (after pooling)"
                if fc_norm else "none", "head": "head + head_dist, averaged" if self.distilled else "head"}

    def _images(self, x) -> torch.Tensor:
        embed = self.model.patch_embed
        size = tuple(embed.img_size) if embed.img_size is not None else (None, None)
        if getattr(embed, "dynamic_img_size", False):
            size = (None, None)
        return check_images(x, (embed.proj.in_channels, *size), self.dtype, self.device, self.name)

    def probe_batch(self) -> torch.Tensor:
        embed = self.model.patch_embed
        size = tuple(embed.img_size) if embed.img_size is not None else (224, 224)
        return _probe_images((embed.proj.in_channels, *size))

    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        upto = check_upto(upto, self.num_layers)
        out = self.model.forward_intermediates(self._images(batch), indices=list(range(upto)), norm=False,
                                               output_fmt="NLC", intermediates_only=True,
                                               return_prefix_tokens=True, stop_early=True)
        if self.num_prefix:
            out = [torch.cat([prefix, spatial], dim=1) for spatial, prefix in out]
        states = torch.stack(out)
        mask = torch.ones(states.shape[1:3], dtype=torch.bool, device=states.device)
        return Hidden(states, mask, num_prefix=self.num_prefix)

    def logits(self, batch) -> torch.Tensor:
        return self.model(self._images(batch))

    def norm(self, h):
        return self.model.norm(h)

    def _head_vectors(self, hidden: Hidden, numbers: list, pooling: str) -> torch.Tensor:
        if not self.distilled:
            return super()._head_vectors(hidden, numbers, pooling)
        return hidden.states[:, :, :2]  # the class and distillation tokens: (L', n, 2, d)

    def _pre_linear(self, normed):
        return self.model.head_drop(self.model.fc_norm(normed))

    def head_linear(self):
        return None if self.distilled or not isinstance(self.model.head, nn.Linear) else self.model.head

    def classifier_module(self):
        return self.model.head

    def _head(self, normed):
        if self.distilled:  # timm's forward_head of a distilled DeiT in eval: the mean of its two heads
            return (self.model.head(normed[..., 0, :]) + self.model.head_dist(normed[..., 1, :])) / 2
        return self.model.head(self._pre_linear(normed))

    def block_modules(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def begin(self, batch) -> BlockState:
        model = self.model  # as timm's forward_features up to its blocks
        tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(self._images(batch)))))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return BlockState(tokens, 0, mask, torch.arange(tokens.shape[0], device=tokens.device),
                          num_prefix=self.num_prefix)
