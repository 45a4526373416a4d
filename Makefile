# Two commands on a fresh clone:  make demo  (set up + restore an example)  and  make test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := out/demo

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv inside the checkout and install everything pinned

demo: setup  ## the main job on embedded defaults: inpaint a hole in a committed example
	$(BIN)/knitwork fit examples/butterfly.png --task inpaint --synthetic --fill-ratio 0.04 \
		-o $(DEMO)/butterfly.png --side-by-side $(DEMO)/butterfly-side-by-side.png \
		--metrics-json $(DEMO)/butterfly-metrics.json --save-model $(DEMO)/butterfly.pt
	@echo "see $(DEMO)/butterfly-side-by-side.png (input | restored | original)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint  ## lint, then the whole test suite (pytest's "no tests" exit 5 counts as a pass)
	$(BIN)/pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

bench: setup  ## CPU benchmark of the core: writes docs/benchmarks/core.md
	$(BIN)/python benchmarks/core.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
