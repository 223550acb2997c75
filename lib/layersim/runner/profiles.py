"""Profiles: which notebooks run with which parameters.

A profile is a name (``smoke``, ``default``, ``paper``, ``my-gpu``) that names both
``notebooks/profiles/<profile>.yaml`` (a mapping ``notebook name -> {parameter: value}``; a notebook the
profile does not name runs with its own defaults) and ``results/<profile>/``. Before anything runs,
`plan` checks every profile parameter against the notebook's ``parameters`` cell: an unknown name is an
error.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ..storage import repo_root

PROFILES = ("smoke", "default", "paper")
RUNNER_PARAMETERS = ("output_dir",)  # set by the runner, not by a profile
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

    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ProfileError(f"{path} is not UTF-8 text (byte {e.start}): not a notebook file") from None
    except json.JSONDecodeError as e:
        raise ProfileError(f"{path} is not a notebook (invalid JSON: {e})") from None
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.get("cells", [])):
        raise ProfileError(f"{path} has no cell tagged 'parameters'; tag the cell that sets its parameters")
    return {name: p["default"] for name, p in pm.inspect_notebook(str(path)).items()}


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (safe_load silently keeps the last)."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is given twice (the second would silently replace the first); "
                            "merge its parameters into one entry", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_profile(profile: str, notebooks_dir: Path) -> dict:
    """Read ``<notebooks_dir>/profiles/<profile>.yaml`` -> {notebook: {param: value}}."""
    check_profile_name(profile)
    path = Path(notebooks_dir) / "profiles" / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ProfileError(f"profile {profile!r} not found: no file {path}. Known profiles: {known}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as e:
        raise ProfileError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
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
