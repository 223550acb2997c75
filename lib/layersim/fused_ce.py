"""A linear layer fused with cross-entropy, computed in chunks of rows, so that a large vocabulary never
materialises the full (tokens, V) logits (in the spirit of Liger-Kernel's and Cut Cross-Entropy's fused
linear cross-entropy, in plain PyTorch). As Liger-Kernel does, the gradients are formed during the forward
pass, from the one time each chunk's logits exist: 3 N d V multiply-adds, as for the naive loss.

The aligned loss of a language model applies the LM head to every layer: done naively it holds
(L, tokens, V) logits and their gradients -- gigabytes at GPT-2's shape (12 x 1,024 x 50,257 floats is
2.5 GB, twice with gradients). Here each chunk of rows is projected, its loss and the gradient of that
loss with respect to the chunk's inputs and the weight are formed at once, and the chunk's logits are
freed before the next one: peak memory grows with one chunk of logits, not with tokens x V. All layers
read by one shared head go through one call (`segments_cross_entropy`, one segment per layer), so that one
weight-sized gradient is kept, not one per layer.

>>> loss = linear_cross_entropy(h, lm_head.weight, None, targets)          # mean over non-ignored rows
>>> loss.backward()                                                        # grads of h and the weight

Shapes: h (N, d) inputs of the linear layer (already normed where the model norms); weight (V, d);
bias (V,) or None; targets (N,) int64 in [0, V) or `ignore_index`.
Numerics: logits, log-sum-exp and gradients are computed in float32 (float64 for float64 inputs) whatever
the input dtype (bf16 training keeps float32 accuracy for the loss); gradients come back in the inputs'
dtypes. Under ``torch.no_grad()`` (evaluation) or for inputs that need no gradient, none is formed.
"""
from __future__ import annotations

import torch

from .validate import (ArgumentTypeError, check_labels, describe, layer_weights, real_number, same_device, tensor_arg,
                       whole_number)

# rows per chunk: about this many logits at once (64 MB of float32), whatever the vocabulary
CHUNK_ELEMENTS = 2 ** 24
IGNORE_INDEX = -100


def _check(hidden, weight, bias, targets, chunk_rows, ignore_index) -> None:
    """One segment's arguments, with the one set of checks (`layersim.validate`): a sentence naming the argument."""
    tensor_arg(hidden, "hidden", ndim=2, kind="float", nonempty=False, what="(N, d) inputs of the linear layer")
    d = hidden.shape[1]
    tensor_arg(weight, "weight", ndim=2, kind="float", what=f"a (V, {d}) weight (to read hidden of width {d})")
    if weight.shape[1] != d:
        raise ValueError(f"weight must be (V, {d}) to read hidden of width {d}, got {tuple(weight.shape)}")
    if bias is not None:
        tensor_arg(bias, "bias", ndim=1, kind="float", what=f"a ({weight.shape[0]},) bias or None")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    tensor_arg(targets, "targets", nonempty=False, what=f"({hidden.shape[0]},) integer class indices, one per row of "
               "hidden")
    same_device(hidden=hidden, weight=weight, bias=bias, targets=targets)
    check_labels(targets, hidden.shape[0], weight.shape[0], name="targets", ignore_index=ignore_index,
                 where=f"V = {weight.shape[0]} rows of the weight: does the tokenizer's vocabulary match the model's?")
    whole_number(chunk_rows, "chunk_rows", low=1)


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


