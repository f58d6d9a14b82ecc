# Fresh-machine entry points. `make test` is what CI runs (.ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup reproduce demo test lint bench clean

$(BIN)/fa: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned to the CPU build that lies on the build machines' disk
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/fa

setup: $(BIN)/fa

reproduce: setup
	$(BIN)/fa reproduce all --profile quick --out results/quick

demo: setup
	$(BIN)/fa demo --out results/demo

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/twolayer.py

clean:
	rm -rf $(VENV) build src/*.egg-info
