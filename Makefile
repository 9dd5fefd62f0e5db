# Two commands do everything (see README):  `make run`  and  `make test`.
# Both create/refresh the virtual environment first (torch pinned and installed first).
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.motor-installed
SHARED := $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
# real data for tests/CI when the team's shared folder exists; otherwise data/ (or the synthetic default)
export MOTOR_DATA ?= $(SHARED)
# make run: DATASET empty = scientific when it is under MOTOR_DATA, else the synthetic set (one line says so);
# a named DATASET that does not exist is an error listing the datasets found.
DATASET ?=
BACKBONE ?= lightgcn
OUT ?= out

.PHONY: env run test bench clean reports

env: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=python3.x)"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# OpenMP for training jobs: idle OpenMP threads sleep (PASSIVE) unless you say otherwise. Spinning threads
# (ACTIVE, and libgomp's default, which spins before it sleeps) are slow whenever the cores are shared: LightGCN-ms
# on scientific, 2 cores at load 9-12, s/epoch: 1 thread 0.40, PASSIVE 0.65, default 4.1, ACTIVE 13.4.
# Knobs: `make run OMP_WAIT_POLICY=ACTIVE` on an idle machine (faster there), `OMP_NUM_THREADS=1` on a busy one.
TRAIN_ENV := OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE}
# make run: train one model with notebooks/02_train.ipynb, then print its summary. The executed notebook and its
# HTML page go to $(OUT)/ and the run to the user's registry (runs/, or $$MOTOR_RUNS): both git-ignored.
# DATASET, BACKBONE and OUT reach the recipe through the environment ("$$DATASET"), never as text of the shell
# command, so no value can run a command; both are checked before anything runs.
run: export DATASET := $(DATASET)
run: export BACKBONE := $(BACKBONE)
run: export OUT := $(OUT)
run: $(STAMP)
	@ds=$$($(PY) -m motor dataset "$$DATASET") || exit 2; \
	$(PY) -c 'import sys; from motor.backbones import BASELINES, REGISTRY; names = sorted(REGISTRY) + sorted(BASELINES); \
		sys.exit(0 if sys.argv[1] in names else f"make run: error: BACKBONE={sys.argv[1]!r} is not a backbone; use one of {names}.")' \
		"$$BACKBONE" || exit 2; \
	name=$${ds##*/}; nb="$$OUT/02_train-$$name-$$BACKBONE.ipynb"; mkdir -p "$$OUT" || exit 1; \
	echo "training $$BACKBONE on $$ds: notebooks/02_train.ipynb -> $$nb"; \
	$(TRAIN_ENV) $(PY) -m motor.report execute notebooks/02_train.ipynb "$$nb" -p dataset "$$ds" \
		-p backbone "$$BACKBONE" --html >/dev/null || exit 1; \
	$(PY) -m motor summary "$$nb" || exit 1; \
	echo "notebook $$nb"; echo "report   $${nb%.ipynb}.html"

test: $(STAMP)
	$(VENV)/bin/ruff check motor tests benchmarks
	MOTOR_FAST=1 MOTOR_RUNS=$$(mktemp -d) MOTOR_CACHE=$$(mktemp -d) $(PY) -m pytest -q tests notebooks --nbval-lax -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/bench_tokenizer.py
	$(PY) benchmarks/bench_models.py

clean:
	rm -rf $(VENV) .cache .pytest_cache

# Full-mode executed notebooks, HTML pages, screenshots and reports/README.md (long: reuses the committed run
# registry reports/runs and trains what it lacks). Options: reports/build.py --help.
reports: export MOTOR_RUNS = $(CURDIR)/reports/runs
reports: $(STAMP)
	$(TRAIN_ENV) $(PY) reports/build.py
