"""How progress shows, decided in one place for the whole library.

Library code wraps its long loops in `progress`::

    from layersim.progress import progress
    for batch in progress(batches, desc="extract minilm-l6", total=len(batches), unit="batch"):
        ...

and the *mode* decides what a person sees:

- ``live``: a live bar. In JupyterLab a widget bar (``tqdm.auto`` with ipywidgets), in a terminal a
  text bar on stderr. The default for interactive use.
- ``summary``: no bar; when the loop ends, one line on stdout with the count and the time taken,
  e.g. ``extract minilm-l6: 2 batches in 1.3 s``. For batch runs (papermill, the batch runner, CI), so
  an executed notebook holds at most one plain line per long step instead of a red stderr block.
- ``off``: nothing.

The mode is read from the environment variable ``LAYERSIM_PROGRESS`` (``live``, ``summary`` or
``off``); when it is unset, ``summary`` under CI (``CI`` set to a true value) and ``live`` otherwise.
`set_mode` overrides it inside one process. The batch runner (`layersim.regenerate`) starts every
notebook's kernel with `batch_environment()`: ``LAYERSIM_PROGRESS=summary`` and the switches that
silence the bars of the libraries underneath (tqdm's ``TQDM_DISABLE``, Hugging Face's
``HF_HUB_DISABLE_PROGRESS_BARS``), while the runner's own terminal keeps its live bar.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

from .validate import whole_number

ENV_VAR = "LAYERSIM_PROGRESS"
MODES = ("live", "summary", "off")

T = TypeVar("T")
_override: Optional[str] = None


def _check(value: str, source: str) -> str:
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise ValueError(f"{source} must be one of {', '.join(MODES)}; got {value!r}")
    return mode


def mode() -> str:
    """The progress mode in force: ``"live"``, ``"summary"`` or ``"off"`` (see the module docstring)."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _check(env, f"the environment variable {ENV_VAR}")
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return "summary"
    return "live"


def set_mode(new_mode: Optional[str]) -> None:
    """Force the mode for this process (``None`` goes back to the environment variable)."""
    global _override
    _override = None if new_mode is None else _check(new_mode, "set_mode's argument")


def batch_environment() -> dict:
    """Environment variables for a kernel that runs a notebook in batch (papermill under the runner):
    one summary line per long step from `progress`, no bars from tqdm or Hugging Face.
    ``LAYERSIM_PROGRESS=off`` in the caller's environment is kept (nothing at all)."""
    inner = "off" if os.environ.get(ENV_VAR, "").strip().lower() == "off" else "summary"
    return {ENV_VAR: inner, "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _in_jupyter_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)} min {secs:.0f} s"


def _plural(unit: str, count: int) -> str:
    if unit == "it":  # tqdm's default unit
        unit = "item"
    if count == 1:
        return unit
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def _summary(iterable: Iterable[T], desc: str, total: Optional[int], unit: str) -> Iterator[T]:
    start = time.perf_counter()
    count = 0
    finished = False
    try:
        for item in iterable:
            yield item
            count += 1
        finished = True
    finally:
        took = _format_seconds(time.perf_counter() - start)
        label = f"{desc}: " if desc else ""
        units = _plural(unit, count)
        if finished:
            print(f"{label}{count} {units} in {took}", flush=True)
        else:
            of = f" of {total}" if total is not None else ""
            print(f"{label}stopped after {count}{of} {units} ({took})", flush=True)


def progress(iterable: Iterable[T], *, desc: str = "", total: Optional[int] = None, unit: str = "it",
             disable: bool = False) -> Iterator[T]:
    """Iterate over `iterable`, showing progress as the mode says (live bar, one summary line, nothing).

    `total` is the number of items when ``len(iterable)`` is not defined (a generator); `unit` names
    one item (``"batch"``, ``"step"``); ``disable=True`` shows nothing whatever the mode (the
    ``progress=False`` of a caller). Yields the items of `iterable` unchanged.
    """
    if not isinstance(desc, str) or not isinstance(unit, str):
        raise TypeError(f"desc and unit must be strings; got desc={desc!r}, unit={unit!r}")
    if total is not None:
        total = whole_number(total, "total", low=0, what="a non-negative int or None")
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    current = mode()
    if disable or current == "off":
        return iter(iterable)
    if current == "summary" or (_in_jupyter_kernel() and not _has_widgets()):
        # a kernel without ipywidgets cannot draw a live bar: tqdm would fall back to stderr lines
        return _summary(iterable, desc, total, unit)
    if _in_jupyter_kernel():
        from tqdm.notebook import tqdm as bar
    else:
        from tqdm import tqdm as bar
    return iter(bar(iterable, desc=desc, total=total, unit=unit))
