"""Notebooks 03 (similarity vs layer gap), 04 (CKA outliers) and 05 (geodesic) run in the smoke profile through
the batch runner; the numbers they record are checked against what the claims say and what was measured."""
import pytest


MINE = ["03_similarity_vs_distance", "04_cka_outliers", "05_geodesic"]


@pytest.fixture(scope="module")
def runs(smoke_profile_runs):
    return smoke_profile_runs[0]  # the smoke profile, run once per session (conftest.py)


def _ok(runs, name):
    r = runs[name]
    assert r.status == "ok", r.error
    for fig in r.metrics["figures"]:
        for ext in ("png", "pdf"):
            assert (r.output_dir / f"{fig}.{ext}").stat().st_size > 1000
    return r.metrics["numbers"], {(c["name"], c["subject"]): c for c in r.metrics["checks"]}


def test_03_similarity_falls_with_layer_gap(runs):
    n, checks = _ok(runs, "03_similarity_vs_distance")
    assert n["num_layers[minilm-l6]"] == 6 and n["num_samples[minilm-l6]"] == 96
    gap = n["cos_by_gap[minilm-l6]"]
    # measured on the 96 smoke snippets: 1, .768, .606, .497, .411, .304 (same seed, same numbers). The weights are
    # pretrained and fixed, so these values pin how the encoder is read: a change of pooling, of padding or of
    # which block a layer number means moves them by far more than 0.01 (claim 2's shape is asserted below)
    assert gap == pytest.approx([1.0, 0.768, 0.606, 0.497, 0.411, 0.304], abs=0.01)
    assert all(a > b for a, b in zip(gap, gap[1:]))
    assert all(a > b for a, b in zip(n["cka_by_gap[minilm-l6]"], n["cka_by_gap[minilm-l6]"][1:]))
    assert n["min_cos_pair[minilm-l6]"] == pytest.approx(gap[-1])  # the first and the last layer
    assert n["spearman_gap_cos[minilm-l6]"] == pytest.approx(-1.0)
    assert -1.0 <= n["spearman_gap_cos_all_pairs[minilm-l6]"] < -0.8
    assert n["spearman_layer_cos_to_last[minilm-l6]"] == pytest.approx(1.0)
    assert checks[("all_pairs_positive", "minilm-l6")]["passed"]
    assert checks[("similarity_falls_with_gap", "minilm-l6")]["passed"]
    assert set(runs["03_similarity_vs_distance"].metrics["figures"]) == {"similarity_vs_gap", "cos_by_relative_gap"}
    # the tiny ViT the smoke profile trains (3 blocks, CLS token of 300 test images): measured 1, .955, .859
    vit = "train:vit-fashion-mnist"
    assert n[f"num_layers[{vit}]"] == 3 and n[f"num_samples[{vit}]"] == 300
    assert n[f"cos_by_gap[{vit}]"][0] == pytest.approx(1.0) and 0.5 < n[f"cos_by_gap[{vit}]"][2] < n[f"cos_by_gap[{vit}]"][1]
    assert checks[("all_pairs_positive", vit)]["passed"] and checks[("similarity_falls_with_gap", vit)]["passed"]


def test_04_controlled_outliers_move_cka_more_than_cos(runs):
    n, checks = _ok(runs, "04_cka_outliers")
    assert n["outlier_sizes"] == [1, 5, 20]
    ratio = n["cka_over_cos_change[samples]"]
    assert ratio[-1] > 5  # measured 9.3
    assert n["cka_change[samples]"][-1] > 0.15  # measured 0.19: CKA pulled towards 1 at every layer
    assert n["uncentred_cos_change[samples]"][-1] < 2 / 96  # one outlier among 96 samples: its own share
    assert n["cka_change[dimensions]"][-1] > n["cos_change[dimensions]"][-1]  # measured 0.48 vs 0.15
    assert all(a <= b for a, b in zip(n["cka_change[samples]"], n["cka_change[samples]"][1:]))
    assert checks[("cka_outlier_sensitivity", "minilm-l6: 1 outlier sample of size 20")]["passed"]
    assert checks[("cka_outlier_sensitivity", "minilm-l6: 4 outlier dimensions of size 20")]["passed"]


