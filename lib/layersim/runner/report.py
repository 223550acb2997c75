"""REPORT.md: every notebook of a profile with its status, run time and figures, the paper's claims as
numeric checks (check, claim, value, comparison, threshold, pass / fail; the thresholds come from
``layersim/runner/claims.yaml``) and the recorded numbers."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Sequence

from ..storage import atomic_write_text
from .profiles import RUNNER_PARAMETERS
from .record import load_claims
from .results import INDEX_FILE, NotebookRun, _now


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
    if r.status == "damaged":
        return f"{bold('DAMAGED')} (earlier results unreadable)"
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
    ok = [r for r in runs if r.good]  # an interrupted notebook's kept results count as what they are
    checks = _checks(runs)
    claims = load_claims()
    command = command or f"python -m layersim.runner --profile {profile}"
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
            elif r.status == "damaged":
                lines.append(f"- **{r.name}**: {r.error}.")
            elif r.kept:
                lines.append(f"- **{r.name}**: {r.error}. Nothing was executed"
                             + (f"; its results from {_when(r.finished)} are kept." if r.finished else "."))
            else:
                lines.append(f"- **{r.name}**: {r.error}. Executed copy (with the traceback): `{rel(r.executed)}`")
    lines += ["", "## Paper claims as numeric checks", ""]
    if checks:
        lines += ["Thresholds and what each check measures: `layersim/runner/claims.yaml` (listed below).", "",
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
