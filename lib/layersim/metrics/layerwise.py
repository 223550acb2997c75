"""Helpers on similarity matrices and on each sample's path through the layers: similarity to the
last layer, mean similarity by layer gap (claim 2 of the paper), straightness of trajectories (the
geodesic assumption of claim 4)."""
from __future__ import annotations

import math

import torch

from ._stack import as_stack, times_power_of_two, to_tensor

__all__ = ["similarity_to_last", "similarity_by_gap", "trajectory_straightness"]


def _as_matrix(sim, name: str = "sim") -> torch.Tensor:
    sim = to_tensor(sim, name)
    if sim.ndim != 2:
        raise ValueError(f"{name} must be an (L, L') similarity matrix; got shape {tuple(sim.shape)}")
    if 0 in sim.shape:
        raise ValueError(f"{name} is empty (shape {tuple(sim.shape)}); expected an (L, L') matrix with L, L' >= 1")
    if sim.is_complex():
        raise ValueError(f"{name} must be real; got dtype {sim.dtype}")
    sim = sim.to(torch.float64)
    if not bool(torch.isfinite(sim).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return sim


def similarity_to_last(sim) -> torch.Tensor:
    """Similarity of every layer to the last layer -> (L,) float64 tensor (larger = more similar).

    ``sim``: an (L, L') finite similarity matrix such as :func:`cos_similarity` or :func:`cka`
    returns; the result is its last column, ``sim[:, -1]`` (entry l compares layer l with the last
    layer of the second stack; for a symmetric matrix this is also the last row).
    """
    return _as_matrix(sim)[:, -1].clone()


def similarity_by_gap(sim) -> torch.Tensor:
    """Mean similarity at each layer gap -> (L,) float64 tensor; entry g is the mean of
    ``sim[i, j]`` over all pairs with ``|i - j| = g`` (g = 0..L-1; entry 0 is the diagonal).

    ``sim``: a square (L, L) finite similarity matrix. Claim 2 of the paper says it falls as g grows
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
    stack = as_stack(feats)
    if len(stack) < 2:
        raise ValueError(f"a trajectory needs at least 2 layers; got L={len(stack)}")
    if len(set(stack.widths)) != 1:
        raise ValueError(f"every layer needs the same width for a trajectory; got {stack.widths}")
    layers = [layer.to(torch.float64) for layer in stack.layers]
    # The ratio does not depend on a common scale: bring the largest value near 1 by a power of two
    # (exact), so that distances neither overflow nor underflow.
    peak = max(float(layer.abs().max()) for layer in layers)
    if peak > 0 and not (2.0**-120 <= peak <= 2.0**120):
        power = -math.frexp(peak)[1]
        layers = [times_power_of_two(layer, power) for layer in layers]
    path = sum(torch.linalg.vector_norm(b - a, dim=1) for a, b in zip(layers[:-1], layers[1:]))
    chord = torch.linalg.vector_norm(layers[-1] - layers[0], dim=1)
    moving = path > 0
    ratio = torch.where(moving, chord / torch.where(moving, path, torch.ones_like(path)), torch.ones_like(path))
    return ratio.clamp(0.0, 1.0)
