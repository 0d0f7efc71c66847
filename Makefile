# Two commands do all set-up on a fresh machine:
#   make run    create .venv, install edgeworker, start it on the bundled default config
#   make test   create .venv, install test dependencies and system services, run the suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow lint bench deps clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

run: $(STAMP)
	$(BIN)/edgeworker run

deps:
	./scripts/system-deps.sh

test: $(STAMP) deps
	$(BIN)/ruff check edgeworker shm tests bench
	$(BIN)/python -m pytest -p no:cacheprovider

test-slow: $(STAMP) deps
	$(BIN)/python -m pytest -p no:cacheprovider -m slow

lint: $(STAMP)
	$(BIN)/ruff check edgeworker shm tests bench
	$(BIN)/ruff format --check edgeworker shm tests bench

bench: $(STAMP)
	./scripts/system-deps.sh bench
	$(BIN)/python bench/shm_bench.py
	$(BIN)/python bench/http_bench.py
	$(BIN)/python bench/reload_bench.py
	$(BIN)/python bench/proxy_bench.py
	$(BIN)/python bench/edge_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
