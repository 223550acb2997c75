"""layersim.experiments (similarity, geodesic, features) and layersim.device: claim-2 trends, outlier injection
(claim 3), geodesic trajectories (claim 4), devices."""
import numpy as np
import pytest
import torch

from layersim import experiments, metrics
from layersim.device import resolve_device


def residual_stack(L=5, n=200, d=32, seed=0):
    """A residual-network-like stack: each layer adds a small update to the previous one."""
    g = torch.Generator().manual_seed(seed)
    h = [torch.randn(n, d, generator=g, dtype=torch.float64)]
    for _ in range(L - 1):
        h.append(h[-1] + 0.6 * torch.randn(n, d, generator=g, dtype=torch.float64))
    return torch.stack(h)


# ---- devices ------------------------------------------------------------------------------------------------
def test_resolve_device_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="only 2 CUDA devices"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", ""])
def test_resolve_device_rejects_unknown_names(bad):
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda'"):
        resolve_device(bad)
    with pytest.raises(TypeError):
        resolve_device(0)


# ---- claim 2 ------------------------------------------------------------------------------------------------
def test_similarity_trends_of_a_banded_matrix():
    L = 6
    i, j = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    sim = torch.tensor(1 - np.abs(i - j) / L)  # exactly banded: falls linearly with the gap
    t = experiments.similarity_trends(sim)
    assert torch.allclose(t.by_gap, torch.tensor([1 - g / L for g in range(L)], dtype=torch.float64))
    assert t.falls_with_gap == pytest.approx(-1.0)
    assert t.pairs_fall_with_gap == pytest.approx(-1.0)
    assert t.rises_to_last == pytest.approx(1.0)
    assert t.min_pair == pytest.approx(1 / L)
    assert torch.allclose(t.to_last, sim[:, -1])


def test_similarity_trends_see_a_negative_pair_and_a_non_monotone_profile():
    sim = torch.tensor([[1.0, 0.2, 0.5], [0.2, 1.0, -0.1], [0.5, -0.1, 1.0]])
    t = experiments.similarity_trends(sim)
    assert t.min_pair == pytest.approx(-0.1)
    assert t.rises_to_last == pytest.approx(-1.0)  # layer 1 is closer to layer 3 than layer 2 is
    assert t.by_gap.tolist() == pytest.approx([1.0, 0.05, 0.5])


