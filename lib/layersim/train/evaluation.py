"""Evaluation of a trained (or training) model: every layer read on the whole test split.

Two readers, one prefix each in the result (and so in every record of log.jsonl): ``layer_...`` for the
shared last-layer classifier read at every layer, ``exit_...`` for a multi-exit model's own exit heads.
Each reader gets the same fields: ``_acc``, ``_nll``, ``_saturation_hist``, ``_early_saturation`` and, for
a vocabulary, ``_ppl``.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from .dist import Dist, to_device
from .tasks import Task


def _readout_counts(preds: torch.Tensor, nll: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(3L) float64: per layer the correct count, the summed cross-entropy, and the saturation histogram
    (samples whose saturation layer is l), from (L, n) predictions and (L, n) cross-entropies."""
    from ..metrics import saturation_layer

    L = preds.shape[0]
    correct = (preds == targets[None]).sum(1)
    histogram = torch.bincount(saturation_layer(preds) - 1, minlength=L)
    return torch.cat([correct.double(), nll.double().sum(1), histogram.double()]).cpu()


def _summary(counts: torch.Tensor, n: float, L: int, prefix: str, vocabulary: bool) -> dict:
    """The fields of one reader from its (3L) summed counts over `n` samples, named ``<prefix>_<field>``."""
    hist = counts[2 * L:3 * L]
    out = {f"{prefix}_acc": (counts[:L] / n).tolist(), f"{prefix}_nll": (counts[L:2 * L] / n).tolist(),
           f"{prefix}_saturation_hist": [int(v) for v in hist.tolist()],
           f"{prefix}_early_saturation": (hist[:L - 1].sum() / n).item()}
    if vocabulary:
        out[f"{prefix}_ppl"] = torch.exp(counts[L:2 * L] / n).tolist()
    return out


@torch.no_grad()
def evaluate(adapter, task: Task, *, heads: Optional[nn.Module] = None, dist: Optional[Dist] = None,
             batch_size: int = 256, autocast=contextlib.nullcontext) -> dict:
    """Every layer read by the shared last-layer classifier (and by each exit head) on the test split.

    Returns, for the shared head, {"layer_acc": (L) accuracy, "layer_nll": (L) mean cross-entropy (for a
    language model per token: exp of it is the layer's perplexity, also under "layer_ppl"),
    "layer_saturation_hist": (L) samples whose prediction saturates at layer l (PAPER.md),
    "layer_early_saturation": share saturating before layer L}, plus "test_loss": cross-entropy of the
    model's own prediction and "n_test": samples (tokens for a language model). A multi-exit model adds the
    same fields for its exit heads under the prefix "exit_" ("exit_acc", "exit_nll", "exit_saturation_hist",
    "exit_early_saturation", "exit_ppl"); otherwise "exit_acc" is None. The logits are formed in chunks of
    samples and one layer at a time (`layersim.models.read_stats`), so a vocabulary never needs (L, tokens, V)
    at once. Under torchrun each rank takes samples r, r+W, ... and the counts are all-reduced.
    """
    from ..models import as_reader, eval_mode, read_stats

    dist = dist or Dist(device=adapter.device)
    L = adapter.num_layers
    mine = np.arange(dist.rank, len(task.test), dist.world)
    shared = torch.zeros(3 * L, dtype=torch.float64)
    exits = torch.zeros(3 * L, dtype=torch.float64)
    n = torch.zeros(1, dtype=torch.float64)
    layers = range(1, L + 1)
    with eval_mode(adapter.model), autocast():
        readers = [(shared, adapter.reader)] + ([(exits, as_reader(adapter, heads))] if heads is not None else [])
        for start in range(0, len(mine), batch_size):
            inputs, labels = task.eval_batch(mine[start:start + batch_size])
            hidden = adapter.hidden_states(to_device(inputs, dist.device))
            vectors = adapter.head_inputs(hidden)
            y = adapter.targets(hidden, labels)
            for counts, reader in readers:
                for rows, stats in read_stats(reader, vectors, layers, targets=y):
                    counts += _readout_counts(stats["preds"], -stats["label_logprob"], y[rows])
            n += y.numel()
    totals = dist.sum(torch.cat([shared, exits, n]))
    n = totals[-1].item()
    vocabulary = adapter.vocabulary_readout
    result = _summary(totals[:3 * L], n, L, "layer", vocabulary)
    if heads is not None:
        result.update(_summary(totals[3 * L:6 * L], n, L, "exit", vocabulary))
    else:
        result["exit_acc"] = None
    result.update(test_loss=result["layer_nll"][-1], n_test=int(n))
    return result
