"""Training objectives over every layer: standard, aligned (one shared classifier) and multi-exit.

Each objective is a weighted sum over layers l = 1..L of the cross-entropy of a *reader* applied to the
pooled representation of layer l (PAPER.md, "Aligned loss" and "Multi-exit baseline"):

    loss = sum_l  w_l * CE(reader_l(v_l), y)

- **standard**: w = (0, ..., 0, 1): only the model's own prediction (layer L) is trained.
- **aligned**: the model's own last-layer classifier (incl. its final norm) reads every layer,
  w_l = 2l / (L(L+1)) by default (`aligned_weights`); "uniform" and user-given weights are options.
- **multi_exit**: layers 1..L-1 have a freshly initialised head each, layer L the model's own head,
  w_l = 1/L.

**Sampled aligned loss** (``layer_sampling``, `layer_draws`): the aligned loss reads the vocabulary head at
every layer, which at GPT-2's shape costs several standard steps. An unbiased estimator reads layer L (weight
w_L) and one more layer per token or per step, drawn from the other layers' weights:

- "token": each row i also reads one layer j_i in 1..L-1 drawn with probability q_j = w_j / W (W = w_1 + ...
  + w_{L-1}, i.e. 1 - w_L for weights that sum to 1), its cross-entropy weighted W. Then
  E[loss] = w_L CE_L + W sum_j q_j CE_j = sum_l w_l CE_l, and likewise the gradient (the draws do not depend
  on the parameters): the aligned loss and its gradient, in expectation, at about one extra head per step.
  With ``sampled_fraction`` p < 1 only a random p of the rows (drawn without replacement) read their sampled
  layer, weighted W / p: still unbiased, at p extra heads per step (more variance).
- "step": one layer j for every row of the step, drawn as above (the same expectation, more variance).
- "rotation": LayerSkip's rotational early-exit curriculum (Elhoushi et al. 2024): at step t the early layers
  j with (j - 1 - t) mod R = 0 are read (R = L - 1 by default: one early layer per step, in turn 1, 2, ...,
  L-1, 1, ...), each weighted R w_j, beside layer L (w_L). Deterministic, so *not* unbiased at a given step:
  the mean over any R consecutive steps (at fixed parameters) is the aligned loss exactly. LayerSkip itself
  rescales the losses of the enabled layers to sum to 1 at every step, which is not the aligned loss even
  on average; this scaling is the one whose cycle average is.

Layers whose weight is 0 are not read out at all: no logits, no gradient through them (so "aligned with
all weight on the last layer" *is* the standard loss, to the bit).

Two levels, both usable in any training loop:

- plain functions on tensors, for any model: `readout_cross_entropy(vectors (L, n, d), reader, targets,
  weights)`, `layer_cross_entropy(logits (L, n, C), targets)`, `weighted_cross_entropy(...)`; the sampled
  loss as a plan of which layer reads each row (`layer_draws`) and its loss (`draws_cross_entropy`, which
  `readout_cross_entropy` uses with every layer: the one place where the objectives form logits);
- objectives on a layersim adapter (our ViT, timm ViT/DeiT, Hugging Face encoders and causal LMs), which
  only use the adapter interface (``pool``, ``readout_pooling``, ``targets``, ``head_inputs``, ``reader``,
  and for multi-exit an ``ExitHeads``): `StandardLoss`, `AlignedLoss`, `MultiExitLoss`, built by `make_objective`.

>>> hidden = adapter.hidden_states(images)
>>> out = AlignedLoss(adapter.num_layers)(adapter, hidden, labels)
>>> out.loss.backward()            # out.per_layer: (L,) each layer's cross-entropy (NaN where w_l = 0)
>>> sampled = AlignedLoss(adapter.num_layers, layer_sampling="token")   # E[sampled loss] = the aligned loss
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from .validate import (ArgumentTypeError, check_labels, layer_weights, real_number, same_device, tensor_arg, to_tensor,
                       whole_number)

OBJECTIVES = ("standard", "aligned", "multi_exit")
LAYER_SAMPLING = ("none", "token", "step", "rotation")
WEIGHT_SCHEMES = ("linear", "uniform", "last")

Reader = Callable[[torch.Tensor, int], torch.Tensor]  # reader(v, layer) -> logits (layersim.models.readers)


# ---- layer weights -------------------------------------------------------------------------------------
def aligned_weights(num_layers: int, scheme: Union[str, Sequence[float], torch.Tensor] = "linear") -> torch.Tensor:
    """Loss weights lambda_1..lambda_L of the layers, an (L,) float32 tensor summing to 1.

    scheme:
      - "linear" (the paper's): lambda_l = 2l / (L(L+1)), growing linearly with depth;
      - "uniform": 1/L each (the multi-exit baseline's weights);
      - "last": (0, ..., 0, 1), i.e. the standard objective;
      - a sequence (or tensor) of L non-negative finite numbers, not all zero: normalised to sum to 1.
    """
    num_layers = whole_number(num_layers, "num_layers", low=1, what="a positive int")
    L = num_layers
    if isinstance(scheme, str):
        if scheme == "linear":
            return torch.arange(1, L + 1, dtype=torch.float64).mul(2.0 / (L * (L + 1))).float()
        if scheme == "uniform":
            return torch.full((L,), 1.0 / L)
        if scheme == "last":
            w = torch.zeros(L)
            w[-1] = 1.0
            return w
        raise ValueError(f"unknown weight scheme {scheme!r}: use one of {WEIGHT_SCHEMES} or a sequence of "
                         f"{L} non-negative weights")
    if scheme is None or isinstance(scheme, (bool, bytes)):
        raise ArgumentTypeError(f"weights must be a scheme name {WEIGHT_SCHEMES} or a sequence of {L} numbers, "
                                f"got {scheme!r}")
    w = layer_weights(scheme, L, "weights", dtype=torch.float64).cpu()
    return (w / float(w.sum())).float()


def objective_weights(objective: str, num_layers: int,
                      scheme: Union[str, Sequence[float], torch.Tensor, None] = None) -> torch.Tensor:
    """(L,) weights of an objective: standard -> "last", aligned -> `scheme` (default "linear"),
    multi_exit -> `scheme` (default "uniform", the baseline's 1/L)."""
    check_objective(objective)
    if objective == "standard":
        if scheme not in (None, "last"):
            raise ValueError(f"the standard objective trains the last layer only; layer weights {scheme!r} "
                             "only apply to objective 'aligned' or 'multi_exit'")
        return aligned_weights(num_layers, "last")
    default = "linear" if objective == "aligned" else "uniform"
    return aligned_weights(num_layers, default if scheme is None else scheme)


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


# ---- losses on tensors ---------------------------------------------------------------------------------
@dataclass
class LayerLoss:
    """loss: the weighted sum (a scalar with its graph); per_layer: (L,) detached cross-entropy of every
    layer, NaN for layers with weight 0 (not computed); weights: (L,) the weights used."""

    loss: torch.Tensor
    per_layer: torch.Tensor
    weights: torch.Tensor


def layer_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0,
                        ignore_index: int = -100) -> torch.Tensor:
    """(L, n, C) logits of n samples at L layers, (n,) class targets -> (L,) mean cross-entropy per layer.

    Samples whose target is `ignore_index` are left out of every mean (as in ``F.cross_entropy``). targets:
    an integer tensor on the logits' device, each in [0, C) or `ignore_index` (checked: a sentence, not a
    torch error). The logits' values are not checked: a NaN logit gives a NaN loss, which the training loop
    stops on.
    """
    logits = tensor_arg(logits, "logits", ndim=3, kind="float", what="(L, n, C) logits (layers, samples, classes)")
    L, n, C = logits.shape
    label_smoothing = real_number(label_smoothing, "label_smoothing", low=0.0, high=1.0, high_open=True)
    targets = _targets(targets, n, C, ignore_index, logits=logits)
    flat = F.cross_entropy(logits.reshape(L * n, C), targets.repeat(L), reduction="none",
                           label_smoothing=label_smoothing, ignore_index=ignore_index).view(L, n)
    kept = (targets != ignore_index).sum()
    if int(kept) == 0:
        raise ValueError("every target equals ignore_index: nothing to train on")
    return flat.sum(1) / kept


def _targets(targets, n: int, num_classes: int | None, ignore_index, **beside) -> torch.Tensor:
    """The (n,) integer targets tensor of a loss, each in [0, num_classes) or `ignore_index`, on the device of the
    tensor `beside` names (e.g. logits=...)."""
    ignore_index = whole_number(ignore_index, "ignore_index")
    targets = tensor_arg(targets, "targets", what=f"({n},) integer class indices", nonempty=False)
    same_device(**beside, targets=targets)
    return check_labels(targets, n, num_classes, name="targets", ignore_index=ignore_index)


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, *,
                           label_smoothing: float = 0.0, ignore_index: int = -100) -> torch.Tensor:
    """sum_l weights[l] * CE(logits[l], targets): (L, n, C), (n,), (L,) -> scalar. The weights must be L finite,
    non-negative numbers (a weight vector of another length is an error, never broadcast)."""
    per_layer = layer_cross_entropy(logits, targets, label_smoothing=label_smoothing, ignore_index=ignore_index)
    weights = layer_weights(weights, per_layer.shape[0], "weights", dtype=per_layer.dtype).to(per_layer.device)
    return (weights * per_layer).sum()


# above this many logits (samples x classes of one layer) a reader that ends in one linear layer is fused with
# the cross-entropy (layersim.fused_ce): a language model's vocabulary never materialises (tokens, V) at once
FUSE_ABOVE_ELEMENTS = 2 ** 22


def layer_loss(vectors: torch.Tensor, reader: Reader, layer: int, targets: torch.Tensor, *,
               label_smoothing: float = 0.0, ignore_index: int = -100, fused: bool | None = None) -> torch.Tensor:
    """The cross-entropy of `reader` on (n, d) head inputs of 1-based `layer` -> a scalar.

    When the reader's last step is one linear layer (``reader.linear(layer)``: our ViT, timm, causal LMs) and
    the logits would be large (`FUSE_ABOVE_ELEMENTS`; or ``fused=True``), the loss is a fused, chunked linear +
    cross-entropy (`layersim.fused_ce`): peak memory holds one chunk of logits, not n x C. Both paths give the
    same values and gradients up to float rounding. (The objectives read many layers at once:
    `draws_cross_entropy`.)
    """
    vectors = tensor_arg(vectors, "vectors", ndim=2, kind="float", what="(n, d) head inputs of one layer")
    layer = whole_number(layer, "layer", low=1, what="a layer number >= 1 (layers are numbered from 1)")
    if not callable(reader):
        raise ArgumentTypeError(f"reader must be callable as reader(v, layer), got {type(reader).__name__}")
    linear = reader.linear(layer) if hasattr(reader, "linear") else None
    if fused is None:
        fused = _fused_linear(reader, [layer], vectors.shape[0]) is not None
    if not fused:
        return layer_cross_entropy(reader(vectors, layer)[None], targets, label_smoothing=label_smoothing,
                                   ignore_index=ignore_index)[0]
    if linear is None:
        raise ValueError("fused=True needs a reader whose last step is one linear layer (reader.linear(layer))")
    from .fused_ce import linear_cross_entropy

    return linear_cross_entropy(reader.pre(vectors, layer), linear.weight, linear.bias, targets,
                                ignore_index=ignore_index, label_smoothing=label_smoothing)


def _check_vectors(vectors) -> torch.Tensor:
    vectors = tensor_arg(vectors, "vectors", kind="float", what="(L, n, d) head inputs (layers, samples, width)")
    if vectors.dim() < 3:
        raise ValueError(f"vectors must be (L, n, d) head inputs (layers, samples, width), got shape "
                         f"{tuple(vectors.shape)}")
    return vectors


def _check_readout(vectors: torch.Tensor, reader, weights) -> torch.Tensor:
    vectors = _check_vectors(vectors)
    if not callable(reader):
        raise ArgumentTypeError(f"reader must be callable as reader(v, layer), got {type(reader).__name__}")
    return layer_weights(weights, vectors.shape[0], "weights")


def _fused_linear(reader, layers, rows: int):
    """The one linear layer that ends the reader at every layer of `layers` when the loss is to be fused
    (logits of `rows` rows above `FUSE_ABOVE_ELEMENTS`), else None."""
    if not hasattr(reader, "linear"):
        return None
    linears = {id(reader.linear(layer)): reader.linear(layer) for layer in layers}
    linear = next(iter(linears.values()))
    if len(linears) != 1 or linear is None or rows * linear.out_features <= FUSE_ABOVE_ELEMENTS:
        return None
    return linear


def readout_cross_entropy(vectors: torch.Tensor, reader: Reader, targets: torch.Tensor, weights: torch.Tensor, *,
                          label_smoothing: float = 0.0, ignore_index: int = -100) -> LayerLoss:
    """The layer-wise objective on head inputs: sum_l weights[l] * CE(reader(vectors[l], l), targets).

    vectors: (L, n, d) one vector per sample and layer (layer-first; ``adapter.head_inputs(hidden)``).
    reader: ``reader(v, layer) -> logits`` for 1-based layers (``adapter.reader``, the shared last-layer
      classifier: aligned / standard; an `ExitHeads`: multi-exit; or any callable of that form).
    targets: (n,) class indices. weights: (L,) (see `aligned_weights`); layers with weight 0 are skipped.
    Returns a `LayerLoss`. Large logits (a vocabulary) go through the fused loss (`draws_cross_entropy`):
    the layers one reader reads with one linear layer in one call.
    """
    weights = _check_readout(vectors, reader, weights)
    layers, scales = layer_draws(weights, "none", vectors.shape[1])
    loss, means = draws_cross_entropy(vectors, reader, targets, layers, scales, label_smoothing=label_smoothing,
                                      ignore_index=ignore_index)
    per_layer = torch.full((vectors.shape[0],), math.nan)
    per_layer[layers[:, 0] - 1] = means
    return LayerLoss(loss, per_layer, weights)


def draws_cross_entropy(vectors: torch.Tensor, reader: Reader, targets: torch.Tensor, layers: torch.Tensor,
                        scales: torch.Tensor, *, label_smoothing: float = 0.0, ignore_index: int = -100) -> tuple:
    """The loss of S segments, each reading every sample at a layer of its own (a plan of `layer_draws`):

        loss = sum_s scales[s] * (1 / n') * sum_{i: layers[s, i] > 0} CE(reader(vectors[layers[s, i] - 1, i],
                                                                          layers[s, i]), targets[i])

    vectors (L, n, d), targets (n,), layers (S, n) 1-based, 0 where segment s does not read row i (each
    segment reads at least one row), scales (S,) >= 0; n' the count of targets that are not `ignore_index`.
    Returns ``(loss, means)``: loss a scalar with its graph, means (S,) the detached summed cross-entropy of
    each segment's rows over n' (its mean cross-entropy when it reads every row). The rows of a segment are
    read layer by layer (``reader.pre(v, l)``: each layer its own steps before the head's linear layer, e.g. no
    final norm below L) and, when the loss is fused (a vocabulary), all segments read by one linear layer go
    through one `segments_cross_entropy` call: one pass of the head over the rows, one weight-sized gradient.
    A large head that does not end in one linear layer (Gemma-2's soft cap) is read a chunk of rows at a time
    under checkpointing (`_checkpointed_sum`). Otherwise logits are formed per segment. A reader with another
    linear layer per layer (`ExitHeads`) makes one call per linear layer.
    """
    L, n = _check_vectors(vectors).shape[:2]
    if not callable(reader):
        raise ArgumentTypeError(f"reader must be callable as reader(v, layer), got {type(reader).__name__}")
    layers = tensor_arg(to_tensor(layers, "layers"), "layers", kind="integer", nonempty=False,
                        what=f"(S, {n}) 1-based layer numbers").long().cpu()
    scales = layer_weights(scales, None, "scales", what="segment scales", not_all_zero=False).cpu()
    if layers.dim() != 2 or layers.shape[1] != n or scales.shape != (layers.shape[0],):
        raise ValueError(f"expected layers (S, {n}) and scales (S,), got {tuple(layers.shape)} and "
                         f"{tuple(scales.shape)}")
    if layers.numel() and (int(layers.min()) < 0 or int(layers.max()) > L):
        raise ValueError(f"layers must be 1-based layer numbers in 1..{L} (0: the row is not read), got "
                         f"{layers.min()}..{layers.max()}")
    if layers.numel() and bool((layers == 0).all(1).any()):
        raise ValueError("a segment of layers reads no row (all 0): leave it out of the plan")
    targets = _targets(targets, n, None, ignore_index, vectors=vectors)
    label_smoothing = real_number(label_smoothing, "label_smoothing", low=0.0, high=1.0, high_open=True)
    count = (targets != ignore_index).sum()
    if int(count) == 0:
        raise ValueError("every target equals ignore_index: nothing to train on")
    segments = []  # per segment: [(layer, rows or None for all)]
    for row in layers:
        distinct = torch.unique(row).tolist()
        segments.append([(distinct[0], None)] if len(distinct) == 1 else
                        [(l, (row == l).nonzero()[:, 0].to(vectors.device)) for l in distinct if l > 0])

    def rows_of(segment, read):
        parts = [(read(vectors[l - 1], l), targets) if idx is None else (read(vectors[l - 1, idx], l), targets[idx])
                 for l, idx in segment]
        return (parts[0] if len(parts) == 1 else (torch.cat([p for p, _ in parts]), torch.cat([t for _, t in parts])))

    groups: dict = {}  # segments read by one fused linear layer, by that layer
    for s, segment in enumerate(segments):
        linear = _fused_linear(reader, [l for l, _ in segment], n)
        groups.setdefault(id(linear) if linear is not None else ("own", s), (linear, []))[1].append(s)
    values, means = [], torch.full((len(segments),), math.nan)
    from .fused_ce import segments_cross_entropy

    for linear, members in groups.values():
        if linear is not None:
            hidden, target = zip(*[rows_of(segments[s], reader.pre) for s in members])
            value, totals = segments_cross_entropy(hidden, linear.weight, linear.bias, target, scales[members], count,
                                                   ignore_index=ignore_index, label_smoothing=label_smoothing)
            means[members] = (totals.detach() / count).float().cpu()
        elif n * getattr(reader, "num_classes", 0) > FUSE_ABOVE_ELEMENTS:  # a large head that is not linear
            (s,) = members
            mean = _checkpointed_sum(vectors, targets, segments[s], reader, label_smoothing, ignore_index) / count
            value = scales[s].to(device=mean.device, dtype=mean.dtype) * mean
            means[s] = mean.detach().float().cpu()
        else:  # logits of the segment's rows, as `layer_loss` forms them
            (s,) = members
            logits, target = rows_of(segments[s], reader)
            kept = (target != ignore_index).sum()
            if int(kept) == 0:  # a thinned segment whose rows all have ignored targets
                mean = logits.sum() * 0.0
            else:
                mean = layer_cross_entropy(logits[None], target, label_smoothing=label_smoothing,
                                           ignore_index=ignore_index)[0]
                if int(kept) != int(count):  # a segment that reads some rows: its sum over all n' targets
                    mean = mean * (kept.to(mean.dtype) / count.to(mean.dtype))
            value = scales[s].to(device=mean.device, dtype=mean.dtype) * mean
            means[s] = mean.detach().float().cpu()
        values.append(value)
    return (values[0] if len(values) == 1 else torch.stack(values).sum()), means


def _checkpointed_sum(vectors, targets, segment, reader, label_smoothing: float, ignore_index: int) -> torch.Tensor:
    """The summed cross-entropy of a segment's rows read by a large head that does not end in one linear layer
    (Gemma-2's soft-capped vocabulary), a chunk of rows at a time (`layersim.models.readers.chunk_rows`) under
    activation checkpointing: one chunk's logits exist at once, in the forward and again in the backward pass
    (they are formed twice), never (rows, V) for the whole segment."""
    from torch.utils.checkpoint import checkpoint

    from .models.readers import chunk_rows

    def chunk_sum(v, t, layer):
        return F.cross_entropy(reader(v, layer), t, reduction="sum", ignore_index=ignore_index,
                               label_smoothing=label_smoothing)

    step, total = chunk_rows(reader.num_classes), None
    for layer, idx in segment:
        v, t = (vectors[layer - 1], targets) if idx is None else (vectors[layer - 1, idx], targets[idx])
        for start in range(0, v.shape[0], step):
            part = checkpoint(chunk_sum, v[start:start + step], t[start:start + step], layer, use_reentrant=False)
            total = part if total is None else total + part
    return total


def layer_draws(weights: torch.Tensor, sampling: str, rows: int, *, generator: torch.Generator | None = None,
                step: int = 0, period: int | None = None, fraction: float = 1.0) -> tuple:
    """Which layer reads each row, in segments: ``(layers (S, rows) 1-based, scales (S,))`` for
    `draws_cross_entropy`, an estimator of sum_l weights[l] CE_l (see the module docstring).

    weights: (L,) finite, >= 0, not all 0. sampling: "none" (every layer with a weight: the full loss, exactly),
    "token", "step" (draws from `generator`, default torch's global one) or "rotation" (from `step`, with
    `period` R, default L - 1). Layer L is read with its own weight whenever it has one; when the layers
    below L have no weight, every mode is the full loss.

    fraction ("token" only; 0 < fraction <= 1): only m = max(1, round(fraction * rows)) rows, drawn without
    replacement, read a sampled layer (the others 0: not read), weighted W rows / m. Each row is read with
    probability m / rows, so the estimator stays unbiased, at 1 + m / rows readouts per step instead of 2 (and
    more variance). fraction 1 draws exactly as before (no extra random numbers).
    """
    if sampling not in LAYER_SAMPLING:
        raise ValueError(f"unknown layer sampling {sampling!r}; choose one of {', '.join(LAYER_SAMPLING)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    weights = layer_weights(weights, None, "weights").cpu()
    rows = whole_number(rows, "rows", low=1)
    fraction = real_number(fraction, "fraction", low=0.0, high=1.0, low_open=True)
    if fraction != 1.0 and sampling != "token":
        raise ValueError(f"fraction={fraction} thins the per-token draws: it needs sampling 'token', not {sampling!r}")
    L = weights.numel()
    early, rest = weights[:-1], weights[:-1].sum()
    full = lambda ls: torch.tensor(ls)[:, None].expand(len(ls), rows)  # noqa: E731  (one layer per segment)
    if sampling == "none" or float(rest) == 0.0:
        chosen = [l for l in range(1, L + 1) if float(weights[l - 1]) > 0]
        return full(chosen), weights[[l - 1 for l in chosen]]
    last = ([full([L])], [weights[-1:]]) if float(weights[-1]) > 0 else ([], [])
    if sampling == "rotation":
        period = L - 1 if period is None else whole_number(period, "period", low=1)
        on = [j for j in range(1, L) if (j - 1 - whole_number(step, "step", low=0)) % period == 0 and early[j - 1] > 0]
        extra = ([full(on)], [period * early[[j - 1 for j in on]]]) if on else ([], [])
    else:
        count = rows if sampling == "token" else 1
        j = torch.multinomial(early / rest, count, replacement=True, generator=generator) + 1
        extra = ([j.expand(rows)[None]], [rest[None]])
        if fraction < 1.0:
            m = max(1, round(fraction * rows))
            thinned = torch.zeros(rows, dtype=j.dtype)
            keep = torch.randperm(rows, generator=generator)[:m]
            thinned[keep] = j[keep]
            extra = ([thinned[None]], [rest[None] * (rows / m)])
    layers, scales = last[0] + extra[0], last[1] + extra[1]
    return torch.cat(layers), torch.cat(scales)


def draw_seed(seed: int, step: int, micro: int = 0) -> int:
    """The seed of the layer draws of (run seed, optimizer step, micro-batch): their own stream (4), apart from
    the training loop's data order, augmentation and dropout."""
    seed, step, micro = (whole_number(v, name, low=0) for v, name in ((seed, "seed"), (step, "step"), (micro, "micro")))
    return int(np.random.SeedSequence([seed, 4, step, micro]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ---- objectives on adapters ----------------------------------------------------------------------------
class LayerwiseObjective(nn.Module):
    """Base class: ``objective(adapter, hidden, labels) -> LayerLoss`` for any layersim adapter.

    hidden: the ``Hidden`` returned by ``adapter.hidden_states(batch)``; labels: (B,) class labels (ignored
    by a causal LM, whose targets are the next tokens). The vectors read are what the model's head reads of
    every layer (``adapter.head_inputs(hidden)``), the targets ``adapter.targets(hidden, labels)``. A subclass says which reader reads the layers.
    """

    name = "?"

    def __init__(self, weights: torch.Tensor, *, label_smoothing: float = 0.0):
        super().__init__()
        label_smoothing = real_number(label_smoothing, "label_smoothing", low=0.0, high=1.0, high_open=True)
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32), persistent=False)
        self.label_smoothing = float(label_smoothing)

    @property
    def num_layers(self) -> int:
        return self.weights.numel()

    def reader(self, adapter):
        """What reads every layer: the model's own last-layer classifier (``adapter.reader``)."""
        return adapter.reader

    def set_draw(self, seed: int, step: int, micro: int = 0) -> None:
        """Where the random draws of the next call come from (run seed, optimizer step, micro-batch); the
        training loop says so before every micro-batch. Objectives that draw nothing ignore it."""

    def forward(self, adapter, hidden, labels) -> LayerLoss:
        if adapter.num_layers != self.num_layers:
            raise ValueError(f"this {self.name} objective was built for {self.num_layers} layers, the model has "
                             f"{adapter.num_layers}")
        vectors = adapter.head_inputs(hidden)
        targets = adapter.targets(hidden, labels)
        return readout_cross_entropy(vectors, self.reader(adapter), targets, self.weights,
                                     label_smoothing=self.label_smoothing)


class StandardLoss(LayerwiseObjective):
    """Cross-entropy of the model's own prediction (layer L) only."""

    name = "standard"

    def __init__(self, num_layers: int, *, label_smoothing: float = 0.0):
        super().__init__(aligned_weights(num_layers, "last"), label_smoothing=label_smoothing)


class AlignedLoss(LayerwiseObjective):
    """The model's own last-layer classifier (with its final norm) on every layer, weighted by `scheme`
    (default lambda_l = 2l / (L(L+1)); see `aligned_weights`).

    layer_sampling: "none" (every layer) or an estimator that reads layer L and one more layer per token
    ("token"), per step ("step") or in turn ("rotation"; see the module docstring and `layer_draws`).
    sampled_fraction ("token" only): the share of the rows that read their sampled layer (`layer_draws`'s
    fraction). The
    draws of a call come from ``set_draw(seed, step, micro)`` (the training loop: the same draws on a resumed
    run); without it, from (`seed`, the number of calls so far, 0). "step" and "rotation" depend on the step
    only, so every micro-batch and process of a step reads the same layer. ``per_layer`` of the result holds
    the layers read in full (layer L; the step's layer), NaN for the others.
    """

    name = "aligned"

    def __init__(self, num_layers: int, scheme: Union[str, Sequence[float], torch.Tensor] = "linear", *,
                 label_smoothing: float = 0.0, layer_sampling: str = "none", sampled_fraction: float = 1.0,
                 seed: int = 0):
        super().__init__(aligned_weights(num_layers, scheme), label_smoothing=label_smoothing)
        if layer_sampling not in LAYER_SAMPLING:
            raise ValueError(f"unknown layer sampling {layer_sampling!r}; choose one of {', '.join(LAYER_SAMPLING)}")
        self.layer_sampling, self.seed = layer_sampling, whole_number(seed, "seed", low=0)
        self.sampled_fraction = real_number(sampled_fraction, "sampled_fraction", low=0.0, high=1.0, low_open=True)
        if self.sampled_fraction != 1.0 and layer_sampling != "token":
            raise ValueError(f"sampled_fraction={sampled_fraction} thins the per-token draws: it needs "
                             f"layer_sampling='token', not {layer_sampling!r}")
        self._draw, self._calls = None, 0

    def set_draw(self, seed: int, step: int, micro: int = 0) -> None:
        self._draw = (seed, step, micro)

    def forward(self, adapter, hidden, labels) -> LayerLoss:
        if self.layer_sampling == "none":
            return super().forward(adapter, hidden, labels)
        seed, step, micro = self._draw if self._draw is not None else (self.seed, self._calls, 0)
        self._draw, self._calls = None, self._calls + 1
        if adapter.num_layers != self.num_layers:
            raise ValueError(f"this aligned objective was built for {self.num_layers} layers, the model has "
                             f"{adapter.num_layers}")
        vectors, targets = adapter.head_inputs(hidden), adapter.targets(hidden, labels)
        generator = torch.Generator().manual_seed(draw_seed(seed, step, micro if self.layer_sampling == "token" else 0))
        layers, scales = layer_draws(self.weights, self.layer_sampling, vectors.shape[1], generator=generator,
                                     step=step, fraction=self.sampled_fraction)
        loss, means = draws_cross_entropy(vectors, adapter.reader, targets, layers, scales,
                                          label_smoothing=self.label_smoothing)
        per_layer = torch.full((self.num_layers,), math.nan)
        for row, mean in zip(layers, means):
            if bool((row == row[0]).all()):
                per_layer[int(row[0]) - 1] = mean
        return LayerLoss(loss, per_layer, self.weights.cpu())


class MultiExitLoss(LayerwiseObjective):
    """One head per layer (an `ExitHeads`: layers 1..L-1 their own, layer L the model's head),
    weighted 1/L by default. The heads are a submodule, so ``objective.parameters()`` includes them."""

    name = "multi_exit"

    def __init__(self, heads: nn.Module, num_layers: int, scheme: Union[str, Sequence[float], torch.Tensor] = "uniform",
                 *, label_smoothing: float = 0.0):
        super().__init__(aligned_weights(num_layers, scheme), label_smoothing=label_smoothing)
        from .models import ExitHeads

        if not isinstance(heads, ExitHeads):
            raise TypeError(f"heads must be an ExitHeads, got {type(heads).__name__}")
        self.heads = heads

    def reader(self, adapter):
        return self.heads


def make_objective(objective: str, adapter, *, weights: Union[str, Sequence[float], None] = None,
                   heads: nn.Module | None = None, label_smoothing: float = 0.0, layer_sampling: str = "none",
                   sampled_fraction: float = 1.0, seed: int = 0) -> LayerwiseObjective:
    """The objective named `objective` ("standard" | "aligned" | "multi_exit") for `adapter`.

    weights: the layer weights (see `aligned_weights`; default linear for aligned, uniform for multi_exit).
    heads: the exit heads of a multi-exit model (default ``ExitHeads.for_adapter(adapter)``: fresh heads,
    or for our ViT built with ``multi_exit=True`` its own). layer_sampling, sampled_fraction, seed: the aligned
    objective's estimator (see `AlignedLoss`); only "none" (and 1) for the others.
    """
    from .models import LayerAdapter

    check_objective(objective)
    if not isinstance(adapter, LayerAdapter):
        raise ArgumentTypeError(f"adapter must be a layersim adapter (layersim.models.adapt(model)), got "
                                f"{type(adapter).__name__}")
    if layer_sampling != "none" and objective != "aligned":
        raise ValueError(f"layer_sampling={layer_sampling!r} estimates the aligned loss; objective {objective!r} "
                         "takes layer_sampling='none'")
    if sampled_fraction != 1.0 and objective != "aligned":
        raise ValueError(f"sampled_fraction={sampled_fraction} thins the aligned loss's draws; objective "
                         f"{objective!r} takes sampled_fraction=1")
    L = adapter.num_layers
    w = objective_weights(objective, L, weights)
    if objective == "standard":
        return StandardLoss(L, label_smoothing=label_smoothing)
    if objective == "aligned":
        return AlignedLoss(L, w, label_smoothing=label_smoothing, layer_sampling=layer_sampling,
                           sampled_fraction=sampled_fraction, seed=seed)
    if heads is None:
        from .models import ExitHeads

        heads = ExitHeads.for_adapter(adapter)
    return MultiExitLoss(heads, L, w, label_smoothing=label_smoothing)
