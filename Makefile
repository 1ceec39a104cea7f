# `make extract` and `make test` work on a fresh clone: both bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: extract test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

extract: $(STAMP)
	$(BIN)/l2c run

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy ground l2c connector transforms config sandbox sql exports
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m pytest -m bench -p no:xdist -s tests/bench

clean:
	rm -rf $(VENV) data .pytest_cache
