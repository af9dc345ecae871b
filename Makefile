# moescale: two commands for a fresh machine with Python 3.10+ and git.
#   make quickstart   create .venv, install, run the embedded default
#   make test         create .venv, install with dev extras, lint, run the tests

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU wheels of torch live on their own index; a plain `pip install torch` on
# Linux pulls a CUDA build of several GB. Override on machines with a mirror.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CPU_PIN   ?= torch==2.13.0

.PHONY: venv torch install dev quickstart test lint format bench notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python

# Install torch only when the venv has none: a CUDA build when a CUDA GPU is
# visible, otherwise a CPU build (the CPU index first, then a pinned release,
# which some machines hold as a local CPU wheel).
torch: venv
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "torch $$($(BIN)/python -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q "torch>=2.3"; \
	else \
		$(BIN)/python -m pip install -q --retries 0 --timeout 10 --index-url $(TORCH_CPU_INDEX) torch 2>/dev/null \
		|| $(BIN)/python -m pip install -q "$(TORCH_CPU_PIN)"; \
	fi

install: torch
	$(BIN)/python -m pip install -q -e .

dev: torch
	$(BIN)/python -m pip install -q -e ".[dev]"

quickstart: install
	$(BIN)/moescale quickstart

lint: dev
	$(BIN)/ruff check moescale tests benchmarks
	$(BIN)/ruff format --check moescale tests benchmarks

format: dev
	$(BIN)/ruff format moescale tests benchmarks
	$(BIN)/ruff check --fix moescale tests benchmarks

# two workers (pytest-xdist): each module with a shared fixture stays on one worker
# (--dist loadgroup, xdist_group marks) and the slow end-to-end modules start first
# (tests/conftest.py), so the two finish together
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# re-execute the notebooks in place, so they are committed with their outputs
notebooks: dev
	$(BIN)/python notebooks/execute.py

bench: install
	$(BIN)/python -m benchmarks.bench_moe_layer

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
