"""The batch runner: profiles checked before anything runs, failures isolated, the report."""
import nbformat
import pytest

from layersim import regenerate as rg


def _notebook(path, params_src, body_src, tag=True):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src)
    if tag:
        p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body_src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


OK_BODY = """
from layersim.record import Recorder
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
rec = Recorder(output_dir, "01_ok")
rec.number("twice_x", 2 * x)
rec.check(1, "x is positive", x, ">", 0)
fig, ax = plt.subplots(); ax.plot([x, x])
rec.figure(fig, "line")
"""


@pytest.fixture
def project(tmp_path):
    nbs = tmp_path / "notebooks"
    (nbs / "profiles").mkdir(parents=True)
    _notebook(nbs / "01_ok.ipynb", 'x = 1\noutput_dir = "."', OK_BODY)
    _notebook(nbs / "02_fail.ipynb", 'output_dir = "."', 'raise RuntimeError("boom in the notebook")')
    (nbs / "profiles" / "smoke.yaml").write_text("01_ok:\n  x: 3\n")
    return tmp_path


def test_unknown_profile_parameter_is_an_error_before_anything_runs(project):
    (project / "notebooks" / "profiles" / "smoke.yaml").write_text("01_ok:\n  x: 3\n  y_typo: 1\n")
    with pytest.raises(rg.ProfileError) as e:
        rg.regenerate("smoke", notebooks_dir=project / "notebooks", results_dir=project / "results",
                      progress=False)
    msg = str(e.value)
    assert "unknown parameter 'y_typo'" in msg and "['output_dir', 'x']" in msg
    assert not (project / "results").exists()  # nothing ran
    # and the command line says so with exit status 2
    assert rg.main(["--profile", "smoke", "--notebooks-dir", str(project / "notebooks"),
                    "--results-dir", str(project / "results")]) == 2


def test_profile_naming_a_missing_notebook_or_missing_profile(project):
    (project / "notebooks" / "profiles" / "smoke.yaml").write_text("03_missing:\n  a: 1\n")
    with pytest.raises(rg.ProfileError, match="names notebook '03_missing', which does not exist"):
        rg.plan("smoke", project / "notebooks")
    with pytest.raises(rg.ProfileError, match=r"profile 'papr' not found.*Known profiles: \['smoke'\]"):
        rg.plan("papr", project / "notebooks")
    with pytest.raises(rg.ProfileError, match="--only '09_nope'"):
        rg.plan("smoke", project / "notebooks", only=["09_nope"])


def test_notebook_without_parameters_cell_is_rejected(project):
    _notebook(project / "notebooks" / "03_untagged.ipynb", 'output_dir = "."', "pass", tag=False)
    with pytest.raises(rg.ProfileError, match="no cell tagged 'parameters'"):
        rg.plan("smoke", project / "notebooks")


def test_failing_notebook_does_not_stop_the_others(project, capsys):
    status = rg.main(["--profile", "smoke", "--notebooks-dir", str(project / "notebooks"),
                      "--results-dir", str(project / "results")])
    assert status == 1
    out = project / "results" / "smoke"
    report = (out / "REPORT.md").read_text()
    assert "1 of 2 notebooks ran" in report and "1 of 1 claim checks passed" in report
    assert "| 02_fail | **FAILED** |" in report and "RuntimeError: boom in the notebook" in report
    assert str(out / "02_fail" / "02_fail.ipynb") in report  # where the executed copy is
    assert (out / "02_fail" / "02_fail.ipynb").exists()
    assert "`twice_x`: 6" in report  # 01_ok ran with the profile's x = 3
    assert (out / "01_ok" / "line.png").exists() and (out / "01_ok" / "line.pdf").exists()
    assert "FAILED notebooks: 02_fail" in capsys.readouterr().err


def test_only_runs_the_named_notebook_and_stale_numbers_are_dropped(project):
    stale = project / "results" / "smoke" / "01_ok"
    stale.mkdir(parents=True)
    (stale / "metrics.json").write_text('{"numbers": {"old": 1}}')
    runs = rg.regenerate("smoke", only=["01_ok"], notebooks_dir=project / "notebooks",
                         results_dir=project / "results", progress=False)
    assert [r.name for r in runs] == ["01_ok"] and runs[0].status == "ok"
    assert runs[0].metrics["numbers"] == {"twice_x": 6}


def test_notebook_that_records_nothing_counts_as_failed(project):
    _notebook(project / "notebooks" / "03_silent.ipynb", 'output_dir = "."', "pass")
    runs = rg.regenerate("smoke", only=["03_silent"], notebooks_dir=project / "notebooks",
                         results_dir=project / "results", progress=False)
    assert runs[0].status == "failed" and "recorded no numbers" in runs[0].error
