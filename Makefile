# polsess_hf developer commands. Everything installs from scratch into .venv (a fresh machine needs only
# Python ≥ 3.10 and pip).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-spmamba test-fast demo bench bench-deps clean help

help:
	@echo "make install   create $(VENV) and install polsess_hf with its test dependencies"
	@echo "make test      install, then run the whole test suite (what CI runs)"
	@echo "make test-fast the tests not marked slow"
	@echo "make demo      install, then run the demo on the bundled mini corpus"
	@echo "make bench     benchmarks (adds the asteroid reference), results in benchmarks/"

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned, so pip takes the CPU build available here instead of a multi-GB CUDA one.
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	# Test-only reference: speechbrain without its dependencies (its torchaudio does not exist for torch 2.13).
	$(BIN)/pip install --quiet --no-deps speechbrain==1.1.2
	touch $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-spmamba: install
	$(PY) -m pytest tests/models/spmamba $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench-deps: install
	# Second reference for the benchmarks only; never a dependency of the package.
	$(BIN)/pip install --quiet --no-deps asteroid==0.7.0 asteroid-filterbanks==0.4.0

bench: bench-deps
	$(PY) benchmarks/bench_models.py

demo: install
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
