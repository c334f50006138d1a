# SolverLab: the two commands of the quick start, and a few helpers.
#   make course   install everything, then JupyterLab on course/ (dashboards at /panel/<name>)
#   make test     install everything, then the whole test suite (core, widgets, browser, notebooks)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
PORT   ?= 8888
HOST   ?= 127.0.0.1
PYTEST_ARGS ?=
# jupyter-panel-proxy starts `panel` from PATH, so everything runs with the venv's bin/ first.
export PATH := $(BIN):$(PATH)

.PHONY: install course serve test test-fast bench chromium lock clean help

help:
	@sed -n 's/^#   //p' Makefile

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "SolverLab needs Python 3.11+, found " + sys.version'
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "$(PYTHON) cannot make a virtual environment (no ensurepip): on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,peers]"
	$(BIN)/python -m solverlab.widgets.warmup
	touch $@

install: $(VENV)/.installed

course: install
	@echo "SolverLab course: open the URL JupyterLab prints below (with its token)."
	@echo "Dashboards inside JupyterLab: http://$(HOST):$(PORT)/panel/<name>, e.g. /panel/brownian_tree"
	$(BIN)/jupyter lab --ip=$(HOST) --port=$(PORT) --no-browser $$([ "$$(id -u)" = 0 ] && echo --allow-root) \
	    --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/course/00_welcome.ipynb

serve: install
	$(BIN)/solverlab serve --address $(HOST)

# Debian's chromium drives the browser tests; installed when missing and we may (root + apt).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: browser tests will be skipped"; \
	  else echo "chromium not found (apt-get install chromium): browser tests will be skipped"; fi; }

# Several pytest processes: after some hundreds of compiles in one process, XLA:CPU (jax 0.10)
# segfaulted compiling (backend_compile_and_load), reproducibly in a long run and never in a short one:
# a dashboard kernel after the whole core suite, then a Langevin test after 80% of a larger one.
test: install chromium
	$(BIN)/python -m pytest $(wildcard tests/core/test_[a-e]*.py) $(PYTEST_ARGS)
	$(BIN)/python -m pytest $(wildcard tests/core/test_[f-k]*.py) $(PYTEST_ARGS)
	$(BIN)/python -m pytest $(wildcard tests/core/test_[l-z]*.py) $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests course --ignore=tests/core --nbval-lax --nbval-sanitize-with course/nbval_sanitize.cfg $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest tests -m "not browser and not slow" $(PYTEST_ARGS)

bench: install chromium
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,peers,bench]"
	$(BIN)/python benchmarks/bench_tree.py
	$(BIN)/python benchmarks/bench_sde.py
	$(BIN)/python benchmarks/bench_fbm.py
	$(BIN)/python benchmarks/bench_diffusion.py
	$(BIN)/python benchmarks/bench_fluids.py
	$(BIN)/python benchmarks/bench_cavity.py
	$(BIN)/python benchmarks/latency.py --write-results
	$(BIN)/python benchmarks/notebook_times.py

# Re-pin constraints.txt from a fresh resolve (run after changing dependencies in pyproject.toml).
lock:
	rm -rf /tmp/solverlab-lock && $(PYTHON) -m venv /tmp/solverlab-lock
	/tmp/solverlab-lock/bin/python -m pip install --quiet --upgrade pip
	/tmp/solverlab-lock/bin/python -m pip install --quiet -e ".[test,peers,bench]"
	{ echo '# Versions CI tested (pip constraints). Regenerate with `make lock` after changing pyproject.toml.'; \
	  /tmp/solverlab-lock/bin/python -m pip freeze --exclude-editable | grep -v -e '^solverlab' -e '^ruff=='; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
