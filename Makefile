# trustdiff — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-app services browser lint typecheck pytest test demo demo-build bench bench-quick bench-gpu bench-scale bench-scale-service load chaos openapi clean

# Everything: the service, the demo and the test tools. `install-app` is the service and the
# demo only (what `make demo` needs; the test extras add about 90 s to a fresh install).
install: $(VENV)/.installed
install-app: $(VENV)/.installed-app

# torch first, pinned: pip takes the local CPU wheel; a looser requirement resolved first
# would pull a multi-GB CUDA build. The pin is repeated beside the project: resolving the test
# extras, pip otherwise prefers a newer torch (a CUDA build) to the installed one.
TORCH := torch==2.13.0

$(VENV)/.installed-app: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[service,demo]' $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.installed-app
	$(PY) -m pip install --quiet -e '.[service,test,demo]' $(TORCH)
	touch $@

services:
	bash scripts/ensure-services.sh

# Debian's chromium + chromedriver for the report's browser test (installed when absent).
browser:
	bash scripts/ensure-chromium.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install services browser
	$(BIN)/pytest

test: lint typecheck pytest

# Builds the demo models once (cached under demo-assets/), then audits each candidate over HTTP.
demo-build: install-app
	$(PY) -m demo.build

demo: demo-build
	$(PY) -m demo.run

# OpenMP reads its wait policy when torch loads: set here (the script also defaults it) so
# every arm's forwards run with idle OpenMP workers parked, not spinning. BENCH_ARGS reaches
# the script, e.g. BENCH_ARGS="--repeats 5 --compile".
BENCH_ARGS ?=
bench: install
	OMP_WAIT_POLICY=PASSIVE $(PY) bench/bench_explain.py $(BENCH_ARGS)

# A small run that checks the benchmark works (its figures mean nothing).
bench-quick: install
	OMP_WAIT_POLICY=PASSIVE $(PY) bench/bench_explain.py --quick

# One large synthetic audit through the CLI engine (default 1,000,000 rows; ROWS=100000 on
# a small machine): stage times, peak RSS, document and rows file sizes, first /rows page.
ROWS ?= 1000000
bench-scale: install
	OMP_WAIT_POLICY=PASSIVE $(PY) bench/bench_scale.py --rows $(ROWS)

# The same size through the service on Postgres + Redis, sharded over WORKERS workers (one
# fresh service per count): stage wall times, peak RSS per worker, result and rows file sizes,
# first /rows page. ROWS=20000 WORKERS=1,2 checks that it works in a few minutes.
WORKERS ?= 1,2,4
bench-scale-service: install services
	OMP_WAIT_POLICY=PASSIVE $(PY) bench/bench_scale_service.py --rows $(ROWS) --workers $(WORKERS)

# The GPU path: 500 sentence pairs x 2 BERT-base-sized models (LIME 1000 + SHAP 500 + floor).
# Without CUDA it runs a tiny smoke variant. BENCH_GPU_ARGS passes options, e.g.
# "--processes 14 --block-instances 4" or "--forward-ceiling" (bench/README.md).
BENCH_GPU_ARGS ?=
bench-gpu: install
	$(PY) bench/bench_gpu.py $(BENCH_GPU_ARGS)

# Not part of `make test`: minutes of CPU, and figures that depend on the machine's load.
# 100 clients against the embedded default, then 200 against Postgres + Redis (60 s each).
load: install services
	$(PY) scripts/load.py --mode embedded --clients 100 --duration 60
	$(PY) scripts/load.py --mode postgres --clients 200 --duration 60

# 12 audits through 4 worker SIGKILLs, a Redis restart without persistence (its own
# redis-server on port 6380) and a gateway SIGKILL: all must succeed once.
chaos: install services
	$(PY) scripts/chaos.py --audits 12 --worker-kills 4

openapi: install
	$(PY) -m service.openapi_export > openapi/openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out
