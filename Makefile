# Two commands do all set-up on a fresh machine:
#   make run    create .venv, install edgeworker, start it on the bundled default config
#   make test   create .venv, install test dependencies and system services, run the suite
#               (tests/unit in-process, tests/integration with real processes; make test-unit
#               runs the first alone, in about half a minute)
# The interpreter for .venv: the distribution's /usr/bin/python3.11 when it can make a venv
# (Debian builds it with PGO and LTO, linked statically: ~25 % faster on edgeworker's request
# path than a default pyenv or source build), else the first python3.11 on PATH.
# Override: make test PYTHON=/path/to/python3.11
SYSTEM_PYTHON := $(shell test -x /usr/bin/python3.11 && /usr/bin/python3.11 -c 'import venv, ensurepip' 2>/dev/null && echo /usr/bin/python3.11)
PYTHON ?= $(if $(SYSTEM_PYTHON),$(SYSTEM_PYTHON),python3.11)
VENV   := .venv
BIN    := $(VENV)/bin
SOURCES := setup.cfg setup.py pyproject.toml shm/_accel.c edgeworker/_speedups.c
# edgeworker and what serving needs (make run)
STAMP  := $(VENV)/.installed
# the same plus the test extras: pytest, linters, clients the tests drive (make test and the rest)
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test test-unit test-no-accel test-slow lint docs bench bench-instructions deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

# one install with the extras (it also builds the C parts), which covers $(STAMP) too
$(TEST_STAMP): $(SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/edgeworker run

deps:
	./scripts/system-deps.sh

test: $(TEST_STAMP) deps
	$(BIN)/ruff check edgeworker shm tests bench
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory docs
	$(BIN)/python -m pytest -p no:cacheprovider
	$(MAKE) --no-print-directory test-no-accel

# The C parts' pure-Python twins alone (EDGEWORKER_NO_ACCEL / SHM_NO_ACCEL, for debugging):
# the in-process tests and the hostile-input tests against real servers, with both C parts off,
# so the twins refuse what the C refuses.
NO_ACCEL_TESTS := tests/unit tests/integration/test_hardening_smuggling.py \
	tests/integration/test_hardening_faults.py tests/integration/test_hardening_response.py
test-no-accel: $(TEST_STAMP)
	EDGEWORKER_NO_ACCEL=1 SHM_NO_ACCEL=1 $(BIN)/python -m pytest -p no:cacheprovider $(NO_ACCEL_TESTS)

test-unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit

test-slow: $(TEST_STAMP)
	./scripts/system-deps.sh slow
	$(BIN)/python -m pytest -p no:cacheprovider -m slow

lint: $(TEST_STAMP)
	$(BIN)/ruff check edgeworker shm tests bench
	$(BIN)/lint-imports
	$(BIN)/ruff format --check edgeworker shm tests bench

# the documentation site (mkdocs.yml, docs/) into site/; a broken link or anchor, or a page
# left out of the navigation, fails it. `$(BIN)/mkdocs serve` serves it while you edit.
# (No -q: MkDocs counts the warnings that fail --strict only when it prints them.)
docs: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# every bench, the instruction counts and the parsers' comparison, then bench/RESULTS.md written
# from what they measured (bench/report.py; about 45 minutes; on a quiet machine)
bench: $(TEST_STAMP)
	./scripts/system-deps.sh bench
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python bench/report.py

# instructions per request of /hello, /incr and a proxied request, under callgrind (valgrind)
bench-instructions: $(TEST_STAMP)
	./scripts/system-deps.sh bench
	$(BIN)/python bench/instructions.py

clean:
	rm -rf $(VENV) build *.egg-info
