# `make extract` and `make test` work on a fresh clone: both bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Azurite, Microsoft's Azure Storage emulator, pinned in tests/azurite/package-lock.json: the storage the remote
# Link export tests read (tests/connector/azurite.py). Without npm those tests fail under CI and skip elsewhere.
AZURITE_DIR := tests/azurite
AZURITE := $(AZURITE_DIR)/node_modules/.bin/azurite-blob

.PHONY: extract test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(AZURITE): $(AZURITE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(AZURITE_DIR) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm is not installed: the remote Link export tests (Azurite) cannot run" >&2; fi

extract: $(STAMP)
	$(BIN)/l2c run

test: $(STAMP) $(AZURITE)
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy ground l2c connector transforms config sandbox sql exports
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m pytest -m bench -p no:xdist -s tests/bench

clean:
	rm -rf $(VENV) data .pytest_cache $(AZURITE_DIR)/node_modules