def test_04_real_case_massive_tokens_of_smollm2(runs):
    n, checks = _ok(runs, "04_cka_outliers")
    # 2 documents: the first token of each is an attention sink about 165 times the median length
    assert n["lm_num_tokens"] == 52 and n["lm_num_massive_tokens"] == 2
    assert n["lm_massive_length_ratio"] > 100
    raw_cka, kept_cka = n["lm_cka_to_last[raw]"], n["lm_cka_to_last_without_massive[raw]"]
    assert len(raw_cka) == 30
    assert min(raw_cka[11:29]) > 0.95  # raw states: CKA says layers 12..29 are all like the last one
    assert max(kept_cka[11:29]) < 0.85  # without the 2 tokens it rises gradually instead
    assert n["lm_cka_change_removing_massive[raw]"] > 0.25
    assert n["lm_uncentred_cos_change_removing_massive[raw]"] < 0.02
    assert n["lm_cka_change_removing_massive[normed]"] < 0.05  # the final norm removes the outliers
    normed_cos = n["lm_cos_to_last[normed]"]  # measured .078 .088 ... .62 .68 1: one dip of .001 at layer 10
    assert sum(b > a for a, b in zip(normed_cos, normed_cos[1:])) >= 27 and normed_cos[-2] > 5 * normed_cos[0]
    # the paper's (centred) COS is dragged by the shifted mean too: measured CKA/COS 1.37, below the bar of 2.
    # Pinned (SmolLM2's weights are fixed) so that the report's explanation of this failing check stays true
    check = checks[("cka_outlier_sensitivity", "smollm2-135m raw residual states: 2 massive tokens removed")]
    assert check["value"] == pytest.approx(1.37, abs=0.05) and not check["passed"]


def test_05_geodesic_theory_and_real_straightness(runs):
    n, checks = _ok(runs, "05_geodesic")
    assert n["fraction_samples_cos_rising[geodesic]"] == 1.0
    assert n["median_straightness[geodesic]"] == pytest.approx(1.0)
    assert n["median_straightness[winding]"] < 0.6
    assert n["spearman_cos_to_last_vs_prob[geodesic]"] >= 0.5
    assert n["fraction_samples_prob_rising[winding]"] < n["fraction_samples_prob_rising[geodesic]"]
    prob = n["mean_prob_final_prediction[geodesic]"]
    assert len(prob) == 6 and all(a < b for a, b in zip(prob, prob[1:]))
    assert 0.3 < n["synthetic_last_layer_accuracy"] < 1.0  # 10 classes, held-out samples: measured 0.48
    assert 0.2 < n["median_straightness_from_layer_1[minilm-l6]"] < 0.5  # measured 0.33: far from straight
    # the tiny ViTs (3 blocks): measured 0.82-0.97 (standard and aligned, depending on the smoke recipe),
    # much straighter than MiniLM's 0.33
    minilm = n["median_straightness_from_layer_1[minilm-l6]"]
    for vit in ("train:vit-fashion-mnist", "train:vit-fashion-mnist:aligned"):
        assert minilm + 0.3 < n[f"median_straightness_from_layer_1[{vit}]"] <= 1.0
        assert sum(n[f"mean_relative_step_length[{vit}]"]) == pytest.approx(1.0)
    steps = n["mean_relative_step_length[synthetic geodesic]"]
    assert steps == pytest.approx([0.2] * 5)
    assert checks[("cos_to_last_rises", "synthetic geodesic trajectories")]["passed"]
    assert checks[("similarity_predicts_probability", "synthetic geodesic trajectories")]["passed"]
