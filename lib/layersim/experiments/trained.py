"""The standard, aligned and multi-exit models of one training recipe, read out at every layer on the
recipe's test split: what the paper's trained-model figures (Figure 1, saturation, layer-wise accuracy, the
multi-exit table, elastic inference) all start from.

>>> from layersim import experiments
>>> models = experiments.train_models("vit-fashion-mnist")          # trained once per config, then cached
>>> reads = {obj: experiments.run_readout(run) for obj, run in models.items()}
>>> reads["aligned"].logits.shape                                  # (L, n, C): last-layer classifier everywhere
>>> reads["multi_exit"].exit_logits.shape                          # (L, n, C): each layer's own head

and the per-exit accuracy table of the multi-exit figure (`exit_accuracy_table`).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..device import resolve_device
from ..losses import OBJECTIVES
from ..validate import whole_number

__all__ = ["OBJECTIVES", "OBJECTIVE_LABELS", "train_models", "recipe_names", "RunReadout", "run_readout", "run_inputs",
           "exit_accuracy_table"]

OBJECTIVE_LABELS = {"standard": "standard", "aligned": "aligned", "multi_exit": "multi-exit"}


# ---- trained models and their test-split readout ----------------------------------------------------------
def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _no_fresh_head_report():
    """Silence Hugging Face's load report for a text encoder given a fresh classification head.

    Building a text model of a training recipe loads the pretrained encoder with a new head
    (``load_model(..., num_labels=C)``); transformers then logs a "LOAD REPORT" warning that the head is
    newly initialised, with the path of the weights on this machine. Here that head is always trained, or
    replaced at once by the trained run's weights, so the report tells a reader nothing they can act on.
    Only that message is dropped (a filter on its logger; the logger's level is left alone, because
    transformers runs extra checks when that level is raised), and only for the duration of the block.
    """
    hf_logger = logging.getLogger("transformers.modeling_utils")
    hf_logger.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        hf_logger.removeFilter(_not_a_load_report)


def train_models(recipe: str, objectives: Sequence[str] = OBJECTIVES, *, overrides: Optional[dict] = None,
                 device="auto") -> dict:
    """The models of training recipe `recipe` (a name of `layersim.train.recipes()` or a YAML file) trained
    with each of `objectives` -> {objective: `layersim.train.TrainResult`}, models in eval mode on `device`.

    Each model is trained by `layersim.train.train_cached` the first time its resolved config is asked
    for, then read from the cache: notebooks that ask for the same recipe and `overrides` (config keys,
    e.g. ``{"epochs": 1}``) share one training. device: "auto" (CUDA when available), "cpu", "cuda".
    """
    from ..train import train_cached

    if isinstance(objectives, str):
        raise TypeError(f"objectives must be a list such as ['standard', 'aligned'], got the string {objectives!r}")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise ValueError(f"objectives must be a non-empty list drawn from {', '.join(OBJECTIVES)}; got {list(objectives)}")
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of training config keys (e.g. {{'epochs': 1}}), got "
                        f"{type(overrides).__name__}")
    overrides = dict(overrides or {})
    for key in ("objective", "device"):
        if key in overrides:
            raise ValueError(f"overrides must not set {key!r}: it is an argument of train_models")
    device = resolve_device(device)
    runs = {}
    for objective in objectives:
        with _no_fresh_head_report():
            run = train_cached(recipe, objective=objective, device=str(device), **overrides)
        run.adapter.model.to(device).eval()
        if run.heads is not None:
            run.heads.to(device).eval()
        runs[objective] = run
    return runs


def recipe_names(recipes) -> list:
    """A notebook's `recipes` parameter as a list of recipe names: a list (or tuple) of strings as it is, a
    single string (``papermill -p recipes vit-fashion-mnist``) as a list of one."""
    if isinstance(recipes, str):
        return [recipes]
    if not isinstance(recipes, (list, tuple)) or not recipes or not all(isinstance(r, str) and r for r in recipes):
        raise ValueError(f"recipes must be a non-empty list of training recipe names (e.g. ['vit-fashion-mnist', "
                         f"'minilm-reviews']; with papermill: -y 'recipes: [vit-fashion-mnist]'); got {recipes!r}")
    return list(recipes)


@dataclass
class RunReadout:
    """A trained model read out at every layer on (a prefix of) its recipe's test split.

    name: "<recipe> (<objective>)". features: (L, n, d) float32 pooled block outputs (the pooling the
    model's head reads, e.g. the CLS token; raw, before any final norm). logits: (L, n, C) float32, the
    model's own last-layer classifier applied to every layer (head(norm(h_l)), BERT:
    classifier(pooler(h_l))). exit_logits: (L, n, C), each layer's own exit head (multi-exit models;
    layer L is the model's head), else None. labels: (n,) int64. classes: the class names.
    """

    name: str
    objective: str
    features: torch.Tensor
    logits: torch.Tensor
    exit_logits: Optional[torch.Tensor]
    labels: torch.Tensor
    classes: list
    run: object = field(repr=False, default=None)

    @property
    def num_layers(self) -> int:
        return self.features.shape[0]

    @property
    def num_samples(self) -> int:
        return self.features.shape[1]

    def accuracy(self, reader: str = "shared") -> torch.Tensor:
        """(L,) float64 test accuracy of layers 1..L read by the "shared" last-layer classifier or by each
        layer's "exit" head (multi-exit models only)."""
        from ..metrics import layerwise_accuracy

        return layerwise_accuracy(self.reader_logits(reader), self.labels)

    def reader_logits(self, reader: str = "shared") -> torch.Tensor:
        """(L, n, C): `logits` for reader "shared", `exit_logits` for "exit"."""
        if reader == "shared":
            return self.logits
        if reader == "exit":
            if self.exit_logits is None:
                raise ValueError(f"{self.name} has no exit heads of its own (objective {self.objective!r}); "
                                 "only a multi-exit model has reader='exit'. Use reader='shared'")
            return self.exit_logits
        raise ValueError(f"reader must be 'shared' or 'exit', got {reader!r}")


