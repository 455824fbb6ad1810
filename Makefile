# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-installs only when pyproject.toml or this file changes, so the second run is quick.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,demo,serve,heif,onnx]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py --out demo_out

# byte-compile the project first: with PYTHONDONTWRITEBYTECODE set (as on CI images) every Python
# process the suite starts (servers, tools, torchrun ranks) would compile it again, ~0.9 s each
test: $(STAMP)
	$(BIN)/python -m compileall -q retrieval cosegment tools tests > /dev/null
	$(BIN)/python -m pytest -n auto --dist worksteal tests

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[test,demo,serve,heif,onnx,bench]'
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf demo_out index runs
