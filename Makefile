# Every target works from nothing: it creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU build this machine carries (a bare `torch` would pull a multi-GB CUDA build).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,onnx,app]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/perceptsr demo samples -o out/demo --overwrite

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/perceptsr bench

clean:
	rm -rf out .pytest_cache
