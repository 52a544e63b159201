# Two entry points: `make demo` (the main job) and `make test`. Both set up .venv on first use.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test lint format setup clean

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

clean:
	rm -rf .venv .pytest_cache .ruff_cache
