"""The CKA family: HSIC, CKA (linear / RBF, biased / debiased, Gram or feature form) and the minibatch
CKA of Nguyen et al. (2021).

``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with K, L the n x n kernel matrices of two
layers. ``kernel="linear"``: ``K = X X^T``; ``kernel="rbf"``: ``K_ij = exp(-||x_i - x_j||^2 /
(2 threshold^2 m))`` with ``m`` the median of the squared pairwise distances of that layer, taken, as
in the authors' colab, over the full n x n matrix including its zero diagonal (for n > 10,000 the
median comes from a fixed random subset of 10,000 samples). Biased HSIC is
``tr(K H L H) / (n-1)^2``; the debiased (unbiased) HSIC of Song et al. (2012), also used by Nguyen et
al. (2021), is ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``
with ``K~`` = K with a zeroed diagonal; it needs n >= 4.

Biased CKA lies in [0, 1]. **Debiased CKA lies in [-1, 1] and can be negative**: its numerator is an
unbiased estimate of a non-negative quantity and fluctuates around it, so for (nearly) independent
layers, or few samples, values slightly below 0 are normal. Results are clamped to these ranges (only
rounding can leave them).

Linear CKA has two exact forms: the Gram (sample) space form above, O(n^2 d) time, and the feature
space form ``||X_c^T Y_c||_F^2`` (biased) plus the row-norm corrections of the debiased estimator,
O(n d^2). :func:`cka` chooses the cheaper by counting multiply-adds for the given shapes. All layer
pairs come from one pass over the data: the per-pair cross-products ``X_l^T X_m`` are exactly the
blocks of ``Z^T Z`` for the column stack Z of the centred layers (only the upper triangle of blocks
is computed when ``other`` is None).

Precision: means are accumulated in float64 and subtracted in two parts (so float32 features far from
the origin keep their spread); float32 input keeps float32 matrix products (the arithmetic that
dominates the time), and every reduction after them (Frobenius norms, row norms, the HSIC
combination) is in float64; the results agree with float64 input to about 1e-6. The Gram-space path
works in float64 throughout. A layer whose magnitude would overflow or underflow these products
(float32 beyond about 1e6 or below 1e-6, float64 beyond 2^+-120) is first multiplied by a power of
two, exactly; CKA is invariant to it and :func:`hsic` undoes it in its result.
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np
import torch

from ._reduce import Accumulator, all_reduce_sum, empty_device
from ._stack import (Stack, centred, check_min_samples, check_not_constant, pair_stacks, subtract_mean,
                     times_power_of_two)

__all__ = ["cka", "hsic", "MinibatchCKA"]

# Bytes of float64 scratch the Gram-space path may hold at once (kernel rows of all layers).
_GRAM_CHUNK_BYTES = 256 * 2**20
# Above this many samples the RBF median distance comes from a fixed random subset of this size.
_MEDIAN_MAX_SAMPLES = 10_000


# ----------------------------------------------------------------------------------------------
# Linear HSIC, feature-space form
# ----------------------------------------------------------------------------------------------
def frobenius_sq(matrix: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius norm, summed in float64."""
    return torch.linalg.vector_norm(matrix.reshape(-1), dtype=torch.float64).square()


def column_stack(stack: Stack) -> torch.Tensor:
    """The layers minus their means side by side: Z = [X_1c, ..., X_Lc], shape (n, sum of widths),
    in the stack's compute dtype."""
    stacked = torch.empty(stack.n, sum(stack.widths), dtype=stack.dtype, device=stack.device)
    offset = 0
    for layer, mean in zip(stack.layers, stack.means):
        width = layer.shape[1]
        subtract_mean(layer, mean, stacked[:, offset : offset + width])
        offset += width
    return stacked


