"""Requeueing the running batch job (rank 0 runs ``scontrol``; the outcome is agreed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mpi4py import MPI

from .._dist import bcast_json
from .query import Runner, job_id, run_command

# --- requeue ----------------------------------------------------------------------


@dataclass(frozen=True)
class RequeueResult:
    """The outcome of :func:`requeue`; true when the job was requeued.

    Attributes:
        ok: Slurm accepted the requeue.
        message: What happened (the command and its error, or why nothing was done).
    """

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok


def requeue(
    comm: MPI.Comm | None = None,
    *,
    job: str | None = None,
    hold: bool = False,
    env: Mapping[str, str] | None = None,
    runner: Runner | None = None,
    timeout: float = 30.0,
) -> RequeueResult:
    """Requeue the running batch job so that it starts again (and restores its checkpoint).

    Rank 0 of ``comm`` runs ``scontrol requeue <job>`` (``requeuehold`` with
    ``hold=True``); the outcome is broadcast. Slurm then ends the running job (its
    processes get ``SIGTERM``/``SIGKILL``) and puts it back in the queue, where it
    waits at least the cluster's credential lifetime (``AuthInfo=cred_expire``) before
    it starts again, with ``SLURM_RESTART_COUNT`` incremented. So call it after the
    last checkpoint is committed, and exit soon after.

    Collective: call on all ranks.

    Args:
        comm: The communicator; default ``MPI.COMM_WORLD``.
        job: The job id; default :func:`job_id`.
        hold: Requeue held (``scontrol release`` starts it again).
        env: The environment to read the job id from; default ``os.environ``.
        runner: Runs ``scontrol`` (tests replace it).
        timeout: Seconds to wait for ``scontrol``.

    Returns:
        A :class:`RequeueResult`, the same on every rank; false outside Slurm or when
        ``scontrol`` failed (its error is in the message). Never raises for that.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    result: RequeueResult | None = None
    if comm.Get_rank() == 0:
        try:
            job = job_id(env) if job is None else job
            if job is None:
                result = RequeueResult(False, "not in a Slurm job (no SLURM_JOB_ID): not requeued")
            else:
                argv = ["scontrol", "requeuehold" if hold else "requeue", str(job)]
                r = (run_command if runner is None else runner)(argv, timeout)
                if r.returncode == 0:
                    result = RequeueResult(True, f"{' '.join(argv)}: ok")
                else:
                    err = (r.stderr or r.stdout).strip() or f"exit status {r.returncode}"
                    result = RequeueResult(False, f"{' '.join(argv)} failed: {err}")
        except Exception as e:  # keep the broadcast reachable on every rank
            result = RequeueResult(False, f"requeue failed on rank 0: {type(e).__name__}: {e}")
    ok, message = bcast_json(comm, None if result is None else [result.ok, result.message], 0)
    return RequeueResult(bool(ok), str(message))
