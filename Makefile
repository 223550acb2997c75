# The two commands: `make figures` (main job: every notebook, default profile) and `make test`.
# Both bootstrap what is missing: a virtual environment in .venv with the pinned packages, and the
# offline data sources (`python -m layersim.data install`). Fast when everything is already there.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.layersim-installed
PROFILE ?= default

.PHONY: figures test smoke setup lab clean-results

figures: setup
	$(PY) -m layersim.runner --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q

smoke: setup
	$(PY) -m layersim.runner --profile smoke

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

setup: $(STAMP)
	@$(PY) -m layersim.data install

# the exact tested versions: constraints.txt; pyproject.toml's ranges are for people who import the library
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $@

clean-results:
	rm -rf results/
