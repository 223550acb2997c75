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
    smol_checks = [c for c in run.metrics["checks"] if c["subject"] == "smollm2-135m"]
    assert smol_checks and all(c["passed"] for c in smol_checks), smol_checks
    # part 2: gpt-english cut to 6 steps (too short to show the claims; the checks are recorded, not asserted)
    assert n["trained_num_layers"] == 4 and n["trained_test_tokens"] == 4 * 127  # 4 sequences of 128 tokens
    for obj in ("standard", "aligned", "multi_exit"):
        acc_g, ppl_g = n[f"trained_accuracy[{obj}]"], n[f"trained_perplexity[{obj}]"]
        assert len(acc_g) == len(ppl_g) == 4 and all(0.0 <= a <= 1.0 for a in acc_g)
        assert all(1.0 < p < 2 * 2048 for p in ppl_g)  # 6 steps from a uniform guess over 2,048 tokens
        assert 0.0 <= n[f"trained_early_saturation[{obj}]"] <= 1.0
    # the multi-exit model's last exit is its own head: the same readout as the shared head at layer L
    assert n["trained_exit_accuracy[multi_exit]"][-1] == n["trained_accuracy[multi_exit]"][-1]
    assert sorted(n["trained_generated"]) == ["aligned", "standard"]
    assert sorted(n["trained_generated"]["aligned"]) == ["1", "4"]
    cos_g = n["trained_cos_to_last"]["aligned"]
    assert len(cos_g) == 4 and cos_g[-1] == pytest.approx(1.0)
    gpt_checks = {c["name"] for c in run.metrics["checks"] if c["subject"] == "gpt-english"}
    assert gpt_checks == {"aligned_accuracy_monotone", "aligned_shallow_layers_better", "aligned_last_layer_on_par",
                          "aligned_more_early_saturation"}
    for ext in ("png", "pdf"):
        assert (run.output_dir / f"lm_layers.{ext}").stat().st_size > 1000
        assert (run.output_dir / f"trained_gpt_layers.{ext}").stat().st_size > 1000
