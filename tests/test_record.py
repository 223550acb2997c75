"""What notebooks record: numbers, claim checks (thresholds from claims.yaml), figures; atomic,
valid JSON, readable by everyone."""
import json
import math
import stat

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layersim.runner import record  # noqa: E402
from layersim.runner.record import CLAIMS_FILE, Recorder, load_claims, load_metrics  # noqa: E402


def test_numbers_checks_and_figures_round_trip(tmp_path):
    rec = Recorder(tmp_path, "nb")
    rec.number("per_layer", torch.tensor([0.5, 1.0]))
    assert rec.check(1, "rho high", 0.95, ">=", 0.9) is True
    assert rec.check(2, "gap small", 0.3, "<", 0.2) is False
    assert rec.check(2, "nan never passes", float("nan"), "<", 1.0) is False
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    assert rec.figure(fig, "curve") is None  # a cell ending with it prints nothing
    for ext in ("png", "pdf"):
        assert (tmp_path / f"curve.{ext}").stat().st_size > 0
    m = load_metrics(tmp_path)
    assert m["numbers"]["per_layer"] == [0.5, 1.0]
    assert [(c["name"], c["passed"]) for c in m["checks"]] == [
        ("rho high", True), ("gap small", False), ("nan never passes", False)]
    assert m["figures"] == ["curve"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_nan_and_inf_make_valid_json(tmp_path):
    rec = Recorder(tmp_path, "nb")
    rec.check(1, "nan value", float("nan"), ">", 0.0)
    rec.check(1, "inf value", np.float64("inf"), "<", 1.0)
    rec.number("nan number", float("nan"))
    text = (tmp_path / "metrics.json").read_text()
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.json"))
    assert [c["value"] for c in strict["checks"]] == ["nan", "inf"]  # as number() writes them
    assert strict["numbers"]["nan number"] == "nan"
    assert [c["passed"] for c in strict["checks"]] == [False, False]


def test_metrics_and_figures_are_readable_by_everyone(tmp_path):
    rec = Recorder(tmp_path, "nb")
    fig, ax = plt.subplots()
    rec.figure(fig, "f")
    for name in ("metrics.json", "f.png", "f.pdf"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_record_uses_the_storage_atomic_writes():
    assert not hasattr(record, "atomic_write_text")  # one atomic-write helper: layersim.storage's


def test_rechecking_a_name_replaces_it_per_subject(tmp_path):
    rec = Recorder(tmp_path, "nb")
    rec.check(1, "x", 0.1, ">", 0.5)
    rec.check(1, "x", 0.9, ">", 0.5)
    rec.check(1, "x", 0.2, ">", 0.5, subject="other model")
    assert [(c["subject"], c["passed"]) for c in load_metrics(tmp_path)["checks"]] == [("", True),
                                                                                       ("other model", False)]


def test_bad_operator_claim_value_and_corrupt_file_are_clear_errors(tmp_path):
    rec = Recorder(tmp_path, "nb")
    with pytest.raises(ValueError, match="op must be one of"):
        rec.check(1, "x", 1.0, "=>", 0.5)
    with pytest.raises(ValueError, match="claims 1..6"):
        rec.check(7, "x", 1.0, ">", 0.5)
    with pytest.raises(TypeError, match="must be a number; got str"):
        rec.check(1, "x", "0.9", ">", 0.5)
    with pytest.raises(ValueError, match=r"single number; got an array of shape \(2,\)"):
        rec.check(1, "x", torch.tensor([0.1, 0.2]), ">", 0.5)
    with pytest.raises(ValueError, match="threshold of check 'x' must be finite"):
        rec.check(1, "x", 1.0, ">", float("nan"))
    with pytest.raises(ValueError, match="plain file stem"):
        rec.figure(plt.figure(), "../escape")
    assert rec.check(1, "tensor ok", torch.tensor(0.9), ">", np.float32(0.5)) is True
    (tmp_path / "metrics.json").write_text('{"numbers": {')
    with pytest.raises(ValueError, match="not valid JSON.*rerun the notebook"):
        load_metrics(tmp_path)


def test_check_claim_takes_the_threshold_from_the_claims_file(tmp_path):
    rec = Recorder(tmp_path, "nb")
    entry = load_claims()["cos_cka_rank_agreement"]
    assert (entry["claim"], entry["op"], entry["threshold"]) == (1, ">=", 0.8)
    assert rec.check_claim("cos_cka_rank_agreement", 0.85, subject="minilm-l6") is True
    assert rec.check_claim("cos_cka_rank_agreement", 0.75, subject="vit") is False
    checks = load_metrics(tmp_path)["checks"]
    assert [(c["claim"], c["op"], c["threshold"], c["subject"], c["passed"]) for c in checks] == [
        (1, ">=", 0.8, "minilm-l6", True), (1, ">=", 0.8, "vit", False)]
    assert checks[0]["description"] == entry["value"]
    with pytest.raises(ValueError, match=r"no check named 'cos_cka_agreement'.*known checks: \[.*'cos_cka_rank_agreement'"):
        rec.check_claim("cos_cka_agreement", 0.9)


def test_the_shipped_claims_file_is_complete():
    claims = load_claims()
    # every check of the list has one entry, each with its reason
    for name in ("cos_cka_rank_agreement", "all_pairs_positive", "cos_to_last_rises", "similarity_falls_with_gap",
                 "cka_outlier_sensitivity", "similarity_predicts_probability", "aligned_more_early_saturation",
                 "aligned_accuracy_monotone", "multi_exit_parity", "minimal_depth_below_full", "early_exit_speedup"):
        assert name in claims, name
        assert len(claims[name]["why"]) > 40 and math.isfinite(claims[name]["threshold"])
    text = CLAIMS_FILE.read_text()
    assert text.count("\n  why:") == len(claims)


@pytest.mark.parametrize("body, message", [
    ("x: {claim: 1, value: v, op: '>=', threshold: 0.8}", r"missing fields \['why'\]"),
    ("x: {claim: 9, value: v, op: '>=', threshold: 0.8, why: w}", "claims 1..6"),
    ("x: {claim: 1, value: v, op: '=>', threshold: 0.8, why: w}", "op must be one of"),
    ("x: {claim: 1, value: v, op: '>=', threshold: .nan, why: w}", "finite number"),
    ("x: {claim: 1, value: v, op: '>=', threshold: 0.8, why: ''}", "why"),
    ("x: {claim: 1, value: v, op: '>=', threshold: 0.8, why: w, extra: 1}", r"unknown fields \['extra'\]"),
    ("- not a mapping", "must map check names"),
])
def test_malformed_claims_file_names_file_and_check(tmp_path, body, message):
    path = tmp_path / "claims.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message) as e:
        Recorder(tmp_path / "out", "nb", claims=path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("name, value", [("obj", object()), (("a", "b"), 1.0), ("complex", 1 + 2j),
                                         ("set", {1, 2}), ("", 1.0), ("nested", [1.0, object()])])
def test_a_refused_value_records_nothing_and_the_recorder_keeps_working(tmp_path, name, value):
    """Issue 18: one refused value left the recorder failing on every later call, losing the rest."""
    rec = Recorder(tmp_path, "nb")
    rec.number("before", 1.0)
    with pytest.raises(TypeError, match="must be"):
        rec.number(name, value)
    rec.number("after", [1.0, 2.0])
    assert rec.check(1, "c", 0.5, ">=", 0.1)
    fig = plt.figure()
    rec.figure(fig, "fig")
    plt.close(fig)
    saved = load_metrics(tmp_path)
    assert saved["numbers"] == {"before": 1.0, "after": [1.0, 2.0]}
    assert saved["figures"] == ["fig"] and saved["checks"][0]["passed"]


def test_a_figure_that_is_not_a_figure_is_a_sentence(tmp_path):
    rec = Recorder(tmp_path, "nb")
    with pytest.raises(TypeError, match="must be a matplotlib figure"):
        rec.figure("not a figure", "fig")
    rec.number("after", 1)
    assert load_metrics(tmp_path)["numbers"] == {"after": 1}


def test_a_claims_file_that_is_not_utf8_names_the_file(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_bytes("x:\n  claim: 1\n  why: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"claims file {bad} is not UTF-8 text"):
        load_claims(bad)
