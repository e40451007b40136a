PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test lint demo bench soak clean

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
	$(PY) bench/overhead_bench.py
	$(PY) bench/baselines.py --testbed shapes
	$(PY) bench/baselines.py --testbed scenes --steps 28
	$(PY) bench/tuned_pareto.py --testbed scenes --steps 28 50 --families "diffusers TaylorSeer lite" --window 1.1 --no-wide
	$(PY) bench/testbed_properties.py --testbed shapes
	$(PY) bench/testbed_properties.py --testbed scenes

soak: $(STAMP)
	CACHE_DIT_SOAK=1 $(PY) -m pytest -q tests/cache_factory/test_state_machine.py
	$(PY) bench/soak_memory.py --calls 400

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
