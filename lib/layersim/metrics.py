"""Layer-wise similarity metrics: sample-wise cosine (COS), the CKA family, and layer-wise readouts.

Conventions used throughout this module
---------------------------------------
* ``feats`` is a stack of per-layer features: an ``(L, n, d)`` torch tensor or numpy array (L layers,
  n samples, d features per sample), or a sequence of L arrays shaped ``(n, d_l)``. A sequence may mix
  widths for CKA (e.g. the stages of a CNN); COS needs one width. ``other`` is a second stack over the
  *same n samples* (e.g. another model); its widths may differ from ``feats`` for CKA.
* Layers are indexed 0..L-1 in tensors (row ``i`` of a result is layer ``i + 1`` for a reader);
  :func:`saturation_layer` returns layers numbered 1..L, as plots and tables show them.
* Every similarity returned here is "larger means more similar". Results are float64 tensors on
  the input's device, whatever the input dtype (float16/bfloat16 are computed in float32, integers
  in float64).
* Bad input raises ``ValueError`` naming the problem and the layer: wrong ndim, mismatched sample
  counts, NaN/Inf, a constant (zero-variance) layer where centring makes it undefined, too few
  samples.

COS (the paper's measure)
-------------------------
``COS(l, m) = mean_i <u_l(x_i), u_m(x_i)>`` where ``u_l(x) = (h_l(x) - mean_l) / ||h_l(x) - mean_l||``
with ``mean_l`` the mean of layer l over all n samples (``centered=True``, as the authors' code does)
or zero (``centered=False``, plain cosine). A sample whose (centred) vector is exactly zero has no
direction; its cosine is taken as 0. Range [-1, 1]; the diagonal is 1 (when no vector is zero).

CKA (Kornblith et al. 2019)
---------------------------
``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with K, L the n x n kernel matrices of two
layers. ``kernel="linear"``: ``K = X X^T``; ``kernel="rbf"``: ``K_ij = exp(-||x_i - x_j||^2 /
(2 threshold^2 m))`` with ``m`` the median of the squared pairwise distances of that layer, taken, as
in the authors' colab, over the full n x n matrix including its zero diagonal (for n > 10,000 the
median comes from a fixed random subset of 10,000 samples). Biased HSIC is
``tr(K H L H) / (n-1)^2``; the debiased (unbiased) HSIC of Song et al. (2012), also used by Nguyen et
al. (2021), is ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``
with ``K~`` = K with a zeroed diagonal; it needs n >= 4.

Biased CKA lies in [0, 1]. **Debiased CKA can be negative**: its numerator is an unbiased estimate
of a non-negative quantity and fluctuates around it, so for (nearly) independent layers, or few
samples, values slightly below 0 are normal (the denominators are sums of squares and never
negative).

Linear CKA has two exact forms: the Gram (sample) space form above, O(n^2 d) time, and the feature
space form ``||X_c^T Y_c||_F^2`` (biased) plus the row-norm corrections of the debiased estimator,
O(n d^2). :func:`cka` chooses the cheaper by counting multiply-adds for the given shapes. All layer
pairs come from one pass over the data: the per-pair cross-products ``X_l^T X_m`` are exactly the
blocks of ``Z^T Z`` for the column stack Z of the centred layers (only the upper triangle of blocks
is computed when ``other`` is None). Float32 input keeps float32 centring and matrix products (the
arithmetic that dominates the time), and every reduction after them (Frobenius norms, row norms,
the HSIC combination) is in float64; the results agree with float64 input to about 1e-6. The
Gram-space path and COS work in float64 throughout.

Streaming
---------
:class:`StreamingCKA` accumulates, batch by batch, the exact sufficient statistics of linear CKA
(per-layer sums and all cross-products ``X_l^T X_m`` in float64; for the debiased estimator also the
squared row norms and their products) so n never has to fit in memory: its result equals the
in-memory :func:`cka` to rounding (~1e-12). Its memory is ``O((sum of widths)^2)``, independent of n.
:class:`MinibatchCKA` is the *different* estimator of Nguyen et al. (2021): the average over
minibatches of per-batch (by default unbiased) HSIC values, combined into CKA at the end. It works
for the RBF kernel too, but it depends on the batch size and does not equal the full-data CKA.
:class:`StreamingCOS` streams COS exactly; centred COS needs the global means first
(:class:`StreamingMean`, one extra pass).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "cos_similarity",
    "cos_per_sample",
    "cka",
    "hsic",
    "saturation_layer",
    "layerwise_accuracy",
    "similarity_to_last",
    "similarity_by_gap",
    "trajectory_straightness",
    "StreamingMean",
    "StreamingCOS",
    "StreamingCKA",
    "MinibatchCKA",
]

# Bytes of float64 scratch the Gram-space path may hold at once (kernel rows of all layers).
_GRAM_CHUNK_BYTES = 256 * 2**20
# Samples (rows) of float64 data the COS path turns into unit vectors at once.
_COS_CHUNK_BYTES = 64 * 2**20
# Above this many samples the RBF median distance comes from a fixed random subset of this size.
_MEDIAN_MAX_SAMPLES = 10_000


# ----------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------
@dataclass
class _Stack:
    """A validated stack of per-layer features: L tensors (n, d_l) in one compute dtype, and their
    per-layer means over samples (float64 tensors (d_l,), summed in the compute dtype)."""

    layers: List[torch.Tensor]
    means: List[torch.Tensor]
    name: str
    whole: Optional[torch.Tensor] = None  # the (L, n, d) tensor the layers are views of, if any

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """(L, stop - start, d) samples start..stop-1 of every layer (equal widths only)."""
        if self.whole is not None:
            return self.whole[:, start:stop]
        return torch.stack([layer[start:stop] for layer in self.layers])

    @property
    def n(self) -> int:
        return self.layers[0].shape[0]

    @property
    def widths(self) -> List[int]:
        return [layer.shape[1] for layer in self.layers]

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].dtype

    def __len__(self) -> int:
        return len(self.layers)

    def to_float64(self) -> "_Stack":
        if self.dtype == torch.float64:
            return self
        whole = None if self.whole is None else self.whole.to(torch.float64)
        layers = list(whole.unbind(0)) if whole is not None else [l.to(torch.float64) for l in self.layers]
        return _Stack(layers, self.means, self.name, whole)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.float64:
        return torch.float64
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.float32
    if dtype.is_complex:
        raise ValueError(f"complex features are not supported (got dtype {dtype})")
    return torch.float64  # integers and booleans


def _to_tensor(array, what: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach()
    try:
        return torch.as_tensor(np.asarray(array))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{what} could not be read as a numeric array: {err}") from None


def _as_stack(feats, name: str = "feats") -> _Stack:
    """Turn an (L, n, d) array or a sequence of (n, d_l) arrays into a validated :class:`_Stack`.

    Checks the shapes, that every layer holds the same samples and that all values are finite (a
    NaN or Inf makes the layer's sum non-finite, so the means double as the check).
    """
    if feats is None:
        raise ValueError(f"{name} is None")
    if isinstance(feats, (list, tuple)):
        if len(feats) == 0:
            raise ValueError(f"{name} is an empty sequence; expected L >= 1 layers of shape (n, d)")
        layers = [_to_tensor(f, f"{name} layer {i + 1}") for i, f in enumerate(feats)]
        for i, layer in enumerate(layers):
            if layer.ndim != 2:
                raise ValueError(
                    f"{name} layer {i + 1} must have shape (n, d); got ndim={layer.ndim} "
                    f"shape={tuple(layer.shape)}"
                )
        stacked = None
    else:
        stacked = _to_tensor(feats, name)
        if stacked.ndim != 3:
            hint = " (for a single layer pass [x] or x[None])" if stacked.ndim == 2 else ""
            raise ValueError(
                f"{name} must have shape (L, n, d) or be a sequence of (n, d) arrays; got ndim="
                f"{stacked.ndim} shape={tuple(stacked.shape)}{hint}"
            )
        if stacked.shape[0] == 0:
            raise ValueError(f"{name} has no layers (shape {tuple(stacked.shape)})")
        layers = list(stacked.unbind(0))
    n = layers[0].shape[0]
    for i, layer in enumerate(layers):
        if layer.shape[0] != n:
            raise ValueError(
                f"{name} layer {i + 1} has {layer.shape[0]} samples but layer 1 has {n}; every layer "
                "must hold the same samples"
            )
        if layer.shape[1] == 0:
            raise ValueError(f"{name} layer {i + 1} has zero features (shape {tuple(layer.shape)})")
    if n == 0:
        raise ValueError(f"{name} has no samples (n = 0)")
    dtype = torch.float64 if any(_compute_dtype(l.dtype) == torch.float64 for l in layers) else torch.float32
    if stacked is not None:
        stacked = stacked.to(dtype)
        layers = list(stacked.unbind(0))
        means = list(stacked.mean(dim=1).to(torch.float64).unbind(0))
    else:
        layers = [layer.to(dtype) for layer in layers]
        means = [layer.mean(dim=0).to(torch.float64) for layer in layers]
    for i, (layer, mean) in enumerate(zip(layers, means)):
        if not bool(torch.isfinite(mean).all()):
            if not bool(torch.isfinite(layer).all()):
                raise ValueError(f"{name} layer {i + 1} contains NaN or Inf values")
            raise ValueError(
                f"{name} layer {i + 1} has values so large that their sum overflows {dtype}; "
                "pass float64 features"
            )
    return _Stack(layers, means, name, stacked)


def _pair_stacks(feats, other) -> Tuple[_Stack, Optional[_Stack]]:
    """Validate ``feats`` and ``other`` (None means "compare feats with itself")."""
    x = _as_stack(feats, "feats")
    if other is None:
        return x, None
    y = _as_stack(other, "other")
    if y.n != x.n:
        raise ValueError(
            f"feats has n={x.n} samples but other has n={y.n}; both stacks must hold the same samples"
        )
    if y.dtype != x.dtype:  # compute both in the wider dtype
        x, y = x.to_float64(), y.to_float64()
    return x, y


def _check_not_constant(stack: _Stack, purpose: str) -> None:
    for i, layer in enumerate(stack.layers):
        if layer.shape[0] > 1 and not torch.equal(layer[0], layer[1]):
            continue  # two samples differ: not constant (the usual case, decided in O(d))
        if torch.equal(layer, layer[:1].expand_as(layer)):
            raise ValueError(
                f"{stack.name} layer {i + 1} is constant across samples (zero variance); {purpose} "
                "is undefined for it"
            )


def _check_min_samples(n: int, debiased: bool) -> None:
    if debiased and n < 4:
        raise ValueError(f"the debiased (unbiased HSIC) estimate needs n >= 4 samples; got n={n}")
    if n < 2:
        raise ValueError(f"CKA needs at least 2 samples; got n={n}")


def _centred(stack: _Stack) -> List[torch.Tensor]:
    """Layers minus their means, in the stack's compute dtype."""
    return [layer - mean.to(layer.dtype) for layer, mean in zip(stack.layers, stack.means)]


# ----------------------------------------------------------------------------------------------
# COS
# ----------------------------------------------------------------------------------------------
def _unit_rows(x: torch.Tensor, mean: Optional[torch.Tensor]) -> torch.Tensor:
    """float64 rows of x (minus mean), scaled to unit length; an all-zero row stays zero."""
    x = x.to(torch.float64)
    if mean is not None:
        x = x - mean
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def _cos_widths(x: _Stack, y: _Stack) -> int:
    widths = set(x.widths) | set(y.widths)
    if len(widths) != 1:
        raise ValueError(
            "COS compares the same sample's vectors at two layers, so every layer needs the same "
            f"width; got widths {sorted(widths)}"
        )
    return widths.pop()


def _resolve_means(stack: _Stack, centered: bool, mean) -> Optional[List[torch.Tensor]]:
    if not centered:
        return None
    if mean is None:
        return stack.means
    mean = _to_tensor(mean, f"{stack.name} mean").to(torch.float64)
    if mean.shape != (len(stack), stack.widths[0]):
        raise ValueError(
            f"{stack.name} mean must have shape (L, d) = ({len(stack)}, {stack.widths[0]}); got "
            f"{tuple(mean.shape)}"
        )
    return list(mean.to(stack.layers[0].device).unbind(0))


def _cos_chunks(x: _Stack, y: _Stack, means_x, means_y):
    """Yield (start, stop, ux, uy): float64 unit vectors (L, b, d) and (L', b, d) for sample chunks."""
    d = _cos_widths(x, y)
    chunk = max(1, _COS_CHUNK_BYTES // (8 * d * (len(x) + len(y))))
    mean_x = None if means_x is None else torch.stack(means_x)[:, None, :]  # (L, 1, d)
    mean_y = None if means_y is None else torch.stack(means_y)[:, None, :]
    for start in range(0, x.n, chunk):
        stop = min(x.n, start + chunk)
        ux = _unit_rows(x.rows(start, stop), mean_x)
        uy = ux if (y is x and means_y is means_x) else _unit_rows(y.rows(start, stop), mean_y)
        yield start, stop, ux, uy


def _cos_sums(x: _Stack, y: _Stack, means_x, means_y) -> torch.Tensor:
    """(L, L') float64 sums over samples of the per-sample cosines."""
    total = torch.zeros(len(x), len(y), dtype=torch.float64, device=x.layers[0].device)
    for _, _, ux, uy in _cos_chunks(x, y, means_x, means_y):
        total += ux.reshape(len(x), -1) @ uy.reshape(len(y), -1).T
    return total


def cos_similarity(feats, other=None, *, centered: bool = True) -> torch.Tensor:
    """Sample-wise cosine similarity (COS) of every pair of layers -> (L, L') float64 tensor.

    ``feats``: (L, n, d) tensor/array or a sequence of L arrays (n, d). ``other``: optional second
    stack (L', n, d) over the same samples and the same width (default: ``feats`` itself, L' = L).

    Entry (l, m) is the mean over the n samples of the cosine between sample i's vector at layer l
    and at layer m. ``centered=True`` first subtracts each layer's mean over all samples (the
    paper's COS); ``centered=False`` is the plain cosine. Larger means more similar; values lie in
    [-1, 1] and the diagonal of ``cos_similarity(feats)`` is 1. Invariant to a positive rescaling of
    any sample at any layer (and, when centred, to adding a constant vector to a layer).
    """
    x, y = _pair_stacks(feats, other)
    y_or_x = x if y is None else y
    if centered:
        _check_not_constant(x, "centred COS")
        if y is not None:
            _check_not_constant(y, "centred COS")
    means_x = _resolve_means(x, centered, None)
    means_y = means_x if y is None else _resolve_means(y_or_x, centered, None)
    return _cos_sums(x, y_or_x, means_x, means_y) / x.n


def cos_per_sample(
    feats, other=None, *, centered: bool = True, mean=None, other_mean=None
) -> torch.Tensor:
    """Per-sample COS values -> (L, L', n) float64 tensor; ``[l, m, i]`` = cos(h_l(x_i), h_m(x_i)).

    Shapes as in :func:`cos_similarity`, whose result is this tensor's mean over the last axis.
    Use it for distributions (histograms, outlier inspection). For the values against one reference
    layer only, pass that layer as ``other``: ``cos_per_sample(feats, feats[-1:])`` -> (L, 1, n) is
    each sample's COS to the last layer without the (L, L, n) memory.

    ``mean`` / ``other_mean``: optional (L, d) / (L', d) means to centre with instead of this
    batch's own means (e.g. the global means from :class:`StreamingMean` when processing a dataset in
    batches). Ignored when ``centered=False``. Larger means more similar; values in [-1, 1].
    """
    x, y = _pair_stacks(feats, other)
    if centered and mean is None:
        _check_not_constant(x, "centred COS")
    if centered and y is not None and other_mean is None:
        _check_not_constant(y, "centred COS")
    means_x = _resolve_means(x, centered, mean)
    if y is None:
        y, means_y = x, means_x
    else:
        means_y = _resolve_means(y, centered, other_mean)
    out = torch.empty(len(x), len(y), x.n, dtype=torch.float64, device=x.layers[0].device)
    for start, stop, ux, uy in _cos_chunks(x, y, means_x, means_y):
        # (b, L, d) @ (b, d, L') -> (b, L, L'): one small product per sample.
        out[:, :, start:stop] = torch.bmm(ux.transpose(0, 1), uy.permute(1, 2, 0)).permute(1, 2, 0)
    return out


# ----------------------------------------------------------------------------------------------
# Linear HSIC, feature-space form
# ----------------------------------------------------------------------------------------------
def _frobenius_sq(matrix: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius norm, summed in float64."""
    return torch.linalg.vector_norm(matrix.reshape(-1), dtype=torch.float64).square()


def _column_stack(stack: _Stack, shift: Optional[List[torch.Tensor]] = None, dtype=None) -> torch.Tensor:
    """Layers minus ``shift`` (default: their means) side by side: Z = [X_1c, ..., X_Lc], shape
    (n, sum of widths), in ``dtype`` (default: the stack's compute dtype)."""
    shift = stack.means if shift is None else shift
    dtype = stack.dtype if dtype is None else dtype
    stacked = torch.empty(stack.n, sum(stack.widths), dtype=dtype, device=stack.layers[0].device)
    offset = 0
    for layer, mean in zip(stack.layers, shift):
        width = layer.shape[1]
        torch.sub(layer.to(dtype), mean.to(dtype), out=stacked[:, offset : offset + width])
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


def _row_sq_norms(layer: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(layer, dim=1, dtype=torch.float64).square()


def _hsic_from_moments(frob_sq, ab, sum_a, sum_b, n: int, debiased: bool) -> torch.Tensor:
    """Linear HSIC of centred features from their moments (broadcasts over layer pairs).

    frob_sq = ||X_c^T Y_c||_F^2, ab = sum_i ||x_i||^2 ||y_i||^2, sum_a = sum_i ||x_i||^2,
    sum_b = sum_i ||y_i||^2 (all of centred rows). Biased: frob_sq / (n-1)^2. Debiased: the
    unbiased HSIC of Song et al. (2012) rewritten for centred features (the estimator is invariant
    to shifting the features, so centring first changes nothing but the rounding).
    """
    if not debiased:
        return frob_sq / (n - 1) ** 2
    return (frob_sq - n / (n - 2) * ab + sum_a * sum_b / ((n - 1) * (n - 2))) / (n * (n - 3))


def _feature_space_hsic(x: _Stack, y: Optional[_Stack], debiased: bool):
    """(hsic_xy (L, L'), hsic_xx (L,), hsic_yy (L',)) in float64 via the feature-space form.

    The cross-covariances X_l^T Y_m of all layer pairs are the blocks of Zx^T Zy for the column
    stacks Z of the centred layers; each block row is one matrix product (only the upper triangle
    of blocks when comparing a stack with itself).
    """
    n = x.n
    zx = _column_stack(x)
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
        zy = _column_stack(y)
        offsets_y = np.cumsum([0] + y.widths).tolist()
        columns_x = [block(zx, offsets_x, l) for l in range(len(x))]
        columns_y = [block(zy, offsets_y, m) for m in range(len(y))]
        for l, column in enumerate(columns_x):
            frob[l] = _block_frobenius_sq(column, zy, y.widths)
        frob_xx = torch.stack([_frobenius_sq(c.T @ c) for c in columns_x])
        frob_yy = torch.stack([_frobenius_sq(c.T @ c) for c in columns_y])
    if not debiased:
        return (
            _hsic_from_moments(frob, None, None, None, n, False),
            _hsic_from_moments(frob_xx, None, None, None, n, False),
            _hsic_from_moments(frob_yy, None, None, None, n, False),
        )
    a = torch.stack([_row_sq_norms(c) for c in columns_x], dim=1)  # (n, L)
    b = a if y is None else torch.stack([_row_sq_norms(c) for c in columns_y], dim=1)
    sum_a, sum_b = a.sum(0), b.sum(0)
    hsic_xy = _hsic_from_moments(frob, a.T @ b, sum_a[:, None], sum_b[None, :], n, True)
    hsic_xx = _hsic_from_moments(frob_xx, (a * a).sum(0), sum_a, sum_a, n, True)
    hsic_yy = _hsic_from_moments(frob_yy, (b * b).sum(0), sum_b, sum_b, n, True)
    return hsic_xy, hsic_xx, hsic_yy


# ----------------------------------------------------------------------------------------------
# HSIC, Gram-space form (linear or RBF), processed in row chunks so memory stays bounded
# ----------------------------------------------------------------------------------------------
def _median_sq_distance(x: torch.Tensor) -> torch.Tensor:
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
            median = _median_sq_distance(x)
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


def _gram_space_hsic(x: _Stack, y: Optional[_Stack], kernel: str, debiased: bool, threshold: float):
    """(hsic_xy, hsic_xx, hsic_yy) in float64 from the n x n kernel matrices, chunked over rows."""
    n = x.n

    def kernels(stack: _Stack):
        return [
            _KernelRows(c, kernel, threshold, debiased, f"{stack.name} layer {i + 1}")
            for i, c in enumerate(_centred(stack.to_float64()))
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
def _choose_form(x: _Stack, y: Optional[_Stack]) -> str:
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


def _check_kernel(kernel: str, threshold: float) -> str:
    kernel = str(kernel).lower()
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}")
    if kernel == "rbf" and not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold (RBF bandwidth as a fraction of the median distance) must be > 0; got {threshold}")
    return kernel


def _hsic_parts(feats, other, kernel, debiased, threshold, form, *, check_constant=True):
    kernel = _check_kernel(kernel, threshold)
    x, y = _pair_stacks(feats, other)
    _check_min_samples(x.n, debiased)
    if check_constant:
        _check_not_constant(x, "CKA")
        if y is not None:
            _check_not_constant(y, "CKA")
    if form not in ("auto", "feature", "gram"):
        raise ValueError(f"form must be 'auto', 'feature' or 'gram'; got {form!r}")
    if kernel == "rbf":
        if form == "feature":
            raise ValueError("the RBF kernel has no feature-space form; use form='gram' or 'auto'")
        form = "gram"
    elif form == "auto":
        form = _choose_form(x, y)
    if form == "feature":
        return _feature_space_hsic(x, y, debiased)
    return _gram_space_hsic(x, y, kernel, debiased, threshold)


def _normalise(hsic_xy: torch.Tensor, hsic_xx: torch.Tensor, hsic_yy: torch.Tensor) -> torch.Tensor:
    """CKA = HSIC_xy / sqrt(HSIC_xx HSIC_yy); a zero denominator gives 0 instead of NaN."""
    denominator = (hsic_xx.clamp_min(0)[:, None] * hsic_yy.clamp_min(0)[None, :]).sqrt()
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, hsic_xy / safe, torch.zeros_like(hsic_xy))


def _cka(feats, other=None, *, kernel="linear", debiased=False, threshold=0.5, form="auto", check_constant=True):
    hsic_xy, hsic_xx, hsic_yy = _hsic_parts(
        feats, other, kernel, debiased, threshold, form, check_constant=check_constant
    )
    result = _normalise(hsic_xy, hsic_xx, hsic_yy)
    if other is None:  # exactly 1, not 1 +- rounding, where the layer's self-HSIC is positive
        result.diagonal()[hsic_xx > 0] = 1.0
    return result


def cka(feats, other=None, *, kernel: str = "linear", debiased: bool = False, threshold: float = 0.5) -> torch.Tensor:
    """Centred kernel alignment (CKA) of every pair of layers -> (L, L') float64 tensor.

    ``feats``: (L, n, d) tensor/array or a sequence of L arrays (n, d_l) (widths may differ).
    ``other``: optional second stack (L', n, d'_m) over the same n samples, e.g. another model of
    another width (cross-model CKA); default ``feats`` itself.

    ``kernel``: ``"linear"`` (Kornblith et al. 2019) or ``"rbf"`` with bandwidth ``threshold`` times
    the median pairwise distance of each layer (as in the authors' colab; the median is of the
    squared distances over the full n x n matrix). ``debiased=True`` uses the unbiased HSIC
    estimator (Song et al. 2012; needs n >= 4) and can then return slightly negative values.

    Larger means more similar: biased CKA lies in [0, 1], 1 on the diagonal. Invariant to orthogonal
    transforms and isotropic scaling of either layer (not to general linear maps). Linear CKA
    chooses the cheaper of the Gram-space and feature-space forms for the shapes given; both are
    exact. Raises ValueError for a constant layer (its CKA is undefined).
    """
    return _cka(feats, other, kernel=kernel, debiased=debiased, threshold=threshold)


def hsic(
    feats, other=None, *, kernel: str = "linear", debiased: bool = False, threshold: float = 0.5, form: str = "auto"
) -> torch.Tensor:
    """HSIC of every pair of layers -> (L, L') float64 tensor (the un-normalised numerator of CKA).

    Shapes and ``kernel``/``debiased``/``threshold`` as in :func:`cka`. Biased HSIC is
    ``tr(K H L H) / (n-1)^2``; debiased is the unbiased estimator (Song et al. 2012), which can be
    negative. ``form``: ``"auto"`` (cheaper for the shapes), ``"feature"`` (linear kernel only) or
    ``"gram"``; both forms give the same value up to rounding. Larger means more dependent, but
    unlike CKA the scale depends on the features' magnitude.
    """
    return _hsic_parts(feats, other, kernel, debiased, threshold, form, check_constant=False)[0]


# ----------------------------------------------------------------------------------------------
# Readout of every layer: saturation and accuracy
# ----------------------------------------------------------------------------------------------
def _as_predictions(logits_or_preds, name: str) -> torch.Tensor:
    """(L, n, C) logits -> their argmax; (L, n) integer predictions pass through. -> (L, n) int64."""
    values = _to_tensor(logits_or_preds, name)
    if values.ndim == 3:
        if values.shape[2] == 0:
            raise ValueError(f"{name} has zero classes (shape {tuple(values.shape)})")
        if values.is_floating_point() and not bool(torch.isfinite(values).all()):
            raise ValueError(f"{name} contains NaN or Inf logits")
        values = values.argmax(dim=2)
    elif values.ndim == 2:
        if values.is_floating_point() or values.is_complex():
            raise ValueError(
                f"{name} of shape (L, n) must hold integer class predictions (got dtype "
                f"{values.dtype}); pass logits as (L, n, C)"
            )
    else:
        raise ValueError(
            f"{name} must be (L, n) predictions or (L, n, C) logits; got ndim={values.ndim} "
            f"shape={tuple(values.shape)}"
        )
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{name} needs at least one layer and one sample; got shape {tuple(values.shape)}")
    return values.long()


def saturation_layer(preds) -> torch.Tensor:
    """Saturation layer of every sample -> (n,) int64 tensor of layers numbered 1..L.

    ``preds``: (L, n) per-layer argmax predictions (integer class indices), e.g. of the last-layer
    classifier applied to every layer; (L, n, C) logits are also accepted (their argmax is used).
    Sample i's saturation layer is the earliest layer l such that the prediction at every layer
    >= l equals the final layer's prediction (the model's own answer, not the label). L means the
    prediction only settles at the last layer; l < L is an early saturation event.
    """
    preds = _as_predictions(preds, "preds")
    num_layers = preds.shape[0]
    agrees = preds == preds[-1:]
    # Number of trailing layers (counting back from the last) that agree with the last layer.
    trailing = torch.cumprod(agrees.flip(0).long(), dim=0).sum(dim=0)
    return num_layers - trailing + 1


def layerwise_accuracy(logits_or_preds, labels) -> torch.Tensor:
    """Accuracy of every layer's readout -> (L,) float64 tensor of fractions in [0, 1].

    ``logits_or_preds``: (L, n, C) per-layer logits (argmax taken) or (L, n) integer predictions;
    ``labels``: (n,) integer labels. Entry l is the fraction of the n samples whose layer-l
    prediction equals the label; larger is better.
    """
    preds = _as_predictions(logits_or_preds, "logits_or_preds")
    labels = _to_tensor(labels, "labels")
    if labels.ndim != 1 or labels.shape[0] != preds.shape[1]:
        raise ValueError(
            f"labels must have shape (n,) = ({preds.shape[1]},) to match logits_or_preds "
            f"{tuple(preds.shape)}; got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        if not bool((labels == labels.round()).all()):
            raise ValueError("labels must be integer class indices")
    labels = labels.long().to(preds.device)
    return (preds == labels[None, :]).to(torch.float64).mean(dim=1)


# ----------------------------------------------------------------------------------------------
# Helpers on similarity matrices and trajectories
# ----------------------------------------------------------------------------------------------
def _as_matrix(sim, name: str = "sim") -> torch.Tensor:
    sim = _to_tensor(sim, name)
    if sim.ndim != 2:
        raise ValueError(f"{name} must be an (L, L') similarity matrix; got shape {tuple(sim.shape)}")
    return sim.to(torch.float64)


def similarity_to_last(sim) -> torch.Tensor:
    """Similarity of every layer to the last layer -> (L,) float64 tensor (larger = more similar).

    ``sim``: an (L, L') similarity matrix such as :func:`cos_similarity` or :func:`cka` returns;
    the result is its last column, ``sim[:, -1]`` (entry l compares layer l with the last layer of
    the second stack; for a symmetric matrix this is also the last row).
    """
    return _as_matrix(sim)[:, -1].clone()


def similarity_by_gap(sim) -> torch.Tensor:
    """Mean similarity at each layer gap -> (L,) float64 tensor; entry g is the mean of
    ``sim[i, j]`` over all pairs with ``|i - j| = g`` (g = 0..L-1; entry 0 is the diagonal).

    ``sim``: a square (L, L) similarity matrix. Claim 2 of the paper says it falls as g grows
    (larger means more similar).
    """
    sim = _as_matrix(sim)
    if sim.shape[0] != sim.shape[1]:
        raise ValueError(f"sim must be square (L, L) to group by layer gap; got shape {tuple(sim.shape)}")
    num_layers = sim.shape[0]
    return torch.stack(
        [
            torch.cat([sim.diagonal(gap), sim.diagonal(-gap)]).mean() if gap else sim.diagonal().mean()
            for gap in range(num_layers)
        ]
    )


def trajectory_straightness(feats) -> torch.Tensor:
    """Straightness of each sample's path through the layers -> (n,) float64 tensor in [0, 1].

    ``feats``: (L, n, d) (or a sequence of L arrays (n, d)), L >= 2, one width. For sample i with
    representations h_1 .. h_L (raw, not centred), the straightness is the ratio of the end-to-end
    distance to the length of the polygonal path::

        ||h_L - h_1|| / sum_{l=1}^{L-1} ||h_{l+1} - h_l||

    1 means the representations lie on a straight segment, visited in order (the geodesic
    assumption of the paper; constant speed is not required); smaller means a more winding path
    (0: the path returns to its start). A sample that never moves (path length 0) counts as 1.
    Larger means straighter. Include the embedding (input to block 1) as the first layer if the
    path should start there.
    """
    stack = _as_stack(feats)
    if len(stack) < 2:
        raise ValueError(f"a trajectory needs at least 2 layers; got L={len(stack)}")
    if len(set(stack.widths)) != 1:
        raise ValueError(f"every layer needs the same width for a trajectory; got {stack.widths}")
    layers = [layer.to(torch.float64) for layer in stack.layers]
    path = sum(torch.linalg.vector_norm(b - a, dim=1) for a, b in zip(layers[:-1], layers[1:]))
    chord = torch.linalg.vector_norm(layers[-1] - layers[0], dim=1)
    moving = path > 0
    ratio = torch.where(moving, chord / torch.where(moving, path, torch.ones_like(path)), torch.ones_like(path))
    return ratio.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------
class StreamingMean:
    """Per-layer mean over samples, accumulated batch by batch in float64.

    ``update(batch_feats)`` with (L, b, d) batches (or sequences of (b, d_l)); ``compute()`` ->
    (L, d) float64 tensor for equal widths, else a list of (d_l,) tensors. Memory O(L d).
    """

    def __init__(self):
        self.n = 0
        self._sums: Optional[List[torch.Tensor]] = None

    def update(self, batch_feats) -> "StreamingMean":
        stack = _as_stack(batch_feats, "batch_feats")
        sums = [layer.to(torch.float64).sum(0) for layer in stack.layers]
        if self._sums is None:
            self._sums = sums
        else:
            if [s.shape for s in sums] != [s.shape for s in self._sums]:
                raise ValueError(
                    f"batch widths {stack.widths} differ from the first batch's {[s.shape[0] for s in self._sums]}"
                )
            for total, s in zip(self._sums, sums):
                total += s
        self.n += stack.n
        return self

    def compute(self):
        if self._sums is None:
            raise ValueError("no batches were given to update()")
        means = [s / self.n for s in self._sums]
        if len({m.shape[0] for m in means}) == 1:
            return torch.stack(means)
        return means


class StreamingCOS:
    """Exact COS (the :func:`cos_similarity` matrix) accumulated over minibatches.

    ``StreamingCOS(centered=True, mean=M)`` with M the (L, d) global per-layer means (e.g. from a
    first pass with :class:`StreamingMean`), and ``other_mean`` likewise when an ``other`` stack is
    streamed. Centring by the global mean makes COS depend on all samples, hence the extra pass;
    ``centered=False`` needs none. ``update(batch_feats, batch_other=None)`` with (L, b, d) and
    (L', b, d) batches; ``compute()`` -> (L, L') float64 tensor, larger means more similar.
    Memory O(L L' + b L d), independent of the number of samples.
    """

    def __init__(self, *, centered: bool = True, mean=None, other_mean=None):
        if centered and mean is None:
            raise ValueError(
                "centred COS subtracts each layer's mean over all samples: pass mean=(L, d) global "
                "means (e.g. from a first pass with StreamingMean), or use centered=False"
            )
        self.centered = centered
        self._mean = mean
        self._other_mean = other_mean
        self.n = 0
        self._sums: Optional[torch.Tensor] = None
        self._has_other: Optional[bool] = None

    def update(self, batch_feats, batch_other=None) -> "StreamingCOS":
        x, y = _pair_stacks(batch_feats, batch_other)
        has_other = y is not None
        if self._has_other is None:
            self._has_other = has_other
            if has_other and self.centered and self._other_mean is None:
                raise ValueError("centred COS against an other stack needs other_mean=(L', d) global means")
        elif has_other != self._has_other:
            raise ValueError("give batch_other in every update() call or in none")
        means_x = _resolve_means(x, self.centered, self._mean)
        if y is None:
            sums = _cos_sums(x, x, means_x, means_x)
        else:
            sums = _cos_sums(x, y, means_x, _resolve_means(y, self.centered, self._other_mean))
        if self._sums is None:
            self._sums = sums
        elif sums.shape != self._sums.shape:
            raise ValueError(f"batch gives a {tuple(sums.shape)} result, earlier batches {tuple(self._sums.shape)}")
        else:
            self._sums += sums
        self.n += x.n
        return self

    def compute(self) -> torch.Tensor:
        if self._sums is None:
            raise ValueError("no batches were given to update()")
        return self._sums / self.n


class _LinearMoments:
    """Running float64 sums of one stack's features, shifted by its first batch's means (which keeps
    the sums well conditioned; every statistic is later corrected to exact centring)."""

    def __init__(self, stack: _Stack):
        self.name = stack.name
        self.widths = stack.widths
        self.offsets = np.cumsum([0] + self.widths).tolist()
        self.shift = stack.means
        device = self.shift[0].device
        self.sums = torch.zeros(self.offsets[-1], dtype=torch.float64, device=device)
        self.sum_a = torch.zeros(len(self.widths), dtype=torch.float64, device=device)

    def block(self, l: int) -> slice:
        return slice(self.offsets[l], self.offsets[l + 1])

    def add(self, stack: _Stack) -> Tuple[torch.Tensor, torch.Tensor]:
        """Add one batch; return its shifted float64 column stack (b, D) and row norms a (b, L)."""
        if stack.widths != self.widths:
            raise ValueError(f"{stack.name} widths {stack.widths} differ from the first batch's {self.widths}")
        stacked = _column_stack(stack, self.shift, torch.float64)
        self.sums += stacked.sum(0)
        a = torch.stack([_row_sq_norms(stacked[:, self.block(l)]) for l in range(len(self.widths))], dim=1)
        self.sum_a += a.sum(0)
        return stacked, a


class StreamingCKA:
    """Exact linear CKA (biased or debiased) of all layer pairs, accumulated over minibatches.

    ``update(batch_feats, batch_other=None)``: (L, b, d) batches (or sequences of (b, d_l)); give
    ``batch_other`` (L', b, d') in every call or in none. ``compute()`` -> (L, L') float64 tensor,
    equal to ``cka(all_feats, all_other, debiased=...)`` on the concatenated batches up to rounding
    (about 1e-12 for float64 input). Larger means more similar.

    It keeps the sufficient statistics of the feature-space form in float64: the per-layer sums
    ``s_l``, the cross-products ``C_lm = X_l^T Y_m`` as block rows of ``Zx^T Zy`` (only the upper
    triangle of blocks when ``other`` is None), and for the debiased estimator the squared row norms
    ``a_l(i) = ||x_{l,i}||^2`` through their sums, the products ``sum_i a_l(i) b_m(i)`` and
    ``sum_i a_l(i) y_{m,i}``. ``compute()`` turns them into the moments of exactly centred features
    (e.g. ``C_lm - s_l s_m^T / n``), so the result is that of the in-memory feature-space form.
    Memory is O((sum of widths)^2) float64 (L = 13 layers of width 384: about 107 MB), independent
    of the number of samples. Batches may have any size, including 1.
    """

    def __init__(self, *, debiased: bool = False):
        self.debiased = debiased
        self.n = 0
        self._x: Optional[_LinearMoments] = None
        self._y: Optional[_LinearMoments] = None
        self._has_other: Optional[bool] = None
        self._rows: List[torch.Tensor] = []  # rows[l] = X_l^T [Y_1 .. Y_L'] (or X_l^T [X_l .. X_L])
        self._self_x: List[torch.Tensor] = []  # X_l^T X_l, only when other is given
        self._self_y: List[torch.Tensor] = []  # Y_m^T Y_m, only when other is given
        # Debiased only: A = (b, L) row norms of x, B = (b, L') of y (B = A without other).
        self._a_b = self._a_a = self._b_b = None  # sum A^T B (L, L'); sum_i a_l(i)^2; sum_i b_m(i)^2
        self._a_zy = self._b_zx = None  # sum A^T Zy (L, D'), sum B^T Zx (L', D)
        self._a_zx = self._b_zy = None  # sum A^T Zx (L, D), sum B^T Zy (L', D') (self terms)

    def update(self, batch_feats, batch_other=None) -> "StreamingCKA":
        x, y = _pair_stacks(batch_feats, batch_other)
        has_other = y is not None
        if self._has_other is None:
            self._start(x, y)
        elif has_other != self._has_other:
            raise ValueError("give batch_other in every update() call or in none")
        zx, a = self._x.add(x)
        if not has_other:
            for l in range(len(self._rows)):
                self._rows[l].addmm_(zx[:, self._x.block(l)].T, zx[:, self._x.offsets[l] :])
            if self.debiased:
                self._a_b.addmm_(a.T, a)
                self._a_zy.addmm_(a.T, zx)
        else:
            zy, b = self._y.add(y)
            for l in range(len(self._rows)):
                self._rows[l].addmm_(zx[:, self._x.block(l)].T, zy)
            for l, product in enumerate(self._self_x):
                column = zx[:, self._x.block(l)]
                product.addmm_(column.T, column)
            for m, product in enumerate(self._self_y):
                column = zy[:, self._y.block(m)]
                product.addmm_(column.T, column)
            if self.debiased:
                self._a_b.addmm_(a.T, b)
                self._a_a += (a * a).sum(0)
                self._b_b += (b * b).sum(0)
                self._a_zy.addmm_(a.T, zy)
                self._b_zx.addmm_(b.T, zx)
                self._a_zx.addmm_(a.T, zx)
                self._b_zy.addmm_(b.T, zy)
        self.n += x.n
        return self

    def _start(self, x: _Stack, y: Optional[_Stack]) -> None:
        self._has_other = y is not None
        self._x = _LinearMoments(x)
        self._y = _LinearMoments(y) if self._has_other else self._x
        sx, sy = self._x, self._y
        device = sx.sums.device

        def zeros(*shape):
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        if not self._has_other:
            self._rows = [zeros(w, sx.offsets[-1] - sx.offsets[l]) for l, w in enumerate(sx.widths)]
        else:
            self._rows = [zeros(w, sy.offsets[-1]) for w in sx.widths]
            self._self_x = [zeros(w, w) for w in sx.widths]
            self._self_y = [zeros(w, w) for w in sy.widths]
        if self.debiased:
            self._a_b = zeros(len(sx.widths), len(sy.widths))
            self._a_zy = zeros(len(sx.widths), sy.offsets[-1])
            if self._has_other:
                self._a_a, self._b_b = zeros(len(sx.widths)), zeros(len(sy.widths))
                self._b_zx = zeros(len(sy.widths), sx.offsets[-1])
                self._a_zx = zeros(len(sx.widths), sx.offsets[-1])
                self._b_zy = zeros(len(sy.widths), sy.offsets[-1])

    def _cross(self, l: int, m: int) -> torch.Tensor:
        """C_lm = X_l^T Y_m (shifted, uncentred), a view into the accumulated block rows."""
        if self._has_other:
            return self._rows[l][:, self._y.block(m)]
        if l > m:
            return self._cross(m, l).T
        start = self._x.offsets[l]
        return self._rows[l][:, self._x.offsets[m] - start : self._x.offsets[m + 1] - start]

    def _pair_hsic(self, cross, mu_x, mu_y, ab=None, sum_a=None, sum_b=None, a_y=None, b_x=None):
        """HSIC of one layer pair from uncentred moments (cross = sum x y^T, mu = means).

        With a~_i = ||x_i - mu_x||^2 = a_i - 2 x_i.mu_x + ||mu_x||^2 (and b~ likewise), the centred
        moments are ||C - n mu_x mu_y^T||^2, sum a~ = sum a - n ||mu_x||^2, and
        sum a~ b~ = sum ab - 2 (sum a y).mu_y - 2 (sum b x).mu_x + ||mu_y||^2 sum a
                    + ||mu_x||^2 sum b + 4 mu_x^T C mu_y - 3 n ||mu_x||^2 ||mu_y||^2.
        """
        n = self.n
        frob = _frobenius_sq(cross - n * torch.outer(mu_x, mu_y))
        if not self.debiased:
            return _hsic_from_moments(frob, None, None, None, n, False)
        mx2, my2 = mu_x @ mu_x, mu_y @ mu_y
        ab_centred = (
            ab
            - 2 * (a_y @ mu_y)
            - 2 * (b_x @ mu_x)
            + my2 * sum_a
            + mx2 * sum_b
            + 4 * (mu_x @ (cross @ mu_y))
            - 3 * n * mx2 * my2
        )
        return _hsic_from_moments(frob, ab_centred, sum_a - n * mx2, sum_b - n * my2, n, True)

    def _hsic(self):
        if self._x is None:
            raise ValueError("no batches were given to update()")
        n = self.n
        _check_min_samples(n, self.debiased)
        sx, sy = self._x, self._y
        mu_x = [sx.sums[sx.block(l)] / n for l in range(len(sx.widths))]
        mu_y = [sy.sums[sy.block(m)] / n for m in range(len(sy.widths))]
        if self._has_other:
            self._check_variance(sx, mu_x, self._self_x)
            self._check_variance(sy, mu_y, self._self_y)
        else:
            self._check_variance(sx, mu_x, [self._cross(l, l) for l in range(len(mu_x))])
        b_zx = self._b_zx if self._has_other else self._a_zy

        def extra(l, m):
            if not self.debiased:
                return {}
            return dict(
                ab=self._a_b[l, m],
                sum_a=sx.sum_a[l],
                sum_b=sy.sum_a[m],
                a_y=self._a_zy[l, sy.block(m)],
                b_x=b_zx[m, sx.block(l)],
            )

        hsic_xy = torch.zeros(len(mu_x), len(mu_y), dtype=torch.float64, device=sx.sums.device)
        for l in range(len(mu_x)):
            for m in range(len(mu_y)) if self._has_other else range(l, len(mu_y)):
                hsic_xy[l, m] = self._pair_hsic(self._cross(l, m), mu_x[l], mu_y[m], **extra(l, m))
                if not self._has_other:
                    hsic_xy[m, l] = hsic_xy[l, m]
        if not self._has_other:
            return hsic_xy, hsic_xy.diagonal(), hsic_xy.diagonal()

        def self_hsic(side, means, products, squares, norms_times_features):
            values = []
            for i, (mu, product) in enumerate(zip(means, products)):
                moments = {}
                if self.debiased:
                    vector = norms_times_features[i, side.block(i)]
                    moments = dict(ab=squares[i], sum_a=side.sum_a[i], sum_b=side.sum_a[i], a_y=vector, b_x=vector)
                values.append(self._pair_hsic(product, mu, mu, **moments))
            return torch.stack(values)

        return (
            hsic_xy,
            self_hsic(sx, mu_x, self._self_x, self._a_a, self._a_zx),
            self_hsic(sy, mu_y, self._self_y, self._b_b, self._b_zy),
        )

    def _check_variance(self, side: _LinearMoments, means, self_products) -> None:
        for i, (mu, product) in enumerate(zip(means, self_products)):
            centred_trace = product.diagonal().sum() - self.n * (mu @ mu)
            if not bool(centred_trace > 0):
                raise ValueError(
                    f"{side.name} layer {i + 1} is constant across all streamed samples (zero "
                    "variance); CKA is undefined for it"
                )

    def compute(self) -> torch.Tensor:
        """(L, L') float64 CKA matrix of all samples seen so far; larger means more similar."""
        return _normalise(*self._hsic())

    def hsic(self) -> torch.Tensor:
        """(L, L') float64 HSIC matrix (biased or unbiased) of all samples seen so far."""
        return self._hsic()[0]


class MinibatchCKA:
    """Minibatch CKA of Nguyen et al. (2021): average per-batch HSIC, then normalise.

    ``CKA_mb(l, m) = mean_k HSIC_k(l, m) / sqrt(mean_k HSIC_k(l, l) mean_k HSIC_k(m, m))`` over
    minibatches k, with the unbiased HSIC by default (``debiased=True``, as Nguyen et al.; each batch
    needs b >= 4) so the average is an unbiased estimate of the population HSIC. Unlike
    :class:`StreamingCKA` this is *not* the full-data CKA: it depends on how the data is batched,
    but it works for the RBF kernel too (bandwidth from each batch's own median distance).
    ``update(batch_feats, batch_other=None)``; ``compute()`` -> (L, L') float64 tensor, larger
    means more similar (a layer constant in every batch gets 0). Memory O(L L' + one batch).
    """

    def __init__(self, *, kernel: str = "linear", debiased: bool = True, threshold: float = 0.5):
        self.kernel = _check_kernel(kernel, threshold)
        self.debiased = debiased
        self.threshold = threshold
        self.batches = 0
        self._sums = None

    def update(self, batch_feats, batch_other=None) -> "MinibatchCKA":
        parts = _hsic_parts(
            batch_feats, batch_other, self.kernel, self.debiased, self.threshold, "auto", check_constant=False
        )
        if self._sums is None:
            self._sums = [p.clone() for p in parts]
        else:
            if parts[0].shape != self._sums[0].shape:
                raise ValueError(f"batch gives a {tuple(parts[0].shape)} result, earlier batches {tuple(self._sums[0].shape)}")
            for total, p in zip(self._sums, parts):
                total += p
        self.batches += 1
        return self

    def compute(self) -> torch.Tensor:
        if self._sums is None:
            raise ValueError("no batches were given to update()")
        return _normalise(*(s / self.batches for s in self._sums))
