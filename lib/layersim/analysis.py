"""The analyses behind notebooks 03-05: trends of layer-wise similarity (claim 2), outliers that move CKA
more than COS (claim 3), and the geodesic picture of a residual network (claim 4).

Features are stacked layer-first, ``(L, n, d)``: L layers numbered 1..L for a reader, n samples, d
features; similarity matrices are ``(L, L)`` (see `layersim.metrics`).

Claim 2 (`similarity_trends`): every pair of layers positively similar, similarity falling with the layer
gap |i - j| and rising towards the last layer, as rank correlations.

Claim 3 (`inject_outlier_samples`, `inject_outlier_dimensions`, `outlier_sweep`,
`massive_activation_samples`): a controlled experiment that adds a few outlier samples, or makes a few
dimensions large, in real features and measures how much COS and linear CKA move; and the detector of
the real case, the few tokens of a language model whose residual states are orders of magnitude larger
than the rest ("massive activations", Sun et al. 2024).

Claim 4 (`geodesic_trajectories`, `fit_linear_classifier`, `fraction_rising`, `relative_step_lengths`):
synthetic trajectories that move each sample along a straight, constant-speed path from its input to its
output representation (optionally made to wind), a linear classifier trained on the last layer, and the
measures of how straight and how even real trajectories are (with
`layersim.metrics.trajectory_straightness`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from . import metrics

__all__ = ["resolve_device", "LayerFeatures", "load_layer_features", "FEATURE_NORMS", "SimilarityTrends", "similarity_trends", "typical_distance", "inject_outlier_samples",
           "inject_outlier_dimensions", "mean_pair_change", "OutlierSweep", "outlier_sweep",
           "massive_activation_samples", "Trajectories", "geodesic_trajectories", "fit_linear_classifier",
           "fraction_rising", "relative_step_lengths", "OUTLIER_KINDS"]

OUTLIER_KINDS = ("samples", "dimensions")
FEATURE_NORMS = ("raw", "normed", "hf")
TRAINED_PREFIX = "train:"


# ---- devices ------------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device a notebook's ``device`` parameter names: "auto" (CUDA when available, else CPU),
    "cpu", "cuda" or "cuda:N". Asking for CUDA where there is none is a ValueError, not a silent CPU run."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda'; got {type(device).__name__}")
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but this machine has no CUDA device; use device='auto' or 'cpu'")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but there are only {torch.cuda.device_count()} CUDA devices")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}")


# ---- per-layer features of the notebooks' models --------------------------------------------------------------
@dataclass
class LayerFeatures:
    """Per-layer features of one model over one set of samples (see `load_layer_features`).

    name: the model as named; kind: "text" (one vector per text), "tokens" (one per token of a causal
    LM; the first token of each text is included) or "image"; features: (L, n, d) float32, the pooled raw
    block outputs of blocks 1..L (a causal LM: before the final norm); labels: (n,) class labels, or the
    next token of each token for a causal LM, or None; pooling: how tokens became samples; samples: what
    the samples are, in words; adapter: the model's adapter (`layersim.models`).
    """

    name: str
    kind: str
    features: torch.Tensor
    labels: torch.Tensor | None
    pooling: str
    samples: str
    adapter: object

    @property
    def num_layers(self) -> int:
        return self.features.shape[0]

    def with_norm(self, mode: str = "normed") -> torch.Tensor:
        """(L, n, d) features under a convention for the model's final norm: "raw" (the block outputs),
        "normed" (the final norm applied to every layer, as the model itself reads layer L) or "hf" (only
        layer L normed, as Hugging Face's hidden states and the authors' GPT-2 code). Post-norm encoders
        (BERT family) have no final norm: all three are the same."""
        if mode not in FEATURE_NORMS:
            raise ValueError(f"mode must be one of {FEATURE_NORMS}; got {mode!r}")
        if mode == "raw":
            return self.features
        layers = range(self.num_layers) if mode == "normed" else [self.num_layers - 1]
        out = self.features.clone()
        with torch.no_grad():
            for l in layers:
                x = self.features[l].to(device=self.adapter.device, dtype=self.adapter.dtype)
                out[l] = self.adapter.norm(x).to(device=out.device, dtype=out.dtype)
        return out


def _trained(spec: str, device, recipe_overrides: dict | None):
    from .train import train_cached

    parts = spec[len(TRAINED_PREFIX):].split(":")
    if len(parts) > 2 or not parts[0] or not all(parts):
        raise ValueError(f"a trained model is named 'train:<recipe>' or 'train:<recipe>:<objective>' (e.g. "
                         f"'train:vit-fashion-mnist:aligned'); got {spec!r}")
    recipe, objective = parts[0], (parts[1] if len(parts) == 2 else "standard")
    if recipe_overrides is not None and not isinstance(recipe_overrides, dict):
        raise TypeError(f"recipe_overrides must map recipe names to dicts of config keys, e.g. "
                        f"{{'vit-fashion-mnist': {{'epochs': 1}}}}; got {type(recipe_overrides).__name__}")
    overrides = (recipe_overrides or {}).get(recipe, {})
    if not isinstance(overrides, dict):
        raise TypeError(f"recipe_overrides[{recipe!r}] must be a dict of config keys; got {overrides!r}")
    return train_cached(recipe, objective=objective, device=str(device), **overrides)


def load_layer_features(model: str, *, n_texts: int = 1000, n_documents: int = 16, n_images: int = 1000,
                        pooling: str | None = None, batch_size: int = 64, seed: int = 0,
                        device: str | torch.device = "auto", cache_dir=None,
                        recipe_overrides: dict | None = None) -> LayerFeatures:
    """Per-layer features of `model` over the samples the notebooks use for its kind -> `LayerFeatures`.

    model:
      - a text encoder (``"minilm-l6"``, ``"bert-base-uncased"``, ...): `n_texts` Rotten Tomatoes review
        snippets (`layersim.data.load_rotten_tomatoes`, seeded), one vector per snippet (`pooling`, default
        the model's readout pooling: pass "mean" for MiniLM, a sentence-transformer);
      - a causal LM (``"smollm2-135m"``, ``"gpt2"``): every token of the first `n_documents` documents of the
        test split of the offline English corpus (`layersim.data.load_english_corpus`), truncated to the
        adapter's max_length; the raw residual states (see `LayerFeatures.with_norm` for the final norm);
      - ``"train:<recipe>"`` or ``"train:<recipe>:<objective>"``: the model `layersim.train.train_cached`
        trains from that recipe with that objective (default standard; trained once, then cached), read on
        the first `n_images` images of its test split, CLS token by default; `recipe_overrides` maps recipe
        names to changes of their config (e.g. ``{"vit-fashion-mnist": {"epochs": 1}}``), as the notebooks'
        parameter of that name does.
    Features are extracted with `layersim.extract.extract` (cached in `cache_dir` when given) on `device`
    ("auto": CUDA when available).
    """
    from . import data, extract
    from .models import load_model

    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a model name such as 'minilm-l6', 'smollm2-135m' or "
                         f"'train:vit-fashion-mnist'; got {model!r}")
    for name, value in (("n_texts", n_texts), ("n_documents", n_documents), ("n_images", n_images)):
        _count(value, name)
    device = resolve_device(device)
    if model.startswith(TRAINED_PREFIX):
        from .train.tasks import load_splits

        run = _trained(model, device, recipe_overrides)
        _, test, classes, kind = load_splits(run.config)
        if kind != "image":
            raise ValueError(f"{model}: trained on {run.config.data} ({kind}); only image models are read this way. "
                             "A text model: name the saved run folder instead")
        n = min(n_images, len(test))
        images, labels = test.take(range(n))
        adapter = run.adapter
        adapter.model.to(device).eval()
        pooling = pooling or adapter.readout_pooling
        out = extract.extract(adapter, run.prepare(images), pooling=pooling, readout=False, batch_size=batch_size,
                              cache_dir=cache_dir)
        return LayerFeatures(model, "image", out.features.float(), labels, pooling,
                             f"{n} test images of {run.config.data}", adapter)
    adapter = load_model(model, device=device)
    if adapter.vocabulary_readout:  # a causal LM: every token is a sample
        docs = data.load_english_corpus(seed=seed).test[:n_documents]
        out = extract.extract(adapter, docs, pooling="tokens", readout=False, feature_norm=False,
                              batch_size=batch_size, cache_dir=cache_dir)
        return LayerFeatures(model, "tokens", out.features.float(), out.labels, "tokens",
                             f"{out.features.shape[1]} tokens of {len(docs)} English documents", adapter)
    if not hasattr(adapter, "encode"):
        raise ValueError(f"{model} is a vision model: name it as a training run, 'train:<recipe>', so that it is "
                         "read on the images of its own task")
    reviews = data.load_rotten_tomatoes(n=n_texts, seed=seed)
    texts = reviews.train_texts + reviews.test_texts
    labels = torch.cat([reviews.train_labels, reviews.test_labels])
    pooling = pooling or adapter.readout_pooling
    out = extract.extract(adapter, texts, pooling=pooling, readout=False, batch_size=batch_size, cache_dir=cache_dir)
    return LayerFeatures(model, "text", out.features.float(), labels, pooling,
                         f"{len(texts)} review snippets (Rotten Tomatoes)", adapter)


# ---- input checks -------------------------------------------------------------------------------------------
def _features(feats, name: str = "feats", *, min_layers: int = 1, min_samples: int = 1) -> torch.Tensor:
    """(L, n, d) finite float64 tensor from a tensor / array / sequence of (n, d) arrays."""
    if isinstance(feats, (list, tuple)):
        try:
            feats = torch.stack([torch.as_tensor(np.asarray(f)) if not isinstance(f, torch.Tensor) else f
                                 for f in feats])
        except (RuntimeError, ValueError, TypeError) as e:
            raise ValueError(f"{name}: the layers must be arrays of one shape (n, d) to stack: {e}") from None
    if isinstance(feats, np.ndarray):
        feats = torch.from_numpy(feats)
    if not isinstance(feats, torch.Tensor):
        raise TypeError(f"{name} must be an (L, n, d) tensor or array; got {type(feats).__name__}")
    if feats.dim() != 3:
        raise ValueError(f"{name} must be (L, n, d): layers, samples, features; got shape {tuple(feats.shape)}")
    if feats.is_complex() or feats.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers; got dtype {feats.dtype}")
    L, n, d = feats.shape
    if L < min_layers or n < min_samples or d < 1:
        raise ValueError(f"{name} needs at least {min_layers} layers, {min_samples} samples and 1 feature; "
                         f"got shape {tuple(feats.shape)}")
    feats = feats.detach().to(torch.float64)
    if not bool(torch.isfinite(feats).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return feats


def _square(sim, name: str = "sim") -> torch.Tensor:
    sim = torch.as_tensor(np.asarray(sim) if not isinstance(sim, torch.Tensor) else sim).detach()
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"{name} must be a square (L, L) similarity matrix; got shape {tuple(sim.shape)}")
    sim = sim.to(torch.float64)
    if not bool(torch.isfinite(sim).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return sim


def _count(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}; got {value!r}")
    return int(value)


def _size(value, name: str = "size") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def _spearman(x, y) -> float:
    """Spearman rank correlation (nan when either side is constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


# ---- claim 2: similarity against layer gap --------------------------------------------------------------------
@dataclass
class SimilarityTrends:
    """What claim 2 says about an (L, L) similarity matrix, as numbers.

    to_last: (L,) similarity of layers 1..L to layer L. by_gap: (L,) mean similarity of the pairs with
    gap |i - j| = 0..L-1. min_pair: the smallest similarity over pairs of distinct layers (claim 2: > 0).
    rises_to_last: Spearman correlation of the layer number 1..L-1 with its similarity to layer L.
    falls_with_gap: Spearman correlation of the gap 0..L-1 with `by_gap` (claim 2: close to -1).
    pairs_fall_with_gap: Spearman correlation, over every pair i < j, of sim[i, j] with j - i (stricter:
    every pair, not the mean per gap).
    """

    to_last: torch.Tensor
    by_gap: torch.Tensor
    min_pair: float
    rises_to_last: float
    falls_with_gap: float
    pairs_fall_with_gap: float


def similarity_trends(sim) -> SimilarityTrends:
    """The claim-2 numbers of a square (L, L) similarity matrix (COS or CKA), L >= 3 -> `SimilarityTrends`."""
    sim = _square(sim)
    L = sim.shape[0]
    if L < 3:
        raise ValueError(f"similarity trends need at least 3 layers (rank correlations over L-1 >= 2 values); "
                         f"got an ({L}, {L}) matrix")
    iu = torch.triu_indices(L, L, offset=1)
    pairs = sim[iu[0], iu[1]]
    gaps = (iu[1] - iu[0]).numpy()
    to_last = metrics.similarity_to_last(sim)
    by_gap = metrics.similarity_by_gap(sim)
    return SimilarityTrends(
        to_last=to_last, by_gap=by_gap, min_pair=float(pairs.min()),
        rises_to_last=_spearman(np.arange(1, L), to_last[:-1].numpy()),
        falls_with_gap=_spearman(np.arange(L), by_gap.numpy()),
        pairs_fall_with_gap=_spearman(gaps, pairs.numpy()))


# ---- claim 3: outliers -----------------------------------------------------------------------------------------
def typical_distance(feats) -> torch.Tensor:
    """(L,) float64: per layer, the median over samples of the distance ||h_l(x) - mean_l|| of a sample from
    the layer's mean. `feats`: (L, n, d). The unit of `inject_outlier_samples`' size."""
    feats = _features(feats, min_samples=2)
    return (feats - feats.mean(1, keepdim=True)).norm(dim=2).median(dim=1).values


def inject_outlier_samples(feats, size: float, *, count: int, seed: int = 0) -> tuple:
    """Make `count` samples outliers at every layer -> (injected (L, n, d) float64, indices (count,) long).

    Each chosen sample gets a vector of length ``size * typical_distance(feats)[l]`` added at layer l, along
    a random unit direction of its own that is the same at every layer (a sample that stands out the same
    way through the whole network, as the first token of a language model does). The samples and
    directions depend on `seed` only, not on `size`, so a sweep over sizes moves the same samples.
    size 0 returns the features unchanged.
    """
    feats = _features(feats, min_samples=2)
    L, n, d = feats.shape
    count = _count(count, "count")
    if count > n:
        raise ValueError(f"count={count} outlier samples but there are only n={n} samples")
    size = _size(size)
    gen = torch.Generator().manual_seed(int(seed))
    indices = torch.randperm(n, generator=gen)[:count]
    directions = torch.randn(count, d, generator=gen, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    out = feats.clone()
    out[:, indices] += size * typical_distance(feats)[:, None, None] * directions[None]
    return out, indices


def inject_outlier_dimensions(feats, size: float, *, count: int, seed: int = 0) -> tuple:
    """Make `count` feature dimensions large at every layer -> (injected (L, n, d) float64, dims (count,) long).

    In each chosen dimension the samples' deviations from the layer mean are rescaled so that their
    standard deviation becomes ``size`` times the typical one of that layer (the root mean square of the
    standard deviations of all d dimensions): size 1 makes them ordinary, size 20 twenty times larger
    than a typical dimension, as the "outlier dimensions" of trained transformers are. The mean of each
    dimension, and every other dimension, is left as it was. The dimensions depend on `seed` only and are
    chosen among those that vary at every layer.
    """
    feats = _features(feats, min_samples=2)
    L, n, d = feats.shape
    count = _count(count, "count")
    size = _size(size)
    std = feats.std(dim=1)  # (L, d)
    varying = torch.nonzero((std > 0).all(0)).flatten()
    if count > len(varying):
        raise ValueError(f"count={count} outlier dimensions but only {len(varying)} of the d={d} dimensions "
                         "vary at every layer")
    gen = torch.Generator().manual_seed(int(seed))
    dims = varying[torch.randperm(len(varying), generator=gen)[:count]]
    typical = std.pow(2).mean(1).sqrt()  # (L,)
    mean = feats[:, :, dims].mean(1, keepdim=True)
    out = feats.clone()
    out[:, :, dims] = mean + (feats[:, :, dims] - mean) * (size * typical[:, None, None] / std[:, None, dims])
    return out, dims


def mean_pair_change(before, after) -> float:
    """Mean over pairs of distinct layers i < j of |after[i, j] - before[i, j]| for two (L, L) matrices."""
    before, after = _square(before, "before"), _square(after, "after")
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape; got {tuple(before.shape)} and "
                         f"{tuple(after.shape)}")
    L = before.shape[0]
    if L < 2:
        raise ValueError("mean_pair_change needs at least 2 layers (one pair)")
    iu = torch.triu_indices(L, L, offset=1)
    return float((after - before)[iu[0], iu[1]].abs().mean())


@dataclass
class OutlierSweep:
    """How far COS and linear CKA move as injected outliers grow (one entry per size).

    kind: "samples" or "dimensions"; count: how many; sizes: (S,) outlier sizes (see the injectors).
    cos_change, uncentred_cos_change, cka_change: (S,) `mean_pair_change` of the (centred) COS, the
    uncentred COS and linear CKA against the clean features. cos_to_last, cka_to_last: (S, L) similarity
    of every layer to the last one at each size. indices: the outlier samples or dimensions.
    """

    kind: str
    count: int
    sizes: torch.Tensor
    cos_change: torch.Tensor
    uncentred_cos_change: torch.Tensor
    cka_change: torch.Tensor
    cos_to_last: torch.Tensor
    cka_to_last: torch.Tensor
    indices: torch.Tensor

    @property
    def ratio(self) -> torch.Tensor:
        """(S,) cka_change / cos_change (inf where only CKA moved, nan where neither did, e.g. size 0)."""
        return self.cka_change / self.cos_change


def outlier_sweep(feats, sizes: Sequence[float], *, kind: str = "samples", count: int = 5,
                  seed: int = 0) -> OutlierSweep:
    """Inject outliers of each size in `sizes` into `feats` (L, n, d) and measure COS and CKA -> `OutlierSweep`.

    kind "samples": `inject_outlier_samples` (count samples, size in units of the typical distance of a
    sample from the layer mean); kind "dimensions": `inject_outlier_dimensions` (count dimensions, size in
    units of a typical dimension's spread). The same samples / dimensions at every size (fixed by `seed`).
    """
    if kind not in OUTLIER_KINDS:
        raise ValueError(f"kind must be one of {OUTLIER_KINDS}; got {kind!r}")
    feats = _features(feats, min_layers=2, min_samples=2)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (Sequence, np.ndarray, torch.Tensor)) or len(sizes) == 0:
        raise ValueError(f"sizes must be a non-empty list of numbers >= 0; got {sizes!r}")
    sizes = [_size(float(s) if isinstance(s, (np.generic, torch.Tensor)) else s, "every size") for s in sizes]
    inject = inject_outlier_samples if kind == "samples" else inject_outlier_dimensions
    clean_cos, clean_ucos, clean_cka = (metrics.cos_similarity(feats), metrics.cos_similarity(feats, centered=False),
                                        metrics.cka(feats))
    rows = []
    for size in sizes:
        moved, indices = inject(feats, size, count=count, seed=seed)
        cos, ucos, cka = metrics.cos_similarity(moved), metrics.cos_similarity(moved, centered=False), metrics.cka(moved)
        rows.append((mean_pair_change(clean_cos, cos), mean_pair_change(clean_ucos, ucos),
                     mean_pair_change(clean_cka, cka), metrics.similarity_to_last(cos), metrics.similarity_to_last(cka)))
    col = lambda i: torch.tensor([r[i] for r in rows], dtype=torch.float64)  # noqa: E731
    return OutlierSweep(kind, int(count), torch.tensor(sizes, dtype=torch.float64), col(0), col(1), col(2),
                        torch.stack([r[3] for r in rows]), torch.stack([r[4] for r in rows]), indices)


def massive_activation_samples(feats, *, factor: float = 10.0) -> torch.Tensor:
    """(n,) bool: the samples whose vector is, at some layer, more than `factor` times as long as the median
    sample's vector at that layer. `feats`: (L, n, d) raw (uncentred) features.

    In the residual stream of a language model a few tokens (typically the first of each sequence, an
    "attention sink") carry values hundreds of times larger than the rest in a handful of dimensions
    (Sun et al. 2024, "Massive activations in large language models"); this finds them.
    """
    feats = _features(feats, min_samples=2)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"factor must be a number > 1 (how many times the median length); got {factor!r}")
    norms = feats.norm(dim=2)  # (L, n)
    median = norms.median(dim=1, keepdim=True).values
    return (norms > factor * median).any(0)


