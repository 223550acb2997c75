"""Regenerate the paper's results: run every notebook through papermill for one profile.

    python -m layersim.regenerate --profile {smoke,default,paper} [--only NAME ...] [--jobs N]

For each notebook ``notebooks/NN_name.ipynb`` the runner takes its parameters from
``notebooks/profiles/<profile>.yaml`` (a mapping ``notebook name -> {parameter: value}``; a notebook
the profile does not name runs with its own defaults) and runs it into ``results/<profile>/<name>/``:
the executed notebook, its HTML page, its figures (PNG and PDF), the numbers it recorded
(``metrics.json``, see `layersim.record`) and the runner's record of the run (``run.json``: status,
time, parameters, when). Then it writes, beside each other in ``results/<profile>/``:

- ``REPORT.md``: every notebook of the profile with its status, run time and figures, the paper's
  claims as numeric checks (check, claim, value, comparison, threshold, pass / fail; the thresholds
  come from ``layersim/claims.yaml``) and the recorded numbers;
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
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import yaml

from . import progress as _progress
from .record import METRICS_FILE, load_claims
from .storage import (TMP_PREFIX, TRASH_PREFIX, atomic_folder, atomic_write_json, atomic_write_text, clean_leftovers,
                      remove_folder, repo_root)

PROFILES = ("smoke", "default", "paper")
RUNNER_PARAMETERS = ("output_dir",)  # set by the runner, not by a profile
RUN_FILE = "run.json"
REPORT_FILE = "REPORT.md"
INDEX_FILE = "index.html"
MATHJAX_DIR = "mathjax"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
STOP_WAIT_S = 30.0  # after Ctrl-C, how long a notebook gets to shut its kernel down before it is killed
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NOTEBOOK_NAME = re.compile(r"[0-9][0-9]_[A-Za-z0-9_-]+")


class ProfileError(ValueError):
    """A profile that cannot run: bad name, unknown notebook or parameter, missing file, bad YAML."""


def default_notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def default_results_dir() -> Path:
    return repo_root() / "results"


def check_profile_name(profile: str) -> str:
    """A profile is a name (``smoke``, ``default``, ``my-gpu``), never a path: it names both
    ``notebooks/profiles/<profile>.yaml`` and ``results/<profile>/``."""
    if not isinstance(profile, str) or not _PROFILE_NAME.fullmatch(profile):
        raise ProfileError(f"profile must be a name made of letters, digits, '-' and '_' (like "
                           f"{', '.join(PROFILES)}), not a path; got {profile!r}. To use a profile file "
                           "elsewhere, pass --notebooks-dir (the profile is read from <dir>/profiles/).")
    return profile


def list_notebooks(notebooks_dir: Path) -> list:
    """Names (file stems) of the paper notebooks, in order: files named like ``02_cos_vs_cka.ipynb``."""
    return sorted(p.stem for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")
                  if _NOTEBOOK_NAME.fullmatch(p.stem))


def notebook_parameters(path: Path) -> dict:
    """The parameters a notebook declares in its cell tagged ``parameters`` (name -> default text)."""
    import papermill as pm

    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.get("cells", [])):
        raise ProfileError(f"{path} has no cell tagged 'parameters'; tag the cell that sets its parameters")
    return {name: p["default"] for name, p in pm.inspect_notebook(str(path)).items()}


def load_profile(profile: str, notebooks_dir: Path) -> dict:
    """Read ``<notebooks_dir>/profiles/<profile>.yaml`` -> {notebook: {param: value}}."""
    check_profile_name(profile)
    path = Path(notebooks_dir) / "profiles" / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ProfileError(f"profile {profile!r} not found: no file {path}. Known profiles: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ProfileError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        raise ProfileError(f"{path} must map notebook names to parameter mappings, e.g. "
                           "'02_cos_vs_cka: {n_samples: 64}'")
    return {name: dict(params or {}) for name, params in data.items()}


def plan(profile: str, notebooks_dir: Path, only: Optional[Sequence[str]] = None) -> dict:
    """Check the profile against the notebooks and return {notebook: parameters} to run.

    Raises ProfileError listing every problem: a profile entry or --only name with no notebook,
    a parameter the notebook does not declare, a notebook without `output_dir` parameter.
    """
    notebooks_dir = Path(notebooks_dir)
    available = list_notebooks(notebooks_dir)
    settings = load_profile(profile, notebooks_dir)
    problems = []
    for name in settings:
        if name not in available:
            problems.append(f"profile {profile!r} names notebook {name!r}, which does not exist "
                            f"(notebooks: {available})")
    selected = available
    if only:
        unknown = [n for n in only if n not in available]
        problems += [f"--only {n!r}: no such notebook (notebooks: {available})" for n in unknown]
        selected = [n for n in available if n in only]
    runs = {}
    for name in selected:
        declared = notebook_parameters(notebooks_dir / f"{name}.ipynb")
        params = settings.get(name, {})
        for key in params:
            if key in RUNNER_PARAMETERS:
                problems.append(f"profile {profile!r}, notebook {name!r}: {key!r} is set by the runner, "
                                "remove it from the profile")
            elif key not in declared:
                problems.append(f"profile {profile!r}, notebook {name!r}: unknown parameter {key!r}; "
                                f"the notebook's parameters cell defines {sorted(declared)}")
        for key in RUNNER_PARAMETERS:
            if key not in declared:
                problems.append(f"notebook {name!r} has no {key!r} parameter in its parameters cell")
        runs[name] = params
    if problems:
        raise ProfileError("cannot run profile {!r}:\n  - {}".format(profile, "\n  - ".join(problems)))
    return runs


@dataclass
class NotebookRun:
    """One notebook's results in ``output_dir``: from this invocation (``current``) or an earlier one.

    `status`: ``ok``, ``failed``, ``interrupted`` (stopped by Ctrl-C) or ``not run`` (no results yet).
    `kept`: this invocation's attempt left nothing worth keeping (interrupted, or failed before the
    notebook executed, e.g. no such kernel), so `output_dir`, `finished` and `metrics` describe the
    last results from before.
    """
    name: str
    status: str
    seconds: float
    output_dir: Path
    parameters: dict
    error: str = ""
    metrics: dict = field(default_factory=dict)
    finished: str = ""  # ISO time the results in output_dir were made ("" when there are none)
    current: bool = True  # made by this invocation of the runner
    html: bool = False  # output_dir holds the notebook's HTML page
    kept: bool = False  # output_dir holds the last results from before this invocation's attempt

    @property
    def executed(self) -> Path:
        return self.output_dir / f"{self.name}.ipynb"

    @property
    def page(self) -> Path:
        return self.output_dir / f"{self.name}.html"


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def last_results(name: str, out_root: Path) -> NotebookRun:
    """What ``out_root/<name>/`` holds from an earlier run (``status="not run"`` when nothing)."""
    folder = Path(out_root) / name
    record = _read_json(folder / RUN_FILE)
    if record is None:
        return NotebookRun(name, "not run", 0.0, folder, {}, current=False)
    return NotebookRun(name, str(record.get("status", "failed")), float(record.get("seconds", 0.0)), folder,
                       dict(record.get("parameters", {})), str(record.get("error", "")),
                       _read_json(folder / METRICS_FILE) or {}, str(record.get("finished", "")), current=False,
                       html=(folder / f"{name}.html").exists())


# ---- running one notebook ------------------------------------------------------------------------------
@dataclass
class _Job:
    name: str
    params: dict
    stage: Path
    proc: subprocess.Popen
    log: object
    start: float


def _stop_with_parent() -> None:
    """In the papermill child (Linux): receive SIGINT when the runner dies, whatever kills it, so that
    papermill shuts its kernel down instead of running on as an orphan."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    # a runner started in the background (`make figures &`, nohup) inherits SIGINT ignored, and so would
    # papermill and its kernel, which then could not be stopped: give them the default disposition back
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(name: str, params: dict, notebooks_dir: Path, out_root: Path, kernel: str, jobs: int) -> _Job:
    """Start papermill on one notebook, in its own session, into a fresh staging folder."""
    stage = out_root / f"{TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    full = dict(params, output_dir=".")  # the kernel runs in the notebook's results folder
    env = dict(os.environ, **_progress.batch_environment())
    if jobs > 1:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, threads)
    log = tempfile.TemporaryFile()
    cmd = [sys.executable, "-m", "papermill", str(Path(notebooks_dir) / f"{name}.ipynb"),
           str(stage / f"{name}.ipynb"), "--cwd", str(stage), "--kernel", kernel, "--no-progress-bar",
           "--parameters_yaml", yaml.safe_dump(full)]
    # start_new_session: a Ctrl-C in the terminal reaches the runner only; the runner then stops each
    # notebook itself (SIGINT to papermill, which shuts its kernel down), see _stop.
    proc = subprocess.Popen(cmd, cwd=stage, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_stop_with_parent if sys.platform.startswith("linux") else None)
    return _Job(name, params, stage, proc, log, time.perf_counter())


