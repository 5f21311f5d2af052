# hpckpt: `make demo` runs the main job, `make test` runs every test.
# Both install what is missing first (scripts/setup.sh, idempotent).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
NP ?= 4
STAMP := $(VENV)/.hpckpt-ready

export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
# Quiet, shared-memory-only Open MPI for single-node tests and demos.
export OMPI_MCA_rmaps_base_oversubscribe := 1
export OMPI_MCA_btl := self,vader
export PRTE_MCA_rmaps_default_mapping_policy := :oversubscribe

MPIRUN := mpirun --oversubscribe
PYTEST_MPI := -m mpi4py -m pytest --with-mpi -q -p no:cacheprovider --timeout=240

.PHONY: setup demo test lint bench clean

$(STAMP): setup.cfg setup.py pyproject.toml scripts/setup.sh hpckpt/io/_crc32c.c
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m hpckpt.demo --ranks $(NP)

test: $(STAMP)
	bash scripts/run-tests.sh

lint: $(STAMP)
	bash scripts/lint.sh

bench: $(STAMP)
	$(PY) -m benchmarks bandwidth

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
