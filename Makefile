# Fresh-machine entry points: each does its own set-up. `make test` is what CI runs (.ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Fashion-MNIST for the deep-rule tests: Debian's dataset-fashion-mnist (nothing is
# downloaded at run time). `make data` installs it as root or with passwordless sudo;
# otherwise it stops with one line naming the command to run.
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
FASHION_PKG := dataset-fashion-mnist
# how `make data` may install: root, sudo or none (detected when needed; set it to override)
INSTALL_AS ?= $(shell if ! command -v apt-get >/dev/null 2>&1; then echo none; \
	elif [ "$$(id -u)" = 0 ]; then echo root; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then echo sudo; \
	else echo none; fi)
NO_DATA := the tests need Fashion-MNIST in $(FASHION_DIR); install it with \
	'sudo apt-get install $(FASHION_PKG)' (Debian/Ubuntu) or run make as root, then run make again

.PHONY: setup data reproduce demo test lint bench clean

$(BIN)/fa: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned to the CPU build that lies on the build machines' disk
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/fa

setup: $(BIN)/fa

data:
	$(if $(wildcard $(FASHION_DIR)),,$(if $(filter none,$(INSTALL_AS)),$(error $(NO_DATA))))
	@if [ ! -d "$(FASHION_DIR)" ]; then \
		as=""; if [ "$(INSTALL_AS)" = sudo ]; then as="sudo -n"; fi; \
		echo "make data: installing the Debian package $(FASHION_PKG) (Fashion-MNIST for the tests)"; \
		$$as apt-get update -qq >/dev/null && \
		$$as env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(FASHION_PKG) >/dev/null; \
	fi
	@[ -d "$(FASHION_DIR)" ] || { echo "make data: installing $(FASHION_PKG) did not create $(FASHION_DIR)" >&2; exit 1; }

reproduce: setup
	$(BIN)/fa reproduce all --profile quick --out results/quick

demo: setup
	$(BIN)/fa demo --out results/demo

test: setup data
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/twolayer.py

clean:
	rm -rf $(VENV) build src/*.egg-info
