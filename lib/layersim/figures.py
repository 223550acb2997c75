"""What notebooks 01 and 06-10 compute from trained models, beyond the metrics and the early-exit tools.

The paper's trained-model figures (Figure 1, saturation, layer-wise accuracy, the multi-exit table,
elastic inference) all start from the same thing: the standard, aligned and multi-exit models of one
training recipe, read out at every layer on the recipe's test split. This module gives that, once:

>>> from layersim import figures
>>> models = figures.train_models("vit-fashion-mnist")            # trained once per config, then cached
>>> reads = {obj: figures.run_readout(run) for obj, run in models.items()}
>>> reads["aligned"].logits.shape                                  # (L, n, C): last-layer classifier everywhere
>>> reads["multi_exit"].exit_logits.shape                          # (L, n, C): each layer's own head

and the few analyses the notebooks need that are not metrics of their own: the 2-D PCA of the class means
at every layer (Figure 1, `class_mean_pca`; `plot_class_means` draws one panel, `pick_layers` chooses the
layers to show when there are many), per-layer values averaged over groups of samples (COS to the last
layer by saturation layer, `mean_by_group`), a rank correlation that is NaN rather than a warning where
none exists (`spearman`), the per-exit accuracy table (`exit_accuracy_table`), and measured time: exiting
the whole batch at each layer (`time_fixed_exits`), real per-sample early exit against the plain forward
(`measure_early_exit`, `plain_forward`).

Shapes: features (L, n, d) and logits (L, n, C) are stacked layer-first; layers are numbered 1..L in
everything a reader sees (tables, plots, group numbers).
"""
from __future__ import annotations

import contextlib
import logging
import numbers
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = ["OBJECTIVES", "OBJECTIVE_LABELS", "train_models", "recipe_names", "RunReadout", "run_readout", "run_inputs",
           "ClassMeanPCA", "class_mean_pca", "mean_by_group", "exit_accuracy_table", "pick_layers",
           "spearman", "time_fixed_exits", "plain_forward", "measure_early_exit", "plot_class_means"]

OBJECTIVES = ("standard", "aligned", "multi_exit")
OBJECTIVE_LABELS = {"standard": "standard", "aligned": "aligned", "multi_exit": "multi-exit"}


# ---- trained models and their test-split readout ----------------------------------------------------------
def _device(device) -> torch.device:
    from .analysis import resolve_device

    return resolve_device(device)


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
    from .train import train_cached

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
    device = _device(device)
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
        from .metrics import layerwise_accuracy

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
    from .train.tasks import load_splits

    _, test, classes, kind = load_splits(run.config)
    return test, list(classes), kind


def _check_count(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"{what} must be a whole number >= 0 (0: all); got {n!r}")
    return int(n)


class _PreparedImages:
    """Batches (images prepared for the model, labels) of test samples 0..n-1, made one batch at a time
    (so that 10,000 CIFAR images at 224 px never sit in memory at once)."""

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
    test, _, kind = _test_split(run)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= len(test)):
        raise ValueError(f"indices must lie in 0..{len(test) - 1} (the test split of {run.config.name} has "
                         f"{len(test)} samples); got {idx.min()}..{idx.max()}")
    inputs, labels = test.take(idx)
    return (run.prepare(inputs) if kind == "image" else inputs), labels.long()


