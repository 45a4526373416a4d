# Two commands on a fresh clone:  make demo  (set up + restore an example)  and  make test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := out/demo
# Headless Chromium (Debian's package) renders the comparison report in tests/tune/test_compare.py
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup demo test lint browser bench bench-quality kubeflow clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv inside the checkout and install everything pinned

demo: setup  ## the main job on embedded defaults: restore examples/images on a local Ray cluster
	$(BIN)/knitwork restore examples/images $(DEMO) --task inpaint --synthetic --fill-ratio 0.04
	@echo "restored images and _manifest.jsonl in $(DEMO)/; MLflow runs in ./mlflow.db:"
	@echo "  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db   (then open http://127.0.0.1:5000)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

browser: $(CHROMIUM)  ## headless Chromium for the report test (apt, once)

$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

test: lint browser  ## lint, then the whole test suite in two workers, a file each (pytest's "no tests" exit 5 counts as a pass)
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=20; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

bench: setup  ## CPU benchmarks (about an hour): docs/benchmarks/*.md
	$(BIN)/python benchmarks/core.py
	$(BIN)/python benchmarks/sr.py
	$(BIN)/python benchmarks/precision.py
	$(BIN)/python benchmarks/restore.py
	$(BIN)/python benchmarks/performance.py memory
	$(BIN)/python benchmarks/performance.py photo --budget 3G --steps 100
	$(BIN)/python benchmarks/performance.py crops --count 5 --steps 150

bench-quality: setup  ## the quality benchmark beside the paper's tables (hours on a CPU): docs/benchmarks/quality.md
	$(BIN)/python benchmarks/quality.py run
	$(BIN)/python benchmarks/quality.py report

kubeflow: setup  ## recompile the Kubeflow pipeline: infra/kubeflow/knitwork_pipeline.yaml
	$(BIN)/python -m pipeline.kubeflow compile

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
