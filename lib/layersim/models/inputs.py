"""Checks of what goes into a model: shape, dtype and finiteness of images and other float inputs (log-mel
features), with errors that say what to do."""
from __future__ import annotations

import torch


def check_float_input(x, expected: tuple, dtype: torch.dtype, device: torch.device, name: str, *, what: str,
                      dims: str, fix: str = "") -> torch.Tensor:
    """Validate a batch (B, *expected) of float inputs and cast it to the model's float dtype and device.

    Floating inputs of another precision are cast; integer or bool inputs are refused; NaN or infinite values
    are refused, so that no NaN feature is ever computed or cached. `expected` has None for a size the model
    accepts freely; `what` names the inputs and `dims` their dimensions after the batch, for the messages.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} expects a tensor of {what} (batch, {dims}), got {type(x).__name__}")
    shape_ok = x.dim() == 1 + len(expected) and all(e is None or int(g) == e for g, e in zip(x.shape[1:], expected))
    if not shape_ok:
        want = ", ".join("?" if e is None else str(e) for e in expected)
        raise ValueError(f"expected {what} of shape (batch, {want}) for {name}, got {tuple(x.shape)}; "
                         + (fix or "give inputs of the shape the model was built for"))
    if not x.is_floating_point():
        raise ValueError(f"{name} expects floating-point {what}, got dtype {x.dtype}; convert them"
                         + (", e.g. x.float() / 255, then normalise them as the model was trained"
                            if what == "images" else " as the model's feature extractor does"))
    x = x.to(device=device, dtype=dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"the {what} given to {name} contain NaN or infinite values "
                         f"({int((~torch.isfinite(x)).sum())} of {x.numel()} values); clean the data first")
    return x


def check_images(x, expected: tuple, dtype: torch.dtype, device: torch.device, name: str) -> torch.Tensor:
    """Validate a batch of images (B, C, H, W) and cast it to the model's float dtype and device.

    Floating images of another precision (float64, half, bfloat16) are cast; integer or bool images are
    refused (they are almost always unnormalised pixels: convert with ``x.float() / 255`` and normalise as
    the model was trained); NaN or infinite pixels are refused. `expected` is (C, H, W), with None for a size
    the model accepts freely.
    """
    return check_float_input(x, expected, dtype, device, name, what="images", dims=f"{expected[0]}, H, W",
                             fix="resize the images or build the model with a matching configuration")