def run_readout(run, *, n: int = 0, batch_size: int = 256, cache_dir=None) -> RunReadout:
    """Read a trained run (`layersim.train.TrainResult`) out at every layer on the first `n` samples of its
    recipe's test split (0: all of it) -> `RunReadout`.

    The features and the shared-head logits come from `layersim.extract.extract` (cached in `cache_dir`
    when given, keyed by the weights and the run's config); a multi-exit run's exit heads are applied to
    the same features. The model stays on the device it is on.
    """
    from .extract import extract
    from .train import identity_hash

    n = _check_count(n, "n")
    test, classes, kind = _test_split(run)
    n = len(test) if n == 0 else n
    if n > len(test):
        raise ValueError(f"n={n} but the test split of {run.config.name} has only {len(test)} samples; pass n=0 "
                         "for all of them")
    adapter = run.adapter
    key = f"test-split:{identity_hash(run.config)}:{n}"
    if kind == "image":
        data, labels = _PreparedImages(run, test, n, batch_size), None
    else:
        texts, labels = test.take(np.arange(n))
        data = list(texts)
    out = extract(adapter, data, labels=labels, readout=True, keep_logits=True, batch_size=batch_size,
                  cache_dir=cache_dir, data_key=key)
    features, logits = out.features.float(), out.logits.float()
    exit_logits = None
    if run.heads is not None:
        with torch.no_grad():
            device = adapter.device
            exit_logits = torch.cat([run.heads.logits(adapter, features[:, i:i + batch_size].to(device)).float().cpu()
                                     for i in range(0, n, batch_size)], dim=1)
    name = f"{run.config.name} ({run.config.objective})"
    return RunReadout(name, run.config.objective, features, logits, exit_logits, out.labels.long(), classes, run)


# ---- Figure 1: the class means at every layer ------------------------------------------------------------
@dataclass
class ClassMeanPCA:
    """A PCA of the class means fitted at each layer on its own.

    centers: (L, d) mean of the class means per layer. components: (L, k, d) unit principal directions.
    means: (L, C, k) the class means in those coordinates. explained: (L, k) share of the variance of the
    class means along each component. Signs are aligned from the last layer down: component j of layer l
    points so that the class means' coordinates correlate positively with those of layer l + 1, so that
    neighbouring panels are not mirrored for no reason.
    """

    centers: torch.Tensor
    components: torch.Tensor
    means: torch.Tensor
    explained: torch.Tensor

    def transform(self, features) -> torch.Tensor:
        """(L, n, d) features -> (L, n, k) coordinates in each layer's class-mean PCA."""
        features = torch.as_tensor(features).to(self.components.dtype)
        if features.dim() != 3 or features.shape[0] != self.components.shape[0] or \
                features.shape[2] != self.components.shape[2]:
            raise ValueError(f"features must be (L, n, d) = ({self.components.shape[0]}, n, "
                             f"{self.components.shape[2]}); got shape {tuple(features.shape)}")
        return torch.einsum("lnd,lkd->lnk", features - self.centers[:, None], self.components)


def _layer_stack(features, name: str = "features") -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be an (L, n, d) tensor or array; got {type(features).__name__}")
    if features.dim() != 3 or 0 in features.shape:
        raise ValueError(f"{name} must be (L, n, d): layers, samples, features; got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{name} must hold floating-point features; got dtype {features.dtype}")
    features = features.detach().cpu().to(torch.float64)
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return features


def _labels(labels, n: int) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels) if isinstance(labels, (list, tuple)) else labels)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be (n,) = ({n},), one per sample; got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"labels must be integer class indices; got dtype {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0; got {int(labels.min())}")
    return labels.long().cpu()


