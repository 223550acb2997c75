"""What a notebook records: its key numbers, the paper's claims as numeric checks, its figures.

A notebook gets its ``rec = Recorder(output_dir, "02_cos_vs_cka")`` from `layersim.experiments.start`
and calls ``rec.number(...)``, ``rec.check_claim(...)`` and ``rec.figure(...)``. Everything lands in
``<output_dir>/metrics.json`` (rewritten atomically after every call, so an interrupted notebook
leaves a valid file) and the figures as PNG and PDF beside it. The batch runner
(`layersim.runner`) collects these files into REPORT.md.

The thresholds of the claim checks live in one file shipped with the package, ``claims.yaml``
(`CLAIMS_FILE`): each check has a name, the claim it tests, what value it expects, the comparison,
the threshold and why that threshold. Notebooks look checks up by name (`Recorder.check_claim`), so
no threshold is written twice. A non-finite value never passes and is stored as the string
``"nan"`` / ``"inf"`` so that ``metrics.json`` stays valid JSON.
"""
from __future__ import annotations

import functools
import json
import math
import operator
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from ..storage import atomic_savefig, atomic_write_json
from ..validate import real_number

METRICS_FILE = "metrics.json"
CLAIMS_FILE = Path(__file__).with_name("claims.yaml")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
CLAIM_NUMBERS = range(1, 7)  # the paper's claims 1..6 (shared/PAPER.md)
_CLAIM_FIELDS = ("claim", "value", "op", "threshold", "why")


def _plain(value: Any) -> Any:
    """Tensors / numpy values -> JSON-friendly Python numbers and lists (non-finite floats as strings)."""
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


