# The two commands of the README:
#   make demo   - runs medssl on built-in real sample data (fetched and cached on first use)
#   make test   - runs the default test suite (everything but the `slow`, `cuda`, `e2e` and
#                 `container` markers), one pytest worker per core
# CI (.ci/run) runs `make test`, then `make test-e2e` (the long end-to-end runs).
# Both create the environment in .venv when it is missing and reuse it otherwise.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medssl-installed
TEST_MARKERS := not slow and not cuda and not e2e and not container
E2E_MARKERS := e2e and not slow and not cuda

.PHONY: demo test test-e2e test-container lint format env clean-env

demo: $(STAMP)
	$(BIN)/medssl demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "$(TEST_MARKERS)" -n auto

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -m "$(E2E_MARKERS)" -n auto

# builds the CPU image (docker/build.sh) and runs it offline, read-only, as uid 65534;
# MEDSSL_CONTAINER_PREBUILT=1 uses the image MEDSSL_IMAGE (default medssl:cpu) as it is
test-container: $(STAMP)
	$(BIN)/python -m pytest -m container tests/docker

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

env: $(STAMP)

# torch is installed first (pinned, with its matching torchvision) so that the package, built
# without isolation, compiles its C++ kernel against the torch it will run with.
$(STAMP): pyproject.toml setup.py $(wildcard medssl/ops/*/csrc/*)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "medssl needs Python >= 3.11; set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" "setuptools>=70" wheel ninja
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[dev]"
	@touch $(STAMP)

clean-env:
	rm -rf $(VENV)
