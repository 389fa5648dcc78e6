# The two commands: `make run` and `make test`. Every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EVENT  ?= events/stop-running.json

.PHONY: install run invoke test unit lint format clean bench bench-smoke

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install ## the stop route on http://localhost:3000 against an embedded AWS emulation
	$(BIN)/python -m local.run

invoke: install ## one sample event through the real handler: make invoke EVENT=events/stop-running.json
	$(BIN)/python -m local.invoke $(EVENT)

lint: install ## ruff, mypy, cfn-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml

unit: install ## the test suite alone
	$(BIN)/pytest

test: lint unit ## everything CI runs

bench: install ## our function against two peers, side by side: the table in docs/performance.md
	$(BIN)/python -m benchmarks.run

bench-smoke: install ## the same with a few runs of each: CI checks that it runs, not its times
	$(BIN)/python -m benchmarks.run --smoke

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache .bench
