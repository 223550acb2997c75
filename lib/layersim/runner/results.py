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
