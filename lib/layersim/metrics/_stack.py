"""Input checking and stacking shared by every metric.

A stack of per-layer features arrives as an ``(L, n, d)`` tensor or array, or a sequence of L arrays
``(n, d_l)``. :func:`as_stack` checks it once (shapes, the same samples in every layer, finite
values, a supported dtype) and returns a :class:`Stack`: the layers in one compute dtype (float32 for
float16/bfloat16/float32 input, float64 otherwise) with their per-layer means, always accumulated in
float64. Bad input raises ``ValueError`` naming the problem and the layer (layers numbered 1..L).

Metrics that square or raise values to the fourth power (CKA's HSIC, COS's norms) first call
:meth:`Stack.well_scaled`, which multiplies a layer whose largest magnitude lies outside a safe range
by a power of two. A power of two is exact in floating point, so this changes nothing but the
exponent: a layer of float32 values around 1e20 or 1e-25, or float64 values around 1e200, gives the
same CKA and COS as the same data around 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import torch

from ..validate import ArgumentTypeError, to_tensor  # noqa: F401  (to_tensor importable from here, as before)

# Bytes of float64 scratch used when summing float32 layers in float64, a chunk of samples at a time.
_SUM_CHUNK_BYTES = 4 * 2**20
# A layer whose largest |value| lies outside [2^-e, 2^e] is rescaled by a power of two before the
# arithmetic of CKA and COS (e by the dtype the arithmetic runs in; see Stack.well_scaled).
SAFE_EXPONENT = {torch.float32: 20, torch.float64: 120}


@dataclass
class Stack:
    """A validated stack of per-layer features.

    ``layers``: L tensors (n, d_l) in one compute dtype; ``means``: their float64 means over samples,
    (d_l,) each; ``name``: how error messages call the stack ("feats", "other"); ``whole``: the
    (L, n, d) tensor the layers are views of, if any; ``scales``: the exponent k of the factor 2^k
    each layer was multiplied by (all 0 unless :meth:`well_scaled` rescaled it).
    """

    layers: List[torch.Tensor]
    means: List[torch.Tensor]
    name: str
    whole: Optional[torch.Tensor] = None
    scales: List[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.scales:
            self.scales = [0] * len(self.layers)

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

    @property
    def device(self) -> torch.device:
        return self.layers[0].device

    def __len__(self) -> int:
        return len(self.layers)

    def to_float64(self) -> "Stack":
        if self.dtype == torch.float64:
            return self
        whole = None if self.whole is None else self.whole.to(torch.float64)
        layers = list(whole.unbind(0)) if whole is not None else [l.to(torch.float64) for l in self.layers]
        return replace(self, layers=layers, whole=whole)

    def well_scaled(self, exponent: Optional[int] = None) -> "Stack":
        """This stack with every layer whose largest |value| lies outside [2^-e, 2^e] multiplied by a
        power of two that brings it into [0.5, 1) (``e``: ``exponent``, default by the compute dtype,
        :data:`SAFE_EXPONENT`). Exact (only exponents change); the means are scaled alike and
        ``scales`` records the factors' exponents. Layers inside the range are left as they are.
        """
        exponent = SAFE_EXPONENT[self.dtype] if exponent is None else exponent
        powers = [_power_of_two_exponent(peak, exponent) for peak in _peaks(self)]
        if not any(powers):
            return self
        layers = [times_power_of_two(layer, k) for layer, k in zip(self.layers, powers)]
        means = [times_power_of_two(mean, k) for mean, k in zip(self.means, powers)]
        scales = [s + k for s, k in zip(self.scales, powers)]
        return replace(self, layers=layers, means=means, whole=None, scales=scales)


def _peaks(stack: Stack) -> List[float]:
    """Largest |value| of every layer (two reductions without a temporary of the stack's size)."""
    if stack.whole is not None:
        top = stack.whole.amax(dim=(1, 2)).to(torch.float64)
        bottom = stack.whole.amin(dim=(1, 2)).to(torch.float64)
        return torch.maximum(top, -bottom).tolist()
    return [max(float(layer.max()), -float(layer.min())) for layer in stack.layers]


def _power_of_two_exponent(peak: float, exponent: int) -> int:
    """0 if 2^-exponent <= peak <= 2^exponent (or peak is 0), else k with peak * 2^k in [0.5, 1)."""
    if peak == 0.0 or (2.0**-exponent <= peak <= 2.0**exponent):
        return 0
    return -math.frexp(peak)[1]


def times_power_of_two(values: torch.Tensor, power: int) -> torch.Tensor:
    """``values * 2**power``, exact, in steps that stay finite (a subnormal's factor exceeds 2^1023)."""
    while power:
        step = max(-1000, min(1000, power))
        values = values * math.ldexp(1.0, step)
        power -= step
    return values


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a metric computes in for input of ``dtype`` (raises ValueError for complex)."""
    if dtype == torch.float64:
        return torch.float64
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.float32
    if dtype.is_complex:
        raise ValueError(f"complex features are not supported (got dtype {dtype})")
    return torch.float64  # integers and booleans


def float64_means(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over ``dim`` accumulated in float64 (float32 input summed a chunk at a time, so no float64
    copy of the whole tensor is made). Finite input whose float64 sum overflows is summed scaled down."""
    n = values.shape[dim]
    if values.dtype == torch.float64:
        means = values.mean(dim=dim)
    else:
        row_bytes = 8 * max(1, values.numel() // max(1, n))
        chunk = max(1, _SUM_CHUNK_BYTES // row_bytes)
        means = sum(part.sum(dim=dim, dtype=torch.float64) for part in values.split(chunk, dim=dim)) / n
    if not bool(torch.isfinite(means).all()) and bool(torch.isfinite(values).all()):
        return (values.to(torch.float64) * 2.0**-64).mean(dim=dim) * 2.0**64
    return means


def as_stack(feats, name: str = "feats") -> Stack:
    """Turn an (L, n, d) array or a sequence of (n, d_l) arrays into a validated :class:`Stack`.

    Checks the shapes, that every layer holds the same samples and that all values are finite (a
    NaN or Inf makes the layer's sum non-finite, so the means double as the check).
    """
    if feats is None:
        raise ArgumentTypeError(f"{name} is None; expected (L, n, d) features or a sequence of (n, d) arrays")
    if isinstance(feats, (list, tuple)):
        if len(feats) == 0:
            raise ValueError(f"{name} is an empty sequence; expected L >= 1 layers of shape (n, d)")
        layers = [to_tensor(f, f"{name} layer {i + 1}") for i, f in enumerate(feats)]
        for i, layer in enumerate(layers):
            if layer.ndim != 2:
                raise ValueError(
                    f"{name} layer {i + 1} must have shape (n, d); got ndim={layer.ndim} "
                    f"shape={tuple(layer.shape)}"
                )
        stacked = None
    else:
        stacked = to_tensor(feats, name)
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
    dtype = torch.float64 if any(compute_dtype(l.dtype) == torch.float64 for l in layers) else torch.float32
    if stacked is not None:
        stacked = stacked.to(dtype)
        layers = list(stacked.unbind(0))
        means = list(float64_means(stacked, 1).unbind(0))
    else:
        layers = [layer.to(dtype) for layer in layers]
        means = [float64_means(layer, 0) for layer in layers]
    for i, (layer, mean) in enumerate(zip(layers, means)):
        if not bool(torch.isfinite(mean).all()):
            raise ValueError(f"{name} layer {i + 1} contains NaN or Inf values")
    return Stack(layers, means, name, stacked)


def pair_stacks(feats, other) -> Tuple[Stack, Optional[Stack]]:
    """Validate ``feats`` and ``other`` (None means "compare feats with itself")."""
    x = as_stack(feats, "feats")
    if other is None:
        return x, None
    y = as_stack(other, "other")
    if y.n != x.n:
        raise ValueError(
            f"feats has n={x.n} samples but other has n={y.n}; both stacks must hold the same samples"
        )
    if y.dtype != x.dtype:  # compute both in the wider dtype
        x, y = x.to_float64(), y.to_float64()
    return x, y


def check_not_constant(stack: Stack, purpose: str) -> None:
    """ValueError naming the first layer whose samples are all equal (``purpose`` is undefined then)."""
    for i, layer in enumerate(stack.layers):
        if layer.shape[0] > 1 and not torch.equal(layer[0], layer[1]):
            continue  # two samples differ: not constant (the usual case, decided in O(d))
        if torch.equal(layer, layer[:1].expand_as(layer)):
            raise ValueError(
                f"{stack.name} layer {i + 1} is constant across samples (zero variance); {purpose} "
                "is undefined for it"
            )


def check_min_samples(n: int, debiased: bool) -> None:
    if debiased and n < 4:
        raise ValueError(f"the debiased (unbiased HSIC) estimate needs n >= 4 samples; got n={n}")
    if n < 2:
        raise ValueError(f"CKA needs at least 2 samples; got n={n}")


def centred(stack: Stack) -> List[torch.Tensor]:
    """Layers minus their means, in the stack's compute dtype."""
    return [layer - mean.to(layer.dtype) for layer, mean in zip(stack.layers, stack.means)]


def subtract_mean(layer: torch.Tensor, mean: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = layer - mean`` in ``out``'s dtype, with the float64 ``mean`` subtracted in two parts
    (its rounding to out's dtype, then the remainder) so that a float32 layer far from the origin
    keeps the precision of its float64 mean."""
    high = mean.to(out.dtype)
    torch.sub(layer.to(out.dtype), high, out=out)
    if out.dtype != torch.float64:
        out.sub_((mean - high.to(torch.float64)).to(out.dtype))
    return out


def check_finite_vector(values, name: str, shape: Sequence[int], device) -> torch.Tensor:
    """``values`` as a float64 tensor of ``shape`` on ``device``; ValueError if the shape differs or a
    value is NaN or Inf."""
    values = to_tensor(values, name)
    if values.is_complex():
        raise ValueError(f"{name} must be real (got dtype {values.dtype})")
    values = values.to(torch.float64)
    if tuple(values.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return values.to(device)
