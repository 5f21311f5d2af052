"""Benchmarks of hpckpt against the raw IO limits and common alternatives.

Run as ``python -m benchmarks <suite> [options]``, under ``mpirun`` (or ``srun``)
with ``python -m mpi4py`` so that a failing rank aborts the job::

    mpirun -n 4 python -m mpi4py -m benchmarks bandwidth --sizes 1G --reps 5

Suites: ``bandwidth`` (a few big sharded tensors), ``small`` (many small
tensors), ``reshard`` (restore onto another layout or mesh) and ``plot`` (PNG
from ``--json-out`` files). See ``docs/performance.md``.
"""

__all__: list[str] = []
