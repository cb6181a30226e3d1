# The two commands of the README:
#   make serve   start the service on the embedded defaults (SQLite, ./catalogue.yaml)
#   make test    run the whole test suite (installs what it needs: venv, PostgreSQL,
#                Redis, Request Tracker, django-helpdesk, Debian's chromium)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: serve test lint typecheck bench install services clean constraints

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

constraints: $(STAMP)
	$(BIN)/python scripts/constraints.py

serve: $(STAMP)
	$(BIN)/bpsm serve

services:
	bash scripts/ensure-services.sh
	bash scripts/ensure-browser.sh

test: $(STAMP) services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/classify.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
