"""What every exit of a model knows, from its per-layer outputs: accuracy, the probability of the final
prediction, saturation, overthinking, minimal depth and calibration.

Every function takes per-layer outputs stacked layer-first in one of these forms:

- logits: a float tensor (L, n, C) (or a sequence of L tensors (n, C)), e.g. ``Extraction.logits``;
- predictions only: an integer tensor (L, n) of per-layer argmax classes;
- `LayerSummaries`: per-layer argmax, maximum probability, entropy and probability of the final
  prediction, each (L, n); `summarize(logits)` makes one, `LayerSummaries.from_extraction(out)` reads
  the summaries `layersim.extract.extract` keeps for a vocabulary (argmax, top-k probabilities,
  probability of the final prediction), so a language model's (L, n, V) logits never need to be kept.

Layers are numbered 1..L in every result (saturation layers, first correct layer, minimal depth).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch

from layersim.metrics import layerwise_accuracy, saturation_layer
from layersim.metrics.readout import SATURATION_NUMBERING, readout_stats
from layersim.validate import (ArgumentTypeError, as_predictions, check_labels, describe, real_number, tensor_arg,
                               to_tensor, whole_number)

__all__ = ["LayerSummaries", "summarize", "as_summaries", "final_prediction_prob",
           "SaturationStats", "saturation", "Overthinking", "overthinking", "minimal_depth", "Calibration",
           "calibration", "layerwise_accuracy", "saturation_layer"]


# ---- per-layer summaries ------------------------------------------------------------------------------
@dataclass
class LayerSummaries:
    """Per-layer summaries of a readout, each (L, n) (layer-first); a field is None when unknown.

    preds: argmax class of each layer (int64).
    confidence: the largest softmax probability of each layer (the confidence of its prediction).
    entropy: the entropy of each layer's softmax distribution, in nats.
    final_prob: the probability each layer gives to the final layer's prediction.
    num_classes: C, when known (from logits, or given): labels and predictions are checked against [0, C).
    Predictions must be non-negative integers, the other fields finite.
    """

    preds: torch.Tensor
    confidence: Optional[torch.Tensor] = None
    entropy: Optional[torch.Tensor] = None
    final_prob: Optional[torch.Tensor] = None
    num_classes: Optional[int] = None

    def __post_init__(self):
        tensor_arg(self.preds, "preds", ndim=2, nonempty=False, what="(L, n) per-layer predictions")
        if 0 in self.preds.shape:
            raise ValueError(f"per-layer outputs need at least one layer and one sample; got shape "
                             f"{tuple(self.preds.shape)} (an empty batch has no accuracy, exit or saturation)")
        if self.num_classes is not None:
            self.num_classes = whole_number(self.num_classes, "num_classes", low=1)
        self.preds = as_predictions(self.preds, "preds", num_classes=self.num_classes)
        for f in fields(self)[1:4]:
            value = getattr(self, f.name)
            if value is None:
                continue
            tensor_arg(value, f.name, kind="float", finite=True, nonempty=False, what="(L, n) per-layer values")
            if tuple(value.shape) != tuple(self.preds.shape):
                raise ValueError(f"{f.name} has shape {tuple(value.shape)}, preds {tuple(self.preds.shape)}: "
                                 "every summary must be (L, n)")

    @property
    def num_layers(self) -> int:
        return self.preds.shape[0]

    @property
    def num_samples(self) -> int:
        return self.preds.shape[1]

    def require(self, name: str, purpose: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            hint = {"entropy": "the entropy needs the full distribution: keep the logits (extract(..., "
                               "keep_logits=True)) and pass them, or pass LayerSummaries(entropy=...)",
                    "confidence": "pass logits, or summaries with top-k probabilities (extract(..., topk=1))",
                    "final_prob": "pass logits, or an Extraction (it records final_prob)"}[name]
            raise ValueError(f"{purpose} needs the per-layer {name}, which these summaries lack; {hint}")
        return value

    @classmethod
    def from_extraction(cls, out) -> "LayerSummaries":
        """Summaries from a `layersim.extract.Extraction` (or any object with the same attributes).

        Uses the full logits when they were kept; otherwise preds, final_prob and the top-1 probability
        (``topk_probs[..., 0]``) as the confidence. The entropy is unknown without the logits.
        """
        logits = getattr(out, "logits", None)
        if logits is not None:
            return summarize(logits)
        preds = getattr(out, "preds", None)
        if preds is None:
            raise ValueError("this extraction holds no readout (no logits, no preds): extract with readout=True")
        topk = getattr(out, "topk_probs", None)
        return cls(torch.as_tensor(preds).long(),
                   confidence=None if topk is None else torch.as_tensor(topk)[..., 0].float(),
                   final_prob=None if out.final_prob is None else torch.as_tensor(out.final_prob).float())


def _layer_summary(logits: torch.Tensor, final_pred: Optional[torch.Tensor] = None) -> dict:
    """(m, C) logits of one layer -> dict of (m,) preds, confidence, entropy (and final_prob)."""
    return readout_stats(logits, final_pred=final_pred, confidence=True)


def _as_logits(logits) -> torch.Tensor:
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    elif isinstance(logits, (list, tuple)) and logits and all(isinstance(x, (torch.Tensor, np.ndarray))
                                                            for x in logits):
        logits = torch.stack([torch.as_tensor(x) for x in logits])
    if not isinstance(logits, torch.Tensor):
        raise ArgumentTypeError(f"outputs must be per-layer logits (L, n, C), predictions (L, n), an Extraction or "
                                f"LayerSummaries, got {describe(logits)}")
    return logits


def check_finite(logits: torch.Tensor) -> torch.Tensor:
    """Refuse NaN or infinite logits (an exit, a saturation layer or an accuracy decided on them means nothing)."""
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise ValueError(f"logits hold {bad} NaN or infinite values: an exit decided on them would be meaningless; "
                         "check the model's outputs (or the extraction) that produced them")
    return logits


def summarize(logits) -> LayerSummaries:
    """(L, n, C) per-layer logits -> `LayerSummaries` (argmax, max probability, entropy, probability of
    the final layer's prediction), computed one layer at a time (memory of one (n, C) softmax)."""
    logits = _as_logits(logits)
    tensor_arg(logits, "logits", ndim=3, kind="float", nonempty=False, what="(L, n, C) per-layer logits")
    if 0 in logits.shape:
        raise ValueError(f"logits must have at least one layer, sample and class, got shape {tuple(logits.shape)}")
    check_finite(logits)
    final_pred = logits[-1].argmax(-1)
    per_layer = [_layer_summary(logits[l], final_pred) for l in range(logits.shape[0])]
    return LayerSummaries(**{k: torch.stack([p[k] for p in per_layer]) for k in per_layer[0]},
                          num_classes=logits.shape[2])


def exit_labels(labels, n: int, num_classes: Optional[int]) -> torch.Tensor:
    """``labels`` checked by `check_labels` against n samples and, when the outputs were logits, their C classes."""
    return check_labels(labels, n, num_classes, where="" if num_classes is None else f"C = {num_classes} classes in the logits")


def cost_vector(value, name: str, num_layers: int, *, increasing: bool = False) -> torch.Tensor:
    """An (L,) float64 vector of finite costs >= 0 (> 0 and non-decreasing with `increasing`), one per layer
    1..L; TypeError/ValueError with a sentence naming `name` otherwise."""
    try:
        cost = torch.as_tensor(np.asarray(value, dtype=np.float64) if not isinstance(value, torch.Tensor) else value,
                               dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentTypeError(f"{name} must be a sequence of {num_layers} numbers (one per layer 1..{num_layers}), "
                        f"got {type(value).__name__} {value!r:.60}") from None
    rule = "positive, non-decreasing cumulative costs" if increasing else "finite costs >= 0"
    bad = (cost.shape[0] != num_layers or not bool(torch.isfinite(cost).all())
           or bool((cost <= 0).any() if increasing else (cost < 0).any()) or (increasing and bool((cost.diff() < 0).any())))
    if bad:
        raise ValueError(f"{name} must hold {num_layers} {rule} (one per layer 1..{num_layers}), got {cost.tolist()}")
    return cost


def as_summaries(outputs, num_classes: Optional[int] = None) -> LayerSummaries:
    """Logits (L, n, C), predictions (L, n), an Extraction or `LayerSummaries` -> `LayerSummaries`.

    num_classes: C, for outputs that do not carry it (bare predictions, an Extraction without logits): labels
    and predictions are then checked against [0, C). Without it, bare predictions only have their labels checked
    to be >= 0; the largest prediction is no bound on the labels (a class no layer predicts is still a class).
    Given with logits, it must equal their C.
    """
    if num_classes is not None:
        num_classes = whole_number(num_classes, "num_classes", low=1)
    if isinstance(outputs, LayerSummaries):
        summaries = outputs
    elif hasattr(outputs, "preds") and hasattr(outputs, "final_prob"):  # an Extraction
        summaries = LayerSummaries.from_extraction(outputs)
    else:
        tensor = _as_logits(outputs)
        if tensor.dim() == 2 and not tensor.is_floating_point() and not tensor.is_complex():
            if tensor.dtype == torch.bool:
                raise ValueError("per-layer predictions must be integer class indices, got a bool tensor")
            return LayerSummaries(tensor, num_classes=num_classes)
        if tensor.dim() != 3:
            raise ValueError(f"outputs must be per-layer logits (L, n, C) or integer predictions (L, n), got "
                             f"{describe(tensor)}")
        summaries = summarize(tensor)
    if num_classes is None or summaries.num_classes == num_classes:
        return summaries
    if summaries.num_classes is not None:
        raise ValueError(f"num_classes={num_classes} but the outputs have C={summaries.num_classes} classes")
    return LayerSummaries(summaries.preds, summaries.confidence, summaries.entropy, summaries.final_prob, num_classes)


# ---- probability of the final prediction ----------------------------------------------------------------
def final_prediction_prob(outputs) -> torch.Tensor:
    """(L, n): the probability that each layer's readout gives to the final layer's prediction (the model's
    own answer, not the label). outputs: logits (L, n, C), an Extraction or `LayerSummaries`."""
    return as_summaries(outputs).require("final_prob", "final_prediction_prob").clone()


# ---- saturation -------------------------------------------------------------------------------------------
@dataclass
class SaturationStats:
    """layers: (n,) saturation layer of every sample, 1..L (0..L-1 with numbering "authors"). histogram: (L,)
    number of samples that saturate at each layer, in order (entry l-1 for our layer l). early_fraction: share
    of samples that saturate before the last layer."""

    layers: torch.Tensor
    histogram: torch.Tensor
    early_fraction: float
    numbering: str = "layersim"

    @property
    def num_layers(self) -> int:
        return self.histogram.shape[0]


def saturation(outputs, *, numbering: str = "layersim") -> SaturationStats:
    """Saturation layer of every sample (PAPER.md: the earliest l from which the argmax at every layer
    >= l equals the final layer's), its histogram over 1..L and the fraction of early saturation (l < L).

    outputs: logits (L, n, C), predictions (L, n), an Extraction or `LayerSummaries`.
    numbering: "layersim" (layers 1..L) or "authors" (0..L-1, the authors' GPT-2 code; same events).
    """
    preds = as_summaries(outputs).preds
    layers = saturation_layer(preds, numbering=numbering)
    first = SATURATION_NUMBERING[numbering]
    num_layers = preds.shape[0]
    histogram = torch.bincount(layers - first, minlength=num_layers)
    early = float((layers < num_layers - 1 + first).double().mean()) if layers.numel() else float("nan")
    return SaturationStats(layers, histogram, early, numbering)


# ---- overthinking (Kaya et al. 2019, Shallow-Deep Networks) ----------------------------------------------
@dataclass
class Overthinking:
    """Overthinking of a multi-exit model (Shallow-Deep Networks).

    first_correct: (n,) the first layer (1..L) whose prediction equals the label, 0 if none is correct.
    final_accuracy: accuracy of layer L.
    oracle_accuracy: share of samples correct at some layer (an oracle that knows where to stop).
    overthinking_fraction: share of samples correct at some layer < L but wrong at layer L (SDN's
        destructive effect: the network "overthinks" an answer it had).
    wasted_fraction: share of the full model's computation that is spent after the first correct layer
        (SDN's wasteful effect): sum over samples of cost(L) - cost(first_correct), over n * cost(L),
        where samples never correct waste nothing. cost(l) is the cumulative cost of reaching layer l
        (``layer_cost``; by default l blocks of equal cost).
    """

    first_correct: torch.Tensor
    final_accuracy: float
    oracle_accuracy: float
    overthinking_fraction: float
    wasted_fraction: float


def overthinking(outputs, labels, *, layer_cost=None, num_classes: Optional[int] = None) -> Overthinking:
    """Samples right at some layer but wrong at the last, and the computation spent after the first
    correct layer. outputs: logits (L, n, C), predictions (L, n), an Extraction or `LayerSummaries`;
    labels: (n,) class indices. layer_cost: (L,) cumulative cost (e.g. FLOPs) of reaching layer 1..L,
    increasing; default 1, 2, ..., L. num_classes: C for bare predictions (see `as_summaries`). Returns
    `Overthinking`.
    """
    summaries = as_summaries(outputs, num_classes)
    preds = summaries.preds
    num_layers, n = preds.shape
    labels = exit_labels(labels, n, summaries.num_classes).to(preds.device)
    if layer_cost is None:
        cost = torch.arange(1, num_layers + 1, dtype=torch.float64)
    else:
        cost = cost_vector(layer_cost, "layer_cost", num_layers, increasing=True)
    correct = preds == labels[None]  # (L, n)
    any_correct = correct.any(0)
    first = torch.where(any_correct, correct.int().argmax(0) + 1, torch.zeros_like(labels))
    wrong_last = ~correct[-1]
    wasted = torch.where(any_correct, cost[-1] - cost[(first - 1).clamp_min(0)], torch.zeros_like(cost[:1]))
    frac = (lambda m: float(m.double().mean())) if n else (lambda m: float("nan"))
    return Overthinking(first_correct=first, final_accuracy=frac(correct[-1]), oracle_accuracy=frac(any_correct),
                        overthinking_fraction=frac(any_correct & wrong_last),
                        wasted_fraction=float(wasted.sum() / (n * cost[-1])) if n else float("nan"))


# ---- minimal depth ---------------------------------------------------------------------------------------
def minimal_depth(accuracy, fraction: float = 0.99, *, labels=None, num_classes: Optional[int] = None) -> int:
    """The first layer (1..L) whose accuracy reaches `fraction` of the last layer's accuracy.

    accuracy: (L,) layer-wise accuracies; or per-layer outputs (logits (L, n, C) / predictions (L, n))
    together with ``labels`` (n,) (and `num_classes` for bare predictions, see `as_summaries`). fraction: in
    (0, 1] (e.g. 0.99: within 1 % of the full model).
    """
    fraction = real_number(fraction, "fraction", low=0, high=1, low_open=True,
                           what="a number in (0, 1] (share of the last layer's accuracy)")
    if labels is not None:
        summaries = as_summaries(accuracy, num_classes)
        acc = layerwise_accuracy(summaries.preds, exit_labels(labels, summaries.num_samples, summaries.num_classes))
    else:
        acc = to_tensor(accuracy, "accuracy")
        if acc.is_complex() or acc.dtype == torch.bool:
            raise ValueError(f"accuracy must be real numbers in [0, 1], got dtype {acc.dtype}")
        acc = acc.to(torch.float64)
        if acc.dim() != 1 or acc.numel() == 0:
            raise ValueError(f"accuracy must be an (L,) vector of layer-wise accuracies (or pass per-layer outputs "
                             f"with labels=...), got shape {tuple(acc.shape)}")
        if bool(((acc < 0) | (acc > 1) | acc.isnan()).any()):
            raise ValueError(f"accuracies must lie in [0, 1], got {acc.tolist()}")
    target = fraction * float(acc[-1])
    return int(torch.nonzero(acc >= target - 1e-12)[0, 0]) + 1


# ---- calibration -----------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """Calibration of every exit (equal-width confidence bins on [0, 1]; bin b is (edges[b], edges[b+1]],
    the first also holds 0).

    ece: (L,) expected calibration error per layer: sum over bins of (count / n) |accuracy - confidence|.
    bin_edges: (num_bins + 1,). bin_count: (L, num_bins) samples per bin.
    bin_confidence, bin_accuracy: (L, num_bins) mean confidence and accuracy per bin (NaN for empty bins):
        the reliability curve of each exit.
    """

    ece: torch.Tensor
    bin_edges: torch.Tensor
    bin_count: torch.Tensor
    bin_confidence: torch.Tensor
    bin_accuracy: torch.Tensor


def calibration(outputs, labels, *, num_bins: int = 15, num_classes: Optional[int] = None) -> Calibration:
    """Expected calibration error and reliability-curve data of every exit.

    outputs: logits (L, n, C), an Extraction with top-k probabilities, or `LayerSummaries` with
    confidence; labels: (n,) class indices; num_bins: equal-width bins of the confidence (>= 1); num_classes:
    C for outputs that do not carry it (see `as_summaries`).
    """
    num_bins = whole_number(num_bins, "num_bins", low=1)
    summaries = as_summaries(outputs, num_classes)
    conf = summaries.require("confidence", "calibration").double()
    labels = exit_labels(labels, summaries.num_samples, summaries.num_classes).to(conf.device)
    correct = (summaries.preds == labels[None]).double()
    num_layers, n = conf.shape
    edges = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)
    bins = (torch.ceil(conf * num_bins).long() - 1).clamp(0, num_bins - 1)  # (L, n), right-closed bins
    count = torch.zeros(num_layers, num_bins, dtype=torch.float64).scatter_add_(1, bins, torch.ones_like(conf))
    conf_sum = torch.zeros_like(count).scatter_add_(1, bins, conf)
    acc_sum = torch.zeros_like(count).scatter_add_(1, bins, correct)
    mean_conf = conf_sum / count.where(count > 0, torch.full_like(count, math.nan))
    mean_acc = acc_sum / count.where(count > 0, torch.full_like(count, math.nan))
    ece = ((acc_sum - conf_sum).abs().sum(1) / n) if n else torch.full((num_layers,), math.nan)
    return Calibration(ece, edges, count.long(), mean_conf, mean_acc)