def _block_frobenius_sq(left: torch.Tensor, right: torch.Tensor, right_widths: List[int]) -> torch.Tensor:
    """||left^T R_m||_F^2 for each column block R_m of ``right`` (widths given) -> float64 vector.

    One matrix product for all blocks; the squared column norms are summed per block in float64.
    """
    column_sq = torch.linalg.vector_norm(left.T @ right, dim=0, dtype=torch.float64).square()
    block_of_column = torch.repeat_interleave(
        torch.arange(len(right_widths), device=column_sq.device),
        torch.tensor(right_widths, device=column_sq.device),
    )
    return torch.zeros(len(right_widths), dtype=torch.float64, device=column_sq.device).index_add_(
        0, block_of_column, column_sq
    )


def row_sq_norms(layer: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(layer, dim=1, dtype=torch.float64).square()


def biased_hsic_from_moments(frob_sq, n: int) -> torch.Tensor:
    """Biased linear HSIC of centred features: ``||X_c^T Y_c||_F^2 / (n-1)^2`` (broadcasts)."""
    return frob_sq / (n - 1) ** 2


def debiased_hsic_from_moments(frob_sq, ab, sum_a, sum_b, n: int) -> torch.Tensor:
    """Unbiased linear HSIC (Song et al. 2012) of centred features from their moments (broadcasts over
    layer pairs): frob_sq = ||X_c^T Y_c||_F^2, ab = sum_i ||x_i||^2 ||y_i||^2, sum_a = sum_i ||x_i||^2,
    sum_b = sum_i ||y_i||^2 (all of centred rows). The estimator is invariant to shifting the
    features, so centring first changes nothing but the rounding.
    """
    return (frob_sq - n / (n - 2) * ab + sum_a * sum_b / ((n - 1) * (n - 2))) / (n * (n - 3))


def _feature_space_hsic(x: Stack, y: Optional[Stack], debiased: bool):
    """(hsic_xy (L, L'), hsic_xx (L,), hsic_yy (L',)) in float64 via the feature-space form.

    The cross-covariances X_l^T Y_m of all layer pairs are the blocks of Zx^T Zy for the column
    stacks Z of the centred layers; each block row is one matrix product (only the upper triangle
    of blocks when comparing a stack with itself).
    """
    n = x.n
    zx = column_stack(x)
    offsets_x = np.cumsum([0] + x.widths).tolist()

    def block(z, offsets, l):
        return z[:, offsets[l] : offsets[l + 1]]

    frob = torch.zeros(len(x), len(x) if y is None else len(y), dtype=torch.float64, device=zx.device)
    if y is None:
        for l in range(len(x)):
            frob[l, l:] = _block_frobenius_sq(block(zx, offsets_x, l), zx[:, offsets_x[l] :], x.widths[l:])
        frob = torch.triu(frob) + torch.triu(frob, diagonal=1).T
        frob_xx = frob_yy = frob.diagonal()
        columns_x = columns_y = [block(zx, offsets_x, l) for l in range(len(x))]
    else:
        zy = column_stack(y)
        offsets_y = np.cumsum([0] + y.widths).tolist()
        columns_x = [block(zx, offsets_x, l) for l in range(len(x))]
        columns_y = [block(zy, offsets_y, m) for m in range(len(y))]
        for l, column in enumerate(columns_x):
            frob[l] = _block_frobenius_sq(column, zy, y.widths)
        frob_xx = torch.stack([frobenius_sq(c.T @ c) for c in columns_x])
        frob_yy = torch.stack([frobenius_sq(c.T @ c) for c in columns_y])
    if not debiased:
        return tuple(biased_hsic_from_moments(f, n) for f in (frob, frob_xx, frob_yy))
    a = torch.stack([row_sq_norms(c) for c in columns_x], dim=1)  # (n, L)
    b = a if y is None else torch.stack([row_sq_norms(c) for c in columns_y], dim=1)
    sum_a, sum_b = a.sum(0), b.sum(0)
    hsic_xy = debiased_hsic_from_moments(frob, a.T @ b, sum_a[:, None], sum_b[None, :], n)
    hsic_xx = debiased_hsic_from_moments(frob_xx, (a * a).sum(0), sum_a, sum_a, n)
    hsic_yy = debiased_hsic_from_moments(frob_yy, (b * b).sum(0), sum_b, sum_b, n)
    return hsic_xy, hsic_xx, hsic_yy


# ----------------------------------------------------------------------------------------------
# HSIC, Gram-space form (linear or RBF), processed in row chunks so memory stays bounded
# ----------------------------------------------------------------------------------------------
def median_sq_distance(x: torch.Tensor) -> torch.Tensor:
    """Median of the n x n squared-distance matrix, diagonal zeros included (as the colab's np.median).

    The matrix holds n zeros and every off-diagonal distance twice, so its order statistics follow
    from the sorted unique distances. For n > _MEDIAN_MAX_SAMPLES the same order statistic (the
    quantile (n/2 - 1)/(n - 1) of the off-diagonal distances, which the zeros shift slightly below
    one half) is estimated from a fixed random subset of samples, so the result stays deterministic.
    """
    n = x.shape[0]
    subset = n > _MEDIAN_MAX_SAMPLES
    if subset:
        generator = torch.Generator().manual_seed(0)
        pick = torch.randperm(n, generator=generator)[:_MEDIAN_MAX_SAMPLES].to(x.device)
        x = x[pick]
    size = x.shape[0]
    sq = x.square().sum(1)
    unique = torch.empty(size * (size - 1) // 2, dtype=torch.float64, device=x.device)  # strict upper triangle
    filled = 0
    chunk = max(1, 2**22 // size)
    for start in range(0, size - 1, chunk):
        stop = min(size - 1, start + chunk)
        d2 = (sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)).clamp_min_(0)
        rows = torch.arange(start, stop, device=x.device)[:, None]
        cols = torch.arange(size, device=x.device)[None, :]
        values = d2[cols > rows]
        unique[filled : filled + values.numel()] = values
        filled += values.numel()
    if subset:
        quantile = (n / 2 - 1) / (n - 1)
        k = min(unique.numel(), max(1, round(quantile * unique.numel())))
        return torch.kthvalue(unique, k).values
    total = n * n

    def order_statistic(position: int) -> torch.Tensor:
        if position < n:
            return torch.zeros((), dtype=torch.float64, device=x.device)
        k = (position - n) // 2 + 1  # 1-based rank among the unique off-diagonal distances
        return torch.kthvalue(unique, k).values

    return (order_statistic((total - 1) // 2) + order_statistic(total // 2)) / 2


class _KernelRows:
    """Rows of one layer's n x n kernel matrix, with the centring the HSIC estimator needs."""

    def __init__(self, x: torch.Tensor, kernel: str, threshold: float, debiased: bool, where: str):
        self.x = x  # centred, float64
        self.n = x.shape[0]
        self.kernel = kernel
        self.debiased = debiased
        self.sq_norms = x.square().sum(1)
        if kernel == "rbf":
            median = median_sq_distance(x)
            if not median > 0:
                raise ValueError(
                    f"{where}: the median pairwise distance is zero (more than half of the sample "
                    "pairs coincide), so the RBF bandwidth is undefined"
                )
            self.scale = 1.0 / (2.0 * threshold**2 * median)
            diag = torch.ones(self.n, dtype=torch.float64, device=x.device)
            row_sums = torch.zeros(self.n, dtype=torch.float64, device=x.device)
            for start, stop, rows in self._raw_chunks():
                row_sums[start:stop] = rows.sum(1)
        else:
            diag = self.sq_norms
            # Centred features give a centred Gram matrix: its row sums are zero.
            row_sums = torch.zeros(self.n, dtype=torch.float64, device=x.device)
        n = self.n
        if debiased:
            # U-centring (Szekely & Rizzo; Song et al.): zero diagonal, subtract row/column means.
            col = row_sums - diag
            means = col / (n - 2)
            self.offset = means - means.sum() / (2 * (n - 1))
        else:
            means = row_sums / n
            self.offset = means - means.mean() / 2

    def _raw_chunks(self, chunk: Optional[int] = None):
        chunk = chunk or max(1, _GRAM_CHUNK_BYTES // (8 * self.n))
        for start in range(0, self.n, chunk):
            stop = min(self.n, start + chunk)
            yield start, stop, self.raw_rows(start, stop)

    def raw_rows(self, start: int, stop: int) -> torch.Tensor:
        dots = self.x[start:stop] @ self.x.T
        if self.kernel == "linear":
            return dots
        d2 = (self.sq_norms[start:stop, None] + self.sq_norms[None, :] - 2.0 * dots).clamp_min_(0)
        index = torch.arange(start, stop, device=d2.device)
        d2[index - start, index] = 0.0
        return torch.exp(-d2 * self.scale)

    def centred_rows(self, start: int, stop: int) -> torch.Tensor:
        rows = self.raw_rows(start, stop) - self.offset[start:stop, None] - self.offset[None, :]
        if self.debiased:
            index = torch.arange(start, stop, device=rows.device)
            rows[index - start, index] = 0.0
        return rows


def _gram_space_hsic(x: Stack, y: Optional[Stack], kernel: str, debiased: bool, threshold: float):
    """(hsic_xy, hsic_xx, hsic_yy) in float64 from the n x n kernel matrices, chunked over rows."""
    n = x.n

    def kernels(stack: Stack):
        return [
            _KernelRows(c, kernel, threshold, debiased, f"{stack.name} layer {i + 1}")
            for i, c in enumerate(centred(stack.to_float64()))
        ]

    kx = kernels(x)
    ky = kx if y is None else kernels(y)
    device = kx[0].x.device
    hsic_xy = torch.zeros(len(kx), len(ky), dtype=torch.float64, device=device)
    self_x = torch.zeros(len(kx), dtype=torch.float64, device=device)
    self_y = torch.zeros(len(ky), dtype=torch.float64, device=device)
    count = len(kx) + (0 if y is None else len(ky))
    chunk = max(1, _GRAM_CHUNK_BYTES // (8 * n * count))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows_x = torch.stack([k.centred_rows(start, stop).reshape(-1) for k in kx])
        rows_y = rows_x if y is None else torch.stack([k.centred_rows(start, stop).reshape(-1) for k in ky])
        hsic_xy += rows_x @ rows_y.T
        if y is not None:
            self_x += rows_x.square().sum(1)
            self_y += rows_y.square().sum(1)
    scale = 1.0 / (n * (n - 3)) if debiased else 1.0 / (n - 1) ** 2
    hsic_xy *= scale
    if y is None:
        self_x = self_y = hsic_xy.diagonal()
    else:
        self_x, self_y = self_x * scale, self_y * scale
    return hsic_xy, self_x, self_y


# ----------------------------------------------------------------------------------------------
# CKA
# ----------------------------------------------------------------------------------------------
def choose_form(x: Stack, y: Optional[Stack]) -> str:
    """'feature' or 'gram' for linear CKA, whichever needs fewer multiply-adds for these shapes."""
    n = x.n
    wx = x.widths
    wy = wx if y is None else y.widths
    if y is None:
        feature = n * sum(wx[l] * wx[m] for l in range(len(wx)) for m in range(l, len(wx)))
        gram = n * n * (sum(wx) + len(wx) * len(wx))
    else:
        feature = n * (sum(wx) * sum(wy) + sum(w * w for w in wx) + sum(w * w for w in wy))
        gram = n * n * (sum(wx) + sum(wy) + len(wx) * len(wy) + len(wx) + len(wy))
    if x.dtype == torch.float32:
        gram *= 2  # the Gram path computes in float64, at about half the float32 speed
    return "gram" if gram < feature else "feature"


def check_kernel(kernel: str, threshold: float) -> str:
    kernel = str(kernel).lower()
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}")
    if kernel == "rbf":
        try:
            ok = math.isfinite(threshold) and threshold > 0
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(
                f"threshold (RBF bandwidth as a fraction of the median distance) must be a number > 0; got {threshold!r}"
            )
    return kernel


def hsic_parts(feats, other, kernel, debiased, threshold, form, *, check_constant=True, true_scale=True,
               check_degenerate=False):
    """(hsic_xy (L, L'), hsic_xx (L,), hsic_yy (L',)) float64 of validated input.

    The layers are first brought to a safe magnitude by powers of two (:meth:`Stack.well_scaled`);
    ``true_scale=True`` undoes that in the result (the linear kernel's HSIC is homogeneous of degree 2
    in each layer; the RBF kernel's does not depend on scale), ``False`` leaves it (CKA is invariant).
    ``check_degenerate``: ValueError for a layer whose debiased self-HSIC is zero to rounding.
    """
    kernel = check_kernel(kernel, threshold)
    x, y = pair_stacks(feats, other)
    check_min_samples(x.n, debiased)
    if check_constant:
        check_not_constant(x, "CKA")
        if y is not None:
            check_not_constant(y, "CKA")
    if form not in ("auto", "feature", "gram"):
        raise ValueError(f"form must be 'auto', 'feature' or 'gram'; got {form!r}")
    if kernel == "rbf":
        if form == "feature":
            raise ValueError("the RBF kernel has no feature-space form; use form='gram' or 'auto'")
        form = "gram"
    elif form == "auto":
        form = choose_form(x, y)
    x = x.well_scaled()
    y = None if y is None else y.well_scaled()
    if form == "feature":
        parts = _feature_space_hsic(x, y, debiased)
    else:
        parts = _gram_space_hsic(x, y, kernel, debiased, threshold)
    if y is None:  # a stack with itself: exactly symmetric (matrix products need not round alike)
        parts = ((parts[0] + parts[0].T) / 2, parts[1], parts[2])
    if debiased and check_degenerate:
        for stack, self_hsic in ((x, parts[1]), (y, parts[2])):
            if stack is not None:
                names = [f"{stack.name} layer {i + 1}" for i in range(len(stack))]
                check_debiased_self_hsic(self_hsic, _self_hsic_scale(stack, kernel), names,
                                         _DEGENERATE_RTOL[stack.dtype if form == "feature" else torch.float64])
    if not true_scale or kernel == "rbf":
        return parts
    return _undo_scales(parts, x, x if y is None else y)


# A debiased self-HSIC below this fraction of the size of its terms is zero up to rounding.
_DEGENERATE_RTOL = {torch.float32: 1e-6, torch.float64: 1e-10}


def _self_hsic_scale(stack: Stack, kernel: str) -> torch.Tensor:
    """(L,) float64 bound on the terms of each layer's debiased self-HSIC, which cancel to give it:
    linear kernel (sum_i ||x_i - mean||^2)^2 / (n (n-3)), RBF (kernel values <= 1) n / (n-3)."""
    n = stack.n
    if kernel == "rbf":
        return torch.full((len(stack),), n / (n - 3), dtype=torch.float64)
    sums = []
    for layer, mean in zip(stack.layers, stack.means):
        centred_layer = subtract_mean(layer, mean, torch.empty(layer.shape, dtype=torch.float64, device=layer.device))
        sums.append(centred_layer.square().sum())
    return torch.stack(sums).cpu() ** 2 / (n * (n - 3))


def check_debiased_self_hsic(self_hsic: torch.Tensor, scale: torch.Tensor, names: List[str], rtol: float) -> None:
    """ValueError naming the first layer (``names``: "feats layer 1", ...) whose debiased self-HSIC is
    not above ``rtol * scale``: the unbiased estimator has degenerated (zero up to rounding), so its
    CKA would be rounding noise."""
    for name, value, bound in zip(names, self_hsic.tolist(), scale.tolist()):
        if not value > rtol * bound:
            raise ValueError(
                f"{name}: its debiased (unbiased) self-HSIC is zero up to rounding ({value:.3g}), "
                "so debiased CKA is undefined for it (the estimator degenerates when few samples differ, "
                "e.g. n=4 with three equal); use more samples or debiased=False"
            )


def _undo_scales(parts, x: Stack, y: Stack):
    """HSIC of the original features from that of the layers rescaled by 2^k (linear kernel: HSIC is
    homogeneous of degree 2 in each layer). ValueError if the true value lies beyond float64."""
    if not any(x.scales) and not any(y.scales):
        return parts
    hsic_xy, hsic_xx, hsic_yy = parts
    hsic_xy = torch.stack([
        torch.stack([times_power_of_two(hsic_xy[l, m], -2 * (kx + ky)) for m, ky in enumerate(y.scales)])
        for l, kx in enumerate(x.scales)
    ])
    hsic_xx = torch.stack([times_power_of_two(value, -4 * k) for value, k in zip(hsic_xx, x.scales)])
    hsic_yy = torch.stack([times_power_of_two(value, -4 * k) for value, k in zip(hsic_yy, y.scales)])
    result = (hsic_xy, hsic_xx, hsic_yy)
    if not all(bool(torch.isfinite(part).all()) for part in result):
        raise ValueError(
            "the HSIC of these features lies beyond the float64 range (their magnitude is too large); "
            "rescale the features (CKA itself is scale invariant and unaffected)"
        )
    return result


def normalise(hsic_xy: torch.Tensor, hsic_xx: torch.Tensor, hsic_yy: torch.Tensor, debiased: bool) -> torch.Tensor:
    """CKA = HSIC_xy / sqrt(HSIC_xx HSIC_yy), clamped to its range ([0, 1] biased, [-1, 1] debiased:
    only rounding can leave it); a zero denominator gives 0 instead of NaN."""
    denominator = (hsic_xx.clamp_min(0)[:, None] * hsic_yy.clamp_min(0)[None, :]).sqrt()
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    result = torch.where(denominator > 0, hsic_xy / safe, torch.zeros_like(hsic_xy))
    return result.clamp_(-1.0 if debiased else 0.0, 1.0)


def cka(
    feats,
    other=None,
    *,
    kernel: str = "linear",
    debiased: bool = False,
    threshold: float = 0.5,
    form: str = "auto",
) -> torch.Tensor:
    """Centred kernel alignment (CKA) of every pair of layers -> (L, L') float64 tensor.

    ``feats``: (L, n, d) tensor/array or a sequence of L arrays (n, d_l) (widths may differ).
    ``other``: optional second stack (L', n, d'_m) over the same n samples, e.g. another model of
    another width (cross-model CKA); default ``feats`` itself.

    ``kernel``: ``"linear"`` (Kornblith et al. 2019) or ``"rbf"`` with bandwidth ``threshold`` times
    the median pairwise distance of each layer (as in the authors' colab; the median is of the
    squared distances over the full n x n matrix). ``debiased=True`` uses the unbiased HSIC
    estimator (Song et al. 2012; needs n >= 4) and can then return values in [-1, 0).
    ``form``: ``"auto"`` (the cheaper exact form for the shapes), ``"feature"`` (linear kernel only)
    or ``"gram"``; both forms give the same value up to rounding.

    Larger means more similar: biased CKA lies in [0, 1], debiased in [-1, 1]; the diagonal of
    ``cka(feats)`` is 1. Invariant to orthogonal transforms and isotropic scaling of either layer (not
    to general linear maps). Raises ValueError for a constant layer (its CKA is undefined), and with
    ``debiased=True`` for a layer whose unbiased self-HSIC degenerates to zero (few distinct samples).
    """
    parts = hsic_parts(feats, other, kernel, debiased, threshold, form, true_scale=False, check_degenerate=True)
    result = normalise(*parts, debiased)
    if other is None:  # exactly 1, not 1 +- rounding, where the layer's self-HSIC is positive
        result.diagonal()[parts[1] > 0] = 1.0
    return result


def hsic(
    feats, other=None, *, kernel: str = "linear", debiased: bool = False, threshold: float = 0.5, form: str = "auto"
) -> torch.Tensor:
    """HSIC of every pair of layers -> (L, L') float64 tensor (the un-normalised numerator of CKA).

    Shapes and ``kernel``/``debiased``/``threshold``/``form`` as in :func:`cka`. Biased HSIC is
    ``tr(K H L H) / (n-1)^2``; debiased is the unbiased estimator (Song et al. 2012), which can be
    negative. Larger means more dependent, but unlike CKA the scale depends on the features'
    magnitude (a ValueError if it lies beyond the float64 range).
    """
    return hsic_parts(feats, other, kernel, debiased, threshold, form, check_constant=False)[0]


class MinibatchCKA(Accumulator):
    """Minibatch CKA of Nguyen et al. (2021): average per-batch HSIC, then normalise.

    ``CKA_mb(l, m) = mean_k HSIC_k(l, m) / sqrt(mean_k HSIC_k(l, l) mean_k HSIC_k(m, m))`` over
    minibatches k, with the unbiased HSIC by default (``debiased=True``, as Nguyen et al.; each batch
    needs b >= 4) so the average is an unbiased estimate of the population HSIC. Unlike
    :class:`StreamingCKA` this is *not* the full-data CKA: it depends on how the data is batched,
    but it works for the RBF kernel too (bandwidth from each batch's own median distance).
    ``update(batch_feats, batch_other=None)``: (L, b, d) and (L', b, d') batches; ``compute()`` ->
    (L, L') float64 tensor, larger means more similar (a layer constant in every batch gets 0).
    ``merge(other)`` / ``all_reduce_()`` combine accumulators of other batches (the batches are
    then all of theirs). Memory O(L L' + one batch).
    """

    def __init__(self, *, kernel: str = "linear", debiased: bool = True, threshold: float = 0.5):
        self.kernel = check_kernel(kernel, threshold)
        self.debiased = debiased
        self.threshold = threshold
        self.n = 0  # batches seen
        self._sums: Optional[List[torch.Tensor]] = None  # sums over batches of hsic_xy, hsic_xx, hsic_yy

    def update(self, batch_feats, batch_other=None) -> "MinibatchCKA":
        parts = hsic_parts(
            batch_feats, batch_other, self.kernel, self.debiased, self.threshold, "auto", check_constant=False
        )
        if self._sums is None:
            self._sums = [p.clone() for p in parts]
        else:
            if parts[0].shape != self._sums[0].shape:
                raise ValueError(
                    f"batch gives a {tuple(parts[0].shape)} result, earlier batches {tuple(self._sums[0].shape)}"
                )
            for total, p in zip(self._sums, parts):
                total += p
        self.n += 1
        return self

    @property
    def batches(self) -> int:
        """Number of batches accumulated (the unit this estimator averages over)."""
        return self.n

    def compute(self) -> torch.Tensor:
        if self._sums is None:
            raise ValueError("no batches were given to update()")
        means = [s / self.batches for s in self._sums]
        if not all(bool(torch.isfinite(m).all()) for m in means):
            raise ValueError("the summed HSIC overflowed float64: rescale the features (CKA is scale invariant)")
        return normalise(*means, self.debiased)

    # merging (see Accumulator)
    def _signature(self) -> dict:
        shape = None if self._sums is None else tuple(self._sums[0].shape)
        return {"kernel": self.kernel, "debiased": self.debiased, "threshold": self.threshold, "shape": shape,
                "n": self.n}

    def _start_empty(self, signature: dict) -> None:
        rows, cols = signature["shape"]
        device = empty_device()
        self._sums = [torch.zeros(rows, cols, dtype=torch.float64, device=device),
                      torch.zeros(rows, dtype=torch.float64, device=device),
                      torch.zeros(cols, dtype=torch.float64, device=device)]

    def _add(self, other: "MinibatchCKA") -> None:
        for total, part in zip(self._sums, other._sums):
            total += part.to(total.device)
        self.n += other.n

    def _sum_across(self, group, signatures) -> None:
        all_reduce_sum(self._sums, group)
