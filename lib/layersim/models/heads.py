"""Multi-exit heads for any adapter: the baseline the paper compares aligned training against.

A multi-exit model gives blocks 1..L-1 a freshly initialised linear classifier of its own; block L keeps
the model's own head. So the heads add exactly (L-1)(C d + C) parameters, the saving that one shared
classifier makes (PAPER.md, "Parameter saving").

The heads read the same pooled vectors as the shared head (``adapter.pool(hidden, adapter.readout_pooling)``),
so one forward pass gives both readouts:

>>> hidden = adapter.hidden_states(x)
>>> v = adapter.pool(hidden, adapter.readout_pooling)       # (L, n, d)
>>> shared = adapter.readout_stack(v)                        # (L, n, C) the last-layer classifier everywhere
>>> heads = ExitHeads.for_adapter(adapter)
>>> exits = heads.logits(adapter, v)                         # (L, n, C) each layer's own classifier

Exit head l reads ``norm(v_l)`` (the model's final norm, when ``adapter.final_norm``; post-norm encoders
have none) and applies its own ``nn.Linear(d, C)``. Our ViT built with ``ViTConfig(multi_exit=True)`` keeps
its heads in ``model.exit_heads`` (its saved format); ``ExitHeads.for_adapter`` wraps those same modules.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .adapters import LayerAdapter, LinearReader, layer_indices


class ExitHeads(nn.Module):
    """L-1 linear heads (d -> C) for layers 1..L-1; layer L is read by the model's own head."""

    def __init__(self, num_layers: int, width: int, num_classes: int, *, heads: nn.ModuleList | None = None):
        super().__init__()
        for name, value in (("num_layers", num_layers), ("width", width), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ExitHeads: {name} must be a positive integer, got {value!r}")
        self.num_layers, self.width, self.num_classes = num_layers, width, num_classes
        if heads is None:
            heads = nn.ModuleList(nn.Linear(width, num_classes) for _ in range(num_layers - 1))
            for head in heads:  # as timm and our ViT initialise their heads
                nn.init.trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
        if len(heads) != num_layers - 1 or any(
                not isinstance(h, nn.Linear) or (h.in_features, h.out_features) != (width, num_classes) for h in heads):
            raise ValueError(f"ExitHeads needs {num_layers - 1} nn.Linear({width}, {num_classes}) modules")
        self.heads = heads

    @classmethod
    def for_adapter(cls, adapter: LayerAdapter) -> "ExitHeads":
        """Fresh heads sized for `adapter` (our multi-exit ViT: its own ``exit_heads``, shared, not copied)."""
        adapter._require_readout()
        own = getattr(adapter.model, "exit_heads", None)
        if isinstance(own, nn.ModuleList):
            return cls(adapter.num_layers, adapter.width, adapter.num_classes, heads=own)
        return cls(adapter.num_layers, adapter.width, adapter.num_classes)

    @property
    def num_parameters(self) -> int:
        """(L-1)(C d + C): what the multi-exit model adds to the shared-classifier one."""
        return sum(p.numel() for p in self.parameters())

    def _check(self, adapter: LayerAdapter) -> None:
        if (adapter.num_layers, adapter.width, adapter.num_classes) != (self.num_layers, self.width, self.num_classes):
            raise ValueError(f"these exit heads were made for L={self.num_layers}, d={self.width}, "
                             f"C={self.num_classes}, not for {adapter.name} (L={adapter.num_layers}, "
                             f"d={adapter.width}, C={adapter.num_classes})")

    def reader(self, adapter: LayerAdapter, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The classifier of 1-based `layer`: a function (..., d) pooled vectors -> (..., C) logits."""
        self._check(adapter)
        layer = layer_indices(layer, self.num_layers)[0] + 1
        if layer == self.num_layers:
            return adapter.head_reader(layer)
        return LinearReader(lambda v: adapter.norm(v) if adapter.final_norm else v, self.heads[layer - 1])

    def readers(self, adapter: LayerAdapter) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The classifiers of layers 1..L, in order."""
        return [self.reader(adapter, layer) for layer in range(1, self.num_layers + 1)]

    def logits(self, adapter: LayerAdapter, vectors: torch.Tensor, layers=None) -> torch.Tensor:
        """(L', n, d) pooled vectors of `layers` (1-based; default all) -> (L', n, C), each layer's own head."""
        numbers = [i + 1 for i in layer_indices(layers, self.num_layers)]
        if not isinstance(vectors, torch.Tensor) or vectors.dim() != 3 or vectors.shape[0] != len(numbers):
            got = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__
            raise ValueError(f"expected pooled vectors of shape ({len(numbers)}, n, {self.width}) for layers "
                             f"{numbers}, got {got}")
        return torch.stack([self.reader(adapter, l)(v) for l, v in zip(numbers, vectors)])
