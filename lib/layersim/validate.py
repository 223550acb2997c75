"""Checks of arguments that every public function shares: whole numbers and real numbers with a range.

One rule everywhere: a bool is not a number (``True`` is not a batch size); numpy scalars are numbers; NaN
and infinity are not real numbers here. The error says which argument, what it must be, and what it got.
Labels, stacks of per-layer features and logits have their own checks next to the metrics
(`layersim.metrics.readout.check_labels`, `layersim.metrics._stack`).

>>> whole_number(batch_size, "batch_size", low=1)          # -> int, or ValueError "... a positive integer"
>>> real_number(threshold, "threshold", low=0, high=1)     # -> float in [0, 1]
"""
from __future__ import annotations

import math
import numbers


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


def whole_number(value, name: str, *, low: int | None = None, high: int | None = None, what: str | None = None) -> int:
    """`value` as an int: an integer (int or numpy integer, not a bool) in [low, high]; else ValueError
    "{name} must be {what}, got {value!r}" (`what` defaults to a description of the range)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        value = int(value)
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        raise ValueError(f"{name} must be {what or _range_text(low, high)}, got {value!r}")
    return value


def real_number(value, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False, what: str | None = None) -> float:
    """`value` as a float: a finite real number (not a bool) in the range given (``low_open``/``high_open``
    exclude the ends); else ValueError "{name} must be {what}, got {value!r}"."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        x = float(value)
        ok = (low is None or (x > low if low_open else x >= low)) and (high is None or (x < high if high_open else x <= high))
    if not ok:
        raise ValueError(f"{name} must be {what or _range_text(low, high, low_open=low_open, high_open=high_open, kind='real')}, "
                         f"got {value!r}")
    return float(value)
