"""layersim.experiments (trained, representations, timing) and metrics.spearman: trained models read out
on their test split, the PCA of class means, grouping by saturation layer, the per-exit table, measured
exits. Trainings here are tiny (our ViT of width 16 on 8x8 scikit-learn digits, a second or two each) and
live in a temporary cache."""
import logging
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from layersim import experiments, metrics  # noqa: E402
from layersim.early_exit import ConfidenceExit, per_layer_logits, simulate  # noqa: E402
from layersim.models import VisionTransformer, ViTConfig, adapt  # noqa: E402
from _helpers import one_thread  # noqa: E402

TINY = dict(data="digits", n_train=0, n_test=0, vit_patch=2, vit_depth=3, vit_width=16, vit_heads=2, epochs=1,
            batch_size=64, lr=3e-3, progress=False)




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The standard, aligned and multi-exit tiny ViTs of the recipe vit-fashion-mnist moved to digits."""
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("LAYERSIM_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("LAYERSIM_PROGRESS", "off")
        yield experiments.train_models("vit-fashion-mnist", overrides=TINY, device="cpu")


# ---- trained models and their readout -----------------------------------------------------------------------
def test_train_models_trains_each_objective_once_and_reads_the_cache_after(trained, tmp_path):
    assert list(trained) == ["standard", "aligned", "multi_exit"]
    assert {r.config.objective for r in trained.values()} == {"standard", "aligned", "multi_exit"}
    assert trained["multi_exit"].heads is not None and trained["aligned"].heads is None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERSIM_CACHE", str(trained["aligned"].dir.parent.parent))
        again = experiments.train_models("vit-fashion-mnist", ["aligned"], overrides=TINY, device="cpu")["aligned"]
    assert not again.trained and again.dir == trained["aligned"].dir
    for a, b in zip(again.model.state_dict().values(), trained["aligned"].model.state_dict().values()):
        assert torch.equal(a, b)


def test_readout_reproduces_the_training_loops_evaluation(trained):
    for objective, run in trained.items():
        r = experiments.run_readout(run, batch_size=100)
        assert r.objective == objective and r.name == f"vit-fashion-mnist ({objective})"
        assert r.features.shape == (3, r.num_samples, 16) and r.logits.shape == (3, r.num_samples, 10)
        assert r.num_samples == run.log[-1]["n_test"]
        # the same test split and readout as layersim.train's own evaluation, computed another way
        assert r.accuracy().tolist() == pytest.approx(run.layer_acc, abs=1e-9)
        if objective == "multi_exit":
            assert r.accuracy("exit").tolist() == pytest.approx(run.exit_acc, abs=1e-9)
        else:
            assert r.exit_logits is None
            with pytest.raises(ValueError, match="only a multi-exit model has reader='exit'"):
                r.accuracy("exit")


def test_readout_features_are_the_pooled_block_outputs_and_logits_the_shared_head(trained):
    run = trained["aligned"]
    r = experiments.run_readout(run, n=20, batch_size=7)
    assert r.num_samples == 20
    images, labels = experiments.run_inputs(run, range(20))
    assert torch.equal(labels, r.labels)
    with torch.no_grad():
        hidden = run.adapter.hidden_states(images)
        cls = run.adapter.pool(hidden, "cls")
        logits = run.adapter.read(hidden)
    torch.testing.assert_close(r.features, cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.logits[-1], run.adapter.logits(images).detach(), rtol=1e-5, atol=1e-5)


def test_exit_logits_are_the_multi_exit_heads(trained):
    run = trained["multi_exit"]
    r = experiments.run_readout(run, n=16)
    images, _ = experiments.run_inputs(run, range(16))
    expected = per_layer_logits(run.adapter, images, reader=run.heads)
    with torch.no_grad():  # by hand: the final norm, then each layer's own linear head (the last: the model's)
        cls = run.model.norm(run.adapter.pool(run.adapter.hidden_states(images), "cls"))
        by_hand = torch.stack([h(c) for h, c in zip(list(run.heads.heads) + [run.model.head], cls)])
    torch.testing.assert_close(expected, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.exit_logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.exit_logits[-1], r.logits[-1])  # layer L: the model's own head either way


def test_readout_cache_returns_the_same_numbers(trained, tmp_path):
    first = experiments.run_readout(trained["standard"], n=30, cache_dir=tmp_path)
    second = experiments.run_readout(trained["standard"], n=30, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) >= 1
    assert torch.equal(first.features, second.features) and torch.equal(first.logits, second.logits)


def test_bad_requests_say_what_is_wrong(trained):
    run = trained["standard"]
    with pytest.raises(ValueError, match="the test split of vit-fashion-mnist has only"):
        experiments.run_readout(run, n=10_000)
    with pytest.raises(ValueError, match="n must be a whole number >= 0"):
        experiments.run_readout(run, n=-1)
    with pytest.raises(ValueError, match="indices must lie in 0.."):
        experiments.run_inputs(run, [0, 5000])
    with pytest.raises(ValueError, match="objectives must be a non-empty list"):
        experiments.train_models("vit-fashion-mnist", ["aligend"], overrides=TINY)
    with pytest.raises(TypeError, match="objectives must be a list"):
        experiments.train_models("vit-fashion-mnist", "aligned", overrides=TINY)
    with pytest.raises(ValueError, match="must not set 'objective'"):
        experiments.train_models("vit-fashion-mnist", ["aligned"], overrides={**TINY, "objective": "aligned"})
    with pytest.raises(ValueError, match="reader must be 'shared' or 'exit'"):
        experiments.run_readout(run, n=5).accuracy("own")


def test_exit_accuracy_table_rows_and_values(trained):
    reads = {obj: experiments.run_readout(run, n=50) for obj, run in trained.items()}
    table = experiments.exit_accuracy_table(reads)
    assert list(table["reader"]) == ["shared head", "shared head", "own heads", "shared head"]
    assert list(table["classifiers"]) == [1, 1, 3, 1]
    own = table[table["reader"] == "own heads"].iloc[0]
    assert [own[l] for l in (1, 2, 3)] == pytest.approx(reads["multi_exit"].accuracy("exit").tolist())
    aligned = table[table["objective"] == "aligned"].iloc[0]
    assert [aligned[l] for l in (1, 2, 3)] == pytest.approx(reads["aligned"].accuracy().tolist())
    with pytest.raises(TypeError, match="must be a RunReadout"):
        experiments.exit_accuracy_table({"aligned": "not a readout"})
    with pytest.raises(ValueError, match="non-empty dict"):
        experiments.exit_accuracy_table({})


def test_hand_made_readout_accuracy():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]],
                           [[0.0, 2.0], [0.0, 1.0], [3.0, 0.0]]])  # (L=2, n=3, C=2)
    r = experiments.RunReadout("toy", "aligned", torch.zeros(2, 3, 4), logits, None, torch.tensor([1, 1, 0]),
                               ["a", "b"])
    assert r.accuracy().tolist() == pytest.approx([2 / 3, 1.0])
    table = experiments.exit_accuracy_table({"aligned": r})
    assert table.loc[0, 1] == pytest.approx(2 / 3) and table.loc[0, 2] == pytest.approx(1.0)


# ---- PCA of the class means --------------------------------------------------------------------------------
def _planted(L=3, C=4, d=6, per_class=25, seed=0):
    """Features whose class means lie in a known plane per layer, plus noise that averages out exactly."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(per_class)
    noise = torch.randn(L, C * per_class, d, generator=gen, dtype=torch.float64)
    noise -= torch.stack([noise[:, labels == c].mean(1) for c in range(C)], 1)[:, labels]  # zero mean per class
    centres = torch.randn(L, C, 2, generator=gen, dtype=torch.float64) * 5
    basis = torch.linalg.qr(torch.randn(L, d, 2, generator=gen, dtype=torch.float64))[0]  # (L, d, 2)
    means = torch.einsum("lck,ldk->lcd", centres, basis) + 3.0  # an offset the PCA must remove
    return means[:, labels] + noise, labels, means


