"""Notebook 11 (self-speculative decoding of a language model) in the smoke profile: the numbers it records."""
import pytest


@pytest.fixture(scope="module")
def run(smoke_profile_runs):
    return smoke_profile_runs[0]["11_elastic_lm"]  # the smoke profile, run once per session (conftest.py)


@pytest.mark.slow
def test_11_elastic_lm_smoke(run):
    assert run.status == "ok", run.error
    n = run.metrics["numbers"]
    models = ["standard", "aligned", "aligned (sampled)"]
    for name in models:
        agreement = n[f"agreement[{name}]"]
        assert len(agreement) == 4 and agreement[-1] == 1.0 and all(0.0 <= a <= 1.0 for a in agreement)
        table = n[f"speculation[{name}]"]
        # every exit layer 1..3 with k = 1, 2 (the smoke profile's draft_tokens)
        assert sorted((r["exit layer"], r["drafts k"]) for r in table) == [(e, k) for e in (1, 2, 3) for k in (1, 2)]
        for r in table:
            assert r["identical"] is True and r["largest |logit gap| at a divergence"] == 0.0
            assert 0.0 <= r["acceptance (measured)"] <= 1.0 and r["speed-up (measured)"] > 0
            k, a = r["drafts k"], r["agreement (teacher-forced)"]
            assert a == pytest.approx(agreement[r["exit layer"] - 1])
            assert r["acceptance (predicted)"] == pytest.approx(sum(a ** i for i in range(1, k + 1)) / k)
            assert r["tokens/pass (predicted)"] == pytest.approx(sum(a ** i for i in range(k + 1)))
            assert 1.0 <= r["tokens/pass (measured)"] <= k + 1
        assert n[f"best_speedup[{name}]"] == max(r["speed-up (measured)"] for r in table)
    checks = {c["name"]: c for c in run.metrics["checks"]}
    assert set(checks) == {"spec_aligned_accepts_more", "spec_output_identical", "spec_aligned_faster",
                           "spec_speedup_predicted"}
    assert checks["spec_output_identical"]["value"] == 1.0 and checks["spec_output_identical"]["passed"]
    gain = min(a - s for a, s in zip(n["agreement[aligned]"][:3], n["agreement[standard]"][:3]))
    assert checks["spec_aligned_accepts_more"]["value"] == pytest.approx(gain)
    peer = n["transformers_assistant_early_exit[aligned]"]
    assert "speedup" in peer or "error" in peer  # transformers raises for GPT-2 models: recorded, not hidden
    calm = {(r["model"], r["threshold"]): r for r in n["confidence_exit"]}
    assert sorted({m for m, _ in calm}) == sorted(models) and len(calm) == 3 * 4
    for r in calm.values():
        assert 1.0 <= r["mean exit layer"] <= 4.0 and 0.0 <= r["agreement with greedy"] <= 1.0
    for ext in ("png", "pdf"):
        assert (run.output_dir / f"acceptance_by_exit_layer.{ext}").stat().st_size > 1000
        assert (run.output_dir / f"speedup_predicted_vs_measured.{ext}").stat().st_size > 1000
        assert (run.output_dir / f"confidence_exit.{ext}").stat().st_size > 1000
