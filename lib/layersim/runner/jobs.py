"""Running notebooks: one papermill process per notebook, `jobs` at a time.

Each notebook runs in a staging folder (``.tmp-<name>-...``) that replaces its results folder only when
the notebook has finished, so Ctrl-C keeps the last results of the notebook it stopped. The kernel runs
with `layersim.progress.batch_environment()` in the notebook's own results folder with
``output_dir = "."``, and the paths papermill records are made relative, so no path of the machine that
ran it is published. With ``jobs > 1`` each kernel gets ``cores / jobs`` threads.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import progress as _progress
from ..storage import (atomic_write_json, atomic_write_text, release_temp_folder, remove_folder, repo_root, swap_folder,
                       temp_folder)
from .gallery import notebook_to_html
from .record import METRICS_FILE
from .results import MATHJAX_DIR, RUN_FILE, NotebookRun, _now, _read_json, last_results

STOP_WAIT_S = 30.0  # after Ctrl-C, how long a notebook gets to shut its kernel down before it is killed


@dataclass
class _Job:
    name: str
    params: dict
    stage: Path
    held: int  # the fd of the staging folder's writer lock (storage.temp_folder)
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
    """Start papermill on one notebook, in its own session, into a fresh staging folder: unique across hosts
    that share the results folder, and held by this runner's flock (`storage.temp_folder`) until it is swapped
    into place or removed, so no runner's clean-up (on this host or another) takes it for a leftover."""
    stage, held = temp_folder(out_root / name)
    try:
        return _launch(name, params, notebooks_dir, stage, held, kernel, jobs)
    except BaseException:
        remove_folder(stage)
        os.close(held)
        raise


def _launch(name: str, params: dict, notebooks_dir: Path, stage: Path, held: int, kernel: str, jobs: int) -> _Job:
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
    return _Job(name, params, stage, held, proc, log, time.perf_counter())


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
        os.close(job.held)


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
        os.close(job.held)
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
    release_temp_folder(stage)
    try:
        swap_folder(stage, target)  # the last results step aside, the new ones take their place, the old ones go
    finally:
        os.close(job.held)
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
