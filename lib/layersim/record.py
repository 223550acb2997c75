"""What a notebook records: its key numbers, the paper's claims as numeric checks, its figures.

A notebook creates ``rec = Recorder(output_dir, "02_cos_vs_cka")`` and calls
``rec.number(...)``, ``rec.check(...)`` and ``rec.figure(...)``. Everything lands in
``<output_dir>/metrics.json`` (rewritten atomically after every call, so an interrupted notebook
leaves a valid file) and the figures as PNG and PDF beside it. The batch runner
(`layersim.regenerate`) collects these files into REPORT.md.
"""
from __future__ import annotations

import json
import math
import operator
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _plain(value: Any) -> Any:
    """Tensors / numpy values -> JSON-friendly Python numbers and lists."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Recorder:
    """Collects one notebook's numbers, claim checks and figures in `output_dir`."""

    def __init__(self, output_dir: os.PathLike, notebook: str):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.data = {"notebook": notebook, "numbers": {}, "checks": [], "figures": []}
        self._save()

    def number(self, name: str, value: Any) -> Any:
        """Record a number (or a list of numbers, e.g. one per layer) under `name`; returns it."""
        self.data["numbers"][name] = _plain(value)
        self._save()
        return value

    def check(self, claim: int, name: str, value: float, op: str, threshold: float, *,
              description: str = "") -> bool:
        """Record a numeric check of paper claim `claim`: passes when ``value <op> threshold``."""
        if op not in _OPS:
            raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
        value = float(value)
        passed = bool(math.isfinite(value) and _OPS[op](value, threshold))
        self.data["checks"] = [c for c in self.data["checks"] if c["name"] != name]
        self.data["checks"].append({"claim": int(claim), "name": name, "value": value, "op": op,
                                    "threshold": float(threshold), "passed": passed,
                                    "description": description})
        self._save()
        return passed

    def figure(self, fig, name: str, *, dpi: int = 150) -> list:
        """Save a matplotlib figure as `<name>.png` and `<name>.pdf`; returns the two paths."""
        paths = []
        for ext in ("png", "pdf"):
            path = self.output_dir / f"{name}.{ext}"
            tmp = path.with_name(f".{path.stem}.tmp.{ext}")
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
            os.replace(tmp, path)
            paths.append(path)
        if name not in self.data["figures"]:
            self.data["figures"].append(name)
        self._save()
        return paths

    def _save(self) -> None:
        atomic_write_text(self.output_dir / METRICS_FILE, json.dumps(self.data, indent=2) + "\n")


def load_metrics(output_dir: os.PathLike) -> dict:
    """Read `<output_dir>/metrics.json`; raises ValueError naming the file when it is corrupt."""
    path = Path(output_dir) / METRICS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); rerun the notebook to rebuild it") from e
