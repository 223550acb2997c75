"""The runner: `regenerate` (every notebook of a profile, then the report and the gallery) and its
command line, ``python -m layersim.runner``."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..storage import clean_leftovers
from .gallery import install_mathjax, write_index
from .jobs import _run_all
from .profiles import (PROFILES, ProfileError, check_profile_name, default_notebooks_dir, default_results_dir,
                       list_notebooks, plan)
from .report import write_report
from .results import INDEX_FILE, MATHJAX_DIR, REPORT_FILE, last_results
from ..validate import whole_number


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
    jobs = whole_number(jobs, "jobs", low=1, what="a whole number >= 1 (notebooks run side by side)")
    notebooks_dir = Path(notebooks_dir or default_notebooks_dir()).resolve()
    out_root = Path(results_dir or default_results_dir()).resolve() / profile
    runs_plan = plan(profile, notebooks_dir, only)  # raises before anything runs
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # --results-dir is a file, or a folder we cannot write
        raise ProfileError(f"cannot keep results in {out_root} ({e.strerror or e}): --results-dir must be a folder "
                           "(or a path where one can be made)") from None
    with _one_runner(out_root, profile):
        return _regenerate(profile, only, notebooks_dir, out_root, runs_plan, kernel, jobs, progress)


RUNNER_LOCK = ".runner.lock"


@contextlib.contextmanager
def _one_runner(out_root: Path, profile: str):
    """Hold `out_root`/.runner.lock while the runner runs: a second runner on the same results refuses at once
    (it would write a REPORT.md that contradicts the first one's files). The lock dies with its holder."""
    path = out_root / RUNNER_LOCK
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ProfileError(f"another runner is already running profile {profile!r} into {out_root} ({holder}); "
                               "wait for it to finish, or stop it, then run again") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _regenerate(profile, only, notebooks_dir, out_root, runs_plan, kernel, jobs, progress) -> list:
    clean_leftovers(out_root)  # staging folders of a runner that was killed
    done: dict = {}
    stopped = _run_all(runs_plan, notebooks_dir, out_root, profile, kernel, jobs, progress, done)
    report = []
    for name in list_notebooks(notebooks_dir):
        if name in done:
            report.append(done[name])
        else:
            last = last_results(name, out_root)
            if name in stopped:  # the results it keeps are still as good (or bad) as they were
                last.kept_status = last.status if last.status != "not run" else ""
                last.status, last.current, last.kept = "interrupted", True, True
            report.append(last)
    command = f"python -m layersim.runner --profile {profile}" + (f" --only {' '.join(only)}" if only else "")
    write_report(report, profile, out_root / REPORT_FILE, command=command)
    write_index(report, profile, out_root / INDEX_FILE)
    if any(r.html for r in report):
        install_mathjax(out_root / MATHJAX_DIR)
    if stopped:
        raise KeyboardInterrupt(f"stopped {', '.join(stopped)}")
    return [done[n] for n in runs_plan if n in done]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m layersim.runner",
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