def test_similarity_trends_bad_input():
    with pytest.raises(ValueError, match="at least 3 layers"):
        experiments.similarity_trends(torch.eye(2))
    with pytest.raises(ValueError, match="square"):
        experiments.similarity_trends(torch.ones(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        experiments.similarity_trends(torch.full((3, 3), float("nan")))


# ---- claim 3 ------------------------------------------------------------------------------------------------
def test_outlier_samples_move_only_the_chosen_samples_by_the_stated_length():
    feats = residual_stack()
    typical = experiments.typical_distance(feats)
    moved, idx = experiments.inject_outlier_samples(feats, 7.0, count=3, seed=1)
    others = torch.ones(feats.shape[1], dtype=torch.bool)
    others[idx] = False
    assert torch.equal(moved[:, others], feats[:, others])
    added = moved[:, idx] - feats[:, idx]  # (L, 3, d)
    assert torch.allclose(added.norm(dim=2), 7.0 * typical[:, None].expand(-1, 3))
    unit = added / added.norm(dim=2, keepdim=True)
    assert torch.allclose(unit, unit[:1].expand_as(unit))  # the same direction at every layer
    again, idx2 = experiments.inject_outlier_samples(feats, 50.0, count=3, seed=1)
    assert torch.equal(idx, idx2)  # a sweep moves the same samples at every size
    unchanged, _ = experiments.inject_outlier_samples(feats, 0, count=3, seed=1)
    assert torch.equal(unchanged, feats)


def test_typical_distance_is_the_median_distance_from_the_mean():
    feats = torch.zeros(1, 3, 2, dtype=torch.float64)
    feats[0, :, 0] = torch.tensor([0.0, 1.0, 5.0])  # mean 2: distances 2, 1, 3
    assert experiments.typical_distance(feats).tolist() == [2.0]


def test_outlier_dimensions_get_the_stated_spread_and_keep_their_mean():
    feats = residual_stack()
    moved, dims = experiments.inject_outlier_dimensions(feats, 20.0, count=2, seed=3)
    rest = torch.ones(feats.shape[2], dtype=torch.bool)
    rest[dims] = False
    assert torch.equal(moved[:, :, rest], feats[:, :, rest])
    typical = feats.std(dim=1).pow(2).mean(1).sqrt()  # (L,) RMS spread of the clean dimensions
    assert torch.allclose(moved[:, :, dims].std(dim=1), 20.0 * typical[:, None].expand(-1, 2))
    assert torch.allclose(moved[:, :, dims].mean(1), feats[:, :, dims].mean(1))
    with pytest.raises(ValueError, match="vary at every layer"):
        experiments.inject_outlier_dimensions(torch.ones(2, 5, 3), 2.0, count=1)


def test_injection_bad_input():
    feats = residual_stack(n=10)
    with pytest.raises(ValueError, match="only n=10"):
        experiments.inject_outlier_samples(feats, 1.0, count=11)
    with pytest.raises(ValueError, match=">= 0"):
        experiments.inject_outlier_samples(feats, -1.0, count=1)
    with pytest.raises(ValueError, match="whole number"):
        experiments.inject_outlier_dimensions(feats, 1.0, count=0)
    with pytest.raises(ValueError, match=r"\(L, n, d\)"):
        experiments.inject_outlier_samples(feats[0], 1.0, count=1)
    with pytest.raises(ValueError, match="NaN"):
        experiments.inject_outlier_samples(feats * float("nan"), 1.0, count=1)


def test_mean_pair_change_known_value():
    a = torch.eye(3)
    b = a.clone()
    b[0, 1], b[1, 0], b[1, 2] = 0.3, 0.3, -0.6  # pairs (1,2), (1,3), (2,3): changes 0.3, 0, 0.6
    assert experiments.mean_pair_change(a, b) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="same shape"):
        experiments.mean_pair_change(torch.eye(3), torch.eye(4))


def test_a_few_outlier_samples_move_cka_far_more_than_cos():
    """Claim 3 in the controlled setting: 2 outlier samples among 200, 20 typical distances away."""
    feats = residual_stack()
    sweep = experiments.outlier_sweep(feats, [0, 1, 20], outliers="samples", count=2, seed=0)
    assert sweep.cos_change[0] == 0 and sweep.cka_change[0] == 0  # size 0 changes nothing
    assert sweep.cka_change[-1] > 0.2  # the clean CKA of layer pairs averages about 0.7: most of the way to 1
    assert sweep.ratio[-1] > 5
    assert sweep.uncentred_cos_change[-1] < 2 * 2 / 200  # at most the outliers' own share of the mean
    # with the outliers, CKA says every layer is nearly the last one
    assert (sweep.cka_to_last[-1] > 0.9).all()
    assert sweep.cka_to_last.shape == (3, 5) and sweep.sizes.tolist() == [0, 1, 20]


def test_one_huge_dimension_takes_over_both_measures():
    """At size 1 a dimension is ordinary; made huge, COS and CKA both become those of that dimension alone."""
    feats = residual_stack()
    small = experiments.outlier_sweep(feats, [1], outliers="dimensions", count=1, seed=0)
    assert small.cka_change[0] < 1e-3 and small.cos_change[0] < 1e-3
    moved, dims = experiments.inject_outlier_dimensions(feats, 1e4, count=1, seed=0)
    alone = moved[:, :, dims]  # (L, n, 1)
    assert torch.allclose(metrics.cka(moved), metrics.cka(alone), atol=1e-4)
    assert torch.allclose(metrics.cos_similarity(moved), metrics.cos_similarity(alone), atol=1e-3)


def test_outlier_sweep_bad_input():
    with pytest.raises(ValueError, match="outliers must be one of"):
        experiments.outlier_sweep(residual_stack(), [1], outliers="tokens")
    with pytest.raises(ValueError, match="non-empty list"):
        experiments.outlier_sweep(residual_stack(), [])


def test_massive_activation_samples_finds_the_huge_tokens():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4, 50, 16, generator=g)
    feats[2, [0, 17], 5] = 500.0  # two tokens, one huge dimension, at one layer
    mask = experiments.massive_activation_samples(feats, factor=10)
    assert mask.nonzero().flatten().tolist() == [0, 17]
    with pytest.raises(ValueError, match="factor"):
        experiments.massive_activation_samples(feats, factor=1)


