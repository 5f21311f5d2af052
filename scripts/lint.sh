#!/usr/bin/env bash
# Static checks, run by `make lint` and first in `make test`:
# ruff (style), import-linter (the layering of DESIGN.md), mypy (types).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BIN=$(dirname "$PY")
status=0
echo "--- ruff"
"$PY" -m ruff check hpckpt tests benchmarks slurm docs/examples || status=1
"$PY" -m ruff format --check --quiet hpckpt tests || status=1
echo "--- import-linter (layers, h5py only in hpckpt.io)"
"$BIN/lint-imports" --no-cache || status=1
echo "--- mypy hpckpt"
"$PY" -m mypy hpckpt || status=1
exit $status