def test_class_mean_pca_matches_an_svd_of_the_class_means():
    feats, labels, means = _planted()
    pca = experiments.class_mean_pca(feats, labels)
    assert pca.means.shape == (3, 4, 2) and pca.components.shape == (3, 2, 6)
    torch.testing.assert_close(pca.explained.sum(1), torch.ones(3, dtype=torch.float64))  # the means span a plane
    for l in range(3):
        centred = means[l] - means[l].mean(0)
        u, s, vt = torch.linalg.svd(centred, full_matrices=False)
        expected = u[:, :2] * s[:2]
        # equal up to the sign of each component
        for k in range(2):
            sign = torch.sign((expected[:, k] * pca.means[l, :, k]).sum())
            torch.testing.assert_close(pca.means[l, :, k], sign * expected[:, k])
        # distances between class means are kept (the plane holds all of their spread)
        torch.testing.assert_close(torch.cdist(pca.means[l], pca.means[l]), torch.cdist(means[l], means[l]))


def test_class_mean_pca_signs_follow_the_next_layer_and_transform_maps_the_means():
    feats, labels, means = _planted(L=4, seed=3)
    pca = experiments.class_mean_pca(feats, labels)
    for l in range(3):
        assert ((pca.means[l] * pca.means[l + 1]).sum(0) >= 0).all()
    torch.testing.assert_close(pca.transform(means), pca.means)  # (L, C, d) means as samples
    projected = pca.transform(feats)
    per_class = torch.stack([projected[:, labels == c].mean(1) for c in range(4)], 1)
    torch.testing.assert_close(per_class, pca.means)


