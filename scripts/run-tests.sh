#!/usr/bin/env bash
# The whole test suite: serial tests, the object tests on 1 rank, then MPI tests on 2, 3 and 4 ranks.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1
export PYTHONDONTWRITEBYTECODE=1
status=0
total_pass=0; total_fail=0; total_skip=0

run() {
    local label=$1; shift
    echo "=== $label"
    local log; log=$(mktemp)
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    # Count from the final pytest summary line(s) of rank 0 (or of the serial run).
    local line; line=$(grep -a -E "^(=+ )?[0-9]+ (passed|failed)" "$log" | head -n 1)
    local p f s
    # (ranks' summaries may share a line: take the first of each count)
    p=$(grep -a -oE "[0-9]+ passed" <<<"$line" | head -n 1 | grep -oE "[0-9]+" || echo 0)
    f=$(grep -a -oE "[0-9]+ failed" <<<"$line" | head -n 1 | grep -oE "[0-9]+" || echo 0)
    s=$(grep -a -oE "[0-9]+ skipped" <<<"$line" | head -n 1 | grep -oE "[0-9]+" || echo 0)
    total_pass=$((total_pass + ${p:-0})); total_fail=$((total_fail + ${f:-0})); total_skip=$((total_skip + ${s:-0}))
    rm -f "$log"
    if [ "$rc" -ne 0 ]; then echo "!!! $label failed (exit $rc)"; status=1; fi
}

echo "=== lint (ruff, import-linter, mypy)"
if bash scripts/lint.sh; then echo "lint: ok"; else echo "!!! lint failed"; status=1; fi

run "serial tests" "$PY" -m pytest -q -p no:cacheprovider --color=no --timeout=300 -m "not mpi" tests
# The object-graph, manager and reader tests also on a single rank (a job of one).
# The object-graph tests and TensorFlow's ported tests also on a single rank (a job of one).
run "MPI object tests on 1 rank" timeout 900 mpirun -n 1 \
    "$PY" -m mpi4py -m pytest --with-mpi -q -p no:cacheprovider --color=no --timeout=240 --timeout-method=thread -m mpi tests/test_mpi_objects.py tests/test_mpi_tf_parity.py tests/tf_port
for n in 2 3 4; do
    # TensorFlow's ported tests run on 1 and 2 ranks
    skip=(); [ "$n" -gt 2 ] && skip=(--ignore=tests/tf_port)
    run "MPI tests on $n ranks" timeout 900 mpirun --oversubscribe -n "$n" \
        "$PY" -m mpi4py -m pytest --with-mpi -q -p no:cacheprovider --color=no --timeout=240 --timeout-method=thread -m mpi "${skip[@]}" tests
done
echo
echo "total: $total_pass passed, $total_fail failed, $total_skip skipped"
exit $status