def _test_split(run):
    """The test split of a classification run (images or texts), as the run hands it out."""
    if run.modality not in ("image", "text"):
        raise ValueError(f"{run.config.name} trains on {run.config.data} ({run.modality}), not a classification "
                         "task: only image and text classifiers are read out sample by sample here")
    return run.test_split()


def _check_count(n, what: str) -> int:
    return whole_number(n, what, low=0, what="a whole number >= 0 (0: all)")


class _PreparedBatches:
    """Batches (inputs prepared for the model, labels) of test samples 0..n-1, made one batch at a time
    (so that 10,000 CIFAR images at 224 px never sit in memory at once; texts pass through unchanged)."""

    def __init__(self, run, split, n: int, batch_size: int):
        self.run, self.split, self.n, self.batch_size = run, split, n, batch_size

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        for start in range(0, self.n, self.batch_size):
            images, labels = self.split.take(np.arange(start, min(self.n, start + self.batch_size)))
            yield self.run.prepare(images), labels


def run_inputs(run, indices) -> tuple:
    """The model inputs and labels of test samples `indices` of a trained run: (images (k, C, H, W) prepared
    as in training, or a list of k texts; labels (k,) int64)."""
    test = _test_split(run)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= len(test)):
        raise ValueError(f"indices must lie in 0..{len(test) - 1} (the test split of {run.config.name} has "
                         f"{len(test)} samples); got {idx.min()}..{idx.max()}")
    inputs, labels = test.take(idx)
    return run.prepare(inputs), labels.long()


def run_readout(run, *, n: int = 0, batch_size: int = 256, cache_dir=None) -> RunReadout:
    """Read a trained run (`layersim.train.TrainResult`) out at every layer on the first `n` samples of its
    recipe's test split (0: all of it) -> `RunReadout`.

    The features and the shared-head logits come from `layersim.extract.extract` (cached in `cache_dir`
    when given, keyed by the weights and the run's config); a multi-exit run's exit heads are applied to
    the same features. The model stays on the device it is on.
    """
    from ..extract import extract
    from ..train import identity_hash

    n = _check_count(n, "n")
    test = _test_split(run)
    n = len(test) if n == 0 else n
    if n > len(test):
        raise ValueError(f"n={n} but the test split of {run.config.name} has only {len(test)} samples; pass n=0 "
                         "for all of them")
    adapter = run.adapter
    key = f"test-split:{identity_hash(run.config)}:{n}"
    data, labels = _PreparedBatches(run, test, n, batch_size), None
    out = extract(adapter, data, labels=labels, readout=True, keep_logits=True, batch_size=batch_size,
                  cache_dir=cache_dir, data_key=key)
    features, logits = out.features.float(), out.logits.float()
    exit_logits = None
    if run.heads is not None:  # the same test samples read by the run's own exit heads
        exits = extract(adapter, data, labels=labels, readout=True, keep_logits=True, batch_size=batch_size,
                        cache_dir=cache_dir, data_key=key, reader=run.heads)
        exit_logits = exits.logits.float()
    name = f"{run.config.name} ({run.config.objective})"
    return RunReadout(name, run.config.objective, features, logits, exit_logits, out.labels.long(), run.classes,
                      run)



# ---- the multi-exit table ------------------------------------------------------------------------------------
def exit_accuracy_table(readouts: dict) -> pd.DataFrame:
    """Per-exit test accuracy of trained models, one row per way of reading the layers.

    readouts: {objective: RunReadout} (from `run_readout`). Rows: every model read by its last-layer
    classifier at every layer ("shared head"), and a multi-exit model also by its own exit heads
    ("own heads"). Columns: model, objective, reader, classifiers (how many classifiers the exits use:
    1 for a shared head, L for own heads), then the accuracy at exits 1..L (columns named 1..L).
    """
    if not isinstance(readouts, dict) or not readouts:
        raise ValueError("readouts must be a non-empty dict {objective: RunReadout}")
    rows = []
    for objective, r in readouts.items():
        if not isinstance(r, RunReadout):
            raise TypeError(f"readouts[{objective!r}] must be a RunReadout (from run_readout); got {type(r).__name__}")
        readers = [("shared", "shared head", 1)]
        if r.exit_logits is not None:
            readers.insert(0, ("exit", "own heads", r.num_layers))
        for reader, label, count in readers:
            acc = r.accuracy(reader).tolist()
            rows.append({"model": OBJECTIVE_LABELS.get(r.objective, r.objective), "objective": r.objective,
                         "reader": label, "classifiers": count, **{l + 1: a for l, a in enumerate(acc)}})
    return pd.DataFrame(rows)
