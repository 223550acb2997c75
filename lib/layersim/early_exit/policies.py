"""Exit policies: when may a sample stop, layer by layer, and what does that cost and earn.

A policy looks at one layer at a time, and only at the samples still running: it never reads a layer
past a sample's exit. The same policy objects drive the simulation over cached per-layer outputs
(`simulate`, `sweep`) and the real early-exit forward (`layersim.early_exit.early_exit`).

- `ConfidenceExit(threshold)`: stop when the largest softmax probability >= threshold (in [0, 1]).
- `EntropyExit(threshold)`: stop when the entropy of the softmax (nats) <= threshold (>= 0).
- `PatienceExit(patience)`: stop when the prediction has not changed for `patience` consecutive layers
  (PABEE, Zhou et al. 2020: a counter rises when a layer repeats the previous layer's prediction, resets
  otherwise; exit when it reaches `patience` >= 1).
- `FixedExit(layer)`: every sample stops at `layer` (1..L).
A sample that never meets its criterion stops at layer L.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import pandas as pd
import torch

from layersim.validate import ArgumentTypeError, real_number, whole_number

from .analysis import LayerSummaries, _as_logits, _layer_summary, as_summaries, check_finite, cost_vector, exit_labels

__all__ = ["ExitPolicy", "ConfidenceExit", "EntropyExit", "PatienceExit", "FixedExit", "make_policy", "POLICIES",
           "ExitResult", "simulate", "sweep", "sweep_policies", "pareto_front", "choose_by_accuracy_drop"]


class ExitPolicy:
    """Decides, layer by layer, which of the running samples stop.

    reads: the per-layer summaries the decision uses ("confidence", "entropy", "preds").
    reads_every_layer: whether it needs a readout at every layer up to the exit (else only at the exit).
    """

    name = "policy"
    reads: tuple = ()
    reads_every_layer = True

    @property
    def parameter(self) -> float:
        raise NotImplementedError

    def check(self, num_layers: int) -> None:
        """Raise ValueError if the policy cannot run on a model of `num_layers` layers."""

    def decides_at(self, layer: int, num_layers: int) -> bool:
        """Whether the policy looks at `layer` at all (a fixed exit looks only at its own layer)."""
        return True

    def start(self, n: int, device=None) -> dict:
        """Per-sample state for a batch of n samples."""
        return {}

    def exit_now(self, layer: int, stats: dict, rows: torch.Tensor, state: dict) -> torch.Tensor:
        """(m,) bool: which of the running samples `rows` (indices into the batch) stop at `layer`.
        stats: dict of (m,) summaries of layer `layer` for those samples only."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parameter!r})"


def _check_number(value, name: str, low: float, high: float, what: str) -> float:
    return real_number(value, name, low=low, high=high, what=f"a number in [{low}, {high}] ({what})")


class ConfidenceExit(ExitPolicy):
    """Stop when the largest softmax probability of the layer's readout is >= threshold, in [0, 1]."""

    name = "confidence"
    reads = ("confidence",)

    def __init__(self, threshold: float):
        self.threshold = _check_number(threshold, "confidence threshold", 0.0, 1.0, "a softmax probability")

    @property
    def parameter(self) -> float:
        return self.threshold

    def exit_now(self, layer, stats, rows, state):
        return stats["confidence"] >= self.threshold


class EntropyExit(ExitPolicy):
    """Stop when the entropy (nats) of the layer's softmax distribution is <= threshold (>= 0)."""

    name = "entropy"
    reads = ("entropy",)

    def __init__(self, threshold: float):
        self.threshold = _check_number(threshold, "entropy threshold", 0.0, math.inf, "an entropy in nats")

    @property
    def parameter(self) -> float:
        return self.threshold

    def exit_now(self, layer, stats, rows, state):
        return stats["entropy"] <= self.threshold


class PatienceExit(ExitPolicy):
    """PABEE: stop once `patience` consecutive layers repeated the previous layer's prediction."""

    name = "patience"
    reads = ("preds",)

    def __init__(self, patience: int):
        self.patience = whole_number(patience, "patience", low=1,
                                     what="an integer >= 1 (number of consecutive unchanged predictions)")

    @property
    def parameter(self) -> float:
        return self.patience

    def start(self, n, device=None):
        return {"last": torch.full((n,), -1, dtype=torch.long, device=device),
                "count": torch.zeros(n, dtype=torch.long, device=device)}

    def exit_now(self, layer, stats, rows, state):
        preds = stats["preds"].to(state["last"].device)
        same = (preds == state["last"][rows]) & (layer > 1)
        count = torch.where(same, state["count"][rows] + 1, torch.zeros_like(preds))
        state["count"][rows] = count
        state["last"][rows] = preds
        return (count >= self.patience).to(stats["preds"].device)


