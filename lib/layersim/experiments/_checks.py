"""Input checks shared by the analyses of this package: feature stacks, similarity matrices, counts, sizes."""
from __future__ import annotations

import math

import numpy as np
import torch
from ..validate import whole_number


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
    return whole_number(value, name, low=low, what=f"a whole number >= {low}")


def _size(value, name: str = "size") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)
