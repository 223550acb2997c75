"""Readers: the one way to turn a layer's representation into that layer's prediction.

A reader is called as ``reader(v, layer)``: v holds the head inputs of 1-based `layer` (``adapter.head_inputs``,
(..., d)), the result that layer's logits (..., C). The layer is never optional. Two readers exist:

- `SharedHead` (``adapter.reader``): the model's own last-layer classifier, with its final norm, on every
  layer (the paper's readout; the logit lens). Its reading of layer L is the model's own prediction.
- `ExitHeads` (``ExitHeads.for_adapter(adapter)``, an ``nn.Module`` that is trained): a freshly initialised
  linear head per layer 1..L-1 (the multi-exit baseline); layer L keeps the model's own head.

A reader whose last step is one linear layer says so (``linear(layer)``, with ``pre(v, layer)`` for what comes
before), so that a loss can fuse that layer with the cross-entropy and never hold a vocabulary's logits
(`layersim.fused_ce`). `read_stats` reads many rows of a vocabulary a chunk of rows and one layer at a time.

>>> hidden = adapter.hidden_states(x)
>>> v = adapter.head_inputs(hidden)                         # (L, n, d)
>>> adapter.reader(v[2], 3)                                 # (n, C): layer 3 read by the last-layer classifier
>>> heads = ExitHeads.for_adapter(adapter)
>>> heads(v[2], 3)                                          # (n, C): layer 3's own head
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

from .base import LOGIT_ELEMENTS_PER_CHUNK, layer_number


class Reader:
    """The interface: ``reader(v, layer) -> logits``; ``num_layers``, ``num_classes``; ``linear(layer)`` (the
    last linear layer, or None) and ``pre(v, layer)`` (what comes before it)."""

    num_layers: int
    num_classes: int

    def __call__(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        layer = layer_number(layer, self.num_layers)
        linear = self.linear(layer)
        if linear is None:
            return self._read(vectors, layer)
        return linear(self.pre(vectors, layer))

    def linear(self, layer: int) -> nn.Linear | None:
        return None

    def pre(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def _read(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        raise NotImplementedError


class SharedHead(Reader):
    """The model's own last-layer classifier on every layer: head(norm(v_l)) (see the adapter's
    ``readout_formula()``); equal to the model's prediction at layer L (checked when the adapter is made)."""

    def __init__(self, adapter):
        adapter._require_readout()
        self.adapter = adapter
        self.num_layers, self.num_classes = adapter.num_layers, adapter.num_classes

    def linear(self, layer: int) -> nn.Linear | None:
        return self.adapter.head_linear()

    def pre(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        return self.adapter.head_pre(vectors, layer)

    def _read(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        return self.adapter._head(self.adapter.head_normed(vectors, layer))

    def __repr__(self) -> str:
        return f"SharedHead({self.adapter.name}: {self.adapter.readout_formula()})"


class ExitHeads(nn.Module, Reader):
    """L-1 linear heads (d -> C) for layers 1..L-1 of one adapter; layer L is read by the model's own head.

    A multi-exit model adds exactly (L-1)(C d + C) parameters: the saving of one shared classifier (PAPER.md).
    Exit head l reads ``norm(v_l)`` (the final norm, when ``adapter.final_norm``; post-norm encoders have none)
    of the same head inputs as the shared head, so one forward pass gives both readouts. The heads are an
    ``nn.Module``: train them with the model, save their ``state_dict``.
    """

    def __init__(self, adapter, *, heads: nn.ModuleList | None = None):
        super().__init__()
        adapter._require_readout()
        if adapter.head_tokens != 1:
            raise ValueError(f"{adapter.name} reads {adapter.head_tokens} vectors with its head (a distilled DeiT: "
                             "class and distillation tokens; Dinov2: class token and patch mean): exit heads of "
                             "one vector per layer do not apply")
        L, d, C = adapter.num_layers, adapter.width, adapter.num_classes
        self.num_layers, self.width, self.num_classes = L, d, C
        object.__setattr__(self, "adapter", adapter)  # not a submodule: the heads' state is their own
        if heads is None:
            heads = nn.ModuleList(nn.Linear(d, C) for _ in range(L - 1))
            for head in heads:  # as timm and our ViT initialise their heads
                nn.init.trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
        if len(heads) != L - 1 or any(not isinstance(h, nn.Linear) or (h.in_features, h.out_features) != (d, C)
                                      for h in heads):
            raise ValueError(f"ExitHeads needs {L - 1} nn.Linear({d}, {C}) modules")
        self.heads = heads

    @classmethod
    def for_adapter(cls, adapter) -> "ExitHeads":
        """Fresh heads sized for `adapter` (our ViT built with ``multi_exit=True`` keeps its heads in its own
        ``exit_heads``, its saved format: those modules are used, not copied)."""
        return cls(adapter, heads=adapter.own_exit_heads())

    @property
    def num_parameters(self) -> int:
        """(L-1)(C d + C): what the multi-exit model adds to the shared-classifier one."""
        return sum(p.numel() for p in self.parameters())

    def linear(self, layer: int) -> nn.Linear | None:
        return self.heads[layer - 1] if layer < self.num_layers else self.adapter.head_linear()

    def pre(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        return self.adapter.exit_pre(vectors, layer) if layer < self.num_layers else self.adapter.head_pre(vectors, layer)

    def _read(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:  # layer L of a non-linear head
        return self.adapter.reader(vectors, layer)

    def forward(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        return Reader.__call__(self, vectors, layer)

    def __call__(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        return nn.Module.__call__(self, vectors, layer)


def as_reader(adapter, reader=None) -> Reader:
    """`reader` checked against `adapter`: None -> the shared head (``adapter.reader``); a `Reader` (an
    `ExitHeads`) made for a model of the same L, d and C."""
    if reader is None:
        return adapter.reader
    if not isinstance(reader, Reader):
        raise TypeError(f"a reader must be None (the shared last-layer classifier), adapter.reader or an ExitHeads "
                        f"(a Reader), got {type(reader).__name__}")
    if (reader.num_layers, reader.num_classes) != (adapter.num_layers, adapter.num_classes):
        raise ValueError(f"this reader reads L={reader.num_layers} layers and C={reader.num_classes} classes, not "
                         f"{adapter.name} (L={adapter.num_layers}, C={adapter.num_classes})")
    owner = getattr(reader, "adapter", adapter)
    if owner is not adapter and owner.model is not adapter.model:
        raise ValueError(f"this reader was made for {owner.name}, not for {adapter.name}")
    return reader


def chunk_rows(num_classes: int) -> int:
    """Rows of logits formed at once when reading `num_classes` classes (`LOGIT_ELEMENTS_PER_CHUNK`)."""
    return max(1, LOGIT_ELEMENTS_PER_CHUNK // max(1, int(num_classes)))


def read_stats(reader: Reader, vectors: torch.Tensor, layers, *, final: bool = False, targets=None,
               topk: int | None = None, keep=None, keep_logits: bool = False) -> Iterator[tuple]:
    """`readout_stats` (``layersim.metrics.readout``) of `reader` on (L', n, d) head inputs of 1-based `layers`,
    a chunk of rows at a time and within it one layer at a time, so that a vocabulary costs one (rows, C) block
    of logits (`LOGIT_ELEMENTS_PER_CHUNK` elements) and its log-softmax at once, never (L', rows, C): 30 layers
    of a 49,152-token vocabulary would be 2 GB per block. Yields ``(rows, stats)``: rows a slice of the n
    samples, stats {field: (K, rows, ...)} for the layers at positions `keep` (default all), with "logits"
    (K, rows, C) when `keep_logits`.

    final: the last of `layers` is the model's own prediction (layer L): its argmax is every layer's
    ``final_pred`` (the "final_prob" field). targets: (n,) targets ("label_logprob"). The statistics equal
    ``readout_stats`` of the stacked logits, bit for bit (each row's log-softmax is its own).
    """
    from ..metrics.readout import readout_stats

    layers = list(layers)
    if vectors.dim() < 3 or vectors.shape[0] != len(layers):
        raise ValueError(f"expected head inputs of shape ({len(layers)}, n, ...) for layers {layers}, got "
                         f"{tuple(vectors.shape)}")
    keep = list(range(len(layers))) if keep is None else list(keep)
    n, step = vectors.shape[1], chunk_rows(reader.num_classes)
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        last = reader(vectors[-1, rows], layers[-1]) if final else None
        final_pred = None if last is None else last.argmax(-1)
        per_layer = []
        for k in keep:
            logits = last if final and k == len(layers) - 1 else reader(vectors[k, rows], layers[k])
            stats = readout_stats(logits, final_pred=final_pred, topk=topk,
                                  targets=None if targets is None else targets[rows])
            if keep_logits:
                stats["logits"] = logits
            per_layer.append(stats)
            del logits
        yield rows, {field: torch.stack([stats[field] for stats in per_layer]) for field in per_layer[0]}
