# Two commands on a fresh machine:  `make reproduce`  and  `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= mini
DATASETS ?= fairgenmed
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export TORCH_HOME := $(CURDIR)/.cache/torch
export XDG_CACHE_HOME := $(CURDIR)/.cache/xdg
export HF_HOME := $(CURDIR)/.cache/huggingface
export JUPYTER_DATA_DIR := $(CURDIR)/.cache/jupyter
export IPYTHONDIR := $(CURDIR)/.cache/ipython
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
# Created up front: IPython and the notebook kernels otherwise warn that they fall back to a temporary folder.
CACHE_DIRS := $(MPLCONFIGDIR) $(TORCH_HOME) $(XDG_CACHE_HOME) $(HF_HOME) $(JUPYTER_DATA_DIR) $(IPYTHONDIR)

.PHONY: env reproduce test test-fast notebooks bench clean-runs study study-sweep study-export study-figures

env: $(VENV)/.installed | $(CACHE_DIRS)

$(CACHE_DIRS):
	@mkdir -p $@

# setuptools announces every editable install in a warning box ("Editable installation": information, not a
# problem); only that message is filtered, any other warning of the build still shows.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e . --no-deps
	touch $@

## The reproduction on the default (synthetic) data: notebooks 01-04 per dataset (and 05 across several datasets),
## every figure they draw. Notebook 06 is `make study`.
reproduce: env
	$(BIN)/fairdiff reproduce --profile $(PROFILE) --datasets $(DATASETS)

## The controlled multi-seed study (every arm of study.arms x study.seeds, the pre-registered statistics of
## study.analysis), then notebook 06 into reports/$(STUDY)/study/; `make study-sweep` adds the fairbo W x r sweep.
## Both resume where they stopped. Independent (seed, arm) runs go to $(STUDY_WORKERS) worker processes with one
## intra-op thread each (OMP_NUM_THREADS=1): on a busy 2-core machine the tiny models sample 3-4x faster with one
## thread than with two, and the thread count changes the last bits of every result, so the study's numbers are
## made with one; the number of workers does not change them (tests/test_study_parallel.py).
## `make study-export` copies the result tables to figures/study/$(STUDY)/ (tracked) with provenance.json.
STUDY ?= study
STUDY_WORKERS ?= 2
study: env
	OMP_NUM_THREADS=1 $(BIN)/fairdiff study --profile $(STUDY) --workers $(STUDY_WORKERS)

study-sweep: env
	OMP_NUM_THREADS=1 $(BIN)/fairdiff study --profile $(STUDY) --sweep --workers $(STUDY_WORKERS)

study-export: env
	$(BIN)/fairdiff study --profile $(STUDY) --export

## Every figure of notebook 06 but the samples, redrawn from the committed tables alone (no run needed), into
## reports/$(STUDY)/study-redraw/ and figures/study/$(STUDY)/fairgenmed/.
study-figures: env
	$(BIN)/fairdiff study --profile $(STUDY) --redraw

## Every test: unit tests, the multi-process run, and the notebooks under nbval (smoke profile).
test: env
	$(BIN)/python -m pytest -q tests notebooks

test-fast: env
	$(BIN)/python -m pytest -q tests -m "not slow and not multiprocess"

## Regenerate the committed .ipynb twins (smoke outputs) from the reviewed py:percent sources.
notebooks: env
	$(BIN)/fairdiff notebooks

## Reruns the benchmarks that benchmarks/results/summary.md marks as rerun (the training and sampling ones use
## the mini runs of `make reproduce`) and records each file's commit, date, threads and load in provenance.csv.
bench: env
	$(BIN)/python benchmarks/run_all.py

clean-runs:
	rm -rf runs reports
