"""Notebook 12 (the one-command report on any model) in the smoke profile: the numbers it records, checked
against the reports it wrote and, for a model of ours, against the model's own predictions."""
import json

import pytest
import torch
from scipy.stats import spearmanr

from layersim import experiments
from layersim.runner import default_notebooks_dir, load_profile

MODELS = ["minilm-l6", "smollm2-135m", "vit-fashion-mnist:aligned", "minilm-reviews:aligned"]


@pytest.fixture(scope="module")
def run(smoke_profile_runs):
    return smoke_profile_runs[0]["12_any_model"]  # the smoke profile, run once per session (conftest.py)


def saved(run, name):
    folder = run.output_dir / "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return json.loads((folder / "report.json").read_text()), (folder / "report.html")


@pytest.mark.slow
def test_12_any_model_smoke(run):
    assert run.status == "ok", run.error
    n = run.metrics["numbers"]
    checks = {(c["name"], c["subject"]): c for c in run.metrics["checks"]}
    assert len(checks) == 3 * len(MODELS)
    for name in MODELS:
        report, page = saved(run, name)
        assert page.stat().st_size > 5000 and "data:image/png;base64" in page.read_text()
        cos, cka = torch.tensor(report["cos"]), torch.tensor(report["cka"])
        L = cos.shape[0]
        assert n[f"cos_to_last[{name}]"] == report["cos_to_last"] and len(report["cos_to_last"]) == L
        assert report["cos_to_last"][-1] == pytest.approx(1.0) and torch.allclose(cos, cos.T)
        iu = torch.triu_indices(L, L, offset=1)  # the checks, recomputed from the saved report (scipy)
        rho = spearmanr(cos[iu[0], iu[1]], cka[iu[0], iu[1]]).statistic
        assert checks["cos_cka_rank_agreement", name]["value"] == pytest.approx(rho)
        assert checks["all_pairs_positive", name]["value"] == pytest.approx(float(cos[iu[0], iu[1]].min()))
        rise = spearmanr(range(1, L), cos[-1, :-1]).statistic
        assert checks["cos_to_last_rises", name]["value"] == pytest.approx(rise)
    assert "accuracy" not in saved(run, "minilm-l6")[0]  # MiniLM as shipped has no head: similarity only
    assert "no classification head" in saved(run, "minilm-l6")[0]["info"]["no_readout"]
    assert len(n["accuracy[smollm2-135m]"]) == 30 and "perplexity" in saved(run, "smollm2-135m")[0]
    for ext in ("png", "pdf"):
        assert (run.output_dir / f"cos_to_last_by_model.{ext}").stat().st_size > 1000


@pytest.mark.slow
def test_12_the_last_layer_of_a_trained_model_is_its_own_prediction(run):
    """The report's accuracy at layer L equals the trained ViT's own predictions on the same test images."""
    assert run.status == "ok", run.error
    params = load_profile("smoke", default_notebooks_dir())["12_any_model"]
    vit = experiments.train_models("vit-fashion-mnist", ["aligned"], device="cpu",
                                   overrides=params["recipe_overrides"]["vit-fashion-mnist"])["aligned"]  # cached
    test = vit.test_split()
    images, labels = test.take(range(min(params["n_trained"], len(test))))
    with torch.no_grad():
        own = vit.adapter.model(vit.prepare(images)).argmax(-1)
    accuracy = run.metrics["numbers"]["accuracy[vit-fashion-mnist:aligned]"]
    assert accuracy[-1] == pytest.approx((own == labels).double().mean().item())
