# layerprune: `make run` and `make test` do all set-up they need on a machine with Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# torch==2.13.0: a CPU wheel on the CI machines, the default CUDA build from PyPI elsewhere.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup assets run test test-fast lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

assets: setup  ## fetch + verify + convert the offline model, benchmarks and text (idempotent)
	$(BIN)/layerprune-assets

run: assets  ## the default experiment on the offline SmolLM2-135M
	$(BIN)/layerprune

test: assets  ## every test: fast, slow and real (assets); gpu tests skip without CUDA
	$(BIN)/pytest -q

test-fast: setup  ## the fast tier: tiny random models, no assets, about two minutes
	$(BIN)/pytest -q -m "not real and not slow and not gpu"

lint: setup
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments

format: setup
	$(BIN)/ruff check --fix src tests benchmarks experiments
	$(BIN)/ruff format src tests benchmarks experiments

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
