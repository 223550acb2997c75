"""Tests of layersim.metrics: known values, an independent numpy implementation, invariances,
form / streaming / precision agreement, the readout helpers and bad input. Small n throughout."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from layersim.metrics import cka_family, cos as cos_module  # noqa: E402  (internals without a public name)
from layersim.metrics._stack import as_stack  # noqa: E402
from _helpers import one_thread  # noqa: E402
from layersim.metrics import (  # noqa: E402
    MinibatchCKA,
    StreamingCKA,
    StreamingCOS,
    StreamingMean,
    cka,
    cos_per_sample,
    cos_similarity,
    hsic,
    layerwise_accuracy,
    saturation_layer,
    similarity_by_gap,
    similarity_to_last,
    trajectory_straightness,
)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small tensors: one torch thread is faster on a shared machine; restored afterwards."""
    with one_thread():
        yield


# ----------------------------------------------------------------------------------------------
# Fixtures and an independent reference implementation (plain numpy, n x n matrices, no tricks)
# ----------------------------------------------------------------------------------------------
def layered_features(num_layers=5, n=60, d=8, seed=0, offset=0.0):
    """(L, n, d) float64 features whose layers drift away from layer 1, like a residual stream."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, dtype=torch.float64, generator=gen)
    layers = [base]
    for _ in range(num_layers - 1):
        mix = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, dtype=torch.float64, generator=gen)
        layers.append(layers[-1] @ mix + 0.4 * torch.randn(n, d, dtype=torch.float64, generator=gen))
    return torch.stack(layers) + offset


def np_linear_gram(x):
    return x @ x.T


def np_rbf_gram(x, threshold):
    sq = squareform(pdist(x, "sqeuclidean"))
    return np.exp(-sq / (2 * threshold**2 * np.median(sq)))


def np_hsic(k, l, debiased):
    n = k.shape[0]
    if not debiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return np.trace(k @ h @ l @ h) / (n - 1) ** 2
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def np_cka(x, y, kernel="linear", debiased=False, threshold=0.5):
    gram = np_linear_gram if kernel == "linear" else (lambda z: np_rbf_gram(z, threshold))
    k, l = gram(x), gram(y)
    return np_hsic(k, l, debiased) / math.sqrt(np_hsic(k, k, debiased) * np_hsic(l, l, debiased))


# ----------------------------------------------------------------------------------------------
# Known values (Kornblith et al. 2019, the authors' colab)
# ----------------------------------------------------------------------------------------------
def kornblith_data():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = x + np.random.randn(100, 10)
    return x, y


@pytest.mark.parametrize(
    "kernel, debiased, expected",
    [("linear", False, 0.55761), ("rbf", False, 0.65483), ("linear", True, 0.51346)],
)
def test_kornblith_colab_values(kernel, debiased, expected):
    x, y = kornblith_data()
    value = cka([x], [y], kernel=kernel, debiased=debiased, threshold=0.5)
    assert value.shape == (1, 1)
    assert value.dtype == torch.float64
    assert abs(value.item() - expected) < 1e-5


def test_kornblith_values_match_numpy_reference():
    x, y = kornblith_data()
    for kernel, debiased in [("linear", False), ("rbf", False), ("linear", True), ("rbf", True)]:
        ours = cka([x], [y], kernel=kernel, debiased=debiased).item()
        assert ours == pytest.approx(np_cka(x, y, kernel, debiased), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Agreement with the independent numpy implementation, every layer pair
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_all_pairs_match_numpy_reference(kernel, debiased):
    feats = layered_features(num_layers=4, n=40, d=6, seed=1)
    other = [torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + feats[0, :, :3],
             feats[2, :, :5] * 2.0]
    ours = cka(feats, other, kernel=kernel, debiased=debiased, threshold=0.8)
    assert ours.shape == (4, 2)
    for l in range(4):
        for m in range(2):
            expected = np_cka(feats[l].numpy(), other[m].numpy(), kernel, debiased, threshold=0.8)
            assert ours[l, m].item() == pytest.approx(expected, abs=1e-10)


def test_hsic_matches_numpy_reference():
    feats = layered_features(num_layers=3, n=30, d=5, seed=3)
    for debiased in (False, True):
        ours = hsic(feats, debiased=debiased)
        for l in range(3):
            for m in range(3):
                k, g = np_linear_gram(feats[l].numpy()), np_linear_gram(feats[m].numpy())
                assert ours[l, m].item() == pytest.approx(np_hsic(k, g, debiased), rel=1e-9)


def test_median_distance_matches_numpy_median_of_full_matrix():
    for n in (9, 10):  # odd and even number of matrix entries
        x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        sq = squareform(pdist(x.numpy(), "sqeuclidean"))
        assert cka_family.median_sq_distance(x).item() == pytest.approx(np.median(sq), rel=1e-6)


def test_cos_matches_definition():
    feats = layered_features(num_layers=3, n=25, d=4, seed=4)
    for centered in (True, False):
        ours = cos_similarity(feats, centered=centered)
        f = feats.numpy()
        if centered:
            f = f - f.mean(axis=1, keepdims=True)
        u = f / np.linalg.norm(f, axis=2, keepdims=True)
        for l in range(3):
            for m in range(3):
                assert ours[l, m].item() == pytest.approx(np.mean(np.sum(u[l] * u[m], axis=1)), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Invariances and basic properties
# ----------------------------------------------------------------------------------------------
def random_orthogonal(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q


@pytest.mark.parametrize("kernel, debiased", [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)])
def test_cka_invariant_to_orthogonal_maps_scaling_and_shifts(kernel, debiased):
    feats = layered_features(num_layers=3, n=50, d=6, seed=5)
    base = cka(feats, kernel=kernel, debiased=debiased)
    moved = torch.stack([3.7 * feats[l] @ random_orthogonal(6, 10 + l) + 5.0 * (l + 1) for l in range(3)])
    assert torch.allclose(cka(moved, kernel=kernel, debiased=debiased), base, atol=1e-10)


def test_cka_not_invariant_to_general_linear_maps():
    feats = layered_features(num_layers=3, n=50, d=6, seed=6)
    stretch = torch.diag(torch.tensor([10.0, 1.0, 1.0, 0.1, 0.1, 0.1], dtype=torch.float64))
    moved = torch.stack([feats[0] @ stretch, feats[1], feats[2]])
    assert (cka(moved)[0, 1:] - cka(feats)[0, 1:]).abs().max() > 1e-2


@pytest.mark.parametrize("kernel, debiased", [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)])
def test_cka_off_diagonal_symmetric_and_self_similarity_through_the_cross_path(kernel, debiased):
    # cka(feats) sets its diagonal to 1 and mirrors its upper triangle, so neither proves anything.
    # Compare stacks in both orders instead (each computed on its own), against an independent
    # implementation, and read a layer's similarity with itself from the cross-stack path.
    feats = layered_features(num_layers=4, n=40, d=5, seed=7)
    other = torch.stack([feats[3] ** 2, feats[1] @ random_orthogonal(5, 1) * 3.0 + 2.0, feats[0]])
    forward = cka(feats, other, kernel=kernel, debiased=debiased)
    backward = cka(other, feats, kernel=kernel, debiased=debiased)
    assert torch.allclose(forward, backward.T, atol=1e-12)
    for l in range(4):
        for m in range(3):
            expected = np_cka(feats[l].numpy(), other[m].numpy(), kernel, debiased)
            assert forward[l, m].item() == pytest.approx(expected, abs=1e-10)
    assert forward[1, 1].item() == pytest.approx(1.0, abs=1e-12)  # layer 2 rotated, scaled, shifted
    assert forward[0, 2].item() == pytest.approx(1.0, abs=1e-12)  # layer 1 itself
    assert forward[2, 2].item() < 0.999  # a different layer is not 1
    sim = cka(feats, kernel=kernel, debiased=debiased)
    for l in range(4):
        for m in range(4):
            if l != m:
                assert sim[l, m].item() == pytest.approx(np_cka(feats[l].numpy(), feats[m].numpy(), kernel, debiased), abs=1e-10)
    if not debiased:
        assert bool((forward >= 0).all()) and bool((forward <= 1).all())


def test_cka_of_a_layer_with_itself_across_stacks_is_one():
    feats = layered_features(num_layers=3, n=30, d=4, seed=8)
    assert cka(feats, feats[2:3])[2, 0].item() == pytest.approx(1.0, abs=1e-12)


def test_cos_invariances():
    feats = layered_features(num_layers=3, n=40, d=5, seed=9)
    scales = torch.rand(3, 40, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.1
    # Uncentred COS ignores any positive rescaling of any sample at any layer.
    assert torch.allclose(cos_similarity(feats * scales, centered=False), cos_similarity(feats, centered=False),
                          atol=1e-12)
    # Centred COS ignores a constant shift of a layer and a positive rescaling of a whole layer.
    shifted = feats * torch.tensor([2.0, 0.5, 7.0], dtype=torch.float64)[:, None, None] + 3.0
    assert torch.allclose(cos_similarity(shifted), cos_similarity(feats), atol=1e-12)
    sim = cos_similarity(feats)
    assert torch.allclose(sim.diagonal(), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(sim, sim.T, atol=1e-12)
    # ...but not a shift for the uncentred variant.
    assert (cos_similarity(feats + 3.0, centered=False) - cos_similarity(feats, centered=False)).abs().max() > 1e-2


def test_cos_per_sample_agrees_with_matrix_and_reference_layer():
    feats = layered_features(num_layers=4, n=30, d=5, seed=10)
    per_sample = cos_per_sample(feats)
    assert per_sample.shape == (4, 4, 30)
    assert torch.allclose(per_sample.mean(-1), cos_similarity(feats), atol=1e-12)
    to_last = cos_per_sample(feats, feats[-1:], mean=feats.mean(1), other_mean=feats[-1:].mean(1))
    assert to_last.shape == (4, 1, 30)
    assert torch.allclose(to_last[:, 0], per_sample[:, -1], atol=1e-12)
    assert bool((per_sample.abs() <= 1 + 1e-12).all())


# ----------------------------------------------------------------------------------------------
# Gram form == feature form, chunking, precision, streaming
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("debiased", [False, True])
def test_gram_form_equals_feature_form(debiased):
    feats = layered_features(num_layers=4, n=35, d=6, seed=11, offset=2.0)
    other = [feats[1, :, :2], torch.cat([feats[3], feats[0]], dim=1)]  # widths 2 and 12
    for second in (None, other):
        gram = cka(feats, second, debiased=debiased, form="gram")
        feature = cka(feats, second, debiased=debiased, form="feature")
        assert torch.allclose(gram, feature, atol=1e-10)
        assert torch.allclose(hsic(feats, second, debiased=debiased, form="gram"),
                              hsic(feats, second, debiased=debiased, form="feature"), rtol=1e-9)


def test_form_choice_follows_the_shapes():
    wide = as_stack(torch.randn(3, 20, 200))
    tall = as_stack(torch.randn(3, 2000, 10))
    assert cka_family.choose_form(wide, None) == "gram"
    assert cka_family.choose_form(tall, None) == "feature"


def test_chunked_paths_equal_single_chunk(monkeypatch):
    feats = layered_features(num_layers=3, n=45, d=4, seed=12)
    expected_rbf = cka(feats, kernel="rbf", debiased=True)
    expected_cos = cos_similarity(feats)
    monkeypatch.setattr(cka_family, "_GRAM_CHUNK_BYTES", 8 * 45 * 3 * 7)  # 7 rows per chunk
    monkeypatch.setattr(cos_module, "_COS_CHUNK_BYTES", 8 * 4 * 6 * 5)  # 5 samples per chunk
    assert torch.allclose(cka(feats, kernel="rbf", debiased=True), expected_rbf, atol=1e-12)
    assert torch.allclose(cos_similarity(feats), expected_cos, atol=1e-12)


def test_rbf_median_subsample_is_deterministic_and_close(monkeypatch):
    x = torch.randn(1500, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    exact = cka_family.median_sq_distance(x)
    monkeypatch.setattr(cka_family, "_MEDIAN_MAX_SAMPLES", 500)
    first, second = cka_family.median_sq_distance(x), cka_family.median_sq_distance(x)
    assert first == second
    assert first.item() == pytest.approx(exact.item(), rel=0.02)


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_input_within_1e4_of_float64(debiased):
    feats = layered_features(num_layers=5, n=300, d=16, seed=14, offset=1.5)
    for form in ("feature", "gram"):
        f64 = cka(feats, debiased=debiased, form=form)
        f32 = cka(feats.float(), debiased=debiased, form=form)
        assert (f32 - f64).abs().max() < 1e-4
    assert (cos_similarity(feats.float()) - cos_similarity(feats)).abs().max() < 1e-4
    assert (cka(feats.float(), kernel="rbf") - cka(feats, kernel="rbf")).abs().max() < 1e-4


def batches(n, sizes):
    start = 0
    for size in sizes:
        yield slice(start, min(n, start + size))
        start += size


@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_cka_equals_in_memory(debiased):
    feats = layered_features(num_layers=4, n=97, d=6, seed=15, offset=40.0)
    other = [feats[2, :, :3] ** 2, feats[0] @ random_orthogonal(6, 3) + 0.3 * feats[3]]
    sizes = [1, 30, 7, 40, 19]  # uneven, including a batch of one
    streaming = StreamingCKA(debiased=debiased)
    crossed = StreamingCKA(debiased=debiased)
    for part in batches(97, sizes):
        streaming.update(feats[:, part])
        crossed.update(feats[:, part], [o[part] for o in other])
    ragged = StreamingCKA(debiased=debiased)  # one stack of mixed widths, compared with itself
    for part in batches(97, sizes):
        ragged.update([o[part] for o in other] + [feats[1, part]])
    assert streaming.n == crossed.n == ragged.n == 97
    assert (streaming.compute() - cka(feats, debiased=debiased)).abs().max() < 1e-6
    assert (crossed.compute() - cka(feats, other, debiased=debiased)).abs().max() < 1e-6
    assert (ragged.compute() - cka(other + [feats[1]], debiased=debiased)).abs().max() < 1e-6
    expected_hsic = hsic(feats, other, debiased=debiased)
    assert ((crossed.hsic() - expected_hsic).abs() / expected_hsic.abs().max()).max() < 1e-6


def test_streaming_cka_accepts_float32_and_numpy_batches():
    feats = layered_features(num_layers=3, n=64, d=5, seed=16)
    streaming = StreamingCKA()
    for part in batches(64, [32, 32]):
        streaming.update(feats[:, part].float().numpy())
    assert (streaming.compute() - cka(feats)).abs().max() < 1e-5


def test_streaming_cos_equals_in_memory():
    feats = layered_features(num_layers=3, n=50, d=4, seed=17, offset=1.0)
    mean = StreamingMean()
    for part in batches(50, [20, 20, 10]):
        mean.update(feats[:, part])
    assert torch.allclose(mean.compute(), feats.mean(1), atol=1e-12)
    centred = StreamingCOS(centered=True, mean=mean.compute())
    plain = StreamingCOS(centered=False)
    for part in batches(50, [20, 20, 10]):
        centred.update(feats[:, part])
        plain.update(feats[:, part])
    assert torch.allclose(centred.compute(), cos_similarity(feats), atol=1e-12)
    assert torch.allclose(plain.compute(), cos_similarity(feats, centered=False), atol=1e-12)


def test_minibatch_cka_is_the_average_of_batch_hsic():
    feats = layered_features(num_layers=3, n=60, d=5, seed=18)
    one_batch = MinibatchCKA().update(feats)
    assert torch.allclose(one_batch.compute(), cka(feats, debiased=True), atol=1e-12)
    two = MinibatchCKA()
    halves = [feats[:, :30], feats[:, 30:]]
    for half in halves:
        two.update(half)
    mean_hsic = sum(hsic(h, debiased=True) for h in halves) / 2
    expected = mean_hsic / torch.sqrt(mean_hsic.diagonal()[:, None] * mean_hsic.diagonal()[None, :])
    assert torch.allclose(two.compute(), expected, atol=1e-12)
    assert not torch.allclose(two.compute(), cka(feats, debiased=True), atol=1e-6)


def test_same_input_same_numbers():
    feats = layered_features(num_layers=3, n=40, d=5, seed=19)
    for kwargs in ({}, {"kernel": "rbf"}, {"debiased": True}):
        assert torch.equal(cka(feats, **kwargs), cka(feats.clone(), **kwargs))


def test_input_types_and_dtypes():
    feats = layered_features(num_layers=3, n=30, d=4, seed=20)
    expected = cka(feats)
    assert torch.allclose(cka(feats.numpy()), expected, atol=1e-12)
    assert torch.allclose(cka(list(feats.numpy())), expected, atol=1e-12)
    assert torch.allclose(cka(tuple(feats.unbind(0))), expected, atol=1e-12)
    assert (cka(feats.half()) - expected).abs().max() < 1e-2
    assert cka(torch.randint(0, 5, (2, 30, 4))).dtype == torch.float64


# ----------------------------------------------------------------------------------------------
# Numerics: negative debiased values, no NaN on hard but valid input
# ----------------------------------------------------------------------------------------------
def test_debiased_cka_can_be_negative_but_biased_cannot():
    gen = torch.Generator().manual_seed(21)
    independent = torch.randn(8, 12, 3, dtype=torch.float64, generator=gen)
    debiased = cka(independent, debiased=True)
    biased = cka(independent)
    assert bool((debiased < 0).any())
    assert bool((biased >= 0).all())
    assert bool(torch.isfinite(debiased).all())


def test_no_nan_for_hard_valid_input():
    gen = torch.Generator().manual_seed(22)
    feats = torch.randn(3, 20, 4, dtype=torch.float64, generator=gen)
    feats[1, 0] = 0.0  # one all-zero sample: its uncentred cosine is defined as 0
    uncentred = cos_similarity(feats, centered=False)
    assert bool(torch.isfinite(uncentred).all())
    assert cos_per_sample(feats, centered=False)[0, 1, 0].item() == 0.0
    # A layer with a huge common offset and a tiny spread, and one with a huge outlier dimension.
    feats[0] = 1e6 + 1e-3 * feats[0]
    feats[2, :, 0] *= 1e5
    for kwargs in ({}, {"debiased": True}, {"kernel": "rbf"}):
        assert bool(torch.isfinite(cka(feats, **kwargs)).all())
    assert bool(torch.isfinite(cos_similarity(feats)).all())
    # Minimal sample counts.
    assert bool(torch.isfinite(cka(feats[:, :4], debiased=True)).all())
    assert bool(torch.isfinite(cka(feats[:, :2])).all())


def test_large_offset_does_not_change_cka_in_float64():
    feats = layered_features(num_layers=3, n=80, d=5, seed=23)
    assert (cka(feats + 1e4) - cka(feats)).abs().max() < 1e-8
    assert (cka(feats + 1e4, debiased=True) - cka(feats, debiased=True)).abs().max() < 1e-8


# ----------------------------------------------------------------------------------------------
# Readout helpers
# ----------------------------------------------------------------------------------------------
def test_saturation_layer_hand_built():
    preds = torch.tensor(
        [
            [0, 1, 2, 5],
            [1, 1, 2, 3],
            [1, 0, 2, 4],
            [1, 1, 2, 4],
        ]
    )
    # sample 0 settles at layer 2; sample 1 changes at layer 3, so 4; sample 2 never changes: 1;
    # sample 3 agrees at layers 3 and 4: 3.
    result = saturation_layer(preds)
    assert result.tolist() == [2, 4, 1, 3]
    assert result.dtype == torch.int64
    assert saturation_layer(preds.numpy()).tolist() == [2, 4, 1, 3]
    logits = torch.nn.functional.one_hot(preds, num_classes=6).double()
    assert saturation_layer(logits).tolist() == [2, 4, 1, 3]
    assert saturation_layer(torch.tensor([[3, 1]])).tolist() == [1, 1]  # one layer: settles at once


def test_layerwise_accuracy_hand_built():
    preds = torch.tensor([[0, 1, 1, 0], [0, 1, 2, 2], [1, 1, 2, 3]])
    labels = torch.tensor([0, 1, 2, 3])
    assert layerwise_accuracy(preds, labels).tolist() == [0.5, 0.75, 0.75]
    logits = torch.nn.functional.one_hot(preds, num_classes=4).float()
    assert layerwise_accuracy(logits, labels.numpy()).tolist() == [0.5, 0.75, 0.75]


def test_similarity_helpers_hand_built():
    sim = torch.tensor([[1.0, 0.8, 0.3], [0.8, 1.0, 0.6], [0.3, 0.6, 1.0]])
    assert similarity_to_last(sim).tolist() == pytest.approx([0.3, 0.6, 1.0])
    assert similarity_by_gap(sim).tolist() == pytest.approx([1.0, 0.7, 0.3])
    assert similarity_to_last(np.array([[1.0, 0.2], [0.5, 0.9]])).tolist() == pytest.approx([0.2, 0.9])


def test_trajectory_straightness_hand_built():
    straight = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[3.0, 0.0]]])
    corner = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]])
    back = torch.tensor([[[0.0, 0.0]], [[2.0, 1.0]], [[0.0, 0.0]]])
    still = torch.zeros(3, 1, 2)
    feats = torch.cat([straight, corner, back, still], dim=1)  # (3 layers, 4 samples, 2)
    assert trajectory_straightness(feats).tolist() == pytest.approx([1.0, 1 / math.sqrt(2), 0.0, 1.0])


# ----------------------------------------------------------------------------------------------
# Bad input: a clear ValueError naming the problem (and the layer)
# ----------------------------------------------------------------------------------------------
def good():
    return layered_features(num_layers=3, n=20, d=4, seed=24)


@pytest.mark.parametrize("function", [cka, cos_similarity])
def test_bad_shapes(function):
    with pytest.raises(ValueError, match="n=20 samples but other has n=19"):
        function(good(), good()[:, :19])
    with pytest.raises(ValueError, match=r"ndim=2.*x\[None\]"):
        function(good()[0])
    with pytest.raises(ValueError, match="ndim=4"):
        function(good()[None])
    with pytest.raises(ValueError, match="layer 2 has 19 samples"):
        function([good()[0], good()[1, :19]])
    with pytest.raises(ValueError, match="empty"):
        function([])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_name_the_layer(bad):
    feats = good()
    feats[1, 3, 2] = bad
    for call in (lambda: cka(feats), lambda: cos_similarity(feats), lambda: cka(good(), feats),
                 lambda: StreamingCKA().update(feats)):
        with pytest.raises(ValueError, match="layer 2 contains NaN or Inf"):
            call()


def test_constant_layer_names_the_layer():
    feats = good()
    feats[2] = 0.7
    for kwargs in ({}, {"debiased": True}, {"kernel": "rbf"}):
        with pytest.raises(ValueError, match="layer 3 is constant"):
            cka(feats, **kwargs)
    with pytest.raises(ValueError, match="other layer 3 is constant"):
        cka(good(), feats)
    with pytest.raises(ValueError, match="layer 3 is constant"):
        cos_similarity(feats)
    assert bool(torch.isfinite(cos_similarity(feats, centered=False)).all())  # plain cosine is defined
    streaming = StreamingCKA()
    for part in batches(20, [8, 12]):
        streaming.update(feats[:, part])
    with pytest.raises(ValueError, match="layer 3 is constant across all streamed samples"):
        streaming.compute()


def test_too_few_samples():
    with pytest.raises(ValueError, match="n >= 4"):
        cka(good()[:, :3], debiased=True)
    with pytest.raises(ValueError, match="n >= 4"):
        StreamingCKA(debiased=True).update(good()[:, :3]).compute()
    with pytest.raises(ValueError, match="at least 2 samples"):
        cka(good()[:, :1])


def test_bad_options_and_helpers():
    with pytest.raises(ValueError, match="kernel must be"):
        cka(good(), kernel="cosine")
    with pytest.raises(ValueError, match="threshold"):
        cka(good(), kernel="rbf", threshold=0.0)
    with pytest.raises(ValueError, match="no feature-space form"):
        hsic(good(), kernel="rbf", form="feature")
    with pytest.raises(ValueError, match="same width"):
        cos_similarity([good()[0], good()[1, :, :3]])
    with pytest.raises(ValueError, match="pass mean="):
        StreamingCOS(centered=True)
    with pytest.raises(ValueError, match="every update"):
        StreamingCKA().update(good()).update(good(), good())
    with pytest.raises(ValueError, match="widths"):
        StreamingCKA().update(good()).update(good()[:, :, :3])
    with pytest.raises(ValueError, match="integer class predictions"):
        saturation_layer(torch.rand(3, 5))
    with pytest.raises(ValueError, match="ndim=1"):
        saturation_layer(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels must have shape \(n,\)"):
        layerwise_accuracy(torch.zeros(3, 5, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="square"):
        similarity_by_gap(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="at least 2 layers"):
        trajectory_straightness(good()[:1])


# ----------------------------------------------------------------------------------------------
# Reliability (issue 8): each test failed before the fix it covers
# ----------------------------------------------------------------------------------------------
def test_cos_stays_in_range_with_an_exact_diagonal():
    # Issue 8, item 1: cos_similarity(torch.randn(6, 96, 384).cumsum(0)).max() was 1 + 2e-15.
    feats = torch.randn(6, 96, 384, generator=torch.Generator().manual_seed(0)).cumsum(0)
    ones = torch.ones(6, dtype=torch.float64)
    for x in (feats, feats.double()):
        for centered in (True, False):
            sim = cos_similarity(x, centered=centered)
            assert torch.equal(sim.diagonal(), ones)
            assert -1.0 <= sim.min().item() and sim.max().item() <= 1.0
            assert bool(torch.isfinite(torch.arccos(sim)).all())
            assert similarity_to_last(sim)[-1].item() == 1.0
            per_sample = cos_per_sample(x, centered=centered)
            assert torch.equal(per_sample.diagonal(dim1=0, dim2=1), torch.ones(96, 6, dtype=torch.float64))
            assert per_sample.abs().max().item() <= 1.0
            crossed = cos_similarity(x, x.clone(), centered=centered)  # no diagonal set by the code
            assert crossed.abs().max().item() <= 1.0
            assert (crossed.diagonal() - 1).abs().max().item() < 1e-12
        streamed = StreamingCOS(centered=True, mean=x.double().mean(1))
        for part in batches(96, [50, 46]):
            streamed.update(x[:, part])
        assert torch.equal(streamed.compute().diagonal(), ones)
        assert streamed.compute().abs().max().item() <= 1.0


@pytest.mark.parametrize("scale", [1e20, 1e-25])
@pytest.mark.parametrize("debiased", [False, True])
def test_float32_cka_survives_extreme_scales(scale, debiased):
    # Issue 8, item 2: cka(torch.randn(3, 200, 4) * 1e20) was a matrix of zeros in float32.
    x = layered_features(num_layers=3, n=200, d=4, seed=30).float() * scale  # float32
    exact = x.double()  # the same values, computed in float64
    expected = cka(exact / scale, debiased=debiased)
    assert (cka(x, debiased=debiased) - expected).abs().max() < 1e-5
    assert (cka(x, debiased=debiased, form="gram") - expected).abs().max() < 1e-5
    assert (cka(x, kernel="rbf") - cka(exact / scale, kernel="rbf")).abs().max() < 1e-5
    expected_hsic = hsic(exact / scale, debiased=debiased)
    assert torch.allclose(hsic(x, debiased=debiased) / scale**4, expected_hsic, rtol=1e-5, atol=0)
    streaming = StreamingCKA(debiased=debiased)
    for part in batches(200, [64, 64, 72]):
        streaming.update(x[:, part])
    assert (streaming.compute() - expected).abs().max() < 1e-5


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e-310])
def test_float64_cka_and_cos_survive_extreme_scales(scale):
    # Found by the Hypothesis suite, beyond issue 8's list: float64 squares overflow or underflow
    # (1e-310: subnormal values, whose power-of-two factor 2^1030 is itself beyond float64).
    x = layered_features(num_layers=3, n=40, d=4, seed=31)
    assert (cka(x * scale) - cka(x)).abs().max() < 1e-12
    assert (cka(x * scale, debiased=True) - cka(x, debiased=True)).abs().max() < 1e-12
    assert (cka(x * scale, kernel="rbf") - cka(x, kernel="rbf")).abs().max() < 1e-12
    for centered in (True, False):
        assert (cos_similarity(x * scale, centered=centered) - cos_similarity(x, centered=centered)).abs().max() < 1e-12
    assert (trajectory_straightness(x * scale) - trajectory_straightness(x)).abs().max() < 1e-12


def test_float32_means_are_accumulated_in_float64():
    # Issue 8, item 3: a layer whose offset is 1e5 times its spread.
    gen = torch.Generator().manual_seed(32)
    x = torch.randn(3, 50_000, 16, dtype=torch.float64, generator=gen)
    x = (x + 1e5 * torch.randn(16, dtype=torch.float64, generator=gen)).float()
    exact = x.double()  # the same float32 values
    assert (StreamingMean().update(x).compute() - exact.mean(1)).abs().max() < 1e-6
    assert (cos_similarity(x) - cos_similarity(exact)).abs().max() < 1e-9
    assert (cos_per_sample(x[:, :500]) - cos_per_sample(exact[:, :500])).abs().max() < 1e-9
    for debiased in (False, True):
        assert (cka(x, debiased=debiased) - cka(exact, debiased=debiased)).abs().max() < 1e-6


def test_nan_means_are_rejected():
    # Issue 8, item 4.
    feats = good()
    bad_mean = feats.mean(1)
    bad_mean[1, 2] = float("nan")
    with pytest.raises(ValueError, match="mean .*NaN or Inf"):
        cos_per_sample(feats, mean=bad_mean)
    with pytest.raises(ValueError, match="other_mean .*NaN or Inf"):
        cos_per_sample(feats, feats, mean=feats.mean(1), other_mean=bad_mean)
    with pytest.raises(ValueError, match="mean .*NaN or Inf"):
        StreamingCOS(centered=True, mean=bad_mean)
    with pytest.raises(ValueError, match="other_mean .*NaN or Inf"):
        StreamingCOS(centered=True, mean=feats.mean(1), other_mean=bad_mean)


def test_streaming_cos_rejects_batches_of_another_width():
    # Issue 8, item 4: StreamingCOS(centered=False) accepted a batch of width 3 after width 4.
    for make in (lambda: StreamingCOS(centered=False), lambda: StreamingCOS(centered=True, mean=good().mean(1))):
        streaming = make().update(good())
        with pytest.raises(ValueError, match="width"):
            streaming.update(torch.randn(3, 20, 3, dtype=torch.float64))
        with pytest.raises(ValueError, match="layers"):
            streaming.update(good()[:2])


def test_layerwise_accuracy_rejects_bad_labels():
    # Issue 8, item 4: labels outside [0, C) or of float type gave 0.0 or a silent truncation.
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(33))
    with pytest.raises(ValueError, match=r"labels .*\[0, 3\)"):
        layerwise_accuracy(logits, torch.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match=r"labels .*\[0, 3\)"):
        layerwise_accuracy(logits, torch.tensor([0, -1, 2, 2]))
    with pytest.raises(ValueError, match="labels .*negative"):
        layerwise_accuracy(logits.argmax(-1), torch.tensor([0, -1, 2, 2]))
    with pytest.raises(ValueError, match="labels .*num_classes=3"):
        layerwise_accuracy(logits.argmax(-1), torch.tensor([0, 1, 3, 2]), num_classes=3)
    for floats in (torch.tensor([0.0, 1.0, 2.0, 1.0]), np.array([0.0, 1.0, 2.0, 1.0])):
        with pytest.raises(ValueError, match="labels must be integer class indices"):
            layerwise_accuracy(logits, floats)
    with pytest.raises(ValueError, match="labels must be integer class indices"):
        layerwise_accuracy(logits, torch.tensor([True, False, True, True]))


@pytest.mark.parametrize("function", [similarity_to_last, similarity_by_gap])
def test_similarity_helpers_reject_nan_and_empty(function):
    # Issue 8, item 4: NaN passed through; empty matrices raised IndexError / RuntimeError.
    with pytest.raises(ValueError, match="NaN or Inf"):
        function(torch.tensor([[1.0, float("nan")], [0.5, 1.0]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        function(torch.tensor([[1.0, 0.2], [float("inf"), 1.0]]))
    for shape in ((0, 0), (2, 0), (0, 2)):
        with pytest.raises(ValueError, match="empty"):
            function(torch.zeros(shape))


def test_cka_stays_in_range_and_its_self_matrix_is_symmetric():
    # Found by the Hypothesis suite, beyond issue 8's list: rounding gave biased CKA 1 + 2e-16 (a layer
    # against a copy of itself, or n = 2), and a debiased cka(feats) whose two triangles differed.
    feats = layered_features(num_layers=3, n=8, d=1, seed=34)
    for debiased in (False, True):
        for kernel in ("linear", "rbf"):
            sim = cka(feats, kernel=kernel, debiased=debiased)
            assert torch.equal(sim, sim.T)
            crossed = cka(feats, feats * 3.0 + 1.0, kernel=kernel, debiased=debiased)
            assert (-1.0 if debiased else 0.0) <= crossed.min().item() and crossed.max().item() <= 1.0
    pair = torch.tensor([[[0.3, -1.1]], [[-0.7, 0.2]]], dtype=torch.float64).transpose(1, 2)  # n = 2
    assert cka(pair, pair.flip(0)).max().item() <= 1.0


# ----------------------------------------------------------------------------------------------
# Merging accumulators, in one process and across torch.distributed ranks (issue 9, item 4)
# ----------------------------------------------------------------------------------------------
def merge_data():
    feats = layered_features(num_layers=4, n=90, d=5, seed=40, offset=3.0)
    other = [feats[1, :, :2] ** 2, feats[3] @ random_orthogonal(5, 2) + 1.0]
    return feats, other


def accumulate(make, feats, other, rows, sizes):
    """One accumulator fed the samples ``rows`` of feats (and other) in batches of ``sizes``."""
    acc = make()
    start = rows.start
    for size in sizes:
        stop = min(rows.stop, start + size)
        if stop > start:
            part = slice(start, stop)
            if other is None:
                acc.update(feats[:, part])
            else:
                acc.update(feats[:, part], [o[part] for o in other])
        start = stop
    return acc


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("with_other", [False, True])
def test_merged_streaming_cka_equals_one_pass_and_in_memory(debiased, with_other):
    feats, other = merge_data()
    other = other if with_other else None
    make = lambda: StreamingCKA(debiased=debiased)  # noqa: E731
    one_pass = accumulate(make, feats, other, slice(0, 90), [13] * 7)
    first = accumulate(make, feats, other, slice(0, 37), [5, 30, 2])
    second = accumulate(make, feats, other, slice(37, 90), [1, 52])
    # Make the two halves' origins (their first batches' means) very different: the merge must move
    # one half's sums to the other's origin exactly.
    merged = first.merge(second)
    assert merged is first and merged.n == 90
    expected = cka(feats, other, debiased=debiased)
    assert (one_pass.compute() - expected).abs().max() < 1e-12
    assert (merged.compute() - expected).abs().max() < 1e-12
    assert ((merged.hsic() - hsic(feats, other, debiased=debiased)).abs()
            / hsic(feats, other, debiased=debiased).abs().max()).max() < 1e-12
    assert second.n == 53  # the merged-in accumulator is unchanged
    assert (second.compute() - cka(feats[:, 37:], None if other is None else [o[37:] for o in other],
                                   debiased=debiased)).abs().max() < 1e-12


def test_merged_mean_cos_and_minibatch_equal_one_pass():
    feats, _ = merge_data()
    mean_a = accumulate(StreamingMean, feats, None, slice(0, 50), [50])
    mean_b = accumulate(StreamingMean, feats, None, slice(50, 90), [7, 33])
    mean = mean_a.merge(mean_b).compute()
    assert torch.allclose(mean, feats.mean(1), atol=1e-14, rtol=0)
    for centered in (True, False):
        make = lambda: StreamingCOS(centered=centered, mean=mean if centered else None)  # noqa: E731
        a = accumulate(make, feats, None, slice(0, 20), [20])
        b = accumulate(make, feats, None, slice(20, 90), [30, 40])
        assert torch.allclose(a.merge(b).compute(), cos_similarity(feats, centered=centered), atol=1e-14, rtol=0)
    one = accumulate(MinibatchCKA, feats, None, slice(0, 90), [30, 30, 30])
    a = accumulate(MinibatchCKA, feats, None, slice(0, 30), [30])
    b = accumulate(MinibatchCKA, feats, None, slice(30, 90), [30, 30])
    assert a.merge(b).batches == 3
    assert torch.allclose(a.compute(), one.compute(), atol=1e-14, rtol=0)


def test_merge_with_empty_and_mismatched_accumulators():
    feats, other = merge_data()
    full = StreamingCKA().update(feats)
    assert torch.equal(StreamingCKA().merge(full).compute(), full.compute())
    assert torch.equal(StreamingCKA().update(feats).merge(StreamingCKA()).compute(), full.compute())
    with pytest.raises(ValueError, match="different debiased"):
        StreamingCKA().update(feats).merge(StreamingCKA(debiased=True).update(feats))
    with pytest.raises(ValueError, match="different widths"):
        StreamingCKA().update(feats).merge(StreamingCKA().update(feats[:, :, :3]))
    with pytest.raises(ValueError, match="different num_feats"):
        StreamingCKA().update(feats).merge(StreamingCKA().update(feats[:2], feats[2:]))
    with pytest.raises(ValueError, match="different mean"):
        StreamingCOS(mean=feats.mean(1)).update(feats).merge(StreamingCOS(mean=feats.mean(1) + 1).update(feats))
    with pytest.raises(TypeError, match="can only merge a StreamingCKA"):
        StreamingCKA().merge(StreamingMean())
    with pytest.raises(ValueError, match="init_process_group"):
        StreamingCKA().update(feats).all_reduce_()


def _all_reduce_worker(rank, world_size, init_file, out_dir):
    """One rank of the 2-process test: accumulate this rank's share, all-reduce, save the results."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        feats, other = merge_data()
        rows = slice(0, 40) if rank == 0 else slice(40, 90)
        results = {}
        mean = accumulate(StreamingMean, feats, None, rows, [15] * 4).all_reduce_().compute()
        results["mean"] = mean
        results["cos"] = accumulate(lambda: StreamingCOS(mean=mean), feats, None, rows, [25] * 2).all_reduce_().compute()
        for debiased in (False, True):
            results[f"cka-{debiased}"] = accumulate(
                lambda: StreamingCKA(debiased=debiased), feats, None, rows, [11] * 5).all_reduce_().compute()
            results[f"cross-{debiased}"] = accumulate(
                lambda: StreamingCKA(debiased=debiased), feats, other, rows, [50]).all_reduce_().compute()
        # Rank 1 sees no samples at all: it takes part with empty sums and ends with rank 0's result.
        only_rank0 = accumulate(StreamingCKA, feats, None, slice(0, 90) if rank == 0 else slice(0, 0), [45, 45])
        results["one-rank"] = only_rank0.all_reduce_().compute()
        results["minibatch"] = accumulate(MinibatchCKA, feats, None, slice(0, 30) if rank == 0 else slice(30, 90),
                                          [30, 30]).all_reduce_().compute()
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_across_two_processes_equals_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    feats, other = merge_data()
    expected = {
        "mean": feats.mean(1),
        "cos": cos_similarity(feats),
        "cka-False": cka(feats),
        "cka-True": cka(feats, debiased=True),
        "cross-False": cka(feats, other),
        "cross-True": cka(feats, other, debiased=True),
        "one-rank": cka(feats),
        "minibatch": accumulate(MinibatchCKA, feats, None, slice(0, 90), [30, 30, 30]).compute(),
    }
    for rank in (0, 1):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(results) == set(expected)
        for key, value in expected.items():
            assert (results[key] - value).abs().max().item() < 1e-12, (rank, key)


