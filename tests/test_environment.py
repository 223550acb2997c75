"""The set-up files agree with each other: pins, the two README commands, CI."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {re.split(r"[=<>!~]", p)[0].lower(): p for p in pins}


def test_every_pyproject_dependency_is_pinned_exactly():
    for name, spec in _pyproject_pins().items():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+]*", spec), f"{spec} is not an exact pin"


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = {re.split(r"[=<>!~]", p)[0].lower(): p for p in pip_section if not p.startswith("-e")}
    assert env_pins == _pyproject_pins()
    assert "-e ." in pip_section  # installs the project itself
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_torch_pins_are_the_offline_installable_ones():
    pins = _pyproject_pins()
    assert pins["torch"] == "torch==2.14.1" and pins["torchvision"] == "torchvision==0.29.1"


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make figures" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^figures:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "--profile $(PROFILE)" in makefile and re.search(r"^PROFILE \?= default$", makefile, re.M)


def test_offline_packages_are_pinned_and_installed():
    from importlib import metadata

    from layersim.data import OFFLINE_PACKAGES

    for dist, version in OFFLINE_PACKAGES.items():
        assert metadata.version(dist) == version, f"{dist} should be {version} (python -m layersim.data install)"
