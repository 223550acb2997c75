"""Checks of what goes into a model: shape, dtype and finiteness of images, with errors that say what to do."""
from __future__ import annotations

import torch


def check_images(x, expected: tuple, dtype: torch.dtype, device: torch.device, name: str) -> torch.Tensor:
    """Validate a batch of images (B, C, H, W) and cast it to the model's float dtype and device.

    Floating images of another precision (float64, half, bfloat16) are cast; integer or bool images are
    refused (they are almost always unnormalised pixels: convert with ``x.float() / 255`` and normalise as
    the model was trained); NaN or infinite pixels are refused, so that no NaN feature is ever computed or
    cached. `expected` is (C, H, W), with None for a size the model accepts freely.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} expects a tensor of images (batch, {expected[0]}, H, W), got {type(x).__name__}")
    shape_ok = x.dim() == 4 and all(e is None or int(g) == e for g, e in zip(x.shape[1:], expected))
    if not shape_ok:
        want = ", ".join("?" if e is None else str(e) for e in expected)
        raise ValueError(f"expected images of shape (batch, {want}) for {name}, got {tuple(x.shape)}; resize the "
                         "images or build the model with a matching configuration")
    if not x.is_floating_point():
        raise ValueError(f"{name} expects floating-point images, got dtype {x.dtype}; convert them, e.g. "
                         "x.float() / 255, then normalise them as the model was trained")
    x = x.to(device=device, dtype=dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"the images given to {name} contain NaN or infinite values "
                         f"({int((~torch.isfinite(x)).sum())} of {x.numel()} pixels); clean the data first")
    return x
