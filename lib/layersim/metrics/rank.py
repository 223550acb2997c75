"""Rank correlation: `spearman`, for the trends the claims are stated as (similarity rising with depth,
falling with the layer gap, accuracy rising layer by layer)."""
from __future__ import annotations

import numpy as np
import torch

from ..validate import to_tensor

__all__ = ["spearman"]


def spearman(x, y) -> float:
    """Spearman rank correlation of two equally long 1-D sequences; NaN (silently, without scipy's
    warning) when either is constant, holds NaN / Inf or is shorter than 2: no rank correlation exists."""
    from scipy.stats import spearmanr

    x = to_tensor(x, "x").cpu().to(torch.float64).numpy().reshape(-1)
    y = to_tensor(y, "y").cpu().to(torch.float64).numpy().reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length; got {x.size} and {y.size}")
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)
