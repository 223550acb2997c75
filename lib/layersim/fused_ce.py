"""A linear layer fused with cross-entropy, computed in chunks of rows, so that a large vocabulary never
materialises the full (tokens, V) logits (in the spirit of Liger-Kernel's and Cut Cross-Entropy's fused
linear cross-entropy, in plain PyTorch: the forward keeps only the loss, the backward recomputes each
chunk's logits).

The aligned loss of a language model applies the LM head to every layer: done naively it holds
(L, tokens, V) logits and their gradients -- gigabytes at GPT-2's shape (12 x 1,024 x 50,257 floats is
2.5 GB, twice with gradients). Here each chunk of rows is projected, its loss and the gradient of that
loss with respect to the chunk's inputs and the weight are formed at once, and the chunk's logits are
freed before the next one: peak memory grows with one chunk of logits, not with tokens x V (and never
with L, since the layers are processed one after another).

>>> loss = linear_cross_entropy(h, lm_head.weight, None, targets)          # mean over non-ignored rows
>>> loss.backward()                                                        # grads of h and the weight

Shapes: h (N, d) inputs of the linear layer (already normed where the model norms); weight (V, d);
bias (V,) or None; targets (N,) int64 in [0, V) or `ignore_index`.
Numerics: logits, log-sum-exp and gradients are computed in float32 (float64 for float64 inputs) whatever
the input dtype (bf16 training keeps float32 accuracy for the loss); gradients come back in the inputs'
dtypes.
"""
from __future__ import annotations

import torch

from .validate import real_number, whole_number

# rows per chunk: about this many logits at once (64 MB of float32), whatever the vocabulary
CHUNK_ELEMENTS = 2 ** 24
IGNORE_INDEX = -100


def _check(hidden, weight, bias, targets, chunk_rows, ignore_index):
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        raise ValueError(f"hidden must be a (N, d) tensor, got {tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight must be (V, {hidden.shape[1]}) to read hidden of width {hidden.shape[1]}, "
                         f"got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.shape != (hidden.shape[0],) or targets.is_floating_point():
        raise ValueError(f"targets must be a ({hidden.shape[0]},) integer tensor (one per row of hidden), got "
                         f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}")
    valid = targets != ignore_index
    if valid.any() and (targets[valid].min() < 0 or targets[valid].max() >= weight.shape[0]):
        raise ValueError(f"targets must lie in [0, {weight.shape[0]}) (or be {ignore_index} to ignore a row); "
                         f"got values from {int(targets[valid].min())} to {int(targets[valid].max())}: does the "
                         "tokenizer's vocabulary match the model's?")
    chunk_rows = whole_number(chunk_rows, "chunk_rows", low=1)


def _rows(hidden, targets, rows, dtype, ignore_index: int):
    """One chunk of rows in the compute dtype; the rows of ignored targets are zeroed, so that a NaN or Inf
    there (padding) never reaches the loss or the gradients, as F.cross_entropy ignores those rows."""
    h, t = hidden[rows].to(dtype), targets[rows]
    return torch.where((t != ignore_index)[:, None], h, torch.zeros((), dtype=dtype, device=h.device)), t


def _chunk_terms(h, t, w, b, ignore_index: int, label_smoothing: float):
    """One chunk: logits (rows, V), log-sum-exp, validity mask, safe targets, and the per-row losses."""
    logits = h @ w.T
    if b is not None:
        logits += b
    valid = t != ignore_index
    safe_t = torch.where(valid, t, torch.zeros_like(t))
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, safe_t[:, None])[:, 0]
    if label_smoothing:  # target distribution (1 - eps) onehot + eps / V
        picked = (1.0 - label_smoothing) * picked + label_smoothing * logits.mean(-1)
    return logits, lse, valid, safe_t, (lse - picked) * valid


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum over rows of CE(hidden @ weight.T + bias, targets).

    Forward keeps only the loss; backward recomputes each chunk's logits and forms the chunk's gradients
    (as Cut Cross-Entropy does): what is saved between the two is the inputs themselves, so calling it for
    L layers with one shared weight never holds L weight-sized gradients or L x tokens x V logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows: int, ignore_index: int, label_smoothing: float):
        dtype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        w, b = weight.to(dtype), (bias.to(dtype) if bias is not None else None)
        total = torch.zeros((), dtype=dtype, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, t = _rows(hidden, targets, rows, dtype, ignore_index)
            total += _chunk_terms(h, t, w, b, ignore_index, label_smoothing)[4].sum()
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), targets)
        ctx.has_bias, ctx.settings = bias is not None, (chunk_rows, ignore_index, label_smoothing, dtype)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        hidden, weight, bias, targets = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        chunk_rows, ignore_index, label_smoothing, dtype = ctx.settings
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        w, b = weight.to(dtype), (bias.to(dtype) if bias is not None else None)
        scale = grad_output.to(dtype)
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros_like(w) if need_w else None
        grad_bias = torch.zeros_like(b) if (need_b and b is not None) else None
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, t = _rows(hidden, targets, rows, dtype, ignore_index)
            logits, lse, valid, safe_t, _ = _chunk_terms(h, t, w, b, ignore_index, label_smoothing)
            # d loss / d logits = softmax - target distribution, zero for ignored rows (in the logits' memory)
            grad = logits.sub_(lse[:, None]).exp_()
            grad[torch.arange(grad.shape[0], device=grad.device), safe_t] -= 1.0 - label_smoothing
            if label_smoothing:
                grad -= label_smoothing / grad.shape[1]
            grad *= valid[:, None] * scale
            if grad_hidden is not None:
                grad_hidden[rows] = (grad @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.addmm_(grad.T, h)
            if grad_bias is not None:
                grad_bias += grad.sum(0)
            del logits, grad
        return (grad_hidden, grad_weight.to(weight.dtype) if grad_weight is not None else None,
                grad_bias.to(bias.dtype) if grad_bias is not None else None, None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, *, chunk_rows: int | None = None,
                         ignore_index: int = IGNORE_INDEX, reduction: str = "mean",
                         label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` against `targets`, without materialising the logits.

    hidden (N, d), weight (V, d), bias (V,) or None, targets (N,) -> a scalar: the mean over rows whose
    target is not `ignore_index` (reduction="mean"), or their sum ("sum"). Equal to
    ``F.cross_entropy(F.linear(hidden, weight, bias), targets, label_smoothing=...)`` (values and gradients)
    up to float rounding. Memory: one chunk of `chunk_rows` x V float32 logits at a time (default: about
    `CHUNK_ELEMENTS` logits), plus the weight's gradient during backward. The backward recomputes the
    logits (4 N d V multiply-adds in all, against 3 N d V for the naive loss).
    """
    if chunk_rows is None and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        chunk_rows = max(1, CHUNK_ELEMENTS // max(1, weight.shape[0]))
    _check(hidden, weight, bias, targets, chunk_rows, ignore_index)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    label_smoothing = real_number(label_smoothing, "label_smoothing", low=0.0, high=1.0, high_open=True)
    total = _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_rows, ignore_index, float(label_smoothing))
    if reduction == "sum":
        return total
    count = (targets != ignore_index).sum()
    if int(count) == 0:
        raise ValueError("every target is ignore_index: there is nothing to compute a mean loss over")
    return total / count