def test_inputs_are_never_modified():
    feats, other = merge_data()
    feats_copy, other_copy = feats.clone(), [o.clone() for o in other]
    for centered in (True, False):
        cos_similarity(feats, centered=centered)
        cos_per_sample(feats, centered=centered)
        StreamingCOS(centered=centered, mean=feats.mean(1) if centered else None).update(feats).compute()
    for debiased in (False, True):
        cka(feats, other, debiased=debiased)
        cka(feats * 1e200, debiased=debiased)  # a rescaled stack is a copy, never the input
        StreamingCKA(debiased=debiased).update(feats, other).compute()
    trajectory_straightness(feats)
    assert torch.equal(feats, feats_copy) and all(torch.equal(o, c) for o, c in zip(other, other_copy))


def test_an_accumulator_merged_into_an_empty_one_keeps_accumulating():
    # Merging into an empty accumulator copies the other's sums; later batches must still land in
    # the copied sums (the pairs' cross-products are views into shared blocks).
    feats, other = merge_data()
    for second in (None, other):
        take = (lambda part: None) if second is None else (lambda part: [o[part] for o in second])
        first = StreamingCKA().update(feats[:, :30], take(slice(0, 30)))
        merged = StreamingCKA().merge(first).update(feats[:, 30:], take(slice(30, 90)))
        assert (merged.compute() - cka(feats, second)).abs().max() < 1e-12
        assert (first.compute() - cka(feats[:, :30], take(slice(0, 30)))).abs().max() < 1e-12


def test_degenerate_debiased_self_hsic_is_an_error():
    # Found by the Hypothesis suite (long profile): with n = 4 and three equal samples the unbiased
    # self-HSIC is exactly 0, and rounding decided whether CKA came out 0 or 1 (for integer input
    # and the same data as float64 divided by 3).
    x = torch.tensor([[[-2], [-2], [-2], [-3]], [[0], [0], [0], [-1]]])
    for data in (x, x.double() / 3, x.float()):
        with pytest.raises(ValueError, match="feats layer 1: its debiased .*self-HSIC is zero"):
            cka(data, debiased=True)
    with pytest.raises(ValueError, match="feats layer 1: its debiased .*self-HSIC is zero"):
        StreamingCKA(debiased=True).update(x).compute()
    with pytest.raises(ValueError, match="other layer 2: its debiased .*self-HSIC is zero"):
        good_layers = layered_features(num_layers=2, n=4, d=2, seed=35)
        cka(good_layers, [good_layers[1], x[0]], debiased=True)
    assert torch.equal(cka(x)[0, 1], torch.tensor(1.0, dtype=torch.float64))  # biased: defined (shifted copies)
