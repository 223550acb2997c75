"""The project's notebooks: habits (stripped, parameters cell), profiles valid, and each notebook
run in the smoke profile through the batch runner with its recorded numbers checked."""
import json
from pathlib import Path

import pytest

from layersim import regenerate as rg

NOTEBOOKS = rg.default_notebooks_dir()


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_committed_stripped_with_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "strip outputs before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert nb["cells"][0]["cell_type"] == "markdown" and "Claim" in "".join(nb["cells"][0]["source"])


@pytest.mark.parametrize("profile", rg.PROFILES)
def test_every_profile_matches_the_notebooks(profile):
    runs = rg.plan(profile, NOTEBOOKS)
    assert set(runs) == set(rg.list_notebooks(NOTEBOOKS))


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    runs = rg.regenerate("smoke", notebooks_dir=NOTEBOOKS, results_dir=out, progress=False)
    return {r.name: r for r in runs}, out


def test_02_cos_vs_cka_smoke(smoke_runs):
    runs, out = smoke_runs
    r = runs["02_cos_vs_cka"]
    assert r.status == "ok", r.error
    n = r.metrics["numbers"]
    assert n["num_layers"] == 6 and n["num_samples"] == 96
    cos_last, cka_last = n["cos_to_last"], n["cka_to_last"]
    assert cos_last[-1] == pytest.approx(1.0) and cka_last[-1] == pytest.approx(1.0)
    # MiniLM mean-pooled: COS to the last layer rises steadily (measured 0.30 .. 0.62, 1.0)
    assert all(a < b for a, b in zip(cos_last, cos_last[1:]))
    assert 0.15 < cos_last[0] < 0.5
    assert n["spearman_cos_cka"] >= 0.9
    gap = n["cos_by_gap"]  # claim 2: closer layers are more similar
    assert gap[0] == pytest.approx(1.0) and all(a > b for a, b in zip(gap, gap[1:]))
    assert all(c["passed"] for c in r.metrics["checks"]), r.metrics["checks"]
    for ext in ("png", "pdf"):
        assert (r.output_dir / f"cos_vs_cka.{ext}").stat().st_size > 1000
    assert "02_cos_vs_cka" in (out / "smoke" / "REPORT.md").read_text()
