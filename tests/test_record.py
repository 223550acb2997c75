"""What notebooks record: numbers, claim checks, figures; atomic and readable back."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layersim.record import Recorder, load_metrics  # noqa: E402


def test_numbers_checks_and_figures_round_trip(tmp_path):
    rec = Recorder(tmp_path, "nb")
    rec.number("per_layer", torch.tensor([0.5, 1.0]))
    assert rec.check(1, "rho high", 0.95, ">=", 0.9) is True
    assert rec.check(2, "gap small", 0.3, "<", 0.2) is False
    assert rec.check(2, "nan never passes", float("nan"), "<", 1.0) is False
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    paths = rec.figure(fig, "curve")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    m = load_metrics(tmp_path)
    assert m["numbers"]["per_layer"] == [0.5, 1.0]
    assert [(c["name"], c["passed"]) for c in m["checks"]] == [
        ("rho high", True), ("gap small", False), ("nan never passes", False)]
    assert m["figures"] == ["curve"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_rechecking_a_name_replaces_it(tmp_path):
    rec = Recorder(tmp_path, "nb")
    rec.check(1, "x", 0.1, ">", 0.5)
    rec.check(1, "x", 0.9, ">", 0.5)
    assert [c["passed"] for c in load_metrics(tmp_path)["checks"]] == [True]


def test_bad_operator_and_corrupt_file_are_clear_errors(tmp_path):
    rec = Recorder(tmp_path, "nb")
    with pytest.raises(ValueError, match="op must be one of"):
        rec.check(1, "x", 1.0, "=>", 0.5)
    (tmp_path / "metrics.json").write_text('{"numbers": {')
    with pytest.raises(ValueError, match="not valid JSON.*rerun the notebook"):
        load_metrics(tmp_path)
