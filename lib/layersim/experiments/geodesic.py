"""Claim 4, the geodesic picture of a residual network: synthetic trajectories that move each sample along a
straight, constant-speed path from its input to its output representation (optionally made to wind), a
linear classifier trained on the last layer, and the measures of how straight and how even real
trajectories are (with `layersim.metrics.trajectory_straightness`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import _count, _features, _size

__all__ = ["Trajectories", "geodesic_trajectories", "fit_linear_classifier", "fraction_rising",
           "relative_step_lengths"]


@dataclass
class Trajectories:
    """Synthetic per-layer representations. features: (L, n, d) the outputs of layers 1..L; inputs: (n, d)
    the input representation (layer 0, where every path starts); labels: (n,) the class of each sample."""

    features: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor

    @property
    def num_layers(self) -> int:
        return self.features.shape[0]

    def take(self, index) -> "Trajectories":
        """The samples `index` selects (a slice, indices or a bool mask over the n samples), every layer."""
        return Trajectories(self.features[:, index], self.inputs[index], self.labels[index])


def geodesic_trajectories(n: int, dim: int, num_layers: int, num_classes: int, *, separation: float = 1.0,
                          input_scale: float = 1.0, wiggle: float = 0.0, seed: int = 0) -> Trajectories:
    """Samples moving along straight, constant-speed paths from an input to an output representation.

    Output (layer L): ``h_L(x) = separation * mu_y + e`` with class means mu_c ~ N(0, I_d) and noise
    e ~ N(0, I_d), so the classes overlap more as `separation` falls. Input (layer 0): ``h_0(x) ~
    N(0, input_scale^2 I_d)``, unrelated to the class. Layer l = 1..L: ``h_l = h_0 + (l / L) (h_L - h_0)``,
    the geodesic (a straight segment walked at constant speed), which is the paper's assumption.

    ``wiggle > 0`` adds to every path a random-walk bridge that is 0 at both ends (the endpoints stay put),
    with steps of typical length ``wiggle * ||h_L - h_0|| / L`` per layer: a winding path between the same
    endpoints, the counter-example to the geodesic assumption. -> `Trajectories` (float64).
    """
    n, dim = _count(n, "n", 2), _count(dim, "dim")
    num_layers, num_classes = _count(num_layers, "num_layers", 2), _count(num_classes, "num_classes", 2)
    for name, value in (("separation", separation), ("input_scale", input_scale), ("wiggle", wiggle)):
        _size(value, name)
    gen = torch.Generator().manual_seed(int(seed))
    means = torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)
    labels = torch.randint(num_classes, (n,), generator=gen)
    outputs = separation * means[labels] + torch.randn(n, dim, generator=gen, dtype=torch.float64)
    inputs = input_scale * torch.randn(n, dim, generator=gen, dtype=torch.float64)
    t = torch.arange(1, num_layers + 1, dtype=torch.float64)[:, None, None] / num_layers  # (L, 1, 1)
    features = inputs[None] + t * (outputs - inputs)[None]
    if wiggle > 0:
        step = wiggle * (outputs - inputs).norm(dim=1) / num_layers / math.sqrt(dim)  # per-coordinate std
        walk = torch.cumsum(torch.randn(num_layers, n, dim, generator=gen, dtype=torch.float64), dim=0)
        walk = walk * step[None, :, None]
        features = features + walk - t * walk[-1:]  # a bridge: 0 at layer 0 and at layer L
    return Trajectories(features, inputs, labels)


def fit_linear_classifier(features, labels, *, regularization: float = 1.0, max_iter: int = 2000) -> torch.nn.Linear:
    """A multinomial logistic regression (scikit-learn) trained on `features` (n, d) with `labels` (n,),
    returned as a float64 ``torch.nn.Linear(d, C)`` whose logits give the same probabilities.

    `regularization` is scikit-learn's C (inverse strength). Apply it to every layer of a stack to read
    hidden layers with the last layer's classifier: ``classifier(feats)`` -> (L, n, C) logits.
    """
    from sklearn.linear_model import LogisticRegression

    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if x.dim() != 2:
        raise ValueError(f"features must be (n, d): one vector per sample; got shape {tuple(x.shape)}")
    x = _features(x[None], "features", min_samples=2)[0]
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be (n,) = ({x.shape[0]},); got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer classes; got dtype {y.dtype}")
    classes = torch.unique(y)
    if len(classes) < 2:
        raise ValueError("labels must hold at least 2 classes to train a classifier")
    if classes.min() < 0:
        raise ValueError(f"labels must be class indices >= 0; got {int(classes.min())}")
    fit = LogisticRegression(C=regularization, max_iter=max_iter).fit(x.numpy(), y.numpy())
    num_classes = int(classes.max()) + 1
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    bias = torch.full((num_classes,), -1e4, dtype=torch.float64)  # classes never seen: never predicted
    seen = torch.as_tensor(fit.classes_).long()
    if len(seen) == 2:  # binary: scikit-learn keeps one weight vector w for class 1; softmax of (-w/2, w/2)
        w, b = torch.from_numpy(fit.coef_[0]), float(fit.intercept_[0])
        weight[seen[0]], weight[seen[1]], bias[seen[0]], bias[seen[1]] = -w / 2, w / 2, -b / 2, b / 2
    else:
        weight[seen], bias[seen] = torch.from_numpy(fit.coef_), torch.from_numpy(fit.intercept_)
    linear = torch.nn.Linear(x.shape[1], num_classes, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear.requires_grad_(False)


def fraction_rising(values, *, tolerance: float = 0.0) -> float:
    """Share of samples whose value never falls from one layer to the next. `values`: (L, n), e.g. each
    sample's COS to the last layer or its probability of the final prediction; a fall smaller than
    `tolerance` is forgiven."""
    v = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values).detach()
    if v.dim() != 2 or v.shape[0] < 2 or v.shape[1] < 1:
        raise ValueError(f"values must be (L, n) with L >= 2 layers; got shape {tuple(v.shape)}")
    _size(tolerance, "tolerance")
    v = v.to(torch.float64)
    return float(((v[1:] - v[:-1]) >= -tolerance).all(0).to(torch.float64).mean())


def relative_step_lengths(feats) -> torch.Tensor:
    """(L-1, n) float64: the length of each sample's step from layer l to l+1 as a share of its whole path
    length (each column sums to 1). `feats`: (L, n, d) raw features, L >= 2. At constant speed every step
    is 1/(L-1); a sample that never moves gets 1/(L-1) everywhere."""
    feats = _features(feats, min_layers=2)
    steps = (feats[1:] - feats[:-1]).norm(dim=2)  # (L-1, n)
    total = steps.sum(0, keepdim=True)
    even = torch.full_like(steps, 1.0 / steps.shape[0])
    return torch.where(total > 0, steps / torch.where(total > 0, total, torch.ones_like(total)), even)
