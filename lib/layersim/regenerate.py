"""Regenerate the paper's results: run every notebook through papermill for one profile.

    python -m layersim.regenerate --profile {smoke,default,paper} [--only NAME ...]

For each notebook ``notebooks/NN_name.ipynb`` the runner takes its parameters from
``notebooks/profiles/<profile>.yaml`` (a mapping ``notebook name -> {parameter: value}``; a notebook
the profile does not name runs with its own defaults), adds ``output_dir`` and runs it into
``results/<profile>/<name>/``: the executed notebook, its figures (PNG and PDF) and the numbers it
recorded (``metrics.json``, see `layersim.record`). Then it writes ``results/<profile>/REPORT.md``:
every notebook with its status, run time, figures and numbers, and every paper claim as a numeric
check (pass / fail, value, threshold).

Before anything runs, every profile parameter is checked against the notebook's ``parameters``
cell: an unknown name is an error. A failing notebook does not stop the others; the runner exits
with status 1 and the report says which notebook failed, with what error, and where its executed
copy is.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import yaml
from tqdm.auto import tqdm

from .storage import repo_root
from .record import METRICS_FILE, atomic_write_text

PROFILES = ("smoke", "default", "paper")
RUNNER_PARAMETERS = ("output_dir",)  # set by the runner, not by a profile


class ProfileError(ValueError):
    """A profile that cannot run: unknown notebook or parameter, missing file, bad YAML."""


def default_notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def default_results_dir() -> Path:
    return repo_root() / "results"


def list_notebooks(notebooks_dir: Path) -> list:
    """Names (file stems) of the paper notebooks, in order: files named like ``02_cos_vs_cka.ipynb``."""
    return sorted(p.stem for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: Path) -> dict:
    """The parameters a notebook declares in its cell tagged ``parameters`` (name -> default text)."""
    import papermill as pm

    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.get("cells", [])):
        raise ProfileError(f"{path} has no cell tagged 'parameters'; tag the cell that sets its parameters")
    return {name: p["default"] for name, p in pm.inspect_notebook(str(path)).items()}


def load_profile(profile: str, notebooks_dir: Path) -> dict:
    """Read ``<notebooks_dir>/profiles/<profile>.yaml`` -> {notebook: {param: value}}."""
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
    name: str
    status: str  # "ok" or "failed"
    seconds: float
    executed: Path
    output_dir: Path
    parameters: dict
    error: str = ""
    metrics: dict = field(default_factory=dict)


def run_notebook(name: str, params: dict, notebooks_dir: Path, out_root: Path, *,
                 kernel: str = "python3", log_output: bool = False) -> NotebookRun:
    """Execute one notebook into ``out_root/<name>/``; never raises for a failure inside it."""
    import papermill as pm

    out_dir = (out_root / name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = out_dir / METRICS_FILE
    if stale.exists():
        stale.unlink()  # numbers of an earlier run must not pass for this run's
    executed = out_dir / f"{name}.ipynb"
    full = dict(params, output_dir=str(out_dir))
    start = time.perf_counter()
    status, error = "ok", ""
    try:
        pm.execute_notebook(str(notebooks_dir / f"{name}.ipynb"), str(executed), parameters=full,
                            kernel_name=kernel, cwd=str(notebooks_dir), progress_bar=False,
                            log_output=log_output)
    except pm.PapermillExecutionError as e:
        status, error = "failed", f"cell {e.exec_count}: {e.ename}: {e.evalue}"
    except Exception as e:  # kernel died, notebook unreadable, ...
        status, error = "failed", f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    metrics = {}
    if stale.exists():
        try:
            metrics = json.loads(stale.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            status, error = "failed", error or f"{stale} is not valid JSON: {e}"
    elif status == "ok":
        status, error = "failed", f"the notebook recorded no numbers ({METRICS_FILE} missing)"
    return NotebookRun(name, status, seconds, executed, out_dir, full, error, metrics)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if len(value) > 16:
            return "[" + ", ".join(_fmt(v) for v in value[:16]) + f", ... ({len(value)} values)]"
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def write_report(runs: Sequence[NotebookRun], profile: str, path: Path) -> str:
    """Write REPORT.md for `runs`; returns its text."""
    base = path.parent
    rel = lambda p: Path(p).relative_to(base) if Path(p).is_relative_to(base) else Path(p)  # noqa: E731
    failed = [r for r in runs if r.status != "ok"]
    checks = [(r.name, c) for r in runs for c in r.metrics.get("checks", [])]
    lines = [f"# Results report: profile `{profile}`", "",
             f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} on {platform.node() or 'unknown'} "
             f"(Python {platform.python_version()}) by `python -m layersim.regenerate --profile {profile}`.", "",
             f"**{len(runs) - len(failed)} of {len(runs)} notebooks ran**; "
             f"**{sum(c['passed'] for _, c in checks)} of {len(checks)} claim checks passed**.", "",
             "## Notebooks", "", "| notebook | status | time (s) | figures | executed notebook |",
             "|---|---|---|---|---|"]
    for r in runs:
        figs = ", ".join(f"[{f}]({rel(r.output_dir / (f + '.png'))})" for f in r.metrics.get("figures", []))
        lines.append(f"| {r.name} | {'ok' if r.status == 'ok' else '**FAILED**'} | {r.seconds:.1f} | "
                     f"{figs or '-'} | [{rel(r.executed)}]({rel(r.executed)}) |")
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines.append(f"- **{r.name}**: {r.error}. Executed copy (with the traceback): `{r.executed}`")
    lines += ["", "## Paper claims as numeric checks", ""]
    if checks:
        lines += ["| claim | check | value | threshold | result | notebook |", "|---|---|---|---|---|---|"]
        for name, c in sorted(checks, key=lambda t: (t[1]["claim"], t[0])):
            lines.append(f"| {c['claim']} | {c['name']} | {c['value']:.4g} | {c['op']} {c['threshold']:.4g} | "
                         f"{'pass' if c['passed'] else '**FAIL**'} | {name} |")
    else:
        lines.append("No checks were recorded.")
    lines += ["", "## Recorded numbers", ""]
    for r in runs:
        lines += [f"### {r.name}", "", "Parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in r.parameters.items()
                                                                  if k != "output_dir") or "defaults", ""]
        numbers = r.metrics.get("numbers", {})
        lines += [f"- `{k}`: {_fmt(v)}" for k, v in numbers.items()] or ["- (none)"]
        lines.append("")
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text


def regenerate(profile: str, *, only: Optional[Sequence[str]] = None, notebooks_dir: Optional[Path] = None,
               results_dir: Optional[Path] = None, kernel: str = "python3", progress: bool = True) -> list:
    """Run the notebooks of `profile` and write the report; returns the list of NotebookRun."""
    notebooks_dir = Path(notebooks_dir or default_notebooks_dir()).resolve()
    out_root = Path(results_dir or default_results_dir()).resolve() / profile
    runs_plan = plan(profile, notebooks_dir, only)  # raises before anything runs
    runs = []
    bar = tqdm(runs_plan.items(), total=len(runs_plan), desc=f"regenerate [{profile}]", unit="notebook",
               disable=not progress, file=sys.stderr)
    for name, params in bar:
        bar.set_postfix_str(name)
        run = run_notebook(name, params, notebooks_dir, out_root, kernel=kernel)
        runs.append(run)
        tqdm.write(f"{name}: {run.status} in {run.seconds:.1f}s" + (f" -- {run.error}" if run.error else ""),
                   file=sys.stderr)
    write_report(runs, profile, out_root / "REPORT.md")
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m layersim.regenerate",
                                description="Run the paper notebooks with papermill and write REPORT.md.")
    p.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILES)} (a notebooks/profiles/*.yaml)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks, e.g. 02_cos_vs_cka")
    p.add_argument("--notebooks-dir", type=Path, default=None, help="default: notebooks/ of this checkout")
    p.add_argument("--results-dir", type=Path, default=None, help="default: results/ of this checkout")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    args = p.parse_args(argv)
    try:
        runs = regenerate(args.profile, only=args.only, notebooks_dir=args.notebooks_dir,
                          results_dir=args.results_dir, kernel=args.kernel)
    except ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = Path(args.results_dir or default_results_dir()).resolve() / args.profile / "REPORT.md"
    failed = [r.name for r in runs if r.status != "ok"]
    print(f"report: {report}")
    if failed:
        print(f"FAILED notebooks: {', '.join(failed)} (see the report)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