# ---- claim 4: geodesic trajectories ------------------------------------------------------------------------
@dataclass
class Trajectories:
    """Synthetic per-layer representations. features: (L, n, d) the outputs of layers 1..L; inputs: (n, d)
    the input representation (layer 0, where every path starts); labels: (n,) the class of each sample."""

    features: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor

    @property
    def num_layers(self) -> int:
        return self.features.shape[0]

    def take(self, index) -> "Trajectories":
        """The samples `index` selects (a slice, indices or a bool mask over the n samples), every layer."""
        return Trajectories(self.features[:, index], self.inputs[index], self.labels[index])


def geodesic_trajectories(n: int, dim: int, num_layers: int, num_classes: int, *, separation: float = 1.0,
                          input_scale: float = 1.0, wiggle: float = 0.0, seed: int = 0) -> Trajectories:
    """Samples moving along straight, constant-speed paths from an input to an output representation.

    Output (layer L): ``h_L(x) = separation * mu_y + e`` with class means mu_c ~ N(0, I_d) and noise
    e ~ N(0, I_d), so the classes overlap more as `separation` falls. Input (layer 0): ``h_0(x) ~
    N(0, input_scale^2 I_d)``, unrelated to the class. Layer l = 1..L: ``h_l = h_0 + (l / L) (h_L - h_0)``,
    the geodesic (a straight segment walked at constant speed), which is the paper's assumption.

    ``wiggle > 0`` adds to every path a random-walk bridge that is 0 at both ends (the endpoints stay put),
    with steps of typical length ``wiggle * ||h_L - h_0|| / L`` per layer: a winding path between the same
    endpoints, the counter-example to the geodesic assumption. -> `Trajectories` (float64).
    """
    n, dim = _count(n, "n", 2), _count(dim, "dim")
    num_layers, num_classes = _count(num_layers, "num_layers", 2), _count(num_classes, "num_classes", 2)
    for name, value in (("separation", separation), ("input_scale", input_scale), ("wiggle", wiggle)):
        _size(value, name)
    gen = torch.Generator().manual_seed(int(seed))
    means = torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)
    labels = torch.randint(num_classes, (n,), generator=gen)
    outputs = separation * means[labels] + torch.randn(n, dim, generator=gen, dtype=torch.float64)
    inputs = input_scale * torch.randn(n, dim, generator=gen, dtype=torch.float64)
    t = torch.arange(1, num_layers + 1, dtype=torch.float64)[:, None, None] / num_layers  # (L, 1, 1)
    features = inputs[None] + t * (outputs - inputs)[None]
    if wiggle > 0:
        step = wiggle * (outputs - inputs).norm(dim=1) / num_layers / math.sqrt(dim)  # per-coordinate std
        walk = torch.cumsum(torch.randn(num_layers, n, dim, generator=gen, dtype=torch.float64), dim=0)
        walk = walk * step[None, :, None]
        features = features + walk - t * walk[-1:]  # a bridge: 0 at layer 0 and at layer L
    return Trajectories(features, inputs, labels)


