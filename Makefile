# Developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3

.PHONY: install tools lint test unit integration bench bench-controller crds image fuzz fuzz-long

install:
	$(PYTHON) -m pip install -q -e '.[dev]'

tools:
	scripts/install-tools

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

# The whole suite: install the package and the peer tools, lint, then every tier (a test's
# tier is its folder, tests/conftest.py), then the short fuzz pass.
test: install tools lint
	$(PYTHON) -m pytest -q && $(PYTHON) -m fuzz run --seconds $(FUZZ_SHORT_SECONDS) --seed $(FUZZ_SEED)

unit: install
	$(PYTHON) -m pytest -m unit -q

integration: install tools
	$(PYTHON) -m pytest -m integration -q

bench: install tools
	$(PYTHON) benchmarks/bench_artifacts.py

# The controller against Flux's source-controller and kustomize-controller on one dev cluster
# (issue 15; on demand, never in `make test`). Builds only what it needs, the Flux
# controllers included (opt-in in scripts/install-tools), and rewrites benchmarks/RESULTS.md.
BENCH_PAIRS ?= 100,500
BENCH_ARGS ?=
bench-controller: install
	scripts/install-tools kubernetes etcd kwok kustomize flux-controllers
	$(PYTHON) benchmarks/bench_controller.py --pairs $(BENCH_PAIRS) --peer flux --log-level info $(BENCH_ARGS)

# Regenerate deploy/crds from the API definitions in puller/api (a unit test checks they match).
crds: install
	$(PYTHON) -m ocigitops.puller.crdgen --out-dir deploy/crds
	$(PYTHON) -m ocigitops.puller.crdgen --set operator --out-dir deploy/operator

# The controller image, built reproducibly without Docker (mmdebstrap + buildah, as root)
# and pushed: `make image IMAGE=REGISTRY/REPO:TAG` (VARIANT=essential for one with a shell).
# docs/image.md says what is in it; deploy/image/check-reproducible builds twice and compares.
IMAGE ?=
VARIANT ?= distroless

image:
	@test -n "$(IMAGE)" || { echo "usage: make image IMAGE=REGISTRY/REPO:TAG" >&2; exit 2; }
	deploy/image/build --variant $(VARIANT) $(IMAGE)

# Fuzzing (fuzz/, atheris). `fuzz`: every target for FUZZ_SHORT_SECONDS each (about 90 s in
# all; `make test` runs it after pytest); fails naming the reproducer and the exception.
# `fuzz-long`: on demand, FUZZ_SECONDS per target (FUZZ_TARGETS to pick some), growing a
# scratch corpus in fuzz/out/<target>/corpus across runs.
FUZZ_SHORT_SECONDS ?= 11
# The short pass replays the same mutations each run (see fuzz/runner.py run()).
FUZZ_SEED ?= 1
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?=

fuzz: install
	$(PYTHON) -m fuzz run --seconds $(FUZZ_SHORT_SECONDS) --seed $(FUZZ_SEED)

fuzz-long: install
	$(PYTHON) -m fuzz run --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) --keep-corpus $(FUZZ_TARGETS)
