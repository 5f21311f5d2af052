"""The one place where tests build ``mpirun`` command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

__all__ = ["MPI_ENV", "mpi_env", "mpirun_cmd", "run_mpi"]

MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


def mpi_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an ``mpirun`` job on this machine (as root, oversubscribed)."""
    env = dict(os.environ, **MPI_ENV)
    # a test that runs under mpirun itself must not leak its own rank's PMIx/OMPI context
    for k in [k for k in env if k.startswith(("PMIX_", "OMPI_COMM_WORLD", "OMPI_MCA_ess"))]:
        del env[k]
    env.update(extra or {})
    return env


def mpirun_cmd(n: int, program: str | Sequence[str], *args: str) -> list[str]:
    """``mpirun -n N python -m mpi4py PROGRAM ARGS`` (a script path, or ``["-m", module]``).

    ``-m mpi4py`` aborts the whole job when a rank dies of an uncaught exception.
    """
    prog = [program] if isinstance(program, str) else list(program)
    return [
        "mpirun",
        "--oversubscribe",
        "-n",
        str(n),
        sys.executable,
        "-m",
        "mpi4py",
        *prog,
        *map(str, args),
    ]


def run_mpi(
    n: int,
    program: str | Sequence[str],
    *args: str,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run an MPI job to completion; stdout and stderr captured as text."""
    return subprocess.run(
        mpirun_cmd(n, program, *args),
        env=mpi_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