def _logit_grad(logits, lse, valid, safe_t, label_smoothing: float, scale):
    """d loss / d logits of one chunk, times `scale`: softmax - target distribution, zero for ignored rows
    (in the logits' memory)."""
    grad = logits.sub_(lse[:, None]).exp_()
    grad[torch.arange(grad.shape[0], device=grad.device), safe_t] -= 1.0 - label_smoothing
    if label_smoothing:
        grad -= label_smoothing / grad.shape[1]
    grad *= valid[:, None] * scale
    return grad


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_g weights[g] * total_g / divisor, total_g = sum over the rows of segment g of
    CE(hidden_g @ weight.T + bias, targets_g); also returns the (G,) totals (no gradient).

    As Liger-Kernel's fused linear cross-entropy: when gradients are needed, each chunk's logits are formed
    once, in the forward pass, and turned at once into the chunk's gradients with respect to its rows, the
    weight and the bias (scaled by the segment's weight / divisor, before the products, as autograd would);
    what is saved for backward is those gradients (hidden-sized and weight-sized), and backward only scales
    them by the upstream gradient (a no-op when it is 1, as in training). One call reads any number of
    segments (layers) with one shared weight: one weight-sized gradient, never one per layer. The segments'
    weight gradients are summed from the last segment to the first (each chunk by chunk), the order in
    which autograd sums the gradients of separate calls, so that one call gives the same bits as one call
    per layer did.
    """

    @staticmethod
    def forward(ctx, weights, divisor, weight, bias, settings, *segments):
        chunk_rows, ignore_index, label_smoothing, need = settings
        G = len(segments) // 2
        hiddens, targets = segments[:G], segments[G:]
        dtype = torch.promote_types(torch.promote_types(hiddens[0].dtype, weight.dtype), torch.float32)
        w, b = weight.to(dtype), (bias.to(dtype) if bias is not None else None)
        scales = weights.to(dtype) / divisor
        need_h = [need and ctx.needs_input_grad[5 + g] for g in range(G)]
        need_w, need_b = need and ctx.needs_input_grad[2], need and bias is not None and ctx.needs_input_grad[3]
        totals, grad_hiddens = [None] * G, [None] * G
        grad_weight = grad_bias = None
        for g in reversed(range(G)):
            hidden = hiddens[g]
            total = torch.zeros((), dtype=dtype, device=hidden.device)
            gw = torch.zeros_like(w) if need_w else None
            gb = torch.zeros_like(b) if need_b else None
            gh = torch.empty_like(hidden) if need_h[g] else None
            for start in range(0, hidden.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                h, t = _rows(hidden, targets[g], rows, dtype, ignore_index)
                logits, lse, valid, safe_t, losses = _chunk_terms(h, t, w, b, ignore_index, label_smoothing)
                total += losses.sum()
                if gh is None and gw is None and gb is None:
                    continue
                grad = _logit_grad(logits, lse, valid, safe_t, label_smoothing, scales[g])
                if gh is not None:
                    gh[rows] = (grad @ w).to(hidden.dtype)
                if gw is not None:
                    gw.addmm_(grad.T, h)
                if gb is not None:
                    gb += grad.sum(0)
                del logits, grad
            totals[g], grad_hiddens[g] = total, gh
            grad_weight = gw if grad_weight is None else grad_weight.add_(gw)
            grad_bias = gb if grad_bias is None else grad_bias.add_(gb)
        totals = torch.stack(totals)
        value = (weights.to(dtype) * (totals / divisor)).sum()
        ctx.G, ctx.dtypes = G, (weight.dtype, bias.dtype if bias is not None else None)
        ctx.grads = (grad_weight, grad_bias, grad_hiddens)
        ctx.mark_non_differentiable(totals)
        return value, totals

    @staticmethod
    def backward(ctx, grad_value, _grad_totals):
        if ctx.grads is None:
            raise RuntimeError("the fused cross-entropy's gradients were formed in its forward pass and have been "
                               "handed out already: it cannot be differentiated twice (retain_graph)")
        (grad_weight, grad_bias, grad_hiddens), ctx.grads = ctx.grads, None  # handed over, not copied
        if not bool(grad_value == 1):  # training's loss.backward(): the saved gradients are the gradients
            scale = lambda g: None if g is None else g * grad_value.to(g.dtype)  # noqa: E731
            grad_weight, grad_bias = scale(grad_weight), scale(grad_bias)
            grad_hiddens = [scale(g) for g in grad_hiddens]
        weight_dtype, bias_dtype = ctx.dtypes
        grad_weight = grad_weight.to(weight_dtype) if grad_weight is not None else None
        grad_bias = grad_bias.to(bias_dtype) if grad_bias is not None else None
        return (None, None, grad_weight, grad_bias, None, *grad_hiddens, *([None] * ctx.G))


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, *, chunk_rows: int | None = None,
                         ignore_index: int = IGNORE_INDEX, reduction: str = "mean",
                         label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` against `targets`, without materialising the logits.

    hidden (N, d), weight (V, d), bias (V,) or None, targets (N,) -> a scalar: the mean over rows whose
    target is not `ignore_index` (reduction="mean"), or their sum ("sum"). Equal to
    ``F.cross_entropy(F.linear(hidden, weight, bias), targets, label_smoothing=...)`` (values and gradients)
    up to float rounding. Memory: one chunk of `chunk_rows` x V float32 logits at a time (default: about
    `CHUNK_ELEMENTS` logits), plus the gradients of hidden and weight, formed during the forward pass when
    autograd needs them (3 N d V multiply-adds in all, as the naive loss; N d V without gradients).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    one = torch.ones(1, dtype=torch.float32)
    if reduction == "sum":
        return segments_cross_entropy([hidden], weight, bias, [targets], one, 1, chunk_rows=chunk_rows,
                                      ignore_index=ignore_index, label_smoothing=label_smoothing)[0]
    return segments_cross_entropy([hidden], weight, bias, [targets], one, None, chunk_rows=chunk_rows,
                                  ignore_index=ignore_index, label_smoothing=label_smoothing)[0]


def segments_cross_entropy(hiddens, weight: torch.Tensor, bias: torch.Tensor | None, targets, weights: torch.Tensor,
                           divisor, *, chunk_rows: int | None = None, ignore_index: int = IGNORE_INDEX,
                           label_smoothing: float = 0.0) -> tuple:
    """Several segments of rows read by one linear layer, each with its own loss weight, in one fused call.

    hiddens: G tensors (n_g, d); targets: G tensors (n_g,); weight (V, d), bias (V,) or None; weights (G,)
    finite, >= 0; divisor: a positive number or 0-dim integer tensor, or None for the count of non-ignored
    targets (a mean; an error when every target is ignored). Returns ``(loss, totals)``: loss = sum_g weights[g]
    * totals[g] / divisor, a scalar with its gradient, and totals (G,) the summed cross-entropy of each
    segment's rows (no gradient). The aligned loss reads its layers as segments (``layersim.losses``): one
    weight-sized gradient for all of them.
    """
    for name, value in (("hiddens", hiddens), ("targets", targets)):
        if isinstance(value, torch.Tensor) or not isinstance(value, (list, tuple)):
            raise ArgumentTypeError(f"{name} must be a list of tensors (one per segment), got {type(value).__name__}")
    hiddens, targets = list(hiddens), list(targets)
    if not hiddens or len(hiddens) != len(targets):
        raise ValueError(f"expected one targets tensor per hidden tensor (at least one), got {len(hiddens)} "
                         f"hidden and {len(targets)} targets")
    if chunk_rows is None and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        chunk_rows = max(1, CHUNK_ELEMENTS // max(1, weight.shape[0]))
    ignore_index = whole_number(ignore_index, "ignore_index")
    for h, t in zip(hiddens, targets):
        _check(h, weight, bias, t, chunk_rows, ignore_index)
    weights = layer_weights(weights, len(hiddens), "weights", what="segment weights", dtype=None, not_all_zero=False)
    if divisor is None:
        divisor = sum((t != ignore_index).sum() for t in targets[1:]) + (targets[0] != ignore_index).sum()
        if int(divisor) == 0:
            raise ValueError("every target is ignore_index (or there are no rows): there is nothing to compute a mean "
                             "loss over")
    elif isinstance(divisor, torch.Tensor):
        if divisor.dim() != 0 or divisor.is_complex() or divisor.dtype == torch.bool or not bool(divisor > 0):
            raise ValueError(f"divisor must be a positive number or 0-dim tensor, got {describe(divisor)}")
    else:
        real_number(divisor, "divisor", low=0.0, low_open=True, what="a positive number or 0-dim tensor")
    label_smoothing = real_number(label_smoothing, "label_smoothing", low=0.0, high=1.0, high_open=True)
    tensors = [*hiddens, *targets]
    need = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in [weight, bias, *hiddens])
    settings = (chunk_rows, ignore_index, float(label_smoothing), need)
    with torch.autocast(hiddens[0].device.type, enabled=False):  # float32 products under bf16 autocast too
        return _LinearCrossEntropy.apply(weights.to(hiddens[0].device), divisor, weight, bias, settings, *tensors)