# ---- claim 4 ------------------------------------------------------------------------------------------------
def test_geodesic_trajectories_are_straight_with_constant_speed():
    tr = experiments.geodesic_trajectories(300, 16, 8, 4, seed=0)
    assert tr.features.shape == (8, 300, 16) and tr.inputs.shape == (300, 16) and tr.labels.shape == (300,)
    full = torch.cat([tr.inputs[None], tr.features])  # layer 0..L
    assert torch.allclose(metrics.trajectory_straightness(full), torch.ones(300, dtype=torch.float64))
    assert torch.allclose(experiments.relative_step_lengths(full), torch.full((8, 300), 1 / 8, dtype=torch.float64))
    # the theory's consequence (a): every sample's COS to the last layer rises with depth
    cos_to_last = metrics.cos_per_sample(tr.features, tr.features[-1:])[:, 0]
    assert experiments.fraction_rising(cos_to_last) == 1.0


def test_winding_trajectories_share_the_endpoints_but_not_the_straightness():
    straight = experiments.geodesic_trajectories(300, 16, 8, 4, seed=0)
    winding = experiments.geodesic_trajectories(300, 16, 8, 4, wiggle=3.0, seed=0)
    assert torch.allclose(winding.features[-1], straight.features[-1])
    assert torch.equal(winding.inputs, straight.inputs) and torch.equal(winding.labels, straight.labels)
    s = metrics.trajectory_straightness(torch.cat([winding.inputs[None], winding.features]))
    assert s.median() < 0.6
    # a straight step costs 1/L of the chord; with detours of about 3 such steps per layer the path is longer
    assert not torch.allclose(winding.features, straight.features)
    part = winding.take(slice(10, 20))
    assert part.features.shape == (8, 10, 16) and torch.equal(part.labels, winding.labels[10:20])


def test_geodesic_trajectories_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        experiments.geodesic_trajectories(10, 4, 3, 1)
    with pytest.raises(ValueError, match="wiggle"):
        experiments.geodesic_trajectories(10, 4, 3, 2, wiggle=-1.0)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_linear_classifier_gives_scikit_learns_probabilities(num_classes):
    from sklearn.linear_model import LogisticRegression

    tr = experiments.geodesic_trajectories(400, 8, 4, num_classes, separation=0.5, seed=1)
    x, y = tr.features[-1], tr.labels
    clf = experiments.fit_linear_classifier(x, y)
    reference = LogisticRegression(max_iter=2000).fit(x.numpy(), y.numpy()).predict_proba(x.numpy())
    ours = torch.softmax(clf(x), dim=-1).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    assert clf(tr.features).shape == (4, 400, num_classes)  # applies to every layer of a stack


