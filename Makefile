# Developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3

.PHONY: install tools lint test unit integration bench crds

install:
	$(PYTHON) -m pip install -q -e '.[dev]'

tools:
	scripts/install-tools

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

# The whole suite: install the package and the peer tools, lint, then every tier.
test: install tools lint
	$(PYTHON) -m pytest -m "unit or integration or e2e" -q

unit: install
	$(PYTHON) -m pytest -m unit -q

integration: install tools
	$(PYTHON) -m pytest -m integration -q

bench: install tools
	$(PYTHON) benchmarks/bench_artifacts.py

# Regenerate deploy/crds from the API definitions in puller/api (a unit test checks they match).
crds: install
	$(PYTHON) -m puller.crdgen
