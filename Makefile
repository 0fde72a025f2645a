# make run   install what is missing, then start DataPilot on the embedded defaults (127.0.0.1:5670)
# make test  install what is missing (dev tools too), then run ruff, mypy, the import contracts and the whole test suite
.PHONY: run test install install-dev lint bench clean

VENV := .venv
BIN := $(VENV)/bin

run: install
	$(BIN)/datapilot start

test: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

install:
	@bash scripts/install.sh

install-dev:
	@bash scripts/install.sh --dev

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install-dev
	$(BIN)/python benchmarks/api_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