class FixedExit(ExitPolicy):
    """Every sample stops at `layer` (1..L); only that layer is read out."""

    name = "fixed"
    reads_every_layer = False

    def __init__(self, layer: int):
        self.layer = whole_number(layer, "exit layer", low=1, what="an integer in 1..L (layers are numbered from 1)")

    @property
    def parameter(self) -> float:
        return self.layer

    def check(self, num_layers):
        if self.layer > num_layers:
            raise ValueError(f"exit layer {self.layer} is out of range: this model has layers 1..{num_layers}")

    def decides_at(self, layer, num_layers):
        return layer == self.layer

    def exit_now(self, layer, stats, rows, state):
        return torch.full((len(rows),), layer == self.layer, dtype=torch.bool, device=rows.device)


POLICIES = {"confidence": ConfidenceExit, "entropy": EntropyExit, "patience": PatienceExit, "fixed": FixedExit}


def make_policy(name: str, value) -> ExitPolicy:
    """A policy by name ("confidence", "entropy", "patience", "fixed") and its parameter."""
    if name not in POLICIES:
        raise ValueError(f"unknown exit policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name](value)


# ---- simulation over cached per-layer outputs -----------------------------------------------------------
@dataclass
class ExitResult:
    """Where every sample stopped and what it answered.

    exit_layer: (n,) layer 1..L at which each sample stopped. preds: (n,) its prediction there.
    accuracy: share of correct predictions (None without labels). expected_depth: mean exit layer.
    expected_flops: mean FLOPs per sample (None without a FLOPs profile).
    logits: (n, C) logits at the exit (real early-exit forward only).
    """

    policy: str
    parameter: float
    exit_layer: torch.Tensor
    preds: torch.Tensor
    accuracy: Optional[float] = None
    expected_depth: float = float("nan")
    expected_flops: Optional[float] = None
    logits: Optional[torch.Tensor] = None


class _LogitSource:
    """Per-layer summaries computed on demand, from (L, n, C) logits, for the rows asked for only."""

    def __init__(self, logits: torch.Tensor):
        if 0 in logits.shape:
            raise ValueError(f"logits must have at least one layer, sample and class, got shape {tuple(logits.shape)}")
        self.logits = logits
        self.num_layers, self.num_samples, self.num_classes = logits.shape

    def layer(self, layer: int, rows: torch.Tensor) -> dict:
        # checked as read: a layer after a sample's exit is never read, so it may hold anything
        return _layer_summary(check_finite(self.logits[layer - 1, rows.to(self.logits.device)]))


class _SummarySource:
    def __init__(self, summaries: LayerSummaries, needs: Sequence[str], purpose: str):
        self.fields = {name: summaries.require(name, purpose) for name in set(needs) | {"preds"}}
        self.num_layers, self.num_samples = summaries.num_layers, summaries.num_samples
        self.num_classes = summaries.num_classes

    def layer(self, layer: int, rows: torch.Tensor) -> dict:
        return {name: value[layer - 1, rows.to(value.device)] for name, value in self.fields.items()}


def _source(outputs, policy: ExitPolicy, num_classes: Optional[int] = None):
    if not isinstance(outputs, (LayerSummaries, torch.Tensor)) and not hasattr(outputs, "preds"):
        outputs = _as_logits(outputs)
    if isinstance(outputs, torch.Tensor) and outputs.dim() == 3 and outputs.is_floating_point():
        source = _LogitSource(outputs)
        if num_classes is not None and whole_number(num_classes, "num_classes", low=1) != source.num_classes:
            raise ValueError(f"num_classes={num_classes} but the logits have C={source.num_classes} classes")
        return source
    return _SummarySource(as_summaries(outputs, num_classes), policy.reads, f"the {policy.name} exit policy")


def exit_cost(flops, exit_layer: torch.Tensor, policy: ExitPolicy) -> Optional[float]:
    """Mean cost per sample of `exit_layer` (n,) under `flops`: a `FlopsProfile` (readouts counted at every
    layer up to the exit when the policy needs them, else once), or an (L,) cost of exiting at layer l."""
    if flops is None or exit_layer.numel() == 0:
        return None
    if hasattr(flops, "exit_cost"):
        return float(flops.exit_cost(exit_layer, every_layer=policy.reads_every_layer).mean())
    return float(flops[exit_layer.cpu() - 1].mean())


def check_flops(flops, num_layers: int):
    """`flops` as given to `simulate`/`sweep`: None, a `FlopsProfile` of `num_layers` layers, or an (L,) vector of
    finite per-sample costs >= 0 (as float64); a sentence otherwise."""
    if flops is None:
        return None
    if hasattr(flops, "exit_cost"):
        if getattr(flops, "num_layers", num_layers) != num_layers:
            raise ValueError(f"the FLOPs profile has {flops.num_layers} layers, the outputs {num_layers}")
        return flops
    return cost_vector(flops, "flops (a FlopsProfile or the cost of exiting at each layer)", num_layers)


def simulate(policy: ExitPolicy, outputs, labels=None, *, flops=None, num_classes: Optional[int] = None) -> ExitResult:
    """Run `policy` over cached per-layer outputs, layer by layer, reading only the samples still running.

    outputs: logits (L, n, C) (summarised layer by layer for the running samples only), predictions (L, n)
    or `LayerSummaries` / an Extraction. labels: (n,) class indices, for the accuracy. flops: a
    `FlopsProfile` or an (L,) per-sample cost of exiting at layer l, for the expected FLOPs. num_classes: C for
    outputs that do not carry it (bare predictions: labels and predictions are then checked against [0, C); see
    `as_summaries`). -> `ExitResult` with exit_layer (n,) and preds (n,).
    """
    if not isinstance(policy, ExitPolicy):
        raise ArgumentTypeError(f"policy must be an ExitPolicy (e.g. ConfidenceExit(0.9)), got {type(policy).__name__}")
    source = _source(outputs, policy, num_classes)
    num_layers, n = source.num_layers, source.num_samples
    policy.check(num_layers)
    if labels is not None:
        labels = exit_labels(labels, n, source.num_classes).cpu()  # the exits and predictions are kept on the CPU
    flops = check_flops(flops, num_layers)
    exit_layer = torch.zeros(n, dtype=torch.long)
    preds = torch.zeros(n, dtype=torch.long)
    running = torch.arange(n)
    state = policy.start(n)
    for layer in range(1, num_layers + 1):
        if running.numel() == 0:
            break
        if not policy.decides_at(layer, num_layers) and layer < num_layers:
            continue
        stats = source.layer(layer, running)
        stop = policy.exit_now(layer, stats, running, state).cpu()
        if layer == num_layers:
            stop = torch.ones_like(stop)
        exit_layer[running[stop]] = layer
        preds[running[stop]] = stats["preds"].cpu()[stop]
        running = running[~stop]
    accuracy = float((preds == labels).double().mean()) if labels is not None and n else None
    return ExitResult(policy.name, policy.parameter, exit_layer, preds, accuracy,
                      float(exit_layer.double().mean()) if n else float("nan"), exit_cost(flops, exit_layer, policy))


# ---- sweeps and the Pareto front ------------------------------------------------------------------------
def _default_values(name: str, summaries: LayerSummaries, num_points: int) -> list:
    num_layers = summaries.num_layers
    if name == "fixed":
        return list(range(1, num_layers + 1))
    if name == "patience":
        return list(range(1, max(num_layers - 1, 1) + 1))
    values = summaries.require(name, f"the {name} exit policy")[:-1].flatten().double()
    values = values[values.isfinite()]
    if values.numel() > 1_000_000:  # torch.quantile's input limit; a strided subsample is enough
        values = values[:: values.numel() // 1_000_000 + 1]
    extra = [0.0, 1.0] if name == "confidence" else [0.0]
    if values.numel():
        quantiles = torch.quantile(values, torch.linspace(0, 1, num_points, dtype=torch.float64))
        extra += quantiles.tolist()
    return sorted(set(round(v, 12) for v in extra if (0 <= v <= 1 if name == "confidence" else v >= 0)))


def sweep(outputs, labels, policy: str = "confidence", values=None, *, flops=None, num_points: int = 41,
          num_classes: Optional[int] = None) -> pd.DataFrame:
    """Accuracy against expected depth (and FLOPs) for one policy over a range of its parameter.

    outputs: logits (L, n, C), predictions (L, n), `LayerSummaries` or an Extraction; labels: (n,).
    policy: "confidence", "entropy", "patience" or "fixed". values: the parameters to try (default:
    `num_points` quantiles of the policy's statistic over layers 1..L-1 plus the extremes; patience
    1..L-1; fixed 1..L). flops: a `FlopsProfile` or (L,) cost per exit layer, for expected_flops. num_classes:
    C for bare predictions (see `simulate`).
    -> DataFrame, one row per value: policy, parameter, accuracy, expected_depth, expected_flops,
    relative_depth (expected_depth / L), relative_flops (expected FLOPs / full forward, with a profile);
    ``attrs["full_accuracy"]`` holds the last layer's accuracy.
    """
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"unknown exit policy {policy!r}; choose one of {', '.join(POLICIES)}")
    num_points = whole_number(num_points, "num_points", low=2, what="an integer >= 2 (thresholds per policy)")
    summaries = as_summaries(outputs, num_classes)
    labels = exit_labels(labels, summaries.num_samples, summaries.num_classes).to(summaries.preds.device)
    flops = check_flops(flops, summaries.num_layers)
    if values is None:
        values = _default_values(policy, summaries, num_points)
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ArgumentTypeError(f"values must be a list of {policy} parameters to try (e.g. [0.5, 0.9]), got "
                        f"{type(values).__name__} {values!r:.60}")
    else:
        values = list(values)
        if not values:
            raise ValueError(f"values is empty: give at least one {policy} parameter to try, or None for the default")
    rows = []
    full_cost = flops.full_cost() if hasattr(flops, "full_cost") else None
    for value in values:
        result = simulate(make_policy(policy, value), summaries, labels, flops=flops)
        rows.append({"policy": policy, "parameter": result.parameter, "accuracy": result.accuracy,
                     "expected_depth": result.expected_depth, "expected_flops": result.expected_flops,
                     "relative_depth": result.expected_depth / summaries.num_layers,
                     "relative_flops": (result.expected_flops / full_cost if full_cost else None)})
    table = pd.DataFrame(rows)
    table.attrs["full_accuracy"] = float((summaries.preds[-1] == labels).double().mean())
    table.attrs["num_layers"] = summaries.num_layers
    return table


def sweep_policies(outputs, labels, policies: Sequence[str] | None = None, *, flops=None,
                   num_points: int = 41, num_classes: Optional[int] = None) -> pd.DataFrame:
    """`sweep` of several policies stacked in one DataFrame (default: every policy the outputs support;
    the entropy policy needs logits or summaries with entropy). num_classes: C for bare predictions."""
    summaries = as_summaries(outputs, num_classes)
    if policies is None:
        policies = [p for p in POLICIES if p in ("patience", "fixed") or getattr(summaries, p) is not None]
    elif isinstance(policies, str):
        policies = [policies]
    elif not isinstance(policies, (list, tuple)):
        raise ArgumentTypeError(f"policies must be a list of policy names from {', '.join(POLICIES)}, got "
                                f"{type(policies).__name__}")
    tables = [sweep(summaries, labels, p, flops=flops, num_points=num_points) for p in policies]
    if not tables:
        raise ValueError("no policy to sweep: give policies=[...] from " + ", ".join(POLICIES))
    table = pd.concat(tables, ignore_index=True)
    table.attrs.update(tables[0].attrs)
    return table


def _check_table(table) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ArgumentTypeError(f"table must be a DataFrame from sweep or sweep_policies, got {type(table).__name__}")
    if "accuracy" not in table.columns or table.empty:
        raise ValueError("table must be a non-empty sweep table with an 'accuracy' column (from sweep or sweep_policies)")
    if table["accuracy"].isna().any():
        raise ValueError("the sweep table's accuracy has missing values: sweep with labels")


def pareto_front(table: pd.DataFrame, cost: str = "expected_depth") -> pd.DataFrame:
    """The rows of a sweep that no other row beats: none has lower or equal `cost` with higher accuracy,
    or lower cost with equal accuracy. Sorted by cost; ties in both keep the first row.
    cost: "expected_depth" or "expected_flops" (a column of `table`)."""
    _check_table(table)
    if cost not in table.columns:
        raise ValueError(f"cost must be a column of the sweep table ({', '.join(map(str, table.columns))}), got {cost!r}")
    if table[cost].isna().any():
        raise ValueError(f"column {cost!r} has missing values (expected_flops needs flops=... in the sweep)")
    ordered = table.sort_values([cost, "accuracy"], ascending=[True, False], kind="stable")
    keep, best = [], -math.inf
    for index, row in ordered.iterrows():
        if row["accuracy"] > best:
            keep.append(index)
            best = row["accuracy"]
    return ordered.loc[keep]


def choose_by_accuracy_drop(table: pd.DataFrame, max_drop: float = 0.01, *, cost: str = "expected_depth",
                            reference: float | None = None) -> pd.Series:
    """The cheapest row of a sweep whose accuracy is at least `reference` - `max_drop`.

    max_drop: allowed accuracy loss as a fraction in [0, 1] (0.01 = one percentage point).
    reference: accuracy to compare with (default: the last layer's, ``table.attrs["full_accuracy"]``).
    """
    _check_table(table)
    max_drop = _check_number(max_drop, "max_drop", 0.0, 1.0, "an accuracy difference as a fraction")
    if reference is None:
        if "full_accuracy" not in table.attrs:
            raise ValueError("the table does not record the full model's accuracy; pass reference=...")
        reference = table.attrs["full_accuracy"]
    reference = real_number(reference, "reference", low=0.0, high=1.0, what="an accuracy in [0, 1]")
    ok = table[table["accuracy"] >= reference - max_drop - 1e-12]
    if ok.empty:
        raise ValueError(f"no row reaches accuracy {reference - max_drop:.4f}; add larger thresholds to the sweep")
    return ok.sort_values([cost, "accuracy"], ascending=[True, False], kind="stable").iloc[0]