def class_mean_pca(features, labels, *, num_components: int = 2) -> ClassMeanPCA:
    """2-D (or k-D) PCA of the class means of every layer, each layer fitted on its own (Figure 1).

    features: (L, n, d) per-layer features of n samples; labels: (n,) class indices (every class that
    occurs gets a mean; classes are ordered by index). num_components: k, at most (number of classes - 1)
    and d. -> `ClassMeanPCA` with means (L, C, k).
    """
    from sklearn.decomposition import PCA

    feats = _layer_stack(features)
    L, n, d = feats.shape
    labels = _labels(labels, n)
    present = torch.unique(labels)
    if present.numel() < 2:
        raise ValueError(f"need samples of at least 2 classes for a PCA of class means; got classes {present.tolist()}")
    if isinstance(num_components, bool) or not isinstance(num_components, int) or \
            not 1 <= num_components <= min(present.numel() - 1, d):
        raise ValueError(f"num_components must be an integer in 1..{min(present.numel() - 1, d)} (classes - 1, and "
                         f"at most d); got {num_components!r}")
    onehot = (labels[:, None] == present[None]).to(torch.float64)  # (n, C)
    means = torch.einsum("lnd,nc->lcd", feats, onehot) / onehot.sum(0)[None, :, None]  # (L, C, d)
    centers, components, coords, explained = [], [], [], []
    for l in range(L):
        pca = PCA(num_components, svd_solver="full").fit(means[l].numpy())
        centers.append(torch.from_numpy(pca.mean_))
        components.append(torch.from_numpy(pca.components_.copy()))
        coords.append(torch.from_numpy(pca.transform(means[l].numpy())))
        explained.append(torch.from_numpy(pca.explained_variance_ratio_.copy()))
    for l in range(L - 2, -1, -1):  # align signs with the next deeper layer
        agree = (coords[l] * coords[l + 1]).sum(0)  # (k,)
        flip = torch.where(agree < 0, -1.0, 1.0).to(torch.float64)
        coords[l] = coords[l] * flip
        components[l] = components[l] * flip[:, None]
    return ClassMeanPCA(torch.stack(centers), torch.stack(components), torch.stack(coords), torch.stack(explained))