def test_class_mean_pca_rejects_bad_input():
    feats, labels, _ = _planted()
    with pytest.raises(ValueError, match="at least 2 classes"):
        experiments.class_mean_pca(feats, torch.zeros_like(labels))
    with pytest.raises(ValueError, match="num_components must be an integer in 1..3"):
        experiments.class_mean_pca(feats, labels, num_components=4)
    with pytest.raises(ValueError, match=r"labels must be \(n,\)"):
        experiments.class_mean_pca(feats, labels[:-1])
    with pytest.raises(ValueError, match="must be \\(L, n, d\\)"):
        experiments.class_mean_pca(feats[0], labels)
    bad = feats.clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        experiments.class_mean_pca(bad, labels)
    with pytest.raises(TypeError, match="integer class indices"):
        experiments.class_mean_pca(feats, labels.double())
    with pytest.raises(ValueError, match=r"features must be \(L, n, d\)"):
        experiments.class_mean_pca(feats, labels).transform(feats[:, :, :3])


def test_plot_class_means_draws_one_point_per_class():
    feats, labels, _ = _planted()
    pca = experiments.class_mean_pca(feats, labels)
    fig, ax = plt.subplots()
    experiments.plot_class_means(ax, pca, 2, samples=feats[:, :10], sample_labels=labels[:10], classes=list("abcd"),
                             legend=True)
    assert len(ax.collections) == 1 + 4  # the samples, then one mean per class
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list("abcd")
    assert ax.get_title() == "layer 2"
    with pytest.raises(ValueError, match="layer must be an integer in 1..3"):
        experiments.plot_class_means(ax, pca, 0)
    plt.close(fig)


def test_pick_layers():
    assert experiments.pick_layers(6) == [1, 2, 3, 4, 5, 6]
    twelve = experiments.pick_layers(12, 8)
    assert twelve[0] == 1 and twelve[-1] == 12 and len(twelve) == 8 and twelve == sorted(set(twelve))
    assert experiments.pick_layers(30, 1) == [30]
    with pytest.raises(ValueError, match="max_panels must be a positive integer"):
        experiments.pick_layers(6, 0)


# ---- grouping and rank correlation -------------------------------------------------------------------------
def test_mean_by_group_averages_each_group_and_marks_empty_ones():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])  # (L=2, n=4)
    means, counts = experiments.mean_by_group(values, torch.tensor([1, 3, 1, 3]), 3)
    assert counts.tolist() == [2, 0, 2]
    assert means[0].tolist() == [2.0, 20.0] and means[2].tolist() == [3.0, 30.0]
    assert torch.isnan(means[1]).all()
    with pytest.raises(ValueError, match="groups must be numbered 1..3"):
        experiments.mean_by_group(values, torch.tensor([0, 1, 2, 3]), 3)
    with pytest.raises(ValueError, match="float"):
        experiments.mean_by_group(values.long(), torch.tensor([1, 1, 1, 1]), 3)


