"""Layer-wise similarity metrics (minimal first version; the metrics issue completes it).

Shapes: ``feats`` is (L, n, d) -- L layers, n samples, d features -- or a sequence of (n, d).
Every similarity returned here is "larger means more similar".
"""
from __future__ import annotations

from typing import Sequence

import torch


def _as_stack(feats, name: str = "feats") -> torch.Tensor:
    if isinstance(feats, (list, tuple)):
        feats = torch.stack([torch.as_tensor(f) for f in feats])
    feats = torch.as_tensor(feats)
    if feats.ndim != 3:
        raise ValueError(f"{name} must have shape (L, n, d); got ndim={feats.ndim} shape={tuple(feats.shape)}")
    return feats.to(torch.float64)


def cos_similarity(feats, other=None, *, centered: bool = True) -> torch.Tensor:
    """Sample-wise cosine similarity between layers -> (L, L') tensor.

    For each layer (optionally) subtract the mean over samples, normalise each sample to unit
    length, and average the per-sample dot products of layers l and l' over the n samples.
    """
    x = _as_stack(feats)
    y = x if other is None else _as_stack(other, "other")
    if x.shape[1] != y.shape[1] or x.shape[2] != y.shape[2]:
        raise ValueError(f"feats {tuple(x.shape)} and other {tuple(y.shape)} must share n and d")

    def prep(z):
        if centered:
            z = z - z.mean(dim=1, keepdim=True)
        return z / z.norm(dim=2, keepdim=True).clamp_min(1e-12)

    x, y = prep(x), prep(y)
    return torch.einsum("lnd,knd->lk", x, y) / x.shape[1]


def cka(feats, other=None, *, kernel: str = "linear", debiased: bool = False, threshold: float = 0.5) -> torch.Tensor:
    """Linear CKA between every pair of layers -> (L, L') tensor (feature-space form)."""
    if kernel != "linear" or debiased:
        raise NotImplementedError("only biased linear CKA in this first version")
    x = _as_stack(feats)
    y = x if other is None else _as_stack(other, "other")
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    cross = torch.einsum("lnd,kne->lkde", x, y).pow(2).sum(dim=(2, 3))
    sx = torch.einsum("lnd,lne->lde", x, x).pow(2).sum(dim=(1, 2)).sqrt()
    sy = torch.einsum("lnd,lne->lde", y, y).pow(2).sum(dim=(1, 2)).sqrt()
    return cross / (sx[:, None] * sy[None, :])
