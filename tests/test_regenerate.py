"""The batch runner: profiles checked before anything runs, failures isolated, results kept on Ctrl-C,
the report and the gallery describe the whole profile."""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from headless_chromium import needs_chromium, rendered_dom
from layersim import runner as rg
from layersim.runner.report import _when


def _notebook(path, params_src, body_src, tag=True):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src)
    if tag:
        p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A toy notebook\nWith math: $x^2$."), p,
                nbformat.v4.new_code_cell(body_src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


OK_BODY = """
from pathlib import Path
import time
from layersim.runner.record import Recorder
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
rec = Recorder(output_dir, "01_ok")
rec.number("twice_x", 2 * x)
rec.check(1, "x is positive", x, ">", 0)
fig, ax = plt.subplots(); ax.plot([x, x])
rec.figure(fig, "line")
if hold:  # tell the test this notebook is running, then keep running until interrupted
    Path(hold).write_text("running")
    time.sleep(120)
"""


def _args(project, *more):
    return ["--profile", "smoke", "--notebooks-dir", str(project / "notebooks"),
            "--results-dir", str(project / "results"), *more]


def _make_project(root):
    nbs = root / "notebooks"
    (nbs / "profiles").mkdir(parents=True)
    _notebook(nbs / "01_ok.ipynb", 'x = 1\nhold = ""\noutput_dir = "."', OK_BODY)
    _notebook(nbs / "02_fail.ipynb", 'output_dir = "."', 'raise RuntimeError("boom in the notebook")')
    (nbs / "profiles" / "smoke.yaml").write_text("01_ok:\n  x: 3\n")
    return root


@pytest.fixture
def project(tmp_path):
    return _make_project(tmp_path)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A toy profile run once through the command line: 01_ok passes, 02_fail fails."""
    project = _make_project(tmp_path_factory.mktemp("ran"))
    status = rg.main(_args(project))
    return project, status


def _copy(ran, tmp_path):
    """A private copy of the module's run, for tests that run the runner again on top of it."""
    project, _ = ran
    shutil.copytree(project, tmp_path / "p")
    return tmp_path / "p"


def test_unknown_profile_parameter_is_an_error_before_anything_runs(project):
    (project / "notebooks" / "profiles" / "smoke.yaml").write_text("01_ok:\n  x: 3\n  y_typo: 1\n")
    with pytest.raises(rg.ProfileError) as e:
        rg.regenerate("smoke", notebooks_dir=project / "notebooks", results_dir=project / "results",
                      progress=False)
    msg = str(e.value)
    assert "unknown parameter 'y_typo'" in msg and "['hold', 'output_dir', 'x']" in msg
    assert not (project / "results").exists()  # nothing ran
    # and the command line says so with exit status 2
    assert rg.main(_args(project)) == 2


def test_the_old_command_name_runs_the_runner(project):
    """`python -m layersim.regenerate`, the command's old name, is an alias of `python -m layersim.runner`."""
    (project / "notebooks" / "profiles" / "smoke.yaml").write_text("01_ok:\n  y_typo: 1\n")
    proc = subprocess.run([sys.executable, "-m", "layersim.regenerate", *_args(project)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown parameter 'y_typo'" in proc.stderr
    assert not (project / "results").exists()

def test_profile_naming_a_missing_notebook_or_missing_profile(project):
    (project / "notebooks" / "profiles" / "smoke.yaml").write_text("03_missing:\n  a: 1\n")
    with pytest.raises(rg.ProfileError, match="names notebook '03_missing', which does not exist"):
        rg.plan("smoke", project / "notebooks")
    with pytest.raises(rg.ProfileError, match=r"profile 'papr' not found.*Known profiles: \['smoke'\]"):
        rg.plan("papr", project / "notebooks")
    with pytest.raises(rg.ProfileError, match="--only '09_nope'"):
        rg.plan("smoke", project / "notebooks", only=["09_nope"])


def test_profile_names_are_names_not_paths(project, capsys):
    # notebooks/profiles/../profiles/t.yaml exists, so a path-like name would find a profile file ...
    (project / "notebooks" / "profiles" / "t.yaml").write_text("01_ok:\n  x: 3\n")
    status = rg.main(["--profile", "../profiles/t", "--notebooks-dir", str(project / "notebooks"),
                      "--results-dir", str(project / "results")])
    assert status == 2
    assert "not a path" in capsys.readouterr().err
    assert not (project / "profiles").exists() and not (project / "results").exists()  # ... and write outside
    for bad in ("/etc/t", "t/../t", ".t", "", "t.yaml"):
        with pytest.raises(rg.ProfileError, match="letters, digits"):
            rg.check_profile_name(bad)
    assert rg.check_profile_name("my-gpu_2") == "my-gpu_2"


def test_notebook_without_parameters_cell_is_rejected(project):
    _notebook(project / "notebooks" / "03_untagged.ipynb", 'output_dir = "."', "pass", tag=False)
    with pytest.raises(rg.ProfileError, match="no cell tagged 'parameters'"):
        rg.plan("smoke", project / "notebooks")


def test_bad_jobs_is_a_clear_error(project, capsys):
    with pytest.raises(ValueError, match="jobs must be a whole number >= 1"):
        rg.regenerate("smoke", notebooks_dir=project / "notebooks", results_dir=project / "results", jobs=0)
    with pytest.raises(SystemExit) as e:
        rg.main(_args(project, "--jobs", "0"))
    assert e.value.code == 2 and "--jobs must be 1 or more" in capsys.readouterr().err


def test_failing_notebook_does_not_stop_the_others(ran, capsys):
    project, status = ran
    assert status == 1
    out = project / "results" / "smoke"
    report = (out / "REPORT.md").read_text()
    assert "**1 of 2 notebooks ok**" in report and "**1 of 1 claim checks passed**" in report
    assert re.search(r"\| 02_fail \| \*\*FAILED\*\* \| \d{4}-\d\d-\d\d \d\d:\d\d \|", report)
    assert "RuntimeError: boom in the notebook" in report
    assert "`02_fail/02_fail.ipynb`" in report  # where the executed copy is, relative to the report
    assert (out / "02_fail" / "02_fail.ipynb").exists()
    assert "`twice_x`: 6" in report  # 01_ok ran with the profile's x = 3
    assert (out / "01_ok" / "line.png").exists() and (out / "01_ok" / "line.pdf").exists()
    assert json.loads((out / "01_ok" / "run.json").read_text())["status"] == "ok"
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".trash-*"))  # staging folders swapped in


def test_report_claims_table_and_parameters_line(ran):
    project, _ = ran
    report = (project / "results" / "smoke" / "REPORT.md").read_text()
    assert "| check | claim | value | op | threshold | result | notebook |" in report
    assert "| x is positive | 1 | 3 | > | 0 | pass | 01_ok |" in report
    assert "Parameters: `x=3`." in report
    # a notebook the profile gives no parameters: the line says so (it used to read "Parameters:" blank)
    section = report.split("### 02_fail")[1]
    assert "Parameters: the notebook defaults." in section


def test_report_files_are_readable_by_everyone(ran):
    project, _ = ran
    out = project / "results" / "smoke"
    for path in [out / "REPORT.md", out / "index.html", out / "01_ok" / "metrics.json", out / "01_ok" / "run.json",
                 out / "01_ok" / "01_ok.ipynb", out / "01_ok" / "01_ok.html", out / "01_ok" / "line.png"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_executed_notebook_shows_no_machine_path(ran):
    project, _ = ran
    executed = project / "results" / "smoke" / "01_ok" / "01_ok.ipynb"
    text = executed.read_text()
    for machine_path in {str(project), str(project.resolve()), str(rg.repo_root())}:
        assert machine_path not in text
    nb = json.loads(text)
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert 'output_dir = "."' in "".join(injected[0]["source"])  # runs in its own results folder
    assert nb["metadata"]["papermill"]["output_path"] == "01_ok.ipynb"


def test_html_page_and_gallery_fetch_nothing_from_the_network(ran):
    project, _ = ran
    out = project / "results" / "smoke"
    page = (out / "01_ok" / "01_ok.html").read_text()
    assert 'src="../mathjax/MathJax.js?config=' in page
    assert (out / "mathjax" / "MathJax.js").exists() and (out / "mathjax" / "jax" / "input" / "TeX").is_dir()
    for html_text in (page, (out / "index.html").read_text()):
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html_text.split("<body")[0])  # head: no CDN
        assert not re.search(r"""<(script|img|link)[^>]+(src|href)=["']?(https?:)?//""", html_text)


@needs_chromium
def test_gallery_index_shows_every_figure(ran):
    project, _ = ran
    out = project / "results" / "smoke"
    index = (out / "index.html").read_text()
    assert "01_ok/line.png" in index and "01_ok/01_ok.html" in index and "02_fail" in index
    # the same page with a probe that notes each image's decoded size once everything loaded
    probe = out / ".index-probe.html"
    probe.write_text(index.replace("</body>", """<script>
window.addEventListener('load', () => { for (const img of document.images)
  img.setAttribute('data-loaded', img.complete && img.naturalWidth > 0 ? img.naturalWidth : 0); });
</script></body>"""))
    try:
        dom = rendered_dom(probe, budget_ms=5000)
    finally:
        probe.unlink()
    images = re.findall(r"<img[^>]*>", dom)
    assert len(images) == 1  # one figure in this profile: 01_ok's line
    for img in images:
        loaded = re.search(r'data-loaded="(\d+)"', img)
        assert loaded and int(loaded.group(1)) > 100, f"figure did not load: {img}"


def test_only_keeps_the_whole_profile_in_the_report(ran, tmp_path):
    project = _copy(ran, tmp_path)
    before = json.loads((project / "results" / "smoke" / "01_ok" / "run.json").read_text())["finished"]
    runs = rg.regenerate("smoke", only=["02_fail"], notebooks_dir=project / "notebooks",
                         results_dir=project / "results", progress=False)
    assert [r.name for r in runs] == ["02_fail"]
    report = (project / "results" / "smoke" / "REPORT.md").read_text()
    when = _when(before)
    assert f"| 01_ok | ok (earlier run, {when}) | {when} |" in report  # from its last results, with their date
    assert f"| x is positive | 1 | 3 | > | 0 | pass | 01_ok ({when}) |" in report
    assert "`twice_x`: 6" in report and "--only 02_fail" in report
    assert "**1 of 2 notebooks ok** (1 ran this time" in report


def test_notebook_that_records_nothing_counts_as_failed(project):
    _notebook(project / "notebooks" / "03_silent.ipynb", 'output_dir = "."', "pass")
    runs = rg.regenerate("smoke", only=["03_silent"], notebooks_dir=project / "notebooks",
                         results_dir=project / "results", progress=False)
    assert [r.name for r in runs] == ["03_silent"]
    assert runs[0].status == "failed" and "recorded no numbers" in runs[0].error
    report = (project / "results" / "smoke" / "REPORT.md").read_text()
    assert "| 01_ok | not run yet |" in report and "| 02_fail | not run yet |" in report


def _processes_under(folder: Path) -> list:
    """Processes whose working directory lies in `folder` (a kernel left running would)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append((proc.name, cwd))
    return found


def test_ctrl_c_keeps_the_last_results(ran, tmp_path):
    project = _copy(ran, tmp_path)
    out = project / "results" / "smoke"
    executed_before = (out / "01_ok" / "01_ok.ipynb").read_bytes()
    metrics_before = (out / "01_ok" / "metrics.json").read_text()
    marker = tmp_path / "running"
    (project / "notebooks" / "profiles" / "smoke.yaml").write_text(f"01_ok:\n  x: 5\n  hold: {str(marker)!r}\n")
    proc = subprocess.Popen([sys.executable, "-m", "layersim.runner", *_args(project, "--only", "01_ok")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # the notebook has recorded its new numbers and now sleeps
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "keep their last results" in err
    # the last good results are untouched: the half-run's numbers (x = 5) never replaced them
    assert (out / "01_ok" / "metrics.json").read_text() == metrics_before
    assert (out / "01_ok" / "01_ok.ipynb").read_bytes() == executed_before
    report = (out / "REPORT.md").read_text()
    assert re.search(r"\| 01_ok \| \*\*interrupted\*\* \(last results from \d{4}-\d\d-\d\d \d\d:\d\d kept\)",
                     report)
    assert "`twice_x`: 6" in report and "| 02_fail | **FAILED** (earlier run" in report
    assert "**1 of 2 notebooks ok**" in report  # the kept, good results of 01_ok count as ok
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".trash-*"))  # the staging folder is gone
    deadline = time.monotonic() + 15
    while _processes_under(out) and time.monotonic() < deadline:  # the kernel was shut down too
        time.sleep(0.5)
    assert _processes_under(out) == []


def test_jobs_runs_notebooks_side_by_side(project):
    body = """
import json, time
start = time.time()
time.sleep(3)
with open("metrics.json", "w") as f:  # what a Recorder writes, without importing torch
    json.dump({"notebook": name, "numbers": {"start": start, "end": time.time()}}, f)
"""
    nbs = project / "notebooks"
    for f in nbs.glob("*.ipynb"):
        f.unlink()
    (nbs / "profiles" / "smoke.yaml").write_text("")
    for name in ("01_a", "02_b"):
        _notebook(nbs / f"{name}.ipynb", f'name = "{name}"\noutput_dir = "."', body)
    runs = rg.regenerate("smoke", notebooks_dir=nbs, results_dir=project / "results", progress=False, jobs=2)
    assert [r.status for r in runs] == ["ok", "ok"]
    a, b = (r.metrics["numbers"] for r in runs)
    assert a["start"] < b["end"] and b["start"] < a["end"]  # the two ran at the same time


def test_a_notebook_that_could_not_start_keeps_its_last_results(ran, tmp_path):
    project = _copy(ran, tmp_path)
    out = project / "results" / "smoke"
    before = sorted(p.name for p in (out / "01_ok").iterdir())
    runs = rg.regenerate("smoke", only=["01_ok"], notebooks_dir=project / "notebooks",
                         results_dir=project / "results", kernel="no-such-kernel", progress=False)
    assert runs[0].status == "failed" and "No such kernel named no-such-kernel" in runs[0].error
    assert sorted(p.name for p in (out / "01_ok").iterdir()) == before  # nothing replaced them
    report = (out / "REPORT.md").read_text()
    assert "| 01_ok | **FAILED** (nothing was executed; last results from " in report
    assert "`twice_x`: 6" in report


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell does for `make figures &` or nohup


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "started-with-sigint-ignored"])
def test_a_killed_runner_leaves_no_notebook_running(ran, tmp_path, background):
    project = _copy(ran, tmp_path)
    out = project / "results" / "smoke"
    marker = tmp_path / "running"
    (project / "notebooks" / "profiles" / "smoke.yaml").write_text(f"01_ok:\n  x: 5\n  hold: {str(marker)!r}\n")
    proc = subprocess.Popen([sys.executable, "-m", "layersim.runner", *_args(project, "--only", "01_ok")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_ignore_sigint if background else None)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        proc.kill()  # SIGKILL: the runner cannot clean up; its papermill child is told by the kernel (Linux)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while _processes_under(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_under(out) == []  # papermill and its kernel are gone
    assert (out / "01_ok" / "metrics.json").exists() and "twice_x\": 6" in (out / "01_ok" / "metrics.json").read_text()
    from layersim.storage import clean_leftovers
    assert [p.name.startswith(".tmp-01_ok-") for p in clean_leftovers(out)] == [True]  # next run's clean-up


# ---- issue 18: profiles named twice, results dir that is a file, damaged results, two runners, Ctrl-C -------
def test_a_profile_naming_a_notebook_twice_or_not_utf8_is_an_error(project, capsys):
    profile = project / "notebooks" / "profiles" / "smoke.yaml"
    profile.write_text("01_ok:\n  x: 3\n01_ok:\n  x: 4\n")  # safe_load silently kept x: 4
    with pytest.raises(rg.ProfileError, match="'01_ok' is given twice"):
        rg.plan("smoke", project / "notebooks")
    profile.write_bytes("01_ok:\n  x: 3  # caf\u00e9\n".encode("latin-1"))
    assert rg.main(_args(project)) == 2
    assert f"{profile} is not UTF-8 text" in capsys.readouterr().err
    assert not (project / "results").exists()


def test_results_dir_that_is_a_file_is_a_sentence_and_status_2(project, capsys):
    (project / "results").write_text("not a folder")
    assert rg.main(_args(project)) == 2
    err = capsys.readouterr().err
    assert "--results-dir must be a folder" in err and "Traceback" not in err


def test_a_second_runner_on_the_same_results_refuses(project, capsys):
    import fcntl

    out = project / "results" / "smoke"
    out.mkdir(parents=True)
    with open(out / ".runner.lock", "a+") as held:  # a runner at work on this profile
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        held.write("pid 12345 on elsewhere")
        held.flush()
        assert rg.main(_args(project)) == 2
    err = capsys.readouterr().err
    assert "another runner is already running profile 'smoke'" in err and "pid 12345 on elsewhere" in err
    assert not (out / "REPORT.md").exists()  # it wrote nothing


def test_damaged_earlier_results_are_reported_as_damaged(tmp_path):
    from layersim.runner.report import write_report
    from layersim.runner.results import last_results

    out = tmp_path / "smoke"
    for name, run, metrics in [("01_a", "{not json", None), ("02_b", None, "{not json"),
                               ("03_c", '"a string"', None), ("04_d", None, None)]:
        (out / name).mkdir(parents=True)
        record = {"notebook": name, "status": "ok", "seconds": 1.0, "error": "", "finished": "2025-01-01T00:00:00",
                  "parameters": {}}
        (out / name / "run.json").write_text(run if run is not None else json.dumps(record))
        if metrics is not None:
            (out / name / "metrics.json").write_text(metrics)
    runs = [last_results(n, out) for n in ("01_a", "02_b", "03_c", "04_d", "05_never")]
    assert [r.status for r in runs] == ["damaged", "damaged", "damaged", "damaged", "not run"]
    assert "run.json is damaged" in runs[0].error and "metrics.json is damaged" in runs[1].error
    assert "metrics.json is missing" in runs[3].error
    report = write_report(runs, "smoke", out / "REPORT.md")
    assert "**0 of 5 notebooks ok**" in report and report.count("**DAMAGED**") == 4


def test_the_headline_counts_kept_good_results_of_an_interrupted_notebook_as_ok(tmp_path):
    from layersim.runner.report import write_report
    from layersim.runner.results import NotebookRun

    kept_ok = NotebookRun("01_ok", "interrupted", 0.0, tmp_path / "01_ok", {}, finished="2025-01-01T00:00:00",
                          kept=True, kept_status="ok")
    kept_failed = NotebookRun("02_fail", "interrupted", 0.0, tmp_path / "02_fail", {},
                              finished="2025-01-01T00:00:00", kept=True, kept_status="failed")
    never = NotebookRun("03_new", "interrupted", 0.0, tmp_path / "03_new", {}, kept=True)
    report = write_report([kept_ok, kept_failed, never], "smoke", tmp_path / "REPORT.md")
    assert "**1 of 3 notebooks ok**" in report
