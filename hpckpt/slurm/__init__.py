"""Slurm integration: time left, preemption signals, agreed checkpoint/exit decisions, requeue.

A batch job that checkpoints with hpckpt usually wants three things from Slurm:

* **How much time is left** (:func:`time_left`, :func:`job_end_time`): from
  ``SLURM_JOB_END_TIME`` when Slurm sets it, else from ``scontrol show job`` (``EndTime``),
  else from ``squeue -o %e`` / ``%L``. ``None`` outside Slurm or for jobs without a limit.
* **When to checkpoint and when to stop** (:class:`JobControl`), in the spirit of SCR's
  ``SCR_Need_checkpoint``/``SCR_Should_exit``: checkpoint when the time left falls under a
  margin learnt from measured save (and step) durations, when a preemption signal
  (``SIGUSR1`` from ``sbatch --signal=B:USR1@N``, ``SIGTERM``) arrived, or periodically.
  The signal handlers only set a flag; at the next step boundary all ranks agree with one
  ``MPI.LOR`` allreduce, so every rank takes the same decision.
* **Requeue** (:func:`requeue`): rank 0 runs ``scontrol requeue $SLURM_JOB_ID``; the job
  runs again from its start and restores its latest checkpoint.

Typical loop::

    with hpckpt.slurm.JobControl(options=hpckpt.slurm.JobControlOptions(
            checkpoint_every_steps=100)) as jc:
        while step < num_steps:
            train_step()
            step += 1
            if jc.should_checkpoint(step):          # collective
                with jc.timed_save():
                    manager.save(checkpoint_number=step)
            if jc.should_exit():                    # collective
                if jc.stop_decision.requeue:
                    jc.requeue()                    # collective; rank 0 runs scontrol
                break

This module never touches checkpoint files; it imports neither h5py nor the IO layer.
"""

from .control import Decision, JobControl, JobControlOptions
from .margin import MarginEstimator
from .query import (
    CommandResult,
    Runner,
    job_end_time,
    job_id,
    parse_scontrol_fields,
    parse_slurm_duration,
    parse_slurm_timestamp,
    run_command,
    time_left,
)
from .requeue import RequeueResult, requeue

__all__ = [
    "CommandResult",
    "Decision",
    "JobControl",
    "JobControlOptions",
    "MarginEstimator",
    "RequeueResult",
    "Runner",
    "job_end_time",
    "job_id",
    "parse_scontrol_fields",
    "parse_slurm_duration",
    "parse_slurm_timestamp",
    "requeue",
    "run_command",
    "time_left",
]