def test_spearman_equals_scipy_and_is_nan_without_a_warning_when_undefined():
    x, y = np.array([1, 2, 3, 4, 5.0]), np.array([2, 1, 4, 3, 5.0])
    assert metrics.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert metrics.spearman(torch.tensor(x), torch.tensor(-y)) == pytest.approx(-spearmanr(x, y).statistic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))
        assert np.isnan(metrics.spearman([1], [2]))
        assert np.isnan(metrics.spearman([1, 2, float("nan")], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        metrics.spearman([1, 2], [1, 2, 3])


# ---- measured exits --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return adapt(VisionTransformer(ViTConfig(image_size=8, in_chans=1, patch_size=4, depth=3, width=16, heads=2,
                                             num_classes=3)).eval())


def test_time_fixed_exits_reports_every_layer(vit):
    images = torch.randn(16, 1, 8, 8)
    with one_thread():
        table = experiments.time_fixed_exits(vit, images, repeats=3)
    assert table["layer"].tolist() == [1, 2, 3]
    assert (table["time_s"] > 0).all() and table["full_time_s"].nunique() == 1 and (table["speedup"] > 0).all()
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        experiments.time_fixed_exits(vit, images, repeats=0)


def test_measure_early_exit_agrees_with_the_simulation_on_the_same_logits(vit):
    images = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(3))
    logits = per_layer_logits(vit, images)
    policy = ConfidenceExit(float(torch.softmax(logits[0], -1).max(-1).values.median()))
    with one_thread():
        m = experiments.measure_early_exit(vit, images, policy, labels=labels, repeats=2)
    expected = simulate(policy, logits, labels)
    assert torch.equal(m["result"].exit_layer, expected.exit_layer)
    assert torch.equal(m["result"].preds, expected.preds) and m["result"].accuracy == pytest.approx(expected.accuracy)
    assert m["speedup"] > 0 and m["full_s"] > 0 and m["exit_s"] > 0


def test_plain_forward_is_the_models_output_on_the_cpu(vit):
    images = torch.randn(5, 1, 8, 8)
    out = experiments.plain_forward(vit, images)
    assert out.device.type == "cpu" and not out.requires_grad
    torch.testing.assert_close(out, vit.model(images).detach())


# ---- Hugging Face's report on a fresh head -----------------------------------------------------------------
def test_only_the_load_report_is_dropped_and_only_inside_the_block(caplog):
    hf = logging.getLogger("transformers.modeling_utils")
    with caplog.at_level(logging.WARNING, logger="transformers.modeling_utils"):
        level = hf.level
        with experiments.trained._no_fresh_head_report():
            assert hf.level == level  # the level is left alone (transformers acts on it)
            hf.warning("BertForSequenceClassification LOAD REPORT from: /somewhere")
            hf.warning("something else")
        hf.warning("BertForSequenceClassification LOAD REPORT again")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["something else", "BertForSequenceClassification LOAD REPORT again"]


def test_recipe_names():
    assert experiments.recipe_names(["vit-fashion-mnist", "minilm-reviews"]) == ["vit-fashion-mnist", "minilm-reviews"]
    assert experiments.recipe_names("vit-fashion-mnist") == ["vit-fashion-mnist"]
    for bad in ([], [3], None, [""]):
        with pytest.raises(ValueError, match="recipes must be a non-empty list of training recipe names"):
            experiments.recipe_names(bad)


# ---- a notebook's set-up ----------------------------------------------------------------------------------------
def test_start_gives_the_recorder_and_the_feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSIM_CACHE", str(tmp_path / "cache"))
    rec, cache_dir = experiments.start(tmp_path / "out", "07_aligned_accuracy", use_cache=True)
    assert rec.data["notebook"] == "07_aligned_accuracy" and (tmp_path / "out" / "metrics.json").exists()
    assert cache_dir == tmp_path / "cache" / "features"
    _, no_cache = experiments.start(tmp_path / "out", "07_aligned_accuracy", use_cache=False)
    assert no_cache is None
