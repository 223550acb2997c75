"""Sample-wise cosine similarity (COS), the paper's measure of layer-wise similarity.

``COS(l, m) = mean_i <u_l(x_i), u_m(x_i)>`` where ``u_l(x) = (h_l(x) - mean_l) / ||h_l(x) - mean_l||``
with ``mean_l`` the mean of layer l over all n samples (``centered=True``, as the authors' code does)
or zero (``centered=False``, plain cosine). A sample whose (centred) vector is exactly zero has no
direction; its cosine is taken as 0. Values lie in [-1, 1] (rounding never pushes them out, so
``arccos`` is always defined); the diagonal of ``cos_similarity(feats)`` is exactly the fraction of
samples with a non-zero vector, i.e. exactly 1 when no vector is zero.

The arithmetic is float64 throughout (unit vectors are formed a chunk of samples at a time), so the
result does not depend on the input dtype beyond the input's own rounding.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ._stack import Stack, check_finite_vector, check_not_constant, pair_stacks, times_power_of_two

__all__ = ["cos_similarity", "cos_per_sample"]

# Bytes of float64 data the COS path turns into unit vectors at once.
_COS_CHUNK_BYTES = 64 * 2**20
# COS computes in float64: layers beyond 2^+-120 in magnitude are brought back by a power of two.
_COS_EXPONENT = 120


def _unit_rows(x: torch.Tensor, mean: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(float64 rows of x (minus mean) scaled to unit length, bool mask of the non-zero rows); an
    all-zero row stays zero."""
    # A new float64 tensor in both cases (divided in place below, so never the caller's tensor).
    x = x.to(torch.float64) - mean if mean is not None else x.to(torch.float64, copy=True)
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    nonzero = norms > 0
    return x.div_(torch.where(nonzero, norms, torch.ones_like(norms))), nonzero[..., 0]


def cos_width(x: Stack, y: Stack) -> int:
    widths = set(x.widths) | set(y.widths)
    if len(widths) != 1:
        raise ValueError(
            "COS compares the same sample's vectors at two layers, so every layer needs the same "
            f"width; got widths {sorted(widths)}"
        )
    return widths.pop()


def resolve_means(stack: Stack, centered: bool, mean, name: str) -> Optional[List[torch.Tensor]]:
    """The per-layer means to centre ``stack`` with: None (uncentred), the stack's own means, or the
    given (L, d) ``mean`` (checked: shape, finite), scaled like the stack's layers."""
    if not centered:
        return None
    if mean is None:
        return stack.means
    values = check_finite_vector(mean, name, (len(stack), stack.widths[0]), stack.device)
    rows = [times_power_of_two(row, k) for row, k in zip(values.unbind(0), stack.scales)]
    if not all(bool(torch.isfinite(row).all()) for row in rows):
        raise ValueError(f"{name} is more than 1e300 times larger than the features it centres")
    return rows