def plot_class_means(ax, pca: ClassMeanPCA, layer: int, *, samples=None, sample_labels=None, classes=None,
                     title: Optional[str] = None, legend: bool = False):
    """Draw the class means of 1-based `layer` in its PCA plane on `ax` (one colour per class), with
    `samples` (their (L, m, d) features) as faint dots of their class's colour when given."""
    L = pca.means.shape[0]
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 1 <= layer <= L:
        raise ValueError(f"layer must be an integer in 1..{L} (layers are numbered from 1); got {layer!r}")
    C = pca.means.shape[1]
    colours = [f"C{c % 10}" for c in range(C)]
    if samples is not None:
        points = pca.transform(samples)[layer - 1].numpy()
        sample_labels = _labels(sample_labels, points.shape[0]).numpy()
        ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.3, c=[colours[c % C] for c in sample_labels],
                   linewidths=0, rasterized=True)
    means = pca.means[layer - 1].numpy()
    for c in range(C):
        label = classes[c] if classes is not None else str(c)
        ax.scatter(means[c, 0], means[c, 1], s=60, color=colours[c], edgecolor="black", linewidth=0.6, label=label,
                   zorder=3)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else f"layer {layer}", fontsize=9)
    if legend:
        ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def pick_layers(num_layers: int, max_panels: int = 8) -> list:
    """Up to `max_panels` layers out of 1..L, evenly spaced, always with layer 1 and layer L (all of them
    when L <= max_panels)."""
    for name, value in (("num_layers", num_layers), ("max_panels", max_panels)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if num_layers <= max_panels:
        return list(range(1, num_layers + 1))
    if max_panels == 1:
        return [num_layers]
    return sorted({int(round(x)) for x in np.linspace(1, num_layers, max_panels)})


def spearman(x, y) -> float:
    """Spearman rank correlation of two equally long 1-D sequences; NaN (silently, without scipy's
    warning) when either is constant, holds NaN / Inf or is shorter than 2: no rank correlation exists."""
    from scipy.stats import spearmanr

    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float).reshape(-1)
    y = np.asarray(y.detach().cpu() if hasattr(y, "detach") else y, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length; got {x.size} and {y.size}")
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


# ---- grouping samples --------------------------------------------------------------------------------------
def mean_by_group(values, groups, num_groups: int) -> tuple:
    """Per-layer values averaged over the samples of each group (e.g. each sample's COS to the last layer,
    grouped by its saturation layer).

    values: (L, n) a value per layer and sample. groups: (n,) group numbers in 1..num_groups.
    -> (means (num_groups, L) float64, NaN for a group with no sample; counts (num_groups,) int64).
    """
    values = torch.as_tensor(values)
    if values.dim() != 2 or not values.is_floating_point():
        raise ValueError(f"values must be a float (L, n) tensor; got {values.dtype} of shape {tuple(values.shape)}")
    values = values.detach().cpu().to(torch.float64)
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer; got {num_groups!r}")
    groups = _labels(groups, values.shape[1])
    if groups.numel() and (int(groups.min()) < 1 or int(groups.max()) > num_groups):
        raise ValueError(f"groups must be numbered 1..{num_groups}; got {int(groups.min())}..{int(groups.max())}")
    onehot = (groups[:, None] == torch.arange(1, num_groups + 1)[None]).to(torch.float64)  # (n, G)
    counts = onehot.sum(0)
    sums = values @ onehot  # (L, G)
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
    return means.T.contiguous(), counts.long()


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


# ---- measured time of exiting at each layer ----------------------------------------------------------------
def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fixed_exits(adapter, batch, *, heads=None, repeats: int = 5, warmup: int = 1) -> pd.DataFrame:
    """Measured wall-clock time of exiting the whole batch at each layer l = 1..L (a truncated forward:
    blocks after l never run, `layersim.early_exit.exit_at_layer`) against the model's plain forward.

    Each repeat times the plain forward and every exit back to back (in an order that alternates between
    repeats), so load drifting on a shared machine affects them alike; the speed-up of layer l is the
    median over repeats of time(plain forward) / time(exit at l).
    -> DataFrame with columns layer, time_s (median), full_time_s (median), speedup.
    """
    from .early_exit import exit_at_layer
    from .models import adapt, eval_mode

    adapter = adapt(adapter)
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    L = adapter.num_layers
    device = adapter.device

    def full():
        with torch.no_grad(), eval_mode(adapter.model):
            return adapter.logits(batch)

    calls = [full] + [(lambda l=l: exit_at_layer(adapter, batch, l, heads=heads)) for l in range(1, L + 1)]

    def timed(fn) -> float:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        for fn in calls:
            fn()
    times = [[] for _ in calls]
    for r in range(repeats):
        order = range(len(calls)) if r % 2 == 0 else range(len(calls) - 1, -1, -1)
        for i in order:
            times[i].append(timed(calls[i]))
    full_times = times[0]
    rows = [{"layer": l, "time_s": statistics.median(times[l]), "full_time_s": statistics.median(full_times),
             "speedup": statistics.median([f / t for f, t in zip(full_times, times[l])])} for l in range(1, L + 1)]
    return pd.DataFrame(rows)


def plain_forward(adapter, batch) -> torch.Tensor:
    """(B, C) logits of the model's own forward pass (all L blocks, its head), under no_grad in eval mode,
    returned on the CPU (so that a timed call includes waiting for a GPU to finish)."""
    from .models import adapt, eval_mode

    adapter = adapt(adapter)
    with torch.no_grad(), eval_mode(adapter.model):
        return adapter.logits(batch).cpu()


def measure_early_exit(adapter, batch, policy, *, labels=None, heads=None, repeats: int = 5,
                       warmup: int = 1) -> dict:
    """Real per-sample early exit (`layersim.early_exit.early_exit`: exited samples leave the batch) of
    `batch` under `policy`, and its measured speed-up over the plain forward of the whole model
    (`layersim.early_exit.paired_speedup`: paired, alternating timings, median of the ratios).

    -> dict with result (the `ExitResult`: exit_layer (B,), preds (B,), accuracy with labels), speedup,
    full_s and exit_s (median seconds of the plain forward and of the early exit).
    """
    from .early_exit import early_exit, paired_speedup

    result = early_exit(adapter, batch, policy, heads=heads, labels=labels)
    timing = paired_speedup(lambda: plain_forward(adapter, batch),
                            lambda: early_exit(adapter, batch, policy, heads=heads),
                            repeats=repeats, warmup=warmup)
    return {"result": result, "speedup": timing["speedup"], "full_s": timing["reference_s"],
            "exit_s": timing["candidate_s"]}
