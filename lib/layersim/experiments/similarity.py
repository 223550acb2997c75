"""Claim 2 and claim 3 as numbers.

Claim 2 (`similarity_trends`): every pair of layers positively similar, similarity falling with the layer
gap |i - j| and rising towards the last layer, as rank correlations.

Claim 3 (`inject_outlier_samples`, `inject_outlier_dimensions`, `outlier_sweep`,
`massive_activation_samples`): a controlled experiment that adds a few outlier samples, or makes a few
dimensions large, in real features and measures how much COS and linear CKA move; and the detector of
the real case, the few tokens of a language model whose residual states are orders of magnitude larger
than the rest ("massive activations", Sun et al. 2024).

Features are stacked layer-first, ``(L, n, d)``; similarity matrices are ``(L, L)`` (see `layersim.metrics`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .. import metrics
from ._checks import _count, _features, _size, _square
from ..validate import real_number

__all__ = ["SimilarityTrends", "similarity_trends", "typical_distance", "inject_outlier_samples",
           "inject_outlier_dimensions", "mean_pair_change", "OutlierSweep", "outlier_sweep",
           "massive_activation_samples", "OUTLIERS", "cos_cka_agreement"]

OUTLIERS = ("samples", "dimensions")


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
        rises_to_last=metrics.spearman(np.arange(1, L), to_last[:-1].numpy()),
        falls_with_gap=metrics.spearman(np.arange(L), by_gap.numpy()),
        pairs_fall_with_gap=metrics.spearman(gaps, pairs.numpy()))


def cos_cka_agreement(cos, cka) -> float:
    """Claim 1 as a number: the Spearman rank correlation of two (L, L) similarity matrices (COS and linear
    CKA) over every pair of distinct layers -- do they order the layer pairs alike? NaN below 3 layers."""
    cos, cka = _square(cos, "cos"), _square(cka, "cka")
    if cos.shape != cka.shape:
        raise ValueError(f"cos {tuple(cos.shape)} and cka {tuple(cka.shape)} must be of the same model")
    iu = torch.triu_indices(cos.shape[0], cos.shape[0], offset=1)
    return metrics.spearman(cos[iu[0], iu[1]].numpy(), cka[iu[0], iu[1]].numpy())


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

    outliers: "samples" or "dimensions"; count: how many; sizes: (S,) outlier sizes (see the injectors).
    cos_change, uncentred_cos_change, cka_change: (S,) `mean_pair_change` of the (centred) COS, the
    uncentred COS and linear CKA against the clean features. cos_to_last, cka_to_last: (S, L) similarity
    of every layer to the last one at each size. indices: the outlier samples or dimensions.
    """

    outliers: str
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


def outlier_sweep(feats, sizes: Sequence[float], *, outliers: str = "samples", count: int = 5,
                  seed: int = 0) -> OutlierSweep:
    """Inject outliers of each size in `sizes` into `feats` (L, n, d) and measure COS and CKA -> `OutlierSweep`.

    outliers "samples": `inject_outlier_samples` (count samples, size in units of the typical distance of a
    sample from the layer mean); outliers "dimensions": `inject_outlier_dimensions` (count dimensions, size in
    units of a typical dimension's spread). The same samples / dimensions at every size (fixed by `seed`).
    """
    if outliers not in OUTLIERS:
        raise ValueError(f"outliers must be one of {OUTLIERS}; got {outliers!r}")
    feats = _features(feats, min_layers=2, min_samples=2)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (Sequence, np.ndarray, torch.Tensor)) or len(sizes) == 0:
        raise ValueError(f"sizes must be a non-empty list of numbers >= 0; got {sizes!r}")
    sizes = [_size(float(s) if isinstance(s, (np.generic, torch.Tensor)) else s, "every size") for s in sizes]
    inject = inject_outlier_samples if outliers == "samples" else inject_outlier_dimensions
    clean_cos, clean_ucos, clean_cka = (metrics.cos_similarity(feats), metrics.cos_similarity(feats, centered=False),
                                        metrics.cka(feats))
    rows = []
    for size in sizes:
        moved, indices = inject(feats, size, count=count, seed=seed)
        cos, ucos, cka = metrics.cos_similarity(moved), metrics.cos_similarity(moved, centered=False), metrics.cka(moved)
        rows.append((mean_pair_change(clean_cos, cos), mean_pair_change(clean_ucos, ucos),
                     mean_pair_change(clean_cka, cka), metrics.similarity_to_last(cos), metrics.similarity_to_last(cka)))
    col = lambda i: torch.tensor([r[i] for r in rows], dtype=torch.float64)  # noqa: E731
    return OutlierSweep(outliers, int(count), torch.tensor(sizes, dtype=torch.float64), col(0), col(1), col(2),
                        torch.stack([r[3] for r in rows]), torch.stack([r[4] for r in rows]), indices)


def massive_activation_samples(feats, *, factor: float = 10.0) -> torch.Tensor:
    """(n,) bool: the samples whose vector is, at some layer, more than `factor` times as long as the median
    sample's vector at that layer. `feats`: (L, n, d) raw (uncentred) features.

    In the residual stream of a language model a few tokens (typically the first of each sequence, an
    "attention sink") carry values hundreds of times larger than the rest in a handful of dimensions
    (Sun et al. 2024, "Massive activations in large language models"); this finds them.
    """
    feats = _features(feats, min_samples=2)
    factor = real_number(factor, "factor", low=1, low_open=True, what="a number > 1 (how many times the median length)")
    norms = feats.norm(dim=2)  # (L, n)
    median = norms.median(dim=1, keepdim=True).values
    return (norms > factor * median).any(0)
