#!/usr/bin/env bash
# Run every example of the documentation, in order, in a fresh scratch directory.
#
#   bash docs/examples/run_all.sh            # 4 ranks
#   NP=1 bash docs/examples/run_all.sh       # another rank count for the examples that
#                                            # take any (the others always run on 4)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=${PY:-$repo/.venv/bin/python}
NP=${NP:-4}
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export PYTHONDONTWRITEBYTECODE=1
work=$(mktemp -d "${TMPDIR:-/tmp}/hpckpt-examples-XXXXXX")
cd "$work"
echo "# scratch directory: $work"

mpi() {  # mpi N script args...
    local n=$1; shift
    echo "\$ mpirun -n $n python -m mpi4py docs/examples/$*"
    mpirun --oversubscribe -n "$n" "$PY" -m mpi4py "$here/$1" "${@:2}"
}
serial() {
    echo "\$ python docs/examples/$*"
    "$PY" "$here/$1" "${@:2}"
}

mpi "$NP" quickstart.py
mpi 3 quickstart.py
serial quickstart.py
mpi 4 guide_mesh_layout.py
mpi 4 guide_variables.py
mpi 4 guide_checkpoint.py
mpi "$NP" guide_manager.py
mpi "$NP" guide_async.py
mpi 4 guide_io_modes.py
mpi "$NP" guide_resume.py save
mpi 3 guide_resume.py restore
serial guide_resume.py restore
mpi 4 guide_errors.py
mpi "$NP" training_model.py
mpi "$NP" training_loop.py
mpi 3 training_loop.py
mpi "$NP" training_loading.py
serial training_inspect.py
mpi "$NP" training_tracking.py
mpi "$NP" training_slots.py
mpi "$NP" training_pystate.py
mpi "$NP" training_status.py
mpi 4 format_example.py
serial format_read_h5py.py fmt/ckpt-3
mpi "$NP" format_alignment.py
mpi 4 heat_solver.py heat --steps 40 --stop-at 20
mpi 3 heat_solver.py heat --steps 40
mpi 2 torch_train.py torchrun --steps 6 --stop-at 3
mpi 3 torch_train.py torchrun --steps 6
HPCKPT_RANKS_PER_NODE=2 mpi 4 multilevel.py   # two emulated nodes of two ranks
echo "# all examples passed"
