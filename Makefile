# Two entry points: `make demo` (the main job) and `make test`. Both set up .venv on first use.
# `make test-min`: the fast tests against the lowest versions pyproject.toml declares (.venv-min).
PY := .venv/bin/python
STAMP := .venv/.installed
MIN_PY := .venv-min/bin/python
MIN_STAMP := .venv-min/.installed

.PHONY: demo test test-min lint format setup clean

$(STAMP): requirements-dev.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m duda demo $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: $(STAMP)
	$(PY) -m ruff check --fix src tests benchmarks
	$(PY) -m ruff format src tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest $(ARGS)

# torch goes in first and stays pinned in the requirements (the CPU build on disk; any other
# version is a CUDA download); everything else at its declared minimum (.ci/min_requirements.py).
# Wheels only: a minimum without a wheel for this Python fails here rather than being compiled.
# --check: every installed version is the declared minimum, torch still 2.13.0.
$(MIN_STAMP): pyproject.toml .ci/min_requirements.py
	rm -rf .venv-min
	python3 -m venv .venv-min
	$(MIN_PY) -m pip install -q --upgrade pip
	$(MIN_PY) -m pip install -q torch==2.13.0
	$(MIN_PY) .ci/min_requirements.py > .venv-min/requirements-min.txt
	$(MIN_PY) -m pip install -q --only-binary=:all: -r .venv-min/requirements-min.txt
	$(MIN_PY) .ci/min_requirements.py --check
	$(MIN_PY) -m pip install -q --no-deps -e .
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_PY) -m pytest -m "not slow" -q $(ARGS)

clean:
	rm -rf .venv .venv-min .pytest_cache .ruff_cache