def _cos_chunks(x: Stack, y: Stack, means_x, means_y, same: bool):
    """Yield (start, stop, ux, uy, nonzero_x): float64 unit vectors (L, b, d) and (L', b, d) for
    sample chunks, and which vectors of x were non-zero (L, b)."""
    d = cos_width(x, y)
    chunk = max(1, _COS_CHUNK_BYTES // (8 * d * (len(x) + len(y))))
    mean_x = None if means_x is None else torch.stack(means_x)[:, None, :]  # (L, 1, d)
    mean_y = None if means_y is None else torch.stack(means_y)[:, None, :]
    for start in range(0, x.n, chunk):
        stop = min(x.n, start + chunk)
        ux, nonzero_x = _unit_rows(x.rows(start, stop), mean_x)
        uy = ux if same else _unit_rows(y.rows(start, stop), mean_y)[0]
        yield start, stop, ux, uy, nonzero_x


def cos_sums(x: Stack, y: Optional[Stack], means_x, means_y) -> torch.Tensor:
    """(L, L') float64 sums over samples of the per-sample cosines (``y`` None: ``x`` with itself,
    whose diagonal is then the exact count of samples with a non-zero vector)."""
    same = y is None
    y = x if same else y
    total = torch.zeros(len(x), len(y), dtype=torch.float64, device=x.device)
    counts = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for _, _, ux, uy, nonzero_x in _cos_chunks(x, y, means_x, means_y, same):
        total += ux.reshape(len(x), -1) @ uy.reshape(len(y), -1).T
        if same:
            counts += nonzero_x.sum(dim=1)
    if same:
        total.diagonal().copy_(counts)
    return total


def prepare(feats, other, centered: bool, mean=None, other_mean=None):
    """Validated, well-scaled stacks and their centring means for the COS functions."""
    x, y = pair_stacks(feats, other)
    if centered and mean is None:
        check_not_constant(x, "centred COS")
    if centered and y is not None and other_mean is None:
        check_not_constant(y, "centred COS")
    x = x.well_scaled(_COS_EXPONENT)
    y = None if y is None else y.well_scaled(_COS_EXPONENT)
    means_x = resolve_means(x, centered, mean, "mean")
    means_y = None if y is None else resolve_means(y, centered, other_mean, "other_mean")
    if y is not None:
        cos_width(x, y)
    return x, y, means_x, means_y


def cos_similarity(feats, other=None, *, centered: bool = True) -> torch.Tensor:
    """Sample-wise cosine similarity (COS) of every pair of layers -> (L, L') float64 tensor.

    ``feats``: (L, n, d) tensor/array or a sequence of L arrays (n, d). ``other``: optional second
    stack (L', n, d) over the same samples and the same width (default: ``feats`` itself, L' = L).

    Entry (l, m) is the mean over the n samples of the cosine between sample i's vector at layer l
    and at layer m. ``centered=True`` first subtracts each layer's mean over all samples (the
    paper's COS); ``centered=False`` is the plain cosine. Larger means more similar; values lie in
    [-1, 1] and the diagonal of ``cos_similarity(feats)`` is exactly 1 (when no vector is zero).
    Invariant to a positive rescaling of any sample at any layer (and, when centred, to adding a
    constant vector to a layer).
    """
    x, y, means_x, means_y = prepare(feats, other, centered)
    return (cos_sums(x, y, means_x, means_y) / x.n).clamp_(-1.0, 1.0)


def cos_per_sample(
    feats, other=None, *, centered: bool = True, mean=None, other_mean=None
) -> torch.Tensor:
    """Per-sample COS values -> (L, L', n) float64 tensor; ``[l, m, i]`` = cos(h_l(x_i), h_m(x_i)).

    Shapes as in :func:`cos_similarity`, whose result is this tensor's mean over the last axis.
    Use it for distributions (histograms, outlier inspection). For the values against one reference
    layer only, pass that layer as ``other``: ``cos_per_sample(feats, feats[-1:])`` -> (L, 1, n) is
    each sample's COS to the last layer without the (L, L, n) memory.

    ``mean`` / ``other_mean``: optional (L, d) / (L', d) finite means to centre with instead of this
    batch's own means (e.g. the global means from :class:`StreamingMean` when processing a dataset in
    batches). Ignored when ``centered=False``. Larger means more similar; values in [-1, 1], and
    ``[l, l, i]`` is exactly 1 (0 for a zero vector) when ``other`` is None.
    """
    x, y, means_x, means_y = prepare(feats, other, centered, mean, other_mean)
    same = y is None
    y_or_x = x if same else y
    out = torch.empty(len(x), len(y_or_x), x.n, dtype=torch.float64, device=x.device)
    for start, stop, ux, uy, nonzero_x in _cos_chunks(x, y_or_x, means_x, means_y if not same else means_x, same):
        # (b, L, d) @ (b, d, L') -> (b, L, L'): one small product per sample.
        out[:, :, start:stop] = torch.bmm(ux.transpose(0, 1), uy.permute(1, 2, 0)).permute(1, 2, 0)
        if same:
            out.diagonal(dim1=0, dim2=1)[start:stop] = nonzero_x.T.to(torch.float64)
    return out.clamp_(-1.0, 1.0)