def test_linear_classifier_bad_input():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        experiments.fit_linear_classifier(x, torch.zeros(10, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        experiments.fit_linear_classifier(x, torch.zeros(10))
    with pytest.raises(ValueError, match=r"\(n,\)"):
        experiments.fit_linear_classifier(x, torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        experiments.fit_linear_classifier(x[None], torch.zeros(10, dtype=torch.long))


def test_geodesic_similarity_goes_with_the_probability_of_the_final_prediction():
    """Claim 4 (b) on trajectories that satisfy the assumption."""
    from scipy.stats import spearmanr

    from layersim.early_exit import final_prediction_prob

    tr = experiments.geodesic_trajectories(1000, 32, 8, 5, separation=0.4, seed=0)
    clf = experiments.fit_linear_classifier(tr.features[-1, :500], tr.labels[:500])
    test = tr.take(slice(500, None))
    with torch.no_grad():
        prob = final_prediction_prob(clf(test.features))
    cos = metrics.cos_per_sample(test.features, test.features[-1:])[:, 0]
    assert spearmanr(cos[:-1].flatten(), prob[:-1].flatten()).statistic > 0.5
    assert (prob.mean(1)[1:] > prob.mean(1)[:-1]).all()  # the mean probability rises with depth


def test_fraction_rising_and_step_lengths_known_values():
    values = torch.tensor([[0.1, 0.5, 0.3], [0.2, 0.4, 0.3], [0.3, 0.6, 0.35]])  # sample 2 dips by 0.1
    assert experiments.fraction_rising(values) == pytest.approx(2 / 3)
    assert experiments.fraction_rising(values, tolerance=0.1) == pytest.approx(1.0)
    path = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]], [[3.0, 5.0]]], dtype=torch.float64)  # steps 5 and 1
    assert experiments.relative_step_lengths(path)[:, 0].tolist() == pytest.approx([5 / 6, 1 / 6])
    still = torch.zeros(3, 1, 2)
    assert experiments.relative_step_lengths(still)[:, 0].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="L >= 2"):
        experiments.fraction_rising(torch.zeros(1, 3))


# ---- features of the notebooks' models ----------------------------------------------------------------------
def test_with_norm_conventions_on_our_vit():
    from layersim.models import ViTConfig, VisionTransformer, adapt

    torch.manual_seed(0)
    adapter = adapt(VisionTransformer(ViTConfig(image_size=8, patch_size=4, in_chans=1, depth=3, width=16, heads=2,
                                                num_classes=3)))
    feats = torch.randn(3, 5, 16) * 4 + 1
    lf = experiments.LayerFeatures("vit", "image", feats, None, "cls", "5 random vectors", adapter)
    with torch.no_grad():
        normed = torch.stack([adapter.norm(f) for f in feats])
    assert torch.equal(lf.with_norm("raw"), feats)
    assert torch.allclose(lf.with_norm("normed"), normed, atol=1e-6)
    hf = lf.with_norm("hf")
    assert torch.equal(hf[:2], feats[:2]) and torch.allclose(hf[2], normed[2], atol=1e-6)
    with pytest.raises(ValueError, match="feature_norm must be one of"):
        lf.with_norm("layer")


def test_load_layer_features_text_encoder_matches_extract():
    from layersim import data, extract
    from layersim.models import load_model

    lf = experiments.load_layer_features("minilm-l6", n_texts=8, pooling="mean", batch_size=4, device="cpu")
    reviews = data.load_rotten_tomatoes(n=8, seed=0)
    reference = extract.extract_features(load_model("minilm-l6"), reviews.train_texts + reviews.test_texts,
                                         pooling="mean", batch_size=4, progress=False)
    assert lf.modality == "text" and lf.pooling == "mean" and lf.features.shape == (6, 8, 384)
    assert torch.allclose(lf.features, reference, atol=1e-5)
    assert lf.labels.shape == (8,) and "8 review snippets" in lf.samples


@pytest.mark.parametrize("bad", ["", "train:", "train:vit-fashion-mnist:aligned:extra"])
def test_load_layer_features_bad_names(bad):
    with pytest.raises(ValueError, match="model must be a model name|trained model is named"):
        experiments.load_layer_features(bad)


def test_load_layer_features_bad_recipe_overrides():
    with pytest.raises(TypeError, match="recipe_overrides must map recipe names"):
        experiments.load_layer_features("train:vit-fashion-mnist", device="cpu", recipe_overrides=[("epochs", 1)])
    with pytest.raises(TypeError, match=r"recipe_overrides\['vit-fashion-mnist'\]"):
        experiments.load_layer_features("train:vit-fashion-mnist", device="cpu",
                                        recipe_overrides={"vit-fashion-mnist": 1})
