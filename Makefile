# The two set-up commands of the README: `make demo` and `make test`. Both build the
# virtualenv on first use, so they work from a clean clone on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck browser unit integration bench kafka-up kafka-down clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Sluice needs Python 3.11+; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sluice demo

test: lint typecheck browser
	SLUICE_REQUIRE_INTEGRATION=1 $(BIN)/pytest

# The inner loop: every test but the slow (> ~20 s), three-broker and fault-injection ones
# (markers in pyproject.toml). `make test`, which CI runs, deselects nothing.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow and not cluster and not chaos"

# The dashboard test drives Debian's headless Chromium; install it when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the dashboard test"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
	  { echo "error: chromium is needed for the dashboard test (apt-get install chromium)"; exit 1; }; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

kafka-up: $(STAMP)
	$(BIN)/sluice kafka up

kafka-down: $(STAMP)
	$(BIN)/sluice kafka down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
