"""FLOPs of the parts of a model, counted on its real modules with `torch.utils.flop_counter.FlopCounterMode`.

Conventions are FlopCounterMode's: a matrix product of (m x k) by (k x n) is 2 m k n FLOPs (a multiply
and an add), a convolution likewise per output element; element-wise work (biases, norms, activations,
softmax) is not counted; attention counts its two products, QK^T and (softmax) V, in full even when it is
causal. PyTorch's counter does not know the CPU kernel of scaled-dot-product attention
(``aten._scaled_dot_product_flash_attention_for_cpu``); it is counted here with PyTorch's own formula for
the other attention kernels, so the count is the same on CPU and GPU.

The blocks are counted during one forward pass of the model (forward hooks on each block read the
counter's running total), the readout of every layer on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from layersim.models import adapt, eval_mode

__all__ = ["FlopsProfile", "count_flops", "flop_counter"]


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """PyTorch's formula for its other attention kernels: QK^T and (softmax) V, causal or not."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A `FlopCounterMode` (no printout) that also counts the CPU attention kernel."""
    extra = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        extra[cpu_sdpa] = _cpu_sdpa_flop
    return FlopCounterMode(display=False, custom_mapping=extra)


def _count(fn):
    with flop_counter() as counter:
        out = fn()
    return int(counter.get_total_flops()), out


@dataclass
class FlopsProfile:
    """FLOPs of one batch, by part.

    embed: the input embedding (patch projection; text embeddings are look-ups: 0).
    blocks: (L,) block 1..L.
    heads: (L,) one readout of layer l (the shared head, or layer l's exit head): norm + head for ViT/DeiT,
        pooler + classifier for BERT, lm_head (+ norm) on every sample position for a causal LM.
    batch_size: samples in the batch (for a causal LM the positions with a next token); per-sample FLOPs
        divide by it.
    """

    embed: int
    blocks: list
    heads: list
    batch_size: int
    model: str = ""

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def layer_costs(self, every_layer: bool = True) -> torch.Tensor:
        """(L,) float64 per-sample FLOPs of stopping at layer l: the embedding, blocks 1..l and the readouts
        (of every layer 1..l when `every_layer`, as a confidence policy needs; else of layer l only)."""
        blocks = torch.tensor(self.blocks, dtype=torch.float64).cumsum(0)
        heads = torch.tensor(self.heads, dtype=torch.float64)
        reads = heads.cumsum(0) if every_layer else heads
        return (self.embed + blocks + reads) / self.batch_size

    def exit_cost(self, exit_layer, every_layer: bool = True) -> torch.Tensor:
        """(n,) per-sample FLOPs of samples stopping at `exit_layer` (n,) layers 1..L."""
        exit_layer = torch.as_tensor(exit_layer).long().cpu()
        if exit_layer.numel() and (exit_layer.min() < 1 or exit_layer.max() > self.num_layers):
            raise ValueError(f"exit layers must lie in 1..{self.num_layers}, got {exit_layer.min()}..{exit_layer.max()}")
        return self.layer_costs(every_layer)[exit_layer - 1]

    def full_cost(self) -> float:
        """Per-sample FLOPs of the plain forward pass: embedding, all L blocks and the model's own head."""
        return float((self.embed + sum(self.blocks) + self.heads[-1]) / self.batch_size)

    def table(self) -> pd.DataFrame:
        """Per-sample FLOPs by part: one row for the embedding, one per block, one per readout."""
        rows = [{"part": "embedding", "layer": 0, "flops": self.embed / self.batch_size}]
        rows += [{"part": "block", "layer": l + 1, "flops": f / self.batch_size} for l, f in enumerate(self.blocks)]
        rows += [{"part": "head", "layer": l + 1, "flops": f / self.batch_size} for l, f in enumerate(self.heads)]
        return pd.DataFrame(rows)


def count_flops(model, batch, *, reader=None) -> FlopsProfile:
    """FLOPs of the embedding, of every block and of every layer's readout, for `batch`, counted with
    FlopCounterMode on the model's modules during one forward pass (``adapter.hidden_states(batch)``):
    forward hooks on the blocks read the counter's running total as each block starts and ends, so the
    embedding is everything before block 1, and block l what it adds. The readout of every layer is counted
    on its head inputs, one call per layer.

    model: our ViT, a timm ViT/DeiT, a Hugging Face encoder or causal LM, or their adapter.
    batch: what the adapter reads (images, texts, a tokenised dict); FLOPs depend on its size and length.
    reader: what reads the layers: None for the shared head, or an ExitHeads (see `per_layer_logits`).
    -> `FlopsProfile` (batch totals; per-sample costs divide by batch_size, the samples the head reads:
    the inputs of a classifier; for a causal LM the token positions that have a next token, while the
    blocks run on every position).
    """
    from .inference import _reader

    adapter = adapt(model)
    reader = _reader(adapter, reader) if adapter.has_readout else None
    blocks = adapter.block_modules()
    starts, block_flops = [None] * len(blocks), [None] * len(blocks)
    with torch.no_grad(), eval_mode(adapter.model), flop_counter() as counter:
        def enter(i):
            def hook(module, args):
                starts[i] = counter.get_total_flops()
            return hook

        def leave(i):
            def hook(module, args, output):
                block_flops[i] = int(counter.get_total_flops() - starts[i])
            return hook

        handles = [b.register_forward_pre_hook(enter(i)) for i, b in enumerate(blocks)]
        handles += [b.register_forward_hook(leave(i)) for i, b in enumerate(blocks)]
        try:
            hidden = adapter.hidden_states(batch)
        finally:
            for handle in handles:
                handle.remove()
    if any(f is None for f in block_flops):
        raise ValueError(f"{adapter.name}: not every block ran in the forward pass; cannot attribute FLOPs")
    head_flops = [0] * len(blocks)
    with torch.no_grad():  # a head that normalises tokens before pooling computes them here: no autograd graph
        vectors = adapter.head_inputs(hidden)  # (L, n, d)
    if reader is not None:
        with torch.no_grad(), eval_mode(adapter.model):
            head_flops = [_count(lambda: reader(vectors[l], l + 1))[0] for l in range(len(blocks))]
    return FlopsProfile(int(starts[0]), block_flops, head_flops, vectors.shape[1], adapter.name)
