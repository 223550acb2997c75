"""The checks of arguments that every public function shares, with one set of messages.

Every public function of `layersim` (metrics, losses, fused_ce, early_exit, extract, data, lm) checks its
arguments with these, so the same bad value gets the same answer everywhere: an exception whose message names
the argument, says what it must be and what it got.

- Numbers: `whole_number` (counts, layers, seeds), `real_number` (fractions, thresholds, rates).
- Arrays: `to_tensor` (a tensor, numpy array or nested sequence of numbers), `tensor_arg` (a torch tensor of a
  given rank, dtype kind, finite, not empty), `same_device`.
- Labels and per-layer readouts: `check_labels` (class indices, optionally with an ignored value),
  `as_predictions` ((L, n, C) logits or (L, n) predictions -> (L, n) classes), `num_classes_of`,
  `layer_weights` (one finite, non-negative weight per layer).
- Stacks of per-layer features ((L, n, d) or a sequence of (n, d_l)) are checked by
  `layersim.metrics._stack.as_stack`, which uses these.

One rule everywhere: a bool is not a number (``True`` is not a batch size); numpy scalars are numbers; NaN and
infinity are not real numbers here. A value of the wrong type raises `ArgumentTypeError`, which is a TypeError
and also a ValueError (so code that caught the ValueError of earlier versions still does, as numpy's
AxisError is both a ValueError and an IndexError); a value of the right type that is out of range, of the
wrong shape, NaN or infinite raises ValueError.

>>> whole_number(batch_size, "batch_size", low=1)          # -> int, or ValueError "... a positive integer"
>>> real_number(threshold, "threshold", low=0, high=1)     # -> float in [0, 1]
>>> tensor_arg(logits, "logits", ndim=3, kind="float")     # -> the tensor, or a sentence naming `logits`
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np
import torch


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a string where a number belongs, None where a tensor belongs). A
    TypeError, and a ValueError too, for the code that caught the ValueError earlier checks raised."""


def describe(value) -> str:
    """What a message says a wrong value was: its type, and a short repr."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _range_text(low, high, *, low_open: bool = False, high_open: bool = False, kind: str = "integer") -> str:
    if kind == "integer" and high is None:
        if low == 1:
            return "a positive integer"
        if low == 0:
            return "a non-negative integer"
    if low is not None and high is not None:
        left, right = ("(" if low_open else "["), (")" if high_open else "]")
        return f"{'an integer' if kind == 'integer' else 'a number'} in {left}{low}, {high}{right}"
    if low is not None:
        return f"{'an integer' if kind == 'integer' else 'a number'} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'an integer' if kind == 'integer' else 'a number'} {'<' if high_open else '<='} {high}"
    return "an integer" if kind == "integer" else "a finite number"


# ---- numbers ---------------------------------------------------------------------------------------------
def whole_number(value, name: str, *, low: int | None = None, high: int | None = None, what: str | None = None) -> int:
    """`value` as an int: an integer (int or numpy integer, not a bool) in [low, high]; else
    "{name} must be {what}, got {value!r}" (`what` defaults to a description of the range): ArgumentTypeError
    for a value that is not an integer, ValueError for one out of range."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be {what or _range_text(low, high)}, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {what or _range_text(low, high)}, got {value!r}")
    return value


def real_number(value, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False, what: str | None = None) -> float:
    """`value` as a float: a finite real number (not a bool) in the range given (``low_open``/``high_open``
    exclude the ends); else "{name} must be {what}, got {value!r}": ArgumentTypeError for a value that is not
    a real number (a string, None, a complex), ValueError for NaN, infinity or a value out of range."""
    what = what or _range_text(low, high, low_open=low_open, high_open=high_open, kind="real")
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be {what}, got {value!r}")
    x = float(value)
    ok = math.isfinite(x) and (low is None or (x > low if low_open else x >= low)) and (
        high is None or (x < high if high_open else x <= high))
    if not ok:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return x


