# Shortcuts; each is one command you can also type yourself.
PY ?= python

.PHONY: help install train test test-all lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install:  ## set up the project with its dev tools (in the active environment)
	$(PY) -m pip install -e ".[dev]"

train:  ## the default job: DCGAN, non-saturating loss, embedded MNIST, CPU (~3 min)
	$(PY) -m src.train

test:  ## the default test suite (what CI runs)
	$(PY) -m pytest

test-all:  ## every test, the slow ones too
	$(PY) -m pytest -m ""

lint:  ## ruff lint and format check
	ruff check .
	ruff format --check .

format:  ## fix what ruff can and format the code
	ruff check --fix .
	ruff format .

clean:  ## remove run outputs and caches (not data/)
	rm -rf outputs multirun .pytest_cache .ruff_cache
