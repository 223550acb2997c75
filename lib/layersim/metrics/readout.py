"""Readout of every layer: saturation layers, layer-wise accuracy, and the checks they share with the
early-exit code (turning logits or predictions into predictions, validating labels: `as_predictions` and
`check_labels`, which live in `layersim.validate` and are importable from here as before).

Layers are numbered 1..L in everything returned to a reader (saturation layers); tensors are stacked
layer-first: logits ``(L, n, C)``, predictions ``(L, n)``.
"""
from __future__ import annotations

from typing import Optional

import torch

# as_predictions and check_labels live in layersim.validate; importable from here as before
from ..validate import as_predictions, check_labels, num_classes_of, tensor_arg, whole_number  # noqa: F401

__all__ = ["as_predictions", "check_labels", "saturation_layer", "layerwise_accuracy", "readout_stats"]

READOUT_STATS = ("preds", "final_prob", "label_logprob", "confidence", "entropy", "topk")


# how saturation layers are numbered: ours from 1 (layer l is the output of block l, as everywhere in layersim);
# the authors' GPT-2 code from 0 (their histograms' bins 0..L-1 are our layers 1..L: the same events)
SATURATION_NUMBERING = {"layersim": 1, "authors": 0}


def saturation_layer(preds, *, numbering: str = "layersim") -> torch.Tensor:
    """Saturation layer of every sample -> (n,) int64 tensor of layers numbered 1..L (``numbering="authors"``:
    0..L-1, as the authors' GPT-2 code numbers them, to reproduce their histograms exactly).

    ``preds``: (L, n) per-layer argmax predictions (integer class indices), e.g. of the last-layer
    classifier applied to every layer; (L, n, C) logits are also accepted (their argmax is used).
    Sample i's saturation layer is the earliest layer l such that the prediction at every layer
    >= l equals the final layer's prediction (the model's own answer, not the label). L means the
    prediction only settles at the last layer; l < L is an early saturation event.
    """
    if numbering not in SATURATION_NUMBERING:
        raise ValueError(f"numbering must be one of {sorted(SATURATION_NUMBERING)}, got {numbering!r}")
    preds = as_predictions(preds, "preds")
    num_layers = preds.shape[0]
    agrees = preds == preds[-1:]
    # Number of trailing layers (counting back from the last) that agree with the last layer.
    trailing = torch.cumprod(agrees.flip(0).long(), dim=0).sum(dim=0)
    return num_layers - trailing + SATURATION_NUMBERING[numbering]


def layerwise_accuracy(logits_or_preds, labels, *, num_classes: Optional[int] = None) -> torch.Tensor:
    """Accuracy of every layer's readout -> (L,) float64 tensor of fractions in [0, 1].

    ``logits_or_preds``: (L, n, C) per-layer logits (argmax taken) or (L, n) integer predictions;
    ``labels``: (n,) integer labels in [0, C) (C from the logits, or ``num_classes`` when given
    predictions, which are then checked against [0, num_classes) too; without either only labels < 0 are
    rejected: a label above every prediction may be a class no layer predicts, so the largest prediction
    says nothing about the labels' range). Entry l is the fraction of the n samples whose layer-l
    prediction equals the label; larger is better.
    """
    from_logits = num_classes_of(logits_or_preds)
    if num_classes is not None:
        num_classes = whole_number(num_classes, "num_classes", low=1)
    if from_logits is not None and num_classes is not None and num_classes != from_logits:
        raise ValueError(f"num_classes={num_classes} but the logits have C={from_logits} classes")
    preds = as_predictions(logits_or_preds, "logits_or_preds", num_classes=num_classes)
    classes = from_logits if from_logits is not None else num_classes
    where = f"C = {classes} classes in the logits" if from_logits is not None else f"num_classes={classes}"
    labels = check_labels(labels, preds.shape[1], classes, where=where).to(preds.device)
    return (preds == labels[None, :]).to(torch.float64).mean(dim=1)


def readout_stats(logits: torch.Tensor, *, final_pred: Optional[torch.Tensor] = None,
                  targets: Optional[torch.Tensor] = None, topk: Optional[int] = None,
                  confidence: bool = False) -> dict:
    """Per-sample statistics of one layer's readout: the one function that extraction, training evaluation,
    early exit and the language-model reports share.

    logits: (..., n, C) (one layer (n, C), or layers stacked first (L, n, C)). Computed from the log-softmax
    in float32 (float64 logits stay float64). Returns (..., n) tensors:
    - "preds": the argmax; with `final_pred` (n,) "final_prob": the probability given to the final layer's
      prediction (the model's own answer, PAPER.md); with `targets` (n,) "label_logprob": the log-probability
      of the target (its negative is the cross-entropy; perplexity = exp(-mean));
    - with ``confidence=True`` "confidence" (the top probability) and "entropy" (nats);
    - with `topk` "topk_ids" and "topk_probs" (..., n, k).
    Checked (`layersim.validate`): logits a floating-point tensor of at least 2 dimensions without NaN (-inf is a
    logit of probability 0); final_pred and targets (n,) class indices in [0, C); topk a positive integer.
    """
    tensor_arg(logits, "logits", kind="float", what="(..., n, C) logits")
    if logits.dim() < 2:
        raise ValueError(f"logits must be (..., n, C) logits (at least 2 dimensions), got shape {tuple(logits.shape)}")
    if bool(torch.isnan(logits).any()):
        raise ValueError(f"logits holds {int(torch.isnan(logits).sum())} NaN values: a readout of them means nothing; "
                         "check the model's outputs")
    n, C = logits.shape[-2:]
    for name, index in (("final_pred", final_pred), ("targets", targets)):
        if index is not None:
            check_labels(tensor_arg(index, name, nonempty=False, what=f"({n},) class indices"), n, C, name=name,
                         where=f"C = {C} classes in the logits")
    if topk is not None:
        topk = whole_number(topk, "topk", low=1)
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    top, preds = logp.max(dim=-1)
    out = {"preds": preds}

    def gather(index: torch.Tensor) -> torch.Tensor:
        index = index.to(logp.device).expand(logp.shape[:-1])
        return logp.gather(-1, index[..., None])[..., 0]

    if final_pred is not None:
        out["final_prob"] = gather(final_pred).exp()
    if targets is not None:
        out["label_logprob"] = gather(targets)
    if confidence:
        probs = logp.exp()
        out["confidence"] = top.exp()
        out["entropy"] = -(probs * logp).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1)
    if topk:
        values, ids = logp.topk(min(topk, logp.shape[-1]), dim=-1)
        out["topk_ids"], out["topk_probs"] = ids, values.exp()
    return out
