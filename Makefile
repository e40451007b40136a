PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(wildcard src tests bench examples)
	$(VENV)/bin/ruff format --check $(wildcard src tests bench examples)

test: lint
	$(PY) -m pytest tests

demo: $(STAMP)
	$(PY) -m cache_dit.demo

bench: $(STAMP)
	$(PY) bench/run_bench.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
