"""The set-up every notebook begins with: `start` gives it the recorder of its results and the folder where
per-layer features are cached."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Optional

from ..runner.record import Recorder
from ..storage import default_cache_dir

__all__ = ["start", "NotebookStart", "FEATURE_CACHE"]

FEATURE_CACHE = "features"  # the folder of the cache (data/cache) that holds per-layer features and readouts


class NotebookStart(NamedTuple):
    """What `start` returns: `rec`, the notebook's `Recorder`, and `cache_dir`, the feature cache (or None)."""

    rec: Recorder
    cache_dir: Optional[Path]


def start(output_dir: os.PathLike, notebook: str, *, use_cache: bool = True) -> NotebookStart:
    """Begin notebook `notebook` (its name, e.g. ``"07_aligned_accuracy"``), whose results go to `output_dir`.

    -> ``(rec, cache_dir)``: `rec` records the notebook's numbers, claim checks and figures in `output_dir`
    (a `layersim.runner.record.Recorder`: ``metrics.json``, figures as PNG and PDF); `cache_dir` is where
    per-layer features and readouts are cached, ``features`` in the cache folder (``data/cache``, see
    `layersim.storage.default_cache_dir`), or None when `use_cache` is False (everything is computed afresh).
    Trained models are cached whatever `use_cache` says.

    >>> rec, cache_dir = experiments.start(output_dir, "07_aligned_accuracy", use_cache=use_cache)
    """
    rec = Recorder(output_dir, notebook)
    cache_dir = default_cache_dir() / FEATURE_CACHE if use_cache else None
    return NotebookStart(rec, cache_dir)
