"""Accumulators that stream a dataset batch by batch: per-layer means, COS, and exact linear CKA.

Each keeps float64 sums over the samples seen, so n never has to fit in memory, and each can be
combined with accumulators of other samples: ``a.merge(b)`` in one process, ``acc.all_reduce_()``
across torch.distributed ranks (every rank then holds the accumulator of all samples).

* :class:`StreamingMean`: per-layer means (the first pass of centred COS).
* :class:`StreamingCOS`: the exact COS matrix; centred COS needs the global means first.
* :class:`StreamingCKA`: the exact linear CKA (biased or debiased) of all layer pairs: its result
  equals the in-memory :func:`cka` to rounding (~1e-12 for float64 input). Memory
  O((sum of widths)^2), independent of n.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from ._reduce import Accumulator, all_reduce_sum, empty_device
from ._stack import Stack, as_stack, check_finite_vector, check_min_samples, pair_stacks, to_tensor
from .cka_family import (biased_hsic_from_moments, check_debiased_self_hsic, debiased_hsic_from_moments,
                          frobenius_sq, normalise)
from .cos import _COS_EXPONENT, cos_sums, cos_width, resolve_means

__all__ = ["StreamingMean", "StreamingCOS", "StreamingCKA"]

# StreamingCKA sums fourth powers of float64 values: batches whose values (minus the first batch's
# mean) reach beyond 2^+-200 in magnitude are refused with a ValueError (float32 input never does).
_STREAMING_EXPONENT = 200


class StreamingMean(Accumulator):
    """Per-layer mean over samples, accumulated batch by batch in float64.

    ``update(batch_feats)`` with (L, b, d) batches (or sequences of (b, d_l)); ``compute()`` ->
    (L, d) float64 tensor for equal widths, else a list of (d_l,) tensors. ``merge(other)`` /
    ``all_reduce_()`` add the samples of other accumulators. Memory O(L d).
    """

    def __init__(self):
        self.n = 0
        self._sums: Optional[List[torch.Tensor]] = None  # per layer: (d_l,) float64 sum over samples

    def update(self, batch_feats) -> "StreamingMean":
        stack = as_stack(batch_feats, "batch_feats")
        sums = [mean * stack.n for mean in stack.means]  # the float64 means of the batch, times b
        if self._sums is None:
            self._sums = sums
        else:
            widths = [s.shape[0] for s in self._sums]
            if stack.widths != widths:
                raise ValueError(f"batch widths {stack.widths} differ from the first batch's {widths}")
            for total, s in zip(self._sums, sums):
                total += s.to(total.device)
        self.n += stack.n
        return self

    def compute(self):
        if self._sums is None:
            raise ValueError("no batches were given to update()")
        if not all(bool(torch.isfinite(s).all()) for s in self._sums):
            raise ValueError("the sum over samples overflowed float64: the features are too large; rescale them")
        means = [s / self.n for s in self._sums]
        if len({m.shape[0] for m in means}) == 1:
            return torch.stack(means)
        return means

    def _signature(self) -> dict:
        widths = None if self._sums is None else [s.shape[0] for s in self._sums]
        return {"widths": widths, "n": self.n}

    def _start_empty(self, signature: dict) -> None:
        self._sums = [torch.zeros(w, dtype=torch.float64, device=empty_device()) for w in signature["widths"]]

    def _add(self, other: "StreamingMean") -> None:
        for total, s in zip(self._sums, other._sums):
            total += s.to(total.device)
        self.n += other.n

    def _sum_across(self, group, signatures) -> None:
        all_reduce_sum(self._sums, group)


class StreamingCOS(Accumulator):
    """Exact COS (the :func:`cos_similarity` matrix) accumulated over minibatches.

    ``StreamingCOS(centered=True, mean=M)`` with M the (L, d) global per-layer means (e.g. from a
    first pass with :class:`StreamingMean`), and ``other_mean`` likewise when an ``other`` stack is
    streamed. Centring by the global mean makes COS depend on all samples, hence the extra pass;
    ``centered=False`` needs none. ``update(batch_feats, batch_other=None)`` with (L, b, d) and
    (L', b, d) batches; every batch must have the first batch's layers and width. ``compute()`` ->
    (L, L') float64 tensor in [-1, 1], larger means more similar (without ``other``, the diagonal is
    exactly 1 when no vector is zero). ``merge(other)`` / ``all_reduce_()`` add the samples of
    accumulators built with the same means. Memory O(L L' + b L d), independent of the number of
    samples.
    """

    def __init__(self, *, centered: bool = True, mean=None, other_mean=None):
        if centered and mean is None:
            raise ValueError(
                "centred COS subtracts each layer's mean over all samples: pass mean=(L, d) global "
                "means (e.g. from a first pass with StreamingMean), or use centered=False"
            )
        self.centered = centered
        self._mean = _finite_matrix(mean, "mean") if centered else None
        self._other_mean = _finite_matrix(other_mean, "other_mean") if centered else None
        self.n = 0
        self._sums: Optional[torch.Tensor] = None  # (L, L') sums over samples of the cosines
        self._shape: Optional[Tuple[int, int, int]] = None  # (L, L' or None, d) of the first batch

    def update(self, batch_feats, batch_other=None) -> "StreamingCOS":
        x, y = pair_stacks(batch_feats, batch_other)
        shape = (len(x), None if y is None else len(y), x.widths[0])
        if self._shape is None:
            if y is not None and self.centered and self._other_mean is None:
                raise ValueError("centred COS against an other stack needs other_mean=(L', d) global means")
        elif (shape[1] is None) != (self._shape[1] is None):
            raise ValueError("give batch_other in every update() call or in none")
        elif shape != self._shape:
            raise ValueError(
                f"this batch has {shape[0]} layers (other: {shape[1]}) of width {shape[2]}, the first "
                f"batch {self._shape[0]} layers (other: {self._shape[1]}) of width {self._shape[2]}"
            )
        x = x.well_scaled(_COS_EXPONENT)
        y = None if y is None else y.well_scaled(_COS_EXPONENT)
        if y is not None:
            cos_width(x, y)
        elif len(set(x.widths)) != 1:
            cos_width(x, x)
        means_x = resolve_means(x, self.centered, self._mean, "mean")
        means_y = None if y is None else resolve_means(y, self.centered, self._other_mean, "other_mean")
        sums = cos_sums(x, y, means_x, means_y)
        if self._sums is None:
            self._sums, self._shape = sums, shape
        else:
            self._sums += sums.to(self._sums.device)
        self.n += x.n
        return self

    def compute(self) -> torch.Tensor:
        if self._sums is None:
            raise ValueError("no batches were given to update()")
        return (self._sums / self.n).clamp(-1.0, 1.0)

    def _signature(self) -> dict:
        return {"centered": self.centered, "mean": _cpu(self._mean), "other_mean": _cpu(self._other_mean),
                "shape": self._shape, "n": self.n}

    def _start_empty(self, signature: dict) -> None:
        self._shape = tuple(signature["shape"])
        rows, cols = self._shape[0], self._shape[1] or self._shape[0]
        self._sums = torch.zeros(rows, cols, dtype=torch.float64, device=empty_device())

    def _add(self, other: "StreamingCOS") -> None:
        self._sums += other._sums.to(self._sums.device)
        self.n += other.n

    def _sum_across(self, group, signatures) -> None:
        all_reduce_sum([self._sums], group)


def _finite_matrix(values, name: str) -> Optional[torch.Tensor]:
    """``values`` as a finite float64 (L, d) tensor (None stays None); ValueError otherwise."""
    if values is None:
        return None
    tensor = to_tensor(values, name)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must have shape (L, d); got {tuple(tensor.shape)}")
    return check_finite_vector(tensor, name, tuple(tensor.shape), tensor.device)


def _cpu(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.detach().cpu()


# ----------------------------------------------------------------------------------------------
# StreamingCKA: named float64 sums per layer and per pair of layers
# ----------------------------------------------------------------------------------------------
@dataclass
class LayerSums:
    """Float64 sums over the samples seen of one layer's vectors, shifted: ``z_i = x_i - shift``.

    ``shift`` is a fixed origin near the layer's mean (the first batch's mean) that keeps the sums
    well conditioned; every statistic is corrected to exact centring at the end.
    """

    shift: torch.Tensor  # (w,) the origin of z
    first: torch.Tensor  # (w,) the first sample seen: the layer is constant iff every sample equals it
    varies: bool  # whether some sample differed from `first`
    total: torch.Tensor  # (w,) sum_i z_i
    sq_norms: torch.Tensor  # () sum_i ||z_i||^2

    @classmethod
    def zeros(cls, width: int, device) -> "LayerSums":
        def z(*shape):
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        return cls(shift=z(width), first=z(width), varies=False, total=z(width), sq_norms=z(()))

    def sums(self) -> List[torch.Tensor]:
        """The tensors that add up when samples are pooled (same origin)."""
        return [self.total, self.sq_norms]


@dataclass
class PairSums:
    """Float64 sums over the samples seen for one pair of layers (r, c) of their shifted vectors
    ``z_r``, ``z_c`` (see :class:`LayerSums`), with ``a_r(i) = ||z_r,i||^2``."""

    cross: torch.Tensor  # (w_r, w_c) sum_i z_r,i z_c,i^T
    norms_product: torch.Tensor  # () sum_i a_r(i) a_c(i)
    r_norms_times_c: torch.Tensor  # (w_c,) sum_i a_r(i) z_c,i
    c_norms_times_r: torch.Tensor  # (w_r,) sum_i a_c(i) z_r,i

    @classmethod
    def zeros(cls, width_r: int, width_c: int, device) -> "PairSums":
        def z(*shape):
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        return cls(cross=z(width_r, width_c), norms_product=z(()), r_norms_times_c=z(width_c),
                   c_norms_times_r=z(width_r))

    def sums(self) -> List[torch.Tensor]:
        return [self.cross, self.norms_product, self.r_norms_times_c, self.c_norms_times_r]


def _shift_layer(layer: LayerSums, n: int, delta: torch.Tensor) -> LayerSums:
    """The sums of ``layer`` for vectors moved to the origin ``shift + delta`` (z' = z - delta)."""
    total = layer.total - n * delta
    sq_norms = layer.sq_norms - 2 * (delta @ layer.total) + n * (delta @ delta)
    return LayerSums(shift=layer.shift + delta, first=layer.first, varies=layer.varies, total=total,
                     sq_norms=sq_norms)


def _shift_pair(pair: PairSums, r: LayerSums, c: LayerSums, n: int, d_r: torch.Tensor, d_c: torch.Tensor) -> PairSums:
    """The sums of ``pair`` for vectors moved by ``d_r`` and ``d_c`` (z' = z - d); ``r`` and ``c``
    are the layers' sums at the old origin. With p_r(i) = d_r . z_r,i and a'_r = a_r - 2 p_r + |d_r|^2,
    every sum expands into sums already kept (C = cross, S = totals, N = sq_norms)."""
    C, S_r, S_c, N_r, N_c = pair.cross, r.total, c.total, r.sq_norms, c.sq_norms
    dr2, dc2 = d_r @ d_r, d_c @ d_c
    cross = C - torch.outer(d_r, S_c) - torch.outer(S_r, d_c) + n * torch.outer(d_r, d_c)
    sum_p_r, sum_p_c = d_r @ S_r, d_c @ S_c  # sum_i p_r(i), sum_i p_c(i)
    r_norms_times_c = (pair.r_norms_times_c - N_r * d_c - 2 * (C.T @ d_r) + 2 * sum_p_r * d_c + dr2 * S_c
                       - n * dr2 * d_c)
    c_norms_times_r = (pair.c_norms_times_r - N_c * d_r - 2 * (C @ d_c) + 2 * sum_p_c * d_r + dc2 * S_r
                       - n * dc2 * d_r)
    norms_product = (
        pair.norms_product
        - 2 * (d_c @ pair.r_norms_times_c)  # sum a_r p_c
        - 2 * (d_r @ pair.c_norms_times_r)  # sum p_r a_c
        + dc2 * N_r
        + dr2 * N_c
        + 4 * (d_r @ (C @ d_c))  # sum p_r p_c
        - 2 * dc2 * sum_p_r
        - 2 * dr2 * sum_p_c
        + n * dr2 * dc2
    )
    return PairSums(cross=cross, norms_product=norms_product, r_norms_times_c=r_norms_times_c,
                    c_norms_times_r=c_norms_times_r)


class StreamingCKA(Accumulator):
    """Exact linear CKA (biased or debiased) of all layer pairs, accumulated over minibatches.

    ``update(batch_feats, batch_other=None)``: (L, b, d) batches (or sequences of (b, d_l)); give
    ``batch_other`` (L', b, d') in every call or in none. ``compute()`` -> (L, L') float64 tensor,
    equal to ``cka(all_feats, all_other, debiased=...)`` on the concatenated batches up to rounding
    (about 1e-12 for float64 input). Larger means more similar. ``merge(other)`` /
    ``all_reduce_()`` add the samples of other accumulators (in one process / across ranks).

    The layers are numbered r = 0..R-1: those of ``feats``, then those of ``other``. For each layer
    it keeps :class:`LayerSums` (sum of the vectors and of their squared norms, about a fixed origin)
    and for each pair of layers whose CKA or self-HSIC is needed :class:`PairSums` (the
    cross-products ``sum z_r z_c^T`` and the squared-norm moments the debiased estimator needs).
    ``compute()`` moves these sums to the exact mean (:func:`_shift_pair`) and evaluates the
    feature-space HSIC. Both estimators come from the same sums. Memory O((sum of widths)^2) float64
    (L = 13 layers of width 384: about 107 MB), independent of the number of samples. Batches may
    have any size, including 1.
    """

    def __init__(self, *, debiased: bool = False):
        self.debiased = debiased
        self.n = 0
        self.num_feats: Optional[int] = None  # L; the layers after it belong to `other`
        self.layers: List[LayerSums] = []
        self.pairs: Dict[Tuple[int, int], PairSums] = {}
        self._names: List[str] = []
        self._offsets: List[int] = []  # column of each layer in the batch's column stack
        self._runs: list = []  # the cross-product storage the pairs view (see _build)

    # -- structure -------------------------------------------------------------------------------
    @property
    def has_other(self) -> bool:
        return self.num_feats is not None and len(self.layers) > self.num_feats

    def _needed_pairs(self) -> List[Tuple[int, int]]:
        """(r, c), r <= c: every pair of feats' layers, or each layer with itself and each feats
        layer with each other layer."""
        count, num_feats = len(self.layers), self.num_feats
        if not self.has_other:
            return [(r, c) for r in range(count) for c in range(r, count)]
        own = [(r, r) for r in range(count)]
        return own + [(l, num_feats + m) for l in range(num_feats) for m in range(count - num_feats)]

    def _build(self, widths: List[int], num_feats: int, device) -> None:
        """Zero sums for layers of ``widths`` (the first ``num_feats`` from feats). The cross-products
        of one layer r with a contiguous run of layers c are one tensor (one matrix product per
        batch, as in the in-memory feature-space form); each pair's ``cross`` is a view into it."""
        self.num_feats = num_feats
        self.layers = [LayerSums.zeros(w, device) for w in widths]
        self._names = [f"feats layer {r + 1}" if r < num_feats else f"other layer {r - num_feats + 1}"
                       for r in range(len(widths))]
        self._offsets = [0]
        for w in widths:
            self._offsets.append(self._offsets[-1] + w)
        pairs = self._needed_pairs()
        self._runs = []  # (r, first c, last c, storage (w_r, widths of c..last))
        self.pairs = {}
        for r in range(len(widths)):
            columns = [c for rr, c in pairs if rr == r]
            while columns:
                first = last = columns.pop(0)
                while columns and columns[0] == last + 1:
                    last = columns.pop(0)
                block = torch.zeros(widths[r], self._offsets[last + 1] - self._offsets[first],
                                    dtype=torch.float64, device=device)
                self._runs.append((r, first, last, block))
                for c in range(first, last + 1):
                    start = self._offsets[c] - self._offsets[first]
                    pair = PairSums.zeros(widths[r], widths[c], device)
                    pair.cross = block[:, start : start + widths[c]]
                    self.pairs[r, c] = pair

    # -- accumulation ------------------------------------------------------------------------------
    def update(self, batch_feats, batch_other=None) -> "StreamingCKA":
        x, y = pair_stacks(batch_feats, batch_other)
        stacks: List[Tuple[Stack, int]] = [(x, r) for r in range(len(x))]
        if y is not None:
            stacks += [(y, m) for m in range(len(y))]
        widths = [s.widths[i] for s, i in stacks]
        if self.num_feats is None:
            self._build(widths, len(x), x.device)
            for layer, (stack, i) in zip(self.layers, stacks):
                layer.shift = stack.means[i].clone()
                layer.first = stack.layers[i][0].to(torch.float64).clone()
        elif (y is not None) != self.has_other:
            raise ValueError("give batch_other in every update() call or in none")
        elif len(x) != self.num_feats or widths != [layer.shift.shape[0] for layer in self.layers]:
            raise ValueError(
                f"batch layer widths {widths} differ from the first batch's "
                f"{[layer.shift.shape[0] for layer in self.layers]}"
            )
        offsets = self._offsets
        z = torch.empty(x.n, offsets[-1], dtype=torch.float64, device=self.layers[0].total.device)
        for r, (layer, (stack, i)) in enumerate(zip(self.layers, stacks)):
            values = stack.layers[i].to(z.device, torch.float64)
            block = torch.sub(values, layer.shift, out=z[:, offsets[r] : offsets[r + 1]])
            peak = float(block.abs().max())
            if not peak <= 2.0**_STREAMING_EXPONENT or 0 < peak < 2.0**-_STREAMING_EXPONENT:
                raise ValueError(
                    f"{self._names[r]}: values of magnitude {peak:.3g} (about the first batch's mean) are "
                    f"beyond what StreamingCKA can sum in float64 (2^+-{_STREAMING_EXPONENT}); multiply the "
                    "features by a constant (CKA is scale invariant)"
                )
            if not layer.varies:
                layer.varies = bool((values != layer.first).any())
        norms = torch.stack([z[:, offsets[r] : offsets[r + 1]].square().sum(1) for r in range(len(self.layers))],
                            dim=1)  # (b, R): a_r(i)
        for r, layer in enumerate(self.layers):
            layer.total += z[:, offsets[r] : offsets[r + 1]].sum(0)
            layer.sq_norms += norms[:, r].sum()
        for r, first, last, block in self._runs:
            block.addmm_(z[:, offsets[r] : offsets[r + 1]].T, z[:, offsets[first] : offsets[last + 1]])
        norms_products = norms.T @ norms  # (R, R): sum_i a_r(i) a_c(i)
        norms_times_z = norms.T @ z  # (R, D): row r, block c = sum_i a_r(i) z_c,i
        for (r, c), pair in self.pairs.items():
            pair.norms_product += norms_products[r, c]
            pair.r_norms_times_c += norms_times_z[r, offsets[c] : offsets[c + 1]]
            pair.c_norms_times_r += norms_times_z[c, offsets[r] : offsets[r + 1]]
        self.n += x.n
        return self

    # -- result ------------------------------------------------------------------------------------
    def _hsic(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hsic_xy (L, L'), hsic_xx (L,), hsic_yy (L',)) of all samples seen."""
        if self.num_feats is None:
            raise ValueError("no batches were given to update()")
        n = self.n
        check_min_samples(n, self.debiased)
        for name, layer in zip(self._names, self.layers):
            if not layer.varies:
                raise ValueError(
                    f"{name} is constant across all streamed samples (zero variance); CKA is undefined for it"
                )
        means = [layer.total / n for layer in self.layers]  # of z: the exact mean minus the shift
        centred = [_shift_layer(layer, n, mean) for layer, mean in zip(self.layers, means)]
        hsic = {}
        for (r, c), pair in self.pairs.items():
            moments = _shift_pair(pair, self.layers[r], self.layers[c], n, means[r], means[c])
            frob = frobenius_sq(moments.cross)
            if self.debiased:
                hsic[r, c] = debiased_hsic_from_moments(
                    frob, moments.norms_product, centred[r].sq_norms, centred[c].sq_norms, n
                )
            else:
                hsic[r, c] = biased_hsic_from_moments(frob, n)
        count, num_feats = len(self.layers), self.num_feats
        if self.debiased:
            for r in range(count):
                scale = centred[r].sq_norms.reshape(1).cpu() ** 2 / (n * (n - 3))
                check_debiased_self_hsic(hsic[r, r].reshape(1), scale, [self._names[r]], 1e-10)
        rows = range(num_feats)
        cols = range(num_feats, count) if self.has_other else range(num_feats)
        device = self.layers[0].total.device
        hsic_xy = torch.zeros(len(rows), len(cols), dtype=torch.float64, device=device)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                hsic_xy[i, j] = hsic[min(r, c), max(r, c)]
        hsic_xx = torch.stack([hsic[r, r] for r in rows])
        hsic_yy = torch.stack([hsic[c, c] for c in cols])
        return hsic_xy, hsic_xx, hsic_yy

    def compute(self) -> torch.Tensor:
        """(L, L') float64 CKA matrix of all samples seen so far; larger means more similar."""
        hsic_xy, hsic_xx, hsic_yy = self._hsic()
        result = normalise(hsic_xy, hsic_xx, hsic_yy, self.debiased)
        if not self.has_other:
            result.diagonal()[hsic_xx > 0] = 1.0
        return result

    def hsic(self) -> torch.Tensor:
        """(L, L') float64 HSIC matrix (biased or unbiased) of all samples seen so far."""
        return self._hsic()[0]

    # -- merging (see Accumulator) -----------------------------------------------------------------
    def _signature(self) -> dict:
        widths = None if self.num_feats is None else [layer.shift.shape[0] for layer in self.layers]
        return {"debiased": self.debiased, "num_feats": self.num_feats, "widths": widths, "n": self.n}

    def _start_empty(self, signature: dict) -> None:
        self._build(signature["widths"], signature["num_feats"], empty_device())

    def _moved_to(self, shifts: List[torch.Tensor]) -> Tuple[List[LayerSums], Dict[Tuple[int, int], PairSums]]:
        """This accumulator's sums about other origins (one per layer)."""
        deltas = [shift.to(layer.shift.device) - layer.shift for shift, layer in zip(shifts, self.layers)]
        pairs = {(r, c): _shift_pair(pair, self.layers[r], self.layers[c], self.n, deltas[r], deltas[c])
                 for (r, c), pair in self.pairs.items()}
        layers = [_shift_layer(layer, self.n, delta) for layer, delta in zip(self.layers, deltas)]
        return layers, pairs

    def _assign(self, layers: List[LayerSums], pairs: Dict[Tuple[int, int], PairSums]) -> None:
        """Replace this accumulator's sums by these, in place (the pairs' cross-products are views)."""
        for mine, new in zip(self.layers, layers):
            mine.shift = new.shift
            for target, value in zip(mine.sums(), new.sums()):
                target.copy_(value)
        for key, pair in self.pairs.items():
            for target, value in zip(pair.sums(), pairs[key].sums()):
                target.copy_(value)

    def _add(self, other: "StreamingCKA") -> None:
        layers, pairs = other._moved_to([layer.shift for layer in self.layers])
        for mine, theirs in zip(self.layers, layers):
            for total, part in zip(mine.sums(), theirs.sums()):
                total += part.to(total.device)
            mine.varies = mine.varies or theirs.varies or not torch.equal(mine.first, theirs.first.to(mine.first.device))
        for key, pair in self.pairs.items():
            for total, part in zip(pair.sums(), pairs[key].sums()):
                total += part.to(total.device)
        self.n += other.n

    def _sum_across(self, group, signatures) -> None:
        import torch.distributed as dist

        # 1. A common origin for every rank: the global mean of each layer.
        weighted = [layer.total + self.n * layer.shift for layer in self.layers]  # sum of x (zero if empty)
        all_reduce_sum(weighted, group)
        total_n = sum(s["n"] for s in signatures)
        origin = [w / total_n for w in weighted]
        if self.n > 0:
            self._assign(*self._moved_to(origin))
        else:
            for layer, shift in zip(self.layers, origin):
                layer.shift = shift.clone()
        # 2. Sum every statistic.
        tensors = [t for layer in self.layers for t in layer.sums()]
        tensors += [t for key in sorted(self.pairs) for t in self.pairs[key].sums()]
        all_reduce_sum(tensors, group)
        # 3. Constant layers: a layer varies if it varied on some rank or its first sample differs
        #    from that of the first rank with samples.
        source = next(rank for rank, s in enumerate(signatures) if s["n"] > 0)
        firsts = torch.cat([layer.first for layer in self.layers])
        dist.broadcast(firsts, src=dist.get_global_rank(group, source) if group is not None else source, group=group)
        flags = torch.zeros(len(self.layers), dtype=torch.float64, device=firsts.device)
        for r, (layer, first) in enumerate(zip(self.layers, firsts.split([l.first.shape[0] for l in self.layers]))):
            differs = self.n > 0 and not torch.equal(layer.first, first)
            flags[r] = float(layer.varies or differs)
            layer.first = first.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
        for layer, flag in zip(self.layers, flags.tolist()):
            layer.varies = flag > 0