def _number(value: Any, what: str) -> float:
    """One number from a Python / numpy / torch scalar (a one-element array too)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(f"{what} must be a number; got {type(value).__name__} {value!r}")
    shape = tuple(getattr(value, "shape", ()))
    if math.prod(shape) != 1:
        raise ValueError(f"{what} must be a single number; got an array of shape {shape}")
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number; got {type(value).__name__} {value!r}") from None


def _validate_claim_entry(name: str, entry: Any, source: str) -> dict:
    where = f"{source}, check {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a mapping with {', '.join(_CLAIM_FIELDS)}; got {entry!r}")
    missing = [k for k in _CLAIM_FIELDS if k not in entry]
    unknown = sorted(set(entry) - set(_CLAIM_FIELDS))
    if missing or unknown:
        raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown}; "
                         f"each check has exactly {', '.join(_CLAIM_FIELDS)}")
    if isinstance(entry["claim"], bool) or entry["claim"] not in CLAIM_NUMBERS:
        raise ValueError(f"{where}: claim must be one of the paper's claims 1..6; got {entry['claim']!r}")
    if entry["op"] not in _OPS:
        raise ValueError(f"{where}: op must be one of {sorted(_OPS)}; got {entry['op']!r}")
    threshold = entry["threshold"]
    real_number(threshold, f"{where}: threshold", what="a finite number")
    for key in ("value", "why"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise ValueError(f"{where}: {key!r} must say in words what is measured / why this threshold")
    return dict(entry, threshold=float(threshold))


def load_claims(path: Optional[os.PathLike] = None) -> dict:
    """The claim checks of `path` (default: the package's ``claims.yaml``) as {name: entry}.

    Every entry has ``claim`` (1..6), ``value`` (what is measured), ``op``, ``threshold`` (float) and
    ``why``; a malformed file raises ValueError naming the file and the check.
    """
    if path is None:
        return _default_claims()
    return _read_claims(Path(path))


@functools.lru_cache(maxsize=1)
def _default_claims() -> dict:
    return _read_claims(CLAIMS_FILE)


def _read_claims(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"claims file {path} not found") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"claims file {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} must map check names to entries with {', '.join(_CLAIM_FIELDS)}")
    return {str(name): _validate_claim_entry(str(name), entry, str(path)) for name, entry in data.items()}


class Recorder:
    """Collects one notebook's numbers, claim checks and figures in `output_dir`."""

    def __init__(self, output_dir: os.PathLike, notebook: str, *, claims: Optional[os.PathLike] = None):
        """`claims`: a claims file other than the package's ``claims.yaml`` (for tests and experiments)."""
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.claims = load_claims(claims)
        self.data = {"notebook": notebook, "numbers": {}, "checks": [], "figures": []}
        self._save()

    def number(self, name: str, value: Any) -> Any:
        """Record a number (or a list of numbers, e.g. one per layer) under `name`; returns it.

        A value that cannot be recorded (an object, a complex, a set; a name that is not a string) raises
        TypeError and records nothing: the recorder keeps everything before and after it."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"the name of a number must be a non-empty string; got {type(name).__name__} {name!r}")
        plain = _plain(value)
        try:
            json.dumps(plain, allow_nan=False)
        except (TypeError, ValueError):
            raise TypeError(f"number {name!r} must be a number, a string or a list / dict of them; got "
                            f"{type(value).__name__} {value!r:.80}; nothing was recorded for it") from None
        self.data["numbers"][name] = plain
        self._save()
        return value

    def check(self, claim: int, name: str, value: float, op: str, threshold: float, *,
              description: str = "", subject: str = "") -> bool:
        """Record a numeric check of paper claim `claim`: passes when ``value <op> threshold``.

        Prefer `check_claim`, which takes `claim`, `op` and `threshold` from the claims file.
        `subject` tells apart the same check made on several models (e.g. ``"minilm-l6"``); a check of
        the same name and subject replaces the earlier one. A NaN or infinite value never passes.
        Returns whether the check passed.
        """
        if op not in _OPS:
            raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
        if isinstance(claim, bool) or claim not in CLAIM_NUMBERS:
            raise ValueError(f"claim must be one of the paper's claims 1..6 (shared/PAPER.md); got {claim!r}")
        value = _number(value, f"the value of check {name!r}")
        threshold = _number(threshold, f"the threshold of check {name!r}")
        if not math.isfinite(threshold):
            raise ValueError(f"the threshold of check {name!r} must be finite; got {threshold}")
        passed = bool(math.isfinite(value) and _OPS[op](value, threshold))
        self.data["checks"] = [c for c in self.data["checks"]
                               if (c["name"], c.get("subject", "")) != (name, subject)]
        self.data["checks"].append({"claim": int(claim), "name": name, "subject": subject, "value": _plain(value),
                                    "op": op, "threshold": threshold, "passed": passed,
                                    "description": description})
        self._save()
        return passed

    def check_claim(self, name: str, value: float, *, subject: str = "") -> bool:
        """Record check `name` of the claims file (``claims.yaml``) with the measured `value`.

        The claim number, comparison and threshold come from the file; returns whether it passed.
        An unknown name raises ValueError listing the known ones.
        """
        if name not in self.claims:
            raise ValueError(f"no check named {name!r} in the claims file {CLAIMS_FILE.name}; known checks: "
                             f"{sorted(self.claims)}. Add an entry there (claim, value, op, threshold, why).")
        c = self.claims[name]
        return self.check(c["claim"], name, value, c["op"], c["threshold"], description=c["value"], subject=subject)

    def figure(self, fig, name: str, *, dpi: int = 150) -> None:
        """Save a matplotlib figure as `<name>.png` and `<name>.pdf` in `output_dir`.

        Returns None, so that a notebook cell ending with this call prints nothing; the files are
        ``output_dir / f"{name}.png"`` and ``.pdf``.
        """
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"figure name must be a plain file stem like 'cos_vs_cka'; got {name!r}")
        if not callable(getattr(fig, "savefig", None)):
            raise TypeError(f"figure {name!r} must be a matplotlib figure (with .savefig); got {type(fig).__name__}")
        for ext in ("png", "pdf"):
            atomic_savefig(fig, self.output_dir / f"{name}.{ext}", dpi=dpi, bbox_inches="tight")
        if name not in self.data["figures"]:
            self.data["figures"].append(name)
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.output_dir / METRICS_FILE, self.data)


def load_metrics(output_dir: os.PathLike) -> dict:
    """Read `<output_dir>/metrics.json`; raises ValueError naming the file when it is corrupt."""
    path = Path(output_dir) / METRICS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); rerun the notebook to rebuild it") from e