# ---- arrays ----------------------------------------------------------------------------------------------
def to_tensor(array, what: str) -> torch.Tensor:
    """A detached tensor of ``array`` (a tensor, numpy array or nested sequence of numbers); ArgumentTypeError
    naming `what` for anything else (None, a string, objects)."""
    if isinstance(array, torch.Tensor):
        return array.detach()
    try:
        if array is None or isinstance(array, (str, bytes)):
            raise TypeError(f"it is {describe(array)}")
        values = np.asarray(array)
        if values.dtype == object or values.dtype.kind in "USV":
            raise TypeError(f"it holds {values.dtype} values, not numbers")
        return torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ArgumentTypeError(f"{what} could not be read as a numeric array: {err}") from None


_KINDS = {"float": ("floating-point", lambda t: t.is_floating_point()),
          "integer": ("integer", lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)),
          "real": ("real (integer or floating-point)", lambda t: not (t.is_complex() or t.dtype == torch.bool))}


def tensor_arg(value, name: str, *, ndim: int | None = None, kind: str | None = None, finite: bool = False,
               nonempty: bool = True, what: str | None = None) -> torch.Tensor:
    """`value` itself when it is a torch.Tensor of rank `ndim`, of dtype `kind` ("float", "integer", "real"),
    with no zero-length dimension (`nonempty`) and, with `finite`, no NaN or infinity; else a sentence naming
    `name` and what it must be (`what`, e.g. "(L, n, C) logits"): ArgumentTypeError for anything not a tensor,
    ValueError for a tensor of the wrong rank, dtype or values."""
    what = what or (f"a {ndim}-dimensional tensor" if ndim is not None else "a tensor")
    if not isinstance(value, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be {what} (a torch.Tensor), got {describe(value)}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must be {what} ({ndim} dimensions), got shape {tuple(value.shape)}")
    if kind is not None and not _KINDS[kind][1](value):
        hint = " (convert with .long())" if kind == "integer" else " (convert with .float())" if kind == "float" else ""
        raise ValueError(f"{name} must be {what} of a {_KINDS[kind][0]} dtype, got {value.dtype}{hint}")
    if nonempty and 0 in value.shape:
        raise ValueError(f"{name} must be {what} with no empty dimension, got shape {tuple(value.shape)}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite values; {what} must be finite")
    return value


def same_device(**tensors) -> torch.device:
    """The one device of the named tensors (None entries are skipped); ValueError naming them when they differ."""
    where = {name: t.device for name, t in tensors.items() if t is not None}
    devices = set(where.values())
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {device}" for name, device in where.items())
        raise ValueError(f"{' and '.join(where)} must be on one device, got {listing}; move them with .to(device)")
    return next(iter(devices)) if devices else torch.device("cpu")


# ---- labels and per-layer readouts -------------------------------------------------------------------------
def check_labels(labels, n: int, num_classes: Optional[int] = None, *, where: str = "", name: str = "labels",
                 ignore_index: Optional[int] = None) -> torch.Tensor:
    """``labels`` as an (n,) int64 tensor of class indices in [0, num_classes) (``num_classes`` None: only
    >= 0 is checked; values equal to `ignore_index`, when given, are allowed: rows left out of a loss).
    ArgumentTypeError for something that is not an array; ValueError for another shape, a non-integer dtype
    (float, bool, complex) or a value out of range. ``where`` says in the message where ``num_classes`` came
    from. A tensor keeps its device."""
    labels = to_tensor(labels, name)
    if labels.ndim != 1:
        raise ValueError(f"{name} must have shape (n,) = ({n},); got {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} must have shape (n,) = ({n},): {name} hold {labels.shape[0]} samples but the "
                         f"per-layer outputs hold {n}; pass the labels of exactly the samples that were read out, "
                         "in the same order")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices; got dtype {labels.dtype} (convert with .long())")
    labels = labels.long()
    kept = labels if ignore_index is None else labels[labels != ignore_index]
    if kept.numel() == 0:
        return labels
    low, high = int(kept.min()), int(kept.max())
    ignored = "" if ignore_index is None else f", or {ignore_index} (ignore_index) to leave a row out"
    if num_classes is not None and (low < 0 or high >= num_classes):
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes}) ({where or f'num_classes={num_classes}'}){ignored}; "
            f"got values from {low} to {high}"
        )
    if low < 0:
        raise ValueError(f"{name} must be class indices >= 0{ignored}; got {low} (negative)")
    return labels


