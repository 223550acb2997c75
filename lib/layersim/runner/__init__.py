"""Regenerate the paper's results: run every notebook through papermill for one profile.

    python -m layersim.runner --profile {smoke,default,paper} [--only NAME ...] [--jobs N]

For each notebook ``notebooks/NN_name.ipynb`` the runner takes its parameters from
``notebooks/profiles/<profile>.yaml`` (a mapping ``notebook name -> {parameter: value}``; a notebook
the profile does not name runs with its own defaults) and runs it into ``results/<profile>/<name>/``:
the executed notebook, its HTML page, its figures (PNG and PDF), the numbers it recorded
(``metrics.json``, see `layersim.runner.record`) and the runner's record of the run (``run.json``: status,
time, parameters, when). Then it writes, beside each other in ``results/<profile>/``:

- ``REPORT.md``: every notebook of the profile with its status, run time and figures, the paper's
  claims as numeric checks (check, claim, value, comparison, threshold, pass / fail; the thresholds
  come from ``layersim/runner/claims.yaml``) and the recorded numbers;
- ``index.html``: the gallery, the same in a browser, with every figure and a link to each
  notebook's HTML page (nbconvert; its math typeset by a MathJax copy in ``mathjax/``, no network).

Safe to stop. Each notebook runs in a staging folder (``.tmp-<name>-...``) that replaces its results
folder only when the notebook has finished, so Ctrl-C keeps the last results of the notebook it
stopped: the report marks it ``interrupted`` and the runner exits with status 130. A notebook that
did not run this time (``--only``, or after an interrupt) is reported from its last results, with
their date, so the report always describes the whole profile.

Executed notebooks read like a paper's supplement: the kernel runs with
`layersim.progress.batch_environment()` (one summary line per long step instead of progress bars),
in the notebook's own results folder with ``output_dir = "."``, and the paths papermill records are
made relative, so no path of the machine that ran it is published.

Before anything runs, every profile parameter is checked against the notebook's ``parameters``
cell: an unknown name is an error. A failing notebook does not stop the others; the runner exits
with status 1 and the report says which notebook failed, with what error, and where its executed
copy is. ``--jobs N`` runs N notebooks side by side (caches are shared safely through
`layersim.storage.file_lock`); each kernel then gets ``cores / N`` threads.

Modules
-------
* :mod:`~layersim.runner.profiles`: profile names, the notebooks' parameters, `plan` (checked before
  anything runs).
* :mod:`~layersim.runner.results`: `NotebookRun`, the files of a results folder, `last_results`.
* :mod:`~layersim.runner.jobs`: running the notebooks through papermill, `jobs` at a time, stoppable.
* :mod:`~layersim.runner.report`: ``REPORT.md`` (`write_report`).
* :mod:`~layersim.runner.gallery`: the HTML pages, their offline MathJax, ``index.html`` (`write_index`).
* :mod:`~layersim.runner.cli`: `regenerate` and `main` (``python -m layersim.runner``).
* :mod:`~layersim.runner.record`: what a notebook records (`Recorder`), with the thresholds of the claim
  checks in ``claims.yaml`` beside it.
"""

from __future__ import annotations

from ..storage import repo_root  # noqa: F401  (where default_notebooks_dir and default_results_dir point)
from .cli import main, regenerate
from .gallery import MATHJAX_CONFIG, install_mathjax, mathjax_source, notebook_to_html, write_index
from .jobs import STOP_WAIT_S
from .profiles import (PROFILES, RUNNER_PARAMETERS, ProfileError, check_profile_name, default_notebooks_dir,
                       default_results_dir, list_notebooks, load_profile, notebook_parameters, plan)
from .record import CLAIMS_FILE, METRICS_FILE, Recorder, load_claims, load_metrics
from .report import write_report
from .results import INDEX_FILE, MATHJAX_DIR, REPORT_FILE, RUN_FILE, NotebookRun, last_results

__all__ = ["regenerate", "main", "PROFILES", "RUNNER_PARAMETERS", "ProfileError", "check_profile_name",
           "default_notebooks_dir", "default_results_dir", "list_notebooks", "load_profile", "notebook_parameters",
           "plan", "NotebookRun", "last_results", "RUN_FILE", "REPORT_FILE", "INDEX_FILE", "MATHJAX_DIR",
           "MATHJAX_CONFIG", "STOP_WAIT_S", "write_report", "write_index", "notebook_to_html", "mathjax_source",
           "install_mathjax", "Recorder", "load_claims", "load_metrics", "CLAIMS_FILE", "METRICS_FILE"]
