"""Figure helpers shared by the notebooks (seaborn / matplotlib). Layers are labelled 1..L."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns


def layer_heatmap(sim, ax=None, *, title: str = "", vmin=None, vmax=1.0, cmap: str = "magma",
                  cbar: bool = True, annot: bool = False, first: int = 1):
    """Heatmap of an (L, L') layer-by-layer similarity, layer `first` (1; 0 with the embedding output) at the
    top left, labels first..L."""
    sim = np.asarray(sim.detach().cpu() if hasattr(sim, "detach") else sim, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5))
    L, K = sim.shape
    step = max(1, L // 12)
    sns.heatmap(sim, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, square=True, cbar=cbar, annot=annot,
                fmt=".2f", xticklabels=[str(i + first) if i % step == 0 else "" for i in range(K)],
                yticklabels=[str(i + first) if i % step == 0 else "" for i in range(L)])
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    ax.set_title(title)
    return ax


def per_layer_curves(curves: dict, ax=None, *, ylabel: str = "", title: str = "", marker: str = "o",
                     first: int = 1):
    """Line plot of per-layer values, one line per entry of `curves` (name -> (L,) values of layers first..)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, values in curves.items():
        values = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float)
        ax.plot(np.arange(first, len(values) + first), values, marker=marker, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    return ax
