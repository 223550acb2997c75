"""The set-up files agree with each other: pins, the two README commands, CI."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pyproject_requirements() -> dict:
    project = _pyproject()
    reqs = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        reqs += [r for r in extra if not r.startswith("layersim")]
    return {_name(r): r for r in reqs}


def _constraints() -> dict:
    lines = [ln.strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()]
    return {_name(ln): ln for ln in lines if ln and not ln.startswith("#")}


def test_pyproject_states_ranges_and_constraints_pin_every_one_exactly():
    reqs, pins = _pyproject_requirements(), _constraints()
    for name, spec in reqs.items():
        assert "==" not in spec, f"{spec}: pyproject states compatible ranges; exact pins go in constraints.txt"
        assert name in pins, f"{name} has no exact version in constraints.txt"
    for spec in pins.values():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+]*", spec), f"{spec} is not an exact pin"
    # the pinned versions satisfy the ranges
    from packaging.requirements import Requirement

    for name, spec in reqs.items():
        assert Requirement(spec).specifier.contains(pins[name].split("==")[1]), f"{pins[name]} outside {spec}"


def test_environment_yml_mirrors_constraints():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = {_name(p): p for p in pip_section if not p.startswith("-e")}
    installed = {k: v for k, v in _constraints().items() if k in _pyproject_requirements()}
    bench = set(_pyproject()["optional-dependencies"]["bench"])
    assert env_pins == {k: v for k, v in installed.items() if not any(_name(b) == k for b in bench)}
    assert "-e .[all,dev]" in pip_section  # installs the project itself with every extra
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_makefile_installs_from_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "'.[all,dev]'" in makefile


def test_torch_pins_are_the_offline_installable_ones():
    pins = _constraints()
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