def as_predictions(logits_or_preds, name: str = "logits_or_preds", *, num_classes: Optional[int] = None) -> torch.Tensor:
    """(L, n, C) real logits -> their argmax over C; (L, n) integer predictions pass through (checked against
    [0, num_classes) when `num_classes` is given). -> (L, n) int64 tensor of class indices (>= 0).

    ValueError for any other shape, zero layers/samples/classes, NaN or Inf logits, complex or boolean
    values, floating-point (L, n) input (pass logits as (L, n, C)) and negative predictions.
    """
    values = to_tensor(logits_or_preds, name)
    if values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"{name} must hold real logits or integer predictions; got dtype {values.dtype}")
    if values.ndim == 3:
        if 0 in values.shape:
            raise ValueError(f"{name} needs at least one layer, sample and class; got shape {tuple(values.shape)}")
        if values.is_floating_point() and not bool(torch.isfinite(values).all()):
            raise ValueError(f"{name} contains NaN or Inf logits")
        return values.argmax(dim=2)
    if values.ndim != 2:
        raise ValueError(
            f"{name} must be (L, n) predictions or (L, n, C) logits; got ndim={values.ndim} "
            f"shape={tuple(values.shape)}"
        )
    if values.is_floating_point():
        raise ValueError(
            f"{name} of shape (L, n) must hold integer class predictions (got dtype "
            f"{values.dtype}); pass logits as (L, n, C)"
        )
    if 0 in values.shape:
        raise ValueError(f"{name} needs at least one layer and one sample; got shape {tuple(values.shape)}")
    if bool((values < 0).any()):
        raise ValueError(f"{name} holds negative predictions ({int(values.min())}); class indices are >= 0")
    if num_classes is not None and bool((values >= num_classes).any()):
        raise ValueError(f"{name} holds predictions up to {int(values.max())}, outside the num_classes={num_classes} "
                         f"classes [0, {num_classes})")
    return values.long()


def num_classes_of(logits_or_preds) -> Optional[int]:
    """C of (L, n, C) logits; None for (L, n) predictions or anything else."""
    shape = getattr(logits_or_preds, "shape", None)
    return int(shape[2]) if shape is not None and len(shape) == 3 else None


def layer_weights(weights, num_layers: int | None, name: str = "weights", *, what: str = "layer weights",
                  dtype=torch.float32, not_all_zero: bool = True) -> torch.Tensor:
    """`weights` as a (num_layers,) tensor of `dtype` (None: a tensor's own float dtype, else float32; on the CPU
    unless it was a tensor elsewhere): one finite
    weight >= 0 per layer (num_layers None: any length >= 1), not all 0 with `not_all_zero`. A vector of another
    length is an error, never broadcast. `what` names them in messages ("layer weights", "segment weights")."""
    if isinstance(weights, (str, bytes, bool)) or weights is None:
        raise ArgumentTypeError(f"{name} must be {what}: one number per layer (a sequence or tensor), got "
                                f"{describe(weights)}")
    w = weights.detach() if isinstance(weights, torch.Tensor) else to_tensor(weights, name)
    if w.is_complex() or w.dtype == torch.bool:
        raise ValueError(f"{what} in {name} must be real numbers, got dtype {w.dtype}")
    w = w.to(dtype if dtype is not None else w.dtype if w.is_floating_point() else torch.float32)
    if w.dim() != 1 or w.numel() == 0 or (num_layers is not None and w.numel() != num_layers):
        count = num_layers if num_layers is not None else "one or more"
        raise ValueError(f"expected {count} {what} in {name} (a vector), got shape {tuple(w.shape)}; a vector of "
                         "another length is an error, never broadcast")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{what} in {name} must be finite numbers >= 0, got {w.tolist()}")
    if not_all_zero and not bool((w != 0).any()):
        raise ValueError(f"{what} in {name} are all zero: at least one must be positive")
    return w
