"""What a results folder holds, and reading back the last results of a notebook.

``results/<profile>/<name>/`` holds a notebook's executed copy, its HTML page, its figures, the numbers it
recorded (``metrics.json``, see `layersim.runner.record`) and the runner's record of the run
(``run.json``: status, time, parameters, when); ``results/<profile>/`` holds ``REPORT.md``, the gallery
``index.html`` and the MathJax copy the pages typeset their math with.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .record import METRICS_FILE

RUN_FILE = "run.json"
REPORT_FILE = "REPORT.md"
INDEX_FILE = "index.html"
MATHJAX_DIR = "mathjax"


@dataclass
class NotebookRun:
    """One notebook's results in ``output_dir``: from this invocation (``current``) or an earlier one.

    `status`: ``ok``, ``failed``, ``interrupted`` (stopped by Ctrl-C), ``damaged`` (earlier results whose
    run.json or metrics.json cannot be read) or ``not run`` (no results yet).
    `kept`: this invocation's attempt left nothing worth keeping (interrupted, or failed before the
    notebook executed, e.g. no such kernel), so `output_dir`, `finished` and `metrics` describe the
    last results from before; `kept_status` is their status (an interrupted notebook whose kept results
    are ok still counts as ok).
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
    kept_status: str = ""  # the status of those kept results ("" when there are none)

    @property
    def good(self) -> bool:
        """Its results are ok: it ran ok, or it was interrupted and keeps results that were ok."""
        return self.status == "ok" or (self.status == "interrupted" and self.kept_status == "ok")

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
    """What ``out_root/<name>/`` holds from an earlier run (``status="not run"`` when nothing; ``"damaged"``
    when its run.json, or the metrics.json of a run that was ok, cannot be read)."""
    folder = Path(out_root) / name
    if not (folder / RUN_FILE).exists():
        return NotebookRun(name, "not run", 0.0, folder, {}, current=False)
    html = (folder / f"{name}.html").exists()
    record = _read_json(folder / RUN_FILE)
    try:
        status, seconds = str(record["status"]), float(record.get("seconds", 0.0))
        parameters = dict(record.get("parameters", {}))
    except (TypeError, KeyError, ValueError):
        return NotebookRun(name, "damaged", 0.0, folder, {}, f"{folder / RUN_FILE} is damaged (not a run record); "
                           f"run the notebook again (--only {name})", current=False, html=html)
    error, finished = str(record.get("error", "")), str(record.get("finished", ""))
    metrics = _read_json(folder / METRICS_FILE)
    if metrics is None and (status == "ok" or (folder / METRICS_FILE).exists()):
        what = "is damaged (not valid JSON)" if (folder / METRICS_FILE).exists() else "is missing"
        status, error, metrics = "damaged", f"{folder / METRICS_FILE} {what}; run the notebook again (--only {name})", {}
    return NotebookRun(name, status, seconds, folder, parameters, error, metrics or {}, finished, current=False,
                       html=html)