def _stop(job: _Job) -> None:
    """Stop a running notebook: SIGINT (papermill shuts its kernel down), SIGKILL after STOP_WAIT_S
    or at a second Ctrl-C. Its staging folder is removed; its results folder is left as it was."""
    try:
        if job.proc.poll() is None:
            try:
                os.killpg(job.proc.pid, signal.SIGINT)
                job.proc.wait(timeout=STOP_WAIT_S)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                os.killpg(job.proc.pid, signal.SIGKILL)
                job.proc.wait()
    except ProcessLookupError:
        pass
    finally:
        job.log.close()
        remove_folder(job.stage)


def _log_tail(job: _Job, lines: int = 3) -> str:
    job.log.seek(0)
    text = job.log.read().decode("utf-8", "replace")
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " / ".join(tail)


def _publishable(path: Path) -> str:
    """A path as published in an executed notebook: relative to the checkout, else the file name."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(repo_root()))
    except ValueError:
        return path.name


def _finish(job: _Job, notebooks_dir: Path, out_root: Path, profile: str) -> NotebookRun:
    """Read a finished notebook's outcome, write its record and HTML page, swap it into place."""
    import nbformat

    seconds = time.perf_counter() - job.start
    name, stage = job.name, job.stage
    executed = stage / f"{name}.ipynb"
    status, error = "ok", ""
    nb = None
    if executed.exists():
        try:
            nb = nbformat.read(str(executed), as_version=4)
        except Exception as e:  # papermill died while writing it
            status, error = "failed", f"the executed notebook is unreadable ({type(e).__name__}: {e}): {_log_tail(job)}"
    if nb is not None:
        errors = [(c.get("execution_count"), o) for c in nb.cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            count, out = errors[0]
            status, error = "failed", f"cell {count}: {out.get('ename')}: {out.get('evalue')}"
    if job.proc.returncode != 0 and status == "ok":
        status, error = "failed", f"papermill exited with status {job.proc.returncode}: {_log_tail(job)}"
    job.log.close()
    if nb is not None and not any(c.get("execution_count") for c in nb.cells if c.cell_type == "code"):
        nb = None  # papermill wrote the notebook with its parameters, but no cell ran
    if nb is None:  # nothing was executed (no such kernel, papermill died): keep the last results
        remove_folder(stage)
        last = last_results(name, out_root)
        return NotebookRun(name, "failed", seconds, last.output_dir, last.parameters, error, last.metrics,
                           last.finished, current=True, html=last.html, kept=True)
    metrics = {}
    metrics_path = stage / METRICS_FILE
    if metrics_path.exists():
        metrics = _read_json(metrics_path)
        if metrics is None:
            status, error, metrics = "failed", error or f"{METRICS_FILE} is not valid JSON", {}
    elif status == "ok":
        status, error = "failed", f"the notebook recorded no numbers ({METRICS_FILE} missing)"
    page = False
    if nb is not None:
        # papermill records where the notebooks were on this machine: publish relative paths
        meta = nb.metadata.setdefault("papermill", {})
        meta["input_path"] = _publishable(notebooks_dir / f"{name}.ipynb")
        meta["output_path"] = _publishable(out_root / name / f"{name}.ipynb")
        atomic_write_text(executed, nbformat.writes(nb))
        try:
            notebook_to_html(executed, stage / f"{name}.html", mathjax_url=f"../{MATHJAX_DIR}/MathJax.js")
            page = True
        except Exception as e:  # the page is a convenience: its failure is reported, not fatal
            error = (error + "; " if error else "") + f"HTML page not made: {type(e).__name__}: {e}"
    finished = _now()
    atomic_write_json(stage / RUN_FILE, {"notebook": name, "profile": profile, "status": status,
                                         "seconds": round(seconds, 3), "error": error, "finished": finished,
                                         "parameters": job.params})
    target = out_root / name
    trash = out_root / f"{TRASH_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(target, trash)  # the last results step aside ...
    except FileNotFoundError:
        trash = None
    os.replace(stage, target)  # ... the new ones take their place, and only then the old ones go
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return NotebookRun(name, status, seconds, target, job.params, error, metrics, finished, True, page)


def _run_all(runs_plan: dict, notebooks_dir: Path, out_root: Path, profile: str, kernel: str, jobs: int,
             show: bool, done: dict) -> list:
    """Run the planned notebooks, `jobs` at a time, into `done` (name -> NotebookRun).

    Returns the names stopped by a KeyboardInterrupt (empty when all finished); never raises it.
    """
    from tqdm import tqdm

    live = show and _progress.mode() == "live"
    talk = show and _progress.mode() != "off"
    pending = list(runs_plan.items())
    running: dict = {}
    bar = tqdm(total=len(pending), desc=f"regenerate [{profile}]", unit="notebook", file=sys.stderr,
               disable=not live)

    def say(text: str) -> None:
        if live:
            bar.write(text, file=sys.stderr)
        elif talk:
            print(text, file=sys.stderr, flush=True)

    try:
        while pending or running:
            while pending and len(running) < jobs:
                name, params = pending.pop(0)
                running[name] = _start(name, params, notebooks_dir, out_root, kernel, jobs)
                bar.set_postfix_str(", ".join(running))
            for name in [n for n, j in running.items() if j.proc.poll() is not None]:
                job = running[name]
                run = _finish(job, notebooks_dir, out_root, profile)
                del running[name]
                done[name] = run
                bar.update(1)
                bar.set_postfix_str(", ".join(running))
                say(f"{name}: {run.status} in {run.seconds:.1f}s" + (f" -- {run.error}" if run.error else ""))
            time.sleep(0.1)
        return []
    except KeyboardInterrupt:
        stopped = list(running)
        say(f"interrupted: stopping {', '.join(stopped) or 'nothing'}; their last results are kept")
        for job in running.values():
            _stop(job)
        return stopped
    finally:
        bar.close()
        for job in running.values():  # an unexpected error: leave no notebook running
            if job.proc.poll() is None:
                _stop(job)


# ---- report and gallery --------------------------------------------------------------------------------
def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if len(value) > 16:
            return "[" + ", ".join(_fmt(v) for v in value[:16]) + f", ... ({len(value)} values)]"
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _when(iso: str) -> str:
    try:
        return _dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return "unknown date"


def _status_text(r: NotebookRun, markdown: bool = True) -> str:
    bold = (lambda s: f"**{s}**") if markdown else (lambda s: s)
    if r.status == "not run":
        return "not run yet"
    if r.status == "interrupted":
        kept = f"last results from {_when(r.finished)} kept" if r.finished else "no earlier results"
        return f"{bold('interrupted')} ({kept})"
    text = "ok" if r.status == "ok" else bold("FAILED")
    if r.kept:
        kept = f"last results from {_when(r.finished)} kept" if r.finished else "no earlier results"
        return f"{text} (nothing was executed; {kept})"
    return text if r.current else f"{text} (earlier run, {_when(r.finished)})"


def _checks(runs: Sequence[NotebookRun]) -> list:
    rows = [(r, c) for r in runs for c in r.metrics.get("checks", [])]
    return sorted(rows, key=lambda rc: (rc[1].get("claim", 0), rc[0].name, rc[1].get("name", "")))


def _check_name(c: dict) -> str:
    return c.get("name", "?") + (f" ({c['subject']})" if c.get("subject") else "")


def write_report(runs: Sequence[NotebookRun], profile: str, path: Path, *, command: str = "") -> str:
    """Write REPORT.md for `runs` (every notebook of the profile, current or earlier); returns its text."""
    base = Path(path).parent
    rel = lambda p: os.path.relpath(p, base)  # noqa: E731
    have = [r for r in runs if r.status != "not run"]
    ok = [r for r in runs if r.status == "ok"]
    checks = _checks(runs)
    claims = load_claims()
    command = command or f"python -m layersim.regenerate --profile {profile}"
    lines = [f"# Results report: profile `{profile}`", "",
             f"Generated {_now()} on {platform.node() or 'unknown'} (Python {platform.python_version()}) "
             f"by `{command}`. The gallery of the executed notebooks: [{INDEX_FILE}]({INDEX_FILE}).", "",
             f"**{len(ok)} of {len(runs)} notebooks ok**"
             + (f" ({len([r for r in runs if r.current])} ran this time, the others are their last results)"
                if any(not r.current for r in have) else "") + "; "
             f"**{sum(bool(c.get('passed')) for _, c in checks)} of {len(checks)} claim checks passed**.", "",
             "## Notebooks", "",
             "| notebook | status | results from | time (s) | figures | executed notebook | page |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        figs = ", ".join(f"[{f}]({rel(r.output_dir / (f + '.png'))})" for f in r.metrics.get("figures", []))
        executed = f"[{rel(r.executed)}]({rel(r.executed)})" if r.executed.exists() else "-"
        page = f"[html]({rel(r.page)})" if r.html else "-"
        lines.append(f"| {r.name} | {_status_text(r)} | {_when(r.finished) if r.finished else '-'} | "
                     f"{r.seconds:.1f} | {figs or '-'} | {executed} | {page} |")
    problems = [r for r in runs if r.error or r.status == "interrupted"]
    if problems:
        lines += ["", "## Failures and interruptions", ""]
        for r in problems:
            if r.status == "interrupted":
                lines.append(f"- **{r.name}** was interrupted (Ctrl-C) before it finished; "
                             + (f"its results from {_when(r.finished)} are kept and reported here."
                                if r.finished else "it has no earlier results."))
            elif r.kept:
                lines.append(f"- **{r.name}**: {r.error}. Nothing was executed"
                             + (f"; its results from {_when(r.finished)} are kept." if r.finished else "."))
            else:
                lines.append(f"- **{r.name}**: {r.error}. Executed copy (with the traceback): `{rel(r.executed)}`")
    lines += ["", "## Paper claims as numeric checks", ""]
    if checks:
        lines += ["Thresholds and what each check measures: `layersim/claims.yaml` (listed below).", "",
                  "| check | claim | value | op | threshold | result | notebook |", "|---|---|---|---|---|---|---|"]
        for r, c in checks:
            result = "pass" if c.get("passed") else "**FAIL**"
            where = r.name if r.current and not r.kept else f"{r.name} ({_when(r.finished)})"
            lines.append(f"| {_check_name(c)} | {c.get('claim')} | {_fmt(c.get('value'))} | {c.get('op')} | "
                         f"{_fmt(c.get('threshold'))} | {result} | {where} |")
        lines += ["", "### What each check measures", ""]
        for name in dict.fromkeys(c.get("name") for _, c in checks):
            if name in claims:
                e = claims[name]
                lines.append(f"- `{name}` (claim {e['claim']}): {e['value']}. Threshold {e['op']} "
                             f"{_fmt(e['threshold'])}: {e['why']}")
            else:
                desc = next(c.get("description", "") for _, c in checks if c.get("name") == name)
                lines.append(f"- `{name}`: {desc or 'no description'} (not in claims.yaml)")
    else:
        lines.append("No checks were recorded.")
    lines += ["", "## Recorded numbers", ""]
    for r in runs:
        shown = ", ".join(f"`{k}={v!r}`" for k, v in r.parameters.items() if k not in RUNNER_PARAMETERS)
        lines += [f"### {r.name}", ""]
        if r.status == "not run":
            lines += ["Not run yet.", ""]
            continue
        lines += [f"Parameters: {shown or 'the notebook defaults'}. Results from {_when(r.finished)}.", ""]
        numbers = r.metrics.get("numbers", {})
        lines += [f"- `{k}`: {_fmt(v)}" for k, v in numbers.items()] or ["- (none)"]
        lines.append("")
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text


_PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{#- the lab page without what it would fetch from the network: require.js and mermaid (unused here) -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{#- MathJax 2 from the folder beside the page, with the STIX web fonts that copy ships -#}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  displayAlign: "center", messageStyle: "none", menuSettings: {zoom: "None"}
});
</script>
<script src="{{ resources.mathjax_url }}"></script>
{%- endblock html_head_js_mathjax -%}
"""


def notebook_to_html(notebook: Path, out: Path, *, mathjax_url: str) -> Path:
    """Render an executed notebook to a standalone HTML page (nbconvert's lab look) at `out`.

    `mathjax_url` is where the page loads MathJax 2 from, relative to the page (see `install_mathjax`);
    the page fetches nothing from the network.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file="layersim_page.html.j2",
                            extra_loaders=[jinja2.DictLoader({"layersim_page.html.j2": _PAGE_TEMPLATE})],
                            mathjax_url=f"{mathjax_url}?config={MATHJAX_CONFIG}")
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    return atomic_write_text(out, body)


def mathjax_source() -> Path:
    """MathJax 2 as shipped by the PyPI package jupyter-server-mathjax (Jupyter's offline copy)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise ImportError("the HTML pages typeset their math with the MathJax copy of the package "
                          "jupyter-server-mathjax; install it: pip install jupyter-server-mathjax") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


# what MathJax 2 with TeX-AMS-MML_HTMLorMML-full needs from the package: not the SVG output nor the
# translations (the pages are in English), about 8 MB instead of 12
_MATHJAX_SKIP = ("localization", "SVG", "*.md")


def install_mathjax(folder: Path) -> Path:
    """Copy MathJax into `folder` (``results/<profile>/mathjax``) unless the same copy is there."""
    folder = Path(folder)
    from importlib.metadata import version

    source = mathjax_source()
    stamp = f"jupyter-server-mathjax {version('jupyter-server-mathjax')}\n"
    if (folder / ".source").exists() and (folder / ".source").read_text() == stamp:
        return folder
    remove_folder(folder)
    with atomic_folder(folder) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_MATHJAX_SKIP))
        (tmp / ".source").write_text(stamp)
        for p in [tmp, *tmp.rglob("*")]:  # a folder others can read, like any results
            p.chmod(0o755 if p.is_dir() else 0o644)
    return folder


_INDEX_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .3em .6em; }
th { background: #f3f3f3; } .fail, .failed, .interrupted { color: #b00; font-weight: bold; } .pass, .ok { color: #070; }
figure { display: inline-block; margin: .5em; vertical-align: top; } figure img { max-width: 100%; border: 1px solid #ddd; }
section { border-top: 1px solid #ddd; margin-top: 2em; } .muted { color: #666; }
"""


def write_index(runs: Sequence[NotebookRun], profile: str, path: Path) -> str:
    """Write the gallery page ``index.html`` (beside REPORT.md): every notebook with its status,
    its figures and links to its HTML page and executed notebook, and the claims table."""
    base = Path(path).parent
    e = html.escape
    rel = lambda p: e(Path(os.path.relpath(p, base)).as_posix())  # noqa: E731
    checks = _checks(runs)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>layersim results: profile {e(profile)}</title><style>{_INDEX_STYLE}</style></head><body>",
             f"<h1>layersim results: profile <code>{e(profile)}</code></h1>",
             f"<p class='muted'>Generated {e(_now())}. Numbers and claim checks in detail: "
             f"<a href='{REPORT_FILE}'>{REPORT_FILE}</a>.</p>",
             "<h2>Paper claims as numeric checks</h2>"]
    if checks:
        parts.append("<table><tr><th>check</th><th>claim</th><th>value</th><th>op</th><th>threshold</th>"
                     "<th>result</th><th>notebook</th></tr>")
        for r, c in checks:
            result = "pass" if c.get("passed") else "fail"
            parts.append(f"<tr><td>{e(_check_name(c))}</td><td>{e(str(c.get('claim')))}</td>"
                         f"<td>{e(_fmt(c.get('value')))}</td><td>{e(str(c.get('op')))}</td>"
                         f"<td>{e(_fmt(c.get('threshold')))}</td><td class='{result}'>{result}</td>"
                         f"<td>{e(r.name)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No checks were recorded.</p>")
    parts.append("<h2>Notebooks</h2>")
    for r in runs:
        status = _status_text(r, markdown=False)
        links = []
        if r.html:
            links.append(f"<a href='{rel(r.page)}'>the executed notebook as a page</a>")
        if r.executed.exists():
            links.append(f"<a href='{rel(r.executed)}'>.ipynb</a>")
        parts.append(f"<section><h3 id='{e(r.name)}'>{e(r.name)}</h3><p><span class='{e(r.status)}'>"
                     f"{e(status)}</span>" + (f", {r.seconds:.1f} s" if r.status != "not run" else "")
                     + (f", results from {e(_when(r.finished))}" if r.finished else "")
                     + (" &middot; " + " &middot; ".join(links) if links else "") + "</p>")
        if r.error and r.status != "ok":
            parts.append(f"<p class='failed'>{e(r.error)}</p>")
        for fig in r.metrics.get("figures", []):
            png, pdf = r.output_dir / f"{fig}.png", r.output_dir / f"{fig}.pdf"
            parts.append(f"<figure><a href='{rel(png)}'><img src='{rel(png)}' alt='{e(fig)}'></a>"
                         f"<figcaption>{e(fig)} (<a href='{rel(pdf)}'>PDF</a>)</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    text = "\n".join(parts) + "\n"
    atomic_write_text(path, text)
    return text


# ---- the runner ----------------------------------------------------------------------------------------
def regenerate(profile: str, *, only: Optional[Sequence[str]] = None, notebooks_dir: Optional[Path] = None,
               results_dir: Optional[Path] = None, kernel: str = "python3", progress: bool = True,
               jobs: int = 1) -> list:
    """Run the notebooks of `profile` (all, or those named in `only`), `jobs` at a time, then write
    REPORT.md and index.html for the whole profile. Returns the NotebookRun of each notebook that ran.

    Raises ProfileError before anything runs when the profile does not fit the notebooks, and
    KeyboardInterrupt (after writing the report; the stopped notebooks keep their last results) when
    interrupted.
    """
    check_profile_name(profile)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a whole number >= 1 (notebooks run side by side); got {jobs!r}")
    notebooks_dir = Path(notebooks_dir or default_notebooks_dir()).resolve()
    out_root = Path(results_dir or default_results_dir()).resolve() / profile
    runs_plan = plan(profile, notebooks_dir, only)  # raises before anything runs
    out_root.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out_root)  # staging folders of a runner that was killed
    done: dict = {}
    stopped = _run_all(runs_plan, notebooks_dir, out_root, profile, kernel, jobs, progress, done)
    report = []
    for name in list_notebooks(notebooks_dir):
        if name in done:
            report.append(done[name])
        else:
            last = last_results(name, out_root)
            if name in stopped:
                last.status, last.current, last.kept = "interrupted", True, True
            report.append(last)
    command = f"python -m layersim.regenerate --profile {profile}" + (f" --only {' '.join(only)}" if only else "")
    write_report(report, profile, out_root / REPORT_FILE, command=command)
    write_index(report, profile, out_root / INDEX_FILE)
    if any(r.html for r in report):
        install_mathjax(out_root / MATHJAX_DIR)
    if stopped:
        raise KeyboardInterrupt(f"stopped {', '.join(stopped)}")
    return [done[n] for n in runs_plan if n in done]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m layersim.regenerate",
                                description="Run the paper notebooks with papermill; write REPORT.md and the "
                                            "HTML gallery (index.html) in results/<profile>/.")
    p.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILES)} (a notebooks/profiles/*.yaml)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks, e.g. 02_cos_vs_cka "
                   "(the report still lists every notebook, the others from their last results)")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="run N notebooks side by side (default 1)")
    p.add_argument("--notebooks-dir", type=Path, default=None, help="default: notebooks/ of this checkout")
    p.add_argument("--results-dir", type=Path, default=None, help="default: results/ of this checkout")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be 1 or more (notebooks run side by side); got {args.jobs}")
    report = Path(args.results_dir or default_results_dir()).resolve() / args.profile / REPORT_FILE

    def terminated(signum, frame):  # `kill <runner>` stops like Ctrl-C: last results kept, report written
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        runs = regenerate(args.profile, only=args.only, notebooks_dir=args.notebooks_dir,
                          results_dir=args.results_dir, kernel=args.kernel, jobs=args.jobs)
    except ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; the stopped notebooks keep their last results. report: {report}", file=sys.stderr)
        return 130
    failed = [r.name for r in runs if r.status != "ok"]
    print(f"report: {report}")
    print(f"gallery: {report.with_name(INDEX_FILE)}")
    if failed:
        print(f"FAILED notebooks: {', '.join(failed)} (see the report)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
