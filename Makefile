# Trainyard: `make demo` runs the main job end to end on the embedded defaults; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo dev test lint bench services clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) || (apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install -q -e '.[dev,local]' 2>&1 | grep -v "is ignored" || true
	@$(BIN)/python -c "import dagster_project, dagster, lakefs_sdk, moto" || (echo "install failed" && exit 1)
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/trainyard demo

dev: install
	$(BIN)/trainyard dev

services: install
	$(BIN)/trainyard services

test: install
	bash scripts/ensure_postgres.sh
	bash scripts/ensure_chromium.sh
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/pipeline.py --records 100000

clean:
	rm -rf .trainyard
