# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-vllm testbed-down install bench clean

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

## everything, including slow, ray and real-vLLM tests (the real-vLLM ones skip unless the testbed is built: see test-vllm)
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

## make test-vllm: build the real-vLLM testbed if needed (≈ 3.5 GB in .testbed/ or $$DPBALANCE_TESTBED_DIR, a few
## minutes the first time), run the opt-in real-vLLM tests (they start and stop the ranks), and end any rank left up
test-vllm: $(STAMP)
	$(BIN)/dpbalance testbed build
	$(BIN)/python -m pytest -m vllm -v -s -rA --durations=10 tests/real_vllm; status=$$?; \
		$(BIN)/dpbalance testbed down; exit $$status

## make testbed-down: end the real-vLLM ranks started by `dpbalance testbed up` or an interrupted test run
testbed-down:
	$(BIN)/dpbalance testbed down

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sim.py

clean:
	rm -rf $(VENV) demo-report .pytest_cache
