"""What Figure 1 and the saturation figure draw from per-layer representations: the 2-D PCA of the class
means at every layer (`class_mean_pca`; `plot_class_means` draws one panel, `pick_layers` chooses the layers
to show when there are many), and per-layer values averaged over groups of samples (COS to the last layer
by saturation layer, `mean_by_group`).

Shapes: features (L, n, d) are stacked layer-first; layers are numbered 1..L in everything a reader sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from ..validate import whole_number

__all__ = ["ClassMeanPCA", "class_mean_pca", "plot_class_means", "pick_layers", "mean_by_group"]


# ---- Figure 1: the class means at every layer ------------------------------------------------------------
@dataclass
class ClassMeanPCA:
    """A PCA of the class means fitted at each layer on its own.

    centers: (L, d) mean of the class means per layer. components: (L, k, d) unit principal directions.
    means: (L, C, k) the class means in those coordinates. explained: (L, k) share of the variance of the
    class means along each component. Signs are aligned from the last layer down: component j of layer l
    points so that the class means' coordinates correlate positively with those of layer l + 1, so that
    neighbouring panels are not mirrored for no reason.
    """

    centers: torch.Tensor
    components: torch.Tensor
    means: torch.Tensor
    explained: torch.Tensor

    def transform(self, features) -> torch.Tensor:
        """(L, n, d) features -> (L, n, k) coordinates in each layer's class-mean PCA."""
        features = torch.as_tensor(features).to(self.components.dtype)
        if features.dim() != 3 or features.shape[0] != self.components.shape[0] or \
                features.shape[2] != self.components.shape[2]:
            raise ValueError(f"features must be (L, n, d) = ({self.components.shape[0]}, n, "
                             f"{self.components.shape[2]}); got shape {tuple(features.shape)}")
        return torch.einsum("lnd,lkd->lnk", features - self.centers[:, None], self.components)


def _layer_stack(features, name: str = "features") -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be an (L, n, d) tensor or array; got {type(features).__name__}")
    if features.dim() != 3 or 0 in features.shape:
        raise ValueError(f"{name} must be (L, n, d): layers, samples, features; got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{name} must hold floating-point features; got dtype {features.dtype}")
    features = features.detach().cpu().to(torch.float64)
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return features


def _labels(labels, n: int) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels) if isinstance(labels, (list, tuple)) else labels)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be (n,) = ({n},), one per sample; got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"labels must be integer class indices; got dtype {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0; got {int(labels.min())}")
    return labels.long().cpu()


def class_mean_pca(features, labels, *, num_components: int = 2) -> ClassMeanPCA:
    """2-D (or k-D) PCA of the class means of every layer, each layer fitted on its own (Figure 1).

    features: (L, n, d) per-layer features of n samples; labels: (n,) class indices (every class that
    occurs gets a mean; classes are ordered by index). num_components: k, at most (number of classes - 1)
    and d. -> `ClassMeanPCA` with means (L, C, k).
    """
    from sklearn.decomposition import PCA

    feats = _layer_stack(features)
    L, n, d = feats.shape
    labels = _labels(labels, n)
    present = torch.unique(labels)
    if present.numel() < 2:
        raise ValueError(f"need samples of at least 2 classes for a PCA of class means; got classes {present.tolist()}")
    top = min(present.numel() - 1, d)
    num_components = whole_number(num_components, "num_components", low=1, high=top,
                                  what=f"an integer in 1..{top} (classes - 1, and at most d)")
    onehot = (labels[:, None] == present[None]).to(torch.float64)  # (n, C)
    means = torch.einsum("lnd,nc->lcd", feats, onehot) / onehot.sum(0)[None, :, None]  # (L, C, d)
    centers, components, coords, explained = [], [], [], []
    for l in range(L):
        pca = PCA(num_components, svd_solver="full").fit(means[l].numpy())
        centers.append(torch.from_numpy(pca.mean_))
        components.append(torch.from_numpy(pca.components_.copy()))
        coords.append(torch.from_numpy(pca.transform(means[l].numpy())))
        explained.append(torch.from_numpy(pca.explained_variance_ratio_.copy()))
    for l in range(L - 2, -1, -1):  # align signs with the next deeper layer
        agree = (coords[l] * coords[l + 1]).sum(0)  # (k,)
        flip = torch.where(agree < 0, -1.0, 1.0).to(torch.float64)
        coords[l] = coords[l] * flip
        components[l] = components[l] * flip[:, None]
    return ClassMeanPCA(torch.stack(centers), torch.stack(components), torch.stack(coords), torch.stack(explained))


def plot_class_means(ax, pca: ClassMeanPCA, layer: int, *, samples=None, sample_labels=None, classes=None,
                     title: Optional[str] = None, legend: bool = False):
    """Draw the class means of 1-based `layer` in its PCA plane on `ax` (one colour per class), with
    `samples` (their (L, m, d) features) as faint dots of their class's colour when given."""
    L = pca.means.shape[0]
    layer = whole_number(layer, "layer", low=1, high=L, what=f"an integer in 1..{L} (layers are numbered from 1)")
    C = pca.means.shape[1]
    colours = [f"C{c % 10}" for c in range(C)]
    if samples is not None:
        points = pca.transform(samples)[layer - 1].numpy()
        sample_labels = _labels(sample_labels, points.shape[0]).numpy()
        ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.3, c=[colours[c % C] for c in sample_labels],
                   linewidths=0, rasterized=True)
    means = pca.means[layer - 1].numpy()
    for c in range(C):
        label = classes[c] if classes is not None else str(c)
        ax.scatter(means[c, 0], means[c, 1], s=60, color=colours[c], edgecolor="black", linewidth=0.6, label=label,
                   zorder=3)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else f"layer {layer}", fontsize=9)
    if legend:
        ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def pick_layers(num_layers: int, max_panels: int = 8) -> list:
    """Up to `max_panels` layers out of 1..L, evenly spaced, always with layer 1 and layer L (all of them
    when L <= max_panels)."""
    for name, value in (("num_layers", num_layers), ("max_panels", max_panels)):
        whole_number(value, name, low=1)
    if num_layers <= max_panels:
        return list(range(1, num_layers + 1))
    if max_panels == 1:
        return [num_layers]
    return sorted({int(round(x)) for x in np.linspace(1, num_layers, max_panels)})



# ---- grouping samples --------------------------------------------------------------------------------------
def mean_by_group(values, groups, num_groups: int) -> tuple:
    """Per-layer values averaged over the samples of each group (e.g. each sample's COS to the last layer,
    grouped by its saturation layer).

    values: (L, n) a value per layer and sample. groups: (n,) group numbers in 1..num_groups.
    -> (means (num_groups, L) float64, NaN for a group with no sample; counts (num_groups,) int64).
    """
    values = torch.as_tensor(values)
    if values.dim() != 2 or not values.is_floating_point():
        raise ValueError(f"values must be a float (L, n) tensor; got {values.dtype} of shape {tuple(values.shape)}")
    values = values.detach().cpu().to(torch.float64)
    num_groups = whole_number(num_groups, "num_groups", low=1)
    groups = _labels(groups, values.shape[1])
    if groups.numel() and (int(groups.min()) < 1 or int(groups.max()) > num_groups):
        raise ValueError(f"groups must be numbered 1..{num_groups}; got {int(groups.min())}..{int(groups.max())}")
    onehot = (groups[:, None] == torch.arange(1, num_groups + 1)[None]).to(torch.float64)  # (n, G)
    counts = onehot.sum(0)
    sums = values @ onehot  # (L, G)
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
    return means.T.contiguous(), counts.long()