def fit_linear_classifier(features, labels, *, regularization: float = 1.0, max_iter: int = 2000) -> torch.nn.Linear:
    """A multinomial logistic regression (scikit-learn) trained on `features` (n, d) with `labels` (n,),
    returned as a float64 ``torch.nn.Linear(d, C)`` whose logits give the same probabilities.

    `regularization` is scikit-learn's C (inverse strength). Apply it to every layer of a stack to read
    hidden layers with the last layer's classifier: ``classifier(feats)`` -> (L, n, C) logits.
    """
    from sklearn.linear_model import LogisticRegression

    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if x.dim() != 2:
        raise ValueError(f"features must be (n, d): one vector per sample; got shape {tuple(x.shape)}")
    x = _features(x[None], "features", min_samples=2)[0]
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be (n,) = ({x.shape[0]},); got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer classes; got dtype {y.dtype}")
    classes = torch.unique(y)
    if len(classes) < 2:
        raise ValueError("labels must hold at least 2 classes to train a classifier")
    if classes.min() < 0:
        raise ValueError(f"labels must be class indices >= 0; got {int(classes.min())}")
    fit = LogisticRegression(C=regularization, max_iter=max_iter).fit(x.numpy(), y.numpy())
    num_classes = int(classes.max()) + 1
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    bias = torch.full((num_classes,), -1e4, dtype=torch.float64)  # classes never seen: never predicted
    seen = torch.as_tensor(fit.classes_).long()
    if len(seen) == 2:  # binary: scikit-learn keeps one weight vector w for class 1; softmax of (-w/2, w/2)
        w, b = torch.from_numpy(fit.coef_[0]), float(fit.intercept_[0])
        weight[seen[0]], weight[seen[1]], bias[seen[0]], bias[seen[1]] = -w / 2, w / 2, -b / 2, b / 2
    else:
        weight[seen], bias[seen] = torch.from_numpy(fit.coef_), torch.from_numpy(fit.intercept_)
    linear = torch.nn.Linear(x.shape[1], num_classes, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear.requires_grad_(False)


def fraction_rising(values, *, tolerance: float = 0.0) -> float:
    """Share of samples whose value never falls from one layer to the next. `values`: (L, n), e.g. each
    sample's COS to the last layer or its probability of the final prediction; a fall smaller than
    `tolerance` is forgiven."""
    v = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values).detach()
    if v.dim() != 2 or v.shape[0] < 2 or v.shape[1] < 1:
        raise ValueError(f"values must be (L, n) with L >= 2 layers; got shape {tuple(v.shape)}")
    _size(tolerance, "tolerance")
    v = v.to(torch.float64)
    return float(((v[1:] - v[:-1]) >= -tolerance).all(0).to(torch.float64).mean())


def relative_step_lengths(feats) -> torch.Tensor:
    """(L-1, n) float64: the length of each sample's step from layer l to l+1 as a share of its whole path
    length (each column sums to 1). `feats`: (L, n, d) raw features, L >= 2. At constant speed every step
    is 1/(L-1); a sample that never moves gets 1/(L-1) everywhere."""
    feats = _features(feats, min_layers=2)
    steps = (feats[1:] - feats[:-1]).norm(dim=2)  # (L-1, n)
    total = steps.sum(0, keepdim=True)
    even = torch.full_like(steps, 1.0 / steps.shape[0])
    return torch.where(total > 0, steps / torch.where(total > 0, total, torch.ones_like(total)), even)
