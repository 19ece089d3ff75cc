# Two commands on a fresh machine with python3 (3.11+), make and git:
#   make demo   - run the pipeline on the built-in sandbox
#   make test   - run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e . --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/leadflow demo

# Two worker processes (pytest-xdist), each file's tests together and in order; PYTEST_WORKERS=0 runs
# the suite in this one process.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/leadflow bench --crm hubspot --leads 10000

# Regenerate the lock file from pyproject.toml (maintainers only).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet --upgrade pip
	.lockenv/bin/python -m pip install --quiet ".[test,bench]"
	.lockenv/bin/python -m pip freeze --all --exclude leadflow --exclude pip > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
