"""Notebook 09 (a language model read out at every layer) in the smoke profile: the numbers it records."""
import pytest



@pytest.fixture(scope="module")
def run(smoke_profile_runs):
    return smoke_profile_runs[0]["09_language_model"]  # the smoke profile, run once per session (conftest.py)


@pytest.mark.slow
def test_09_language_model_smoke(run):
    assert run.status == "ok", run.error
    n = run.metrics["numbers"]
    assert n["num_layers"] == 30 and n["num_tokens"] == 31  # one sequence of 32 tokens: 31 next-token targets
    acc, skipped = n["accuracy_final_norm"], n["accuracy_norm_skipped"]
    assert len(acc) == 30 and acc[-1] == skipped[-1]  # layer L is the model's own prediction either way
    assert acc[-1] > max(acc[:10])  # a standard model's shallow layers are hardly readable by its last head
    cos = n["cos_to_last"]
    assert cos[-1] == pytest.approx(1.0) and cos[0] < 0.5 < cos[-2]
    assert 0.0 <= n["early_saturation_norm_skipped"] <= n["early_saturation_final_norm"] < 1.0
    assert n["generated"]["30"].startswith(" Paris")  # exiting at the last layer is the model's own answer
    assert n["multi_exit_extra_parameters"] == 29 * (49152 * 576 + 49152)  # (L-1)(Cd + C)
    assert all(c["passed"] for c in run.metrics["checks"]), run.metrics["checks"]
    for ext in ("png", "pdf"):
        assert (run.output_dir / f"lm_layers.{ext}").stat().st_size > 1000
