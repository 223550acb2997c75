"""Property-based tests (Hypothesis) of layersim.metrics: invariances, ranges, equal forms, streaming
and merging for any batch split, float32 against float64, and bad input of every kind.

Profiles (chosen by the environment variable LAYERSIM_HYPOTHESIS):

* ``ci`` (default): derandomised (a fixed seed, so every run tries the same examples), no example
  database, a budget of examples sized so that the whole file runs in well under a minute on 2 CPU
  cores.
* ``long``: about 20 times more examples per property, fresh random examples on every run::

      LAYERSIM_HYPOTHESIS=long .venv/bin/python -m pytest -q tests/test_metrics_properties.py

  (add ``--hypothesis-show-statistics`` to see how many examples each property tried).

The bad-input properties accept exactly two outcomes: a ValueError/TypeError, or a finite value that
equals the value of the same data brought to a well-scaled float64 form (every metric here is
invariant to the rescaling used, which is checked by the invariance properties).
"""
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from _helpers import one_thread  # noqa: E402
from layersim.metrics import (MinibatchCKA, StreamingCKA, StreamingCOS, StreamingMean, cka,  # noqa: E402
                              cos_per_sample, cos_similarity, hsic, layerwise_accuracy, saturation_layer,
                              similarity_by_gap, similarity_to_last, trajectory_straightness)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small tensors: one torch thread is faster on a shared machine; restored afterwards."""
    with one_thread():
        yield

_PROFILE = os.environ.get("LAYERSIM_HYPOTHESIS", "ci")
if _PROFILE not in ("ci", "long"):
    raise ValueError(f"LAYERSIM_HYPOTHESIS must be 'ci' or 'long'; got {_PROFILE!r}")
_LONG = _PROFILE == "long"


def budget(examples: int) -> settings:
    """Settings of one property: ``examples`` in the ci profile, 20 times more in the long one."""
    return settings(
        max_examples=examples * 20 if _LONG else examples,
        derandomize=not _LONG,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ----------------------------------------------------------------------------------------------
# Strategies: well-scaled feature stacks (residual-stream shaped), batch splits, transforms
# ----------------------------------------------------------------------------------------------
@st.composite
def stacks(draw, min_layers=1, max_layers=4, min_n=4, max_n=24, max_d=6, min_d=1):
    """(L, n, d) float64 features: a random start and a random walk of mixing steps, each layer with
    its own offset and scale. Values are float32-representable (so float32 input is the same data).
    """
    num_layers = draw(st.integers(min_layers, max_layers))
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(min_d, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    step = draw(st.sampled_from([0.1, 0.5, 2.0]))
    rng = np.random.default_rng(seed)
    layers = [rng.standard_normal((n, d))]
    for _ in range(num_layers - 1):
        mix = np.eye(d) + step * rng.standard_normal((d, d)) / math.sqrt(d)
        layers.append(layers[-1] @ mix + step * rng.standard_normal((n, d)))
    feats = np.stack(layers)
    offsets = draw(st.lists(st.sampled_from([0.0, 1.0, -3.0, 30.0]), min_size=num_layers, max_size=num_layers))
    scales = draw(st.lists(st.sampled_from([1e-2, 1.0, 4.0, 1e2]), min_size=num_layers, max_size=num_layers))
    feats = feats * np.array(scales)[:, None, None] + np.array(offsets)[:, None, None]
    return torch.from_numpy(feats.astype(np.float32).astype(np.float64))


@st.composite
def splits(draw, n):
    """Batch sizes (each >= 1) summing to n."""
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(5, n - 1)))) if n > 1 else []
    bounds = [0] + cuts + [n]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def parts(n, sizes):
    start = 0
    for size in sizes:
        yield slice(start, start + size)
        start += size


def orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return torch.from_numpy(q * np.sign(np.diag(r)))


def np_linear_cka(x, y, debiased=False):
    """Linear CKA from scratch with n x n Gram matrices (Kornblith et al.; Song et al. for debiased)."""
    def hsic_np(k, l):
        n = k.shape[0]
        if not debiased:
            h = np.eye(n) - 1.0 / n
            return np.trace(k @ h @ l @ h) / (n - 1) ** 2
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return (np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))

    # Both estimators are invariant to shifting the features; centring first keeps the Gram matrices
    # free of a large common part that the debiased formula would otherwise cancel in rounding.
    x, y = x - x.mean(0), y - y.mean(0)
    k, l = x @ x.T, y @ y.T
    return hsic_np(k, l) / math.sqrt(hsic_np(k, k) * hsic_np(l, l))


def not_constant(feats):
    return all(bool((layer != layer[:1]).any()) for layer in feats)


def no_zero_rows(feats, centered):
    x = feats - feats.mean(1, keepdim=True) if centered else feats
    return bool((torch.linalg.vector_norm(x, dim=-1) > 0).all())


# CKA values are compared at 1e-8: the data are well scaled, so this leaves orders of magnitude for
# the rounding of float64 arithmetic and is far below any difference a real error would make.
TOL = 1e-8


# ----------------------------------------------------------------------------------------------
# Invariances
# ----------------------------------------------------------------------------------------------
@budget(60)
@given(feats=stacks(), seed=st.integers(0, 2**16), scale=st.sampled_from([1e-3, 0.37, 3.0, 1e4]),
       debiased=st.booleans(), kernel=st.sampled_from(["linear", "rbf"]))
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(feats, seed, scale, debiased, kernel):
    assume(not_constant(feats))
    d = feats.shape[2]
    moved = torch.stack([scale * (l + 1) * feats[l] @ orthogonal(d, seed + l) for l in range(len(feats))])
    base = cka(feats, kernel=kernel, debiased=debiased)
    assert (cka(moved, kernel=kernel, debiased=debiased) - base).abs().max() < TOL
    assert (cka(feats, moved, kernel=kernel, debiased=debiased) - cka(feats, feats, kernel=kernel, debiased=debiased)).abs().max() < TOL


@budget(60)
@given(feats=stacks(), seed=st.integers(0, 2**16), centered=st.booleans())
def test_cos_invariant_to_positive_per_sample_scaling(feats, seed, centered):
    assume(no_zero_rows(feats, centered))
    scales = torch.from_numpy(np.random.default_rng(seed).uniform(0.01, 100.0, feats.shape[:2] + (1,)))
    if centered:
        # Centred COS: rescale the centred vectors, then add the layer's mean back (the mean of the
        # rescaled stack then differs, so compare per sample with the original means).
        mean = feats.mean(1, keepdim=True)
        rescaled = (feats - mean) * scales + mean
        got = cos_per_sample(rescaled, mean=mean[:, 0])
        assert (got - cos_per_sample(feats)).abs().max() < 1e-12
    else:
        assert (cos_similarity(feats * scales, centered=False) - cos_similarity(feats, centered=False)).abs().max() < 1e-12


# ----------------------------------------------------------------------------------------------
# Symmetry, self-similarity, ranges, an independent implementation
# ----------------------------------------------------------------------------------------------
@budget(60)
@given(feats=stacks(min_layers=2), debiased=st.booleans(), kernel=st.sampled_from(["linear", "rbf"]))
def test_cka_symmetry_self_similarity_and_range(feats, debiased, kernel):
    assume(not_constant(feats))
    other = feats.flip(0).clone()
    forward = cka(feats, other, kernel=kernel, debiased=debiased)
    backward = cka(other, feats, kernel=kernel, debiased=debiased)
    assert (forward - backward.T).abs().max() < TOL  # computed separately, not mirrored
    # The layers of `other` are those of `feats` reversed: its anti-diagonal compares a layer with
    # itself through the cross-stack path, which sets nothing to 1.
    assert (forward.flip(1).diagonal() - 1).abs().max() < TOL
    sim = cka(feats, kernel=kernel, debiased=debiased)
    assert torch.equal(sim, sim.T)
    assert (sim - forward.flip(1)).abs().max() < TOL
    low = -1.0 if debiased else 0.0
    for matrix in (sim, forward):
        assert bool(torch.isfinite(matrix).all())
        assert low <= matrix.min().item() and matrix.max().item() <= 1.0


@budget(60)
@given(feats=stacks(min_layers=2, max_layers=3, max_n=16), debiased=st.booleans())
def test_linear_cka_equals_a_from_scratch_numpy_implementation(feats, debiased):
    assume(not_constant(feats))
    sim = cka(feats, debiased=debiased)
    for l in range(len(feats)):
        for m in range(len(feats)):
            if l != m:
                expected = np_linear_cka(feats[l].numpy(), feats[m].numpy(), debiased)
                assert sim[l, m].item() == pytest.approx(expected, abs=TOL)


@budget(60)
@given(feats=stacks(min_layers=2), centered=st.booleans())
def test_cos_symmetry_self_similarity_and_range(feats, centered):
    assume(not_constant(feats) and no_zero_rows(feats, centered))
    sim = cos_similarity(feats, centered=centered)
    assert torch.equal(sim.diagonal(), torch.ones(len(feats), dtype=torch.float64))
    assert -1.0 <= sim.min().item() and sim.max().item() <= 1.0
    crossed = cos_similarity(feats, feats.flip(0).clone(), centered=centered)
    assert (crossed.flip(1) - sim).abs().max() < 1e-12
    assert (crossed - cos_similarity(feats.flip(0), feats, centered=centered).T).abs().max() < 1e-12
    per_sample = cos_per_sample(feats, centered=centered)
    assert -1.0 <= per_sample.min().item() and per_sample.max().item() <= 1.0
    assert (per_sample.mean(-1) - sim).abs().max() < 1e-12


# ----------------------------------------------------------------------------------------------
# Gram form == feature form; streaming and merging == in memory; float32 ~ float64
# ----------------------------------------------------------------------------------------------
@budget(60)
@given(feats=stacks(), other=st.booleans(), debiased=st.booleans())
def test_gram_form_equals_feature_form(feats, other, debiased):
    assume(not_constant(feats))
    second = feats.flip(0)[:, :, :1].clone() * 3.0 + 1.0 if other else None
    assume(second is None or not_constant(second))
    gram = cka(feats, second, debiased=debiased, form="gram")
    feature = cka(feats, second, debiased=debiased, form="feature")
    assert (gram - feature).abs().max() < TOL
    hsic_gram = hsic(feats, second, debiased=debiased, form="gram")
    hsic_feature = hsic(feats, second, debiased=debiased, form="feature")
    assert (hsic_gram - hsic_feature).abs().max() <= TOL * hsic_gram.abs().max()


@budget(60)
@given(data=st.data(), feats=stacks(), debiased=st.booleans(), with_other=st.booleans())
def test_streaming_cka_equals_in_memory_for_any_split(data, feats, debiased, with_other):
    assume(not_constant(feats))
    other = [feats[0, :, :1] ** 2 + feats[-1, :, :1], feats[-1]] if with_other else None
    assume(other is None or not_constant(other))
    n = feats.shape[1]
    first, second = data.draw(splits(n)), data.draw(splits(n))
    one_pass, a = StreamingCKA(debiased=debiased), StreamingCKA(debiased=debiased)
    for part in parts(n, first):
        one_pass.update(feats[:, part], None if other is None else [o[part] for o in other])
    # Two halves accumulated separately (each batched its own way), then merged.
    cut = data.draw(st.integers(0, n))
    b = StreamingCKA(debiased=debiased)
    for acc, lo, hi in ((a, 0, cut), (b, cut, n)):
        for part in parts(hi - lo, splits_of(second, hi - lo)):
            rows = slice(lo + part.start, lo + part.stop)
            acc.update(feats[:, rows], None if other is None else [o[rows] for o in other])
    merged = a.merge(b)
    expected = cka(feats, other, debiased=debiased)
    assert (one_pass.compute() - expected).abs().max() < TOL
    assert (merged.compute() - expected).abs().max() < TOL
    assert merged.n == one_pass.n == n


def splits_of(sizes, n):
    """The first batch sizes of ``sizes`` cut to sum to n (at least one batch when n > 0)."""
    out, total = [], 0
    for size in sizes:
        if total >= n:
            break
        out.append(min(size, n - total))
        total += out[-1]
    if total < n:
        out.append(n - total)
    return out


@budget(60)
@given(data=st.data(), feats=stacks(), centered=st.booleans())
def test_streaming_cos_and_mean_equal_in_memory_for_any_split(data, feats, centered):
    assume(not_constant(feats) and no_zero_rows(feats, centered))
    n = feats.shape[1]
    sizes = data.draw(splits(n))
    cut = data.draw(st.integers(0, n))
    mean_a, mean_b = StreamingMean(), StreamingMean()
    for acc, lo, hi in ((mean_a, 0, cut), (mean_b, cut, n)):
        for part in parts(hi - lo, splits_of(sizes, hi - lo)):
            acc.update(feats[:, lo + part.start : lo + part.stop])
    mean = mean_a.merge(mean_b).compute()
    assert (mean - feats.mean(1)).abs().max() < 1e-12
    one_pass = StreamingCOS(centered=centered, mean=mean if centered else None)
    for part in parts(n, sizes):
        one_pass.update(feats[:, part])
    a = StreamingCOS(centered=centered, mean=mean if centered else None)
    b = StreamingCOS(centered=centered, mean=mean if centered else None)
    a.update(feats[:, :cut]) if cut else None
    b.update(feats[:, cut:]) if cut < n else None
    expected = cos_similarity(feats, centered=centered)
    assert (one_pass.compute() - expected).abs().max() < 1e-12
    assert (a.merge(b).compute() - expected).abs().max() < 1e-12


@budget(60)
@given(feats=stacks(min_n=10), debiased=st.booleans(), kernel=st.sampled_from(["linear", "rbf"]))
def test_float32_within_tolerance_of_float64(feats, debiased, kernel):
    # Well scaled: every layer's values within a factor 1e4 of its spread. Float32 products carry
    # relative errors of about 1e-7 times a small multiple of the widths and sample counts.
    assume(not_constant(feats))
    f32 = feats.float()
    assert (cka(f32, kernel=kernel, debiased=debiased) - cka(feats, kernel=kernel, debiased=debiased)).abs().max() < 1e-4
    assert (cos_similarity(f32) - cos_similarity(feats)).abs().max() < 1e-9  # COS runs in float64


# ----------------------------------------------------------------------------------------------
# Bad input: a ValueError/TypeError, or a finite value equal to that of well-scaled data
# ----------------------------------------------------------------------------------------------
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.uint8,
          torch.bool, torch.complex64]


@st.composite
def hostile(draw):
    """A feature stack broken in one or more ways: shape, dtype, container, scale, NaN/Inf, constants."""
    base = draw(stacks(min_layers=1, max_layers=3, min_n=1, max_n=8, max_d=4))
    faults = draw(st.sets(st.sampled_from(
        ["ndim", "empty", "dtype", "scale", "nonfinite", "constant", "duplicate", "ragged_n", "ragged_d",
         "container", "tiny_n"]), min_size=1, max_size=3))
    x = base
    if "scale" in faults:
        power = draw(st.integers(-330, 330))  # applied in two factors, each a finite float64
        x = x * 10.0 ** (power // 2) * 10.0 ** (power - power // 2)
    if "constant" in faults:
        x[draw(st.integers(0, len(x) - 1))] = draw(st.sampled_from([0.0, 0.7, -1e30]))
    if "duplicate" in faults:
        x[:, :] = x[:, :1]
    if "nonfinite" in faults:
        value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        where = draw(st.sampled_from(["one", "row", "layer"]))
        l = draw(st.integers(0, len(x) - 1))
        i = draw(st.integers(0, x.shape[1] - 1))
        if where == "one":
            x[l, i, draw(st.integers(0, x.shape[2] - 1))] = value
        elif where == "row":
            x[l, i] = value
        else:
            x[l] = value
    if "tiny_n" in faults:
        x = x[:, : draw(st.integers(0, 3))]
    if "dtype" in faults:
        dtype = draw(st.sampled_from(DTYPES))
        x = x.to(dtype) if not dtype.is_complex else x.to(dtype) * 1j
    if "empty" in faults:
        axis = draw(st.integers(0, 2))
        x = x.narrow(axis, 0, 0)
    if "ndim" in faults:
        x = draw(st.sampled_from([x[0] if len(x) else x.sum(0), x[None], x.reshape(-1), x.sum()]))
    if "ragged_n" in faults and x.ndim == 3 and len(x) and x.shape[1] > 1:
        x = list(x)
        x[-1] = x[-1][:-1]
    elif "ragged_d" in faults and x.ndim == 3 and len(x) and x.shape[2] > 0:
        x = list(x)
        x[0] = torch.cat([x[0], x[0][:, :1]], dim=1)
    if "container" in faults:
        kind = draw(st.sampled_from(["numpy", "list", "nested", "strings", "none"]))
        if kind == "numpy" and isinstance(x, torch.Tensor) and x.dtype != torch.bfloat16:
            x = x.numpy()
        elif kind == "list":
            x = [np.asarray(layer) if isinstance(layer, torch.Tensor) and layer.dtype != torch.bfloat16 else layer
                 for layer in (x if isinstance(x, list) else list(x) if x.ndim else [x])]
        elif kind == "nested" and isinstance(x, torch.Tensor) and x.dtype != torch.bfloat16:
            x = x.tolist()
        elif kind == "strings":
            x = [["a", "b"], ["c", "d"]]
        elif kind == "none":
            x = None
    note(f"faults={sorted(faults)}")
    return x


def as_float64_layers(x):
    """The layers of a valid stack (tensor, array, or sequence of either) as float64 tensors."""
    def convert(layer):
        return layer.to(torch.float64) if isinstance(layer, torch.Tensor) else torch.as_tensor(np.asarray(layer), dtype=torch.float64)

    if isinstance(x, (list, tuple)):
        return [convert(layer) for layer in x]
    return list(convert(x))


def well_scaled(x):
    """(L, n, d) float64 copy of a valid stack, each layer divided by its largest |value|."""
    layers = as_float64_layers(x)
    return [layer / layer.abs().max() if bool(layer.abs().max() > 0) else layer for layer in layers]


def same_scale(x):
    """(L, n, d) float64 copy of a valid stack, all layers divided by one power of two."""
    layers = as_float64_layers(x)
    top = max(float(layer.abs().max()) for layer in layers)
    power = -math.frexp(top)[1] if top > 0 else 0
    return [layer * 2.0 ** (power // 2) * 2.0 ** (power - power // 2) for layer in layers]


ACCEPTED = (ValueError, TypeError)
COUNTS = {"hostile": 0, "rejected": 0}


def outcome(call):
    """Run ``call``; return its value, or None after a ValueError/TypeError (any other exception fails)."""
    COUNTS["hostile"] += 1
    try:
        value = call()
    except ACCEPTED as err:
        COUNTS["rejected"] += 1
        assert str(err), "an error must say what was wrong"
        return None
    assert bool(torch.isfinite(value).all()), f"non-finite result {value}"
    return value


def close(value, expected, tol):
    assert value.shape == expected.shape
    assert (value - expected).abs().max().item() < tol, (value, expected)


@budget(300)
@given(x=hostile(), centered=st.booleans(), debiased=st.booleans(), kernel=st.sampled_from(["linear", "rbf"]))
def test_hostile_stacks_give_a_correct_value_or_a_clear_error(x, centered, debiased, kernel):
    value = outcome(lambda: cos_similarity(x, centered=centered))
    if value is not None:
        close(value, cos_similarity(well_scaled(x), centered=centered), 1e-6)
        assert -1.0 <= value.min().item() and value.max().item() <= 1.0
    value = outcome(lambda: cos_per_sample(x, centered=centered))
    if value is not None:
        close(value, cos_per_sample(well_scaled(x), centered=centered), 1e-6)
    value = outcome(lambda: cka(x, kernel=kernel, debiased=debiased))
    if value is not None:
        close(value, cka(well_scaled(x), kernel=kernel, debiased=debiased), 1e-5)
        assert (-1.0 if debiased else 0.0) <= value.min().item() and value.max().item() <= 1.0
    value = outcome(lambda: cka(x, x, kernel=kernel, debiased=debiased))
    if value is not None:
        close(value, cka(well_scaled(x), well_scaled(x), kernel=kernel, debiased=debiased), 1e-5)
    value = outcome(lambda: hsic(x, kernel=kernel, debiased=debiased))
    if value is not None and kernel == "rbf":
        close(value, hsic(well_scaled(x), kernel=kernel, debiased=debiased), 1e-6)
    value = outcome(lambda: trajectory_straightness(x))
    if value is not None:
        close(value, trajectory_straightness(same_scale(x)), 1e-9)
        assert 0.0 <= value.min().item() and value.max().item() <= 1.0


@budget(300)
@given(x=hostile(), y=hostile(), centered=st.booleans(), debiased=st.booleans())
def test_hostile_batches_for_accumulators(x, y, centered, debiased):
    def streaming_cka():
        acc = StreamingCKA(debiased=debiased).update(x)
        try:
            acc.update(y)
        except ACCEPTED:
            pass
        return acc.compute()

    def streaming_cos():
        mean = outcome(lambda: StreamingMean().update(x).compute())
        if mean is None and centered:
            raise ValueError("no mean")
        acc = StreamingCOS(centered=centered, mean=mean if centered else None).update(x)
        try:
            acc.update(y)
        except ACCEPTED:
            pass
        return acc.compute()

    def minibatch():
        return MinibatchCKA(debiased=debiased).update(x).update(y).compute()

    for call in (streaming_cka, streaming_cos, minibatch):
        value = outcome(call)
        if value is not None and call is not streaming_cos:
            low = -1.0 if (debiased or call is minibatch) else 0.0
            assert low - 1e-12 <= value.min().item() and value.max().item() <= 1.0


@budget(200)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
    dtype=st.sampled_from(DTYPES),
    labels_kind=st.sampled_from(["ok", "float", "negative", "too_big", "short", "bool", "2d", "nan"]),
    seed=st.integers(0, 2**16),
)
def test_hostile_readouts(shape, dtype, labels_kind, seed):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=gen) * 3
    if not dtype.is_floating_point and not dtype.is_complex and seed % 2:
        values = values.abs()  # half of the integer draws are valid predictions (>= 0)
    values = values.to(dtype) if not dtype.is_complex else values.to(dtype) * 1j
    n = shape[1] if len(shape) >= 2 else 1
    classes = shape[2] if len(shape) == 3 else 4
    labels = torch.randint(0, max(classes, 1), (n,), generator=gen)
    if labels_kind == "float":
        labels = labels.double()
    elif labels_kind == "negative":
        labels = labels - 5
    elif labels_kind == "too_big":
        labels = labels + classes
    elif labels_kind == "short":
        labels = labels[:-1]
    elif labels_kind == "bool":
        labels = labels > 0
    elif labels_kind == "2d":
        labels = labels[None]
    elif labels_kind == "nan":
        labels = labels.double() * float("nan")
    value = outcome(lambda: saturation_layer(values))
    if value is not None:
        assert value.min().item() >= 1 and value.max().item() <= shape[0]
    value = outcome(lambda: layerwise_accuracy(values, labels))
    if value is not None:
        # Labels too large are only detectable when the logits say how many classes there are.
        assert labels_kind == "ok" or (labels_kind == "too_big" and len(shape) == 2)
        preds = values.argmax(-1) if len(shape) == 3 else values
        assert torch.equal(value, (preds.long() == labels).double().mean(1))
    for helper in (similarity_to_last, similarity_by_gap):
        value = outcome(lambda: helper(values))
        if value is not None:
            assert value.shape[0] == shape[0]


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    """With LAYERSIM_HYPOTHESIS_COUNTS=1, print how many hostile calls the properties made."""
    yield
    if os.environ.get("LAYERSIM_HYPOTHESIS_COUNTS"):
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nhostile calls: {COUNTS['hostile']}, rejected with ValueError/TypeError: {COUNTS['rejected']}")
