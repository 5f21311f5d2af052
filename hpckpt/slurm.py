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

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
from mpi4py import MPI

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

#: Values Slurm prints for "no such time" or "no limit".
_NO_TIME = frozenset(
    {"", "unknown", "none", "n/a", "not_set", "invalid", "unlimited", "infinite", "(null)"}
)

_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class CommandResult:
    """What a command run by a :data:`Runner` returned.

    Attributes:
        returncode: The exit status (127 when the program does not exist, 124 on timeout).
        stdout: Its standard output.
        stderr: Its standard error.
    """

    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str], float], CommandResult]
"""Runs ``argv`` with a timeout in seconds; replaceable in tests."""


def run_command(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run ``argv`` and capture its output; never raises for a missing program or a timeout."""
    try:
        p = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        return CommandResult(127, "", str(e))
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"{argv[0]} timed out after {timeout:g} s")
    except OSError as e:
        return CommandResult(126, "", str(e))
    return CommandResult(p.returncode, p.stdout, p.stderr)


# --- parsing (pure) ---------------------------------------------------------------


def job_id(env: Mapping[str, str] | None = None) -> str | None:
    """The running job's id (``SLURM_JOB_ID``, or the older ``SLURM_JOBID``), or ``None``.

    For an array task this is the task's own job id, which ``scontrol`` accepts.
    """
    env = os.environ if env is None else env
    for key in ("SLURM_JOB_ID", "SLURM_JOBID"):
        value = env.get(key, "").strip()
        if value:
            return value
    return None


def parse_slurm_timestamp(text: str | None) -> float | None:
    """Parse a Slurm time stamp into seconds since the epoch.

    Slurm prints times like ``2024-05-01T13:45:00`` in the local time zone of the
    command (``scontrol``, ``squeue -o %e``); ``SLURM_JOB_END_TIME`` is an integer
    epoch. ``Unknown``, ``None``, ``N/A`` and empty strings mean no time.

    Args:
        text: The time stamp.

    Returns:
        Seconds since the epoch, or ``None`` when there is no time.

    Raises:
        ValueError: ``text`` is none of these forms.
    """
    if text is None:
        return None
    s = text.strip()
    if s.lower() in _NO_TIME:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    for fmt in _TIMESTAMP_FORMATS:
        try:
            tm = time.strptime(s, fmt)
        except ValueError:
            continue
        return time.mktime(tm)
    raise ValueError(f"not a Slurm time stamp: {text!r}")


def parse_slurm_duration(text: str | None) -> float | None:
    """Parse a Slurm duration (``squeue %L``/``%l``, ``--time``) into seconds.

    Accepted forms, as Slurm's own parser: ``M``, ``M:S``, ``H:M:S``, ``D-H``,
    ``D-H:M``, ``D-H:M:S``. ``UNLIMITED``, ``INFINITE``, ``NOT_SET``, ``INVALID`` and
    empty strings mean no limit (``None``).

    Args:
        text: The duration.

    Returns:
        Seconds, or ``None`` for no limit.

    Raises:
        ValueError: ``text`` is none of these forms.
    """
    if text is None:
        return None
    s = text.strip()
    if s.lower() in _NO_TIME:
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if m is None:
        raise ValueError(f"not a Slurm duration: {text!r}")
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        h, mi, se = int(a), int(b or 0), int(c or 0)
        return float(((int(days) * 24 + h) * 60 + mi) * 60 + se)
    if c is not None:  # H:M:S
        return float((int(a) * 60 + int(b)) * 60 + int(c))
    if b is not None:  # M:S
        return float(int(a) * 60 + int(b))
    return float(int(a) * 60)  # M


def parse_scontrol_fields(text: str) -> dict[str, str]:
    """The ``Key=Value`` fields of ``scontrol show job`` output (first job only).

    Values are taken up to the next white space, which is enough for the time and
    state fields (``EndTime``, ``TimeLimit``, ``RunTime``, ``JobState``).
    """
    fields: dict[str, str] = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][\w/:]*)=(\S*)", text):
        key, value = m.group(1), m.group(2)
        if key == "JobId" and "JobId" in fields:
            break  # a second job record starts
        fields.setdefault(key, value)
    return fields


def job_end_time(
    *,
    job: str | None = None,
    env: Mapping[str, str] | None = None,
    runner: Runner | None = None,
    now: float | None = None,
    timeout: float = 10.0,
) -> tuple[float | None, str]:
    """When the running job hits its time limit, and where that came from.

    Sources, first usable wins: ``SLURM_JOB_END_TIME`` (epoch seconds; recent Slurm
    versions set it), ``scontrol show job <id>`` (``EndTime``), ``squeue -h -j <id>
    -o %e``, ``squeue -h -j <id> -o %L`` (time left, added to ``now``).

    Not collective; each call may run ``scontrol``/``squeue``, which ask slurmctld:
    call it from one rank and not every step (:class:`JobControl` caches it).

    Args:
        job: The job id; default :func:`job_id`.
        env: The environment to read; default ``os.environ``.
        runner: Runs the Slurm commands (tests replace it).
        now: The current epoch time for the ``%L`` source; default ``time.time()``.
        timeout: Seconds to wait for each command.

    Returns:
        ``(end_time, source)``: epoch seconds or ``None`` (not in Slurm, no limit, or
        unknown), and ``"env"``, ``"scontrol"``, ``"squeue"``, ``"squeue-left"``,
        ``"unlimited"`` or ``"none"``.
    """
    env = os.environ if env is None else env
    runner = run_command if runner is None else runner
    job = job_id(env) if job is None else job
    if job is None:
        return None, "none"
    raw = env.get("SLURM_JOB_END_TIME", "").strip()
    if raw:
        try:
            end = parse_slurm_timestamp(raw)
        except ValueError:
            end = None
        if end is not None and end > 0:
            return end, "env"
    unlimited = False
    r = runner(["scontrol", "show", "job", job], timeout)
    if r.returncode == 0 and r.stdout.strip():
        fields = parse_scontrol_fields(r.stdout)
        if fields.get("TimeLimit", "").strip().lower() in {"unlimited", "infinite"}:
            unlimited = True
        else:
            try:
                end = parse_slurm_timestamp(fields.get("EndTime"))
            except ValueError:
                end = None
            if end is not None:
                return end, "scontrol"
    r = runner(["squeue", "-h", "-j", job, "-o", "%e|%L"], timeout)
    if r.returncode == 0 and r.stdout.strip():
        line = r.stdout.strip().splitlines()[0]
        end_s, _, left_s = line.partition("|")
        try:
            end = parse_slurm_timestamp(end_s)
        except ValueError:
            end = None
        if end is not None:
            return end, "squeue"
        try:
            left = parse_slurm_duration(left_s)
        except ValueError:
            left = None
        if left is not None:
            return (time.time() if now is None else now) + left, "squeue-left"
        if left_s.strip().lower() in {"unlimited", "infinite"}:
            unlimited = True
    return None, "unlimited" if unlimited else "none"


def time_left(
    *,
    env: Mapping[str, str] | None = None,
    runner: Runner | None = None,
    now: float | None = None,
    timeout: float = 10.0,
) -> float | None:
    """Seconds until the running Slurm job's time limit (never negative).

    Not collective; runs Slurm commands unless ``SLURM_JOB_END_TIME`` is set (see
    :func:`job_end_time`).

    Returns:
        Seconds left, or ``None`` outside Slurm, for jobs without a time limit, or
        when Slurm cannot be asked.
    """
    now = time.time() if now is None else now
    end, _ = job_end_time(env=env, runner=runner, now=now, timeout=timeout)
    return None if end is None else max(0.0, end - now)


# --- margin learning (pure) -------------------------------------------------------


@dataclass
class MarginEstimator:
    """Learns how much time before the limit a checkpoint must start.

    ``margin = floor + safety_factor * (save_estimate + step_estimate)`` where
    ``save_estimate`` is the larger of the maximum and the exponentially weighted
    moving average of the last ``window`` save durations (``initial_save_seconds``
    until one is measured), and ``step_estimate`` is the maximum of the last
    ``window`` step durations (decisions are only taken at step boundaries, so one
    more step may run before the save starts).

    Attributes:
        safety_factor: Multiplies the estimates.
        floor: Seconds always added (process start-up, requeue, slow file system days).
        initial_save_seconds: The save estimate before any save was measured.
        ewma_alpha: Weight of the newest save in the moving average, in (0, 1].
        window: How many recent durations are kept.
        include_step_time: Add the step estimate to the margin.
    """

    safety_factor: float = 2.0
    floor: float = 30.0
    initial_save_seconds: float = 60.0
    ewma_alpha: float = 0.3
    window: int = 8
    include_step_time: bool = True
    _saves: deque[float] = field(init=False, repr=False)
    _steps: deque[float] = field(init=False, repr=False)
    _ewma: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_nonneg("safety_factor", self.safety_factor)
        _check_nonneg("floor", self.floor)
        _check_nonneg("initial_save_seconds", self.initial_save_seconds)
        if not (isinstance(self.ewma_alpha, (int, float)) and 0.0 < self.ewma_alpha <= 1.0):
            raise ValueError(f"ewma_alpha must be in (0, 1], got {self.ewma_alpha!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive int, got {self.window!r}")
        self._saves = deque(maxlen=self.window)
        self._steps = deque(maxlen=self.window)

    def record_save(self, seconds: float) -> None:
        """Record one save's duration in seconds."""
        s = _duration(seconds)
        self._saves.append(s)
        a = float(self.ewma_alpha)
        self._ewma = s if self._ewma is None else a * s + (1.0 - a) * self._ewma

    def record_step(self, seconds: float) -> None:
        """Record the duration of one step (the time between two decisions)."""
        self._steps.append(_duration(seconds))

    @property
    def saves(self) -> tuple[float, ...]:
        """The recent save durations, oldest first."""
        return tuple(self._saves)

    @property
    def ewma(self) -> float | None:
        """The moving average of save durations, ``None`` before the first."""
        return self._ewma

    @property
    def save_estimate(self) -> float:
        """Seconds one save is expected to take."""
        if not self._saves:
            return float(self.initial_save_seconds)
        return max(max(self._saves), self._ewma or 0.0)

    @property
    def step_estimate(self) -> float:
        """Seconds one step is expected to take (0 before any was measured)."""
        return max(self._steps) if self._steps else 0.0

    @property
    def margin(self) -> float:
        """Seconds before the limit at which to checkpoint and stop."""
        busy = self.save_estimate + (self.step_estimate if self.include_step_time else 0.0)
        return float(self.floor) + float(self.safety_factor) * busy


def _check_nonneg(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def _duration(seconds: Any) -> float:
    s = float(seconds)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"a duration must be a finite non-negative number, got {seconds!r}")
    return s


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
    ok, message = comm.bcast(None if result is None else (result.ok, result.message), root=0)
    return RequeueResult(bool(ok), str(message))


# --- job control --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobControlOptions:
    """Options of :class:`JobControl`.

    Attributes:
        safety_factor: See :class:`MarginEstimator`.
        margin_floor: Seconds always kept in reserve before the time limit.
        initial_save_seconds: The save duration assumed before one is measured.
        ewma_alpha: Weight of the newest save duration in the moving average.
        window: How many recent save and step durations are kept.
        include_step_time: Add the longest recent step to the margin.
        checkpoint_every_steps: Also checkpoint when ``step`` is a multiple of this.
        checkpoint_every_seconds: Also checkpoint when this long passed since the last
            save (or the start).
        end_time_refresh: Seconds between queries of the job's end time (it changes when
            an administrator runs ``scontrol update TimeLimit=...``). Only the query
            rank asks Slurm.
        query_timeout: Seconds to wait for ``scontrol``/``squeue``.
        query_rank: The rank that asks Slurm for the time left.
        signals: Signals whose arrival requests a checkpoint and a clean exit.
        requeue_signals: Of those, the ones after which the job should requeue itself
            (``SIGUSR1``, sent ahead of the limit by ``--signal=B:USR1@N``). ``SIGTERM``
            comes from ``scancel``, the time limit, or a preemption that Slurm requeues
            by itself, so it is not in the default.
        requeue_on_time_limit: A stop because the time left fell under the margin
            should requeue the job.
        install_signal_handlers: Install the handlers when the control is created
            (they are restored by :meth:`JobControl.close`).
    """

    safety_factor: float = 2.0
    margin_floor: float = 30.0
    initial_save_seconds: float = 60.0
    ewma_alpha: float = 0.3
    window: int = 8
    include_step_time: bool = True
    checkpoint_every_steps: int | None = None
    checkpoint_every_seconds: float | None = None
    end_time_refresh: float = 300.0
    query_timeout: float = 10.0
    query_rank: int = 0
    signals: tuple[int, ...] = (signal.SIGUSR1, signal.SIGTERM)
    requeue_signals: tuple[int, ...] = (signal.SIGUSR1,)
    requeue_on_time_limit: bool = True
    install_signal_handlers: bool = True

    def __post_init__(self) -> None:
        n = self.checkpoint_every_steps
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"checkpoint_every_steps must be a positive int or None, got {n!r}")
        s = self.checkpoint_every_seconds
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0):
            raise ValueError(f"checkpoint_every_seconds must be positive or None, got {s!r}")
        for name in ("end_time_refresh", "query_timeout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if (
            isinstance(self.query_rank, bool)
            or not isinstance(self.query_rank, int)
            or self.query_rank < 0
        ):
            raise ValueError(f"query_rank must be a non-negative int, got {self.query_rank!r}")
        object.__setattr__(self, "signals", tuple(int(s) for s in self.signals))
        object.__setattr__(self, "requeue_signals", tuple(int(s) for s in self.requeue_signals))
        # Validates the margin parameters (raises ValueError).
        self.new_estimator()

    def new_estimator(self) -> MarginEstimator:
        """A fresh :class:`MarginEstimator` with these options."""
        return MarginEstimator(
            safety_factor=self.safety_factor,
            floor=self.margin_floor,
            initial_save_seconds=self.initial_save_seconds,
            ewma_alpha=self.ewma_alpha,
            window=self.window,
            include_step_time=self.include_step_time,
        )


@dataclass(frozen=True)
class Decision:
    """What all ranks agreed at one step boundary (identical on every rank).

    Attributes:
        step: The step passed to :meth:`JobControl.check`.
        checkpoint: Save now.
        exit: Stop after saving (a signal or too little time left).
        requeue: The job should requeue itself after the save.
        reasons: Why: some of ``"signal:SIGUSR1"``/``"signal:SIGTERM"``/
            ``"signal:other"``, ``"time"``, ``"periodic"``.
        time_left: Seconds left as seen by the query rank (``None`` on other ranks
            and outside Slurm).
        margin: The margin in force on this rank.
    """

    step: int
    checkpoint: bool
    exit: bool
    requeue: bool
    reasons: tuple[str, ...]
    time_left: float | None
    margin: float


# Positions in the agreed flag vector.
_F_USR1, _F_TERM, _F_OTHER_REQUEUE, _F_OTHER, _F_TIME, _F_PERIODIC = range(6)
_NFLAGS = 6


class JobControl:
    """Decides, on all ranks alike, when a Slurm job should checkpoint and exit.

    The signal handlers (``SIGUSR1``, ``SIGTERM`` by default) only set a flag. At each
    step boundary :meth:`check` (or :meth:`should_checkpoint`) combines every rank's
    flags with one ``MPI.LOR`` allreduce: a signal seen by any rank, the query rank
    seeing less time left than the learnt margin, or a periodic interval. Once an
    exit was agreed it stays agreed.

    Args:
        comm: The communicator of the ranks that decide together; default
            ``MPI.COMM_WORLD`` (a mesh's ``comm`` works too).
        options: A :class:`JobControlOptions`.
        end_time_fn: Returns ``(end_epoch_or_None, source)``; default
            :func:`job_end_time` (tests replace it).
        clock: Monotonic seconds for durations; default ``time.monotonic``.
        wallclock: Epoch seconds for the time left; default ``time.time``.

    Collective: construct on all ranks (no communication, but every rank must take
    part in the later collective calls).
    """

    def __init__(
        self,
        comm: MPI.Comm | None = None,
        *,
        options: JobControlOptions | None = None,
        end_time_fn: Callable[[], tuple[float | None, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._comm = MPI.COMM_WORLD if comm is None else comm
        self._opts = JobControlOptions() if options is None else options
        if not isinstance(self._opts, JobControlOptions):
            raise TypeError(f"options must be JobControlOptions, got {type(self._opts).__name__}")
        if self._opts.query_rank >= self._comm.Get_size():
            raise ValueError(
                f"query_rank {self._opts.query_rank} is not a rank of a communicator of size "
                f"{self._comm.Get_size()}"
            )
        self._end_time_fn = end_time_fn or (lambda: job_end_time(timeout=self._opts.query_timeout))
        self._clock = clock
        self._wallclock = wallclock
        self._estimator = self._opts.new_estimator()
        self._signals: list[int] = []
        self._previous_handlers: dict[int, Any] = {}
        self._end_time: float | None = None
        self._end_source = "not queried"
        self._end_queried_at: float | None = None
        self._last_check: float | None = None
        self._save_seconds_since_check = 0.0
        self._last_save_time = clock()
        self._saves = 0
        self._stop: Decision | None = None
        self._saves_at_stop = 0
        self._checked_since_exit_query = False
        if self._opts.install_signal_handlers:
            self.install_signal_handlers()

    # -- signals --

    def install_signal_handlers(self) -> None:
        """Install the flag-setting handlers for ``options.signals`` (main thread only).

        Raises:
            ValueError: Not called from the main thread (a Python restriction).
        """
        for sig in self._opts.signals:
            if sig in self._previous_handlers:
                continue
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        """Put back the handlers that were in place before :meth:`install_signal_handlers`."""
        for sig, old in self._previous_handlers.items():
            try:
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
            except (ValueError, TypeError, OSError):
                pass
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only set a flag: MPI, IO and locks are not safe here.
        self._signals.append(signum)

    def notify(self, signum: int = signal.SIGUSR1) -> None:
        """Record ``signum`` as if it had been received (for tests, or other triggers)."""
        self._signals.append(int(signum))

    @property
    def signals_received(self) -> tuple[int, ...]:
        """The signals this rank received so far (local, not agreed)."""
        return tuple(self._signals)

    def close(self) -> None:
        """Restore the signal handlers."""
        self.restore_signal_handlers()

    def __enter__(self) -> JobControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- time --

    @property
    def comm(self) -> MPI.Comm:
        """The communicator the decisions are agreed on."""
        return self._comm

    @property
    def options(self) -> JobControlOptions:
        """The options."""
        return self._opts

    @property
    def estimator(self) -> MarginEstimator:
        """The margin estimator (save and step durations)."""
        return self._estimator

    @property
    def margin(self) -> float:
        """Seconds before the limit at which this rank asks to checkpoint and exit."""
        return self._estimator.margin

    def time_left(self) -> float | None:
        """Seconds until the job's time limit as this rank knows it, or ``None``.

        Not collective. Asks Slurm at most every ``end_time_refresh`` seconds.
        """
        now = self._clock()
        if (
            self._end_queried_at is None
            or now - self._end_queried_at >= self._opts.end_time_refresh
        ):
            try:
                self._end_time, self._end_source = self._end_time_fn()
            except Exception as e:  # a broken Slurm query must not kill the job
                self._end_time, self._end_source = None, f"error: {type(e).__name__}: {e}"
            self._end_queried_at = now
        if self._end_time is None:
            return None
        return max(0.0, self._end_time - self._wallclock())

    @property
    def time_left_source(self) -> str:
        """Where the end time came from: ``"env"``, ``"scontrol"``, ... (:func:`job_end_time`)."""
        return self._end_source

    # -- saves --

    def record_save(self, seconds: float) -> None:
        """Record that a checkpoint was saved and how long it took.

        Call it on every rank after every save (:meth:`timed_save` does).
        """
        self._estimator.record_save(seconds)
        self._save_seconds_since_check += float(seconds)
        self._last_save_time = self._clock()
        self._saves += 1

    @contextmanager
    def timed_save(self) -> Iterator[None]:
        """Time the save in the ``with`` block and :meth:`record_save` it (if it succeeds)."""
        t0 = self._clock()
        yield
        self.record_save(self._clock() - t0)

    def save(self, save_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``save_fn(*args, **kwargs)``, record its duration, return its result.

        Collective if ``save_fn`` is (a checkpoint save is): call on all ranks.
        """
        with self.timed_save():
            return save_fn(*args, **kwargs)

    # -- decisions --

    def _local_flags(self, step: int, periodic: bool) -> tuple[np.ndarray, float | None]:
        flags = np.zeros(_NFLAGS, dtype=np.int32)
        for sig in self._signals:
            if sig == signal.SIGUSR1:
                flags[_F_USR1] = 1
            elif sig == signal.SIGTERM:
                flags[_F_TERM] = 1
            elif sig in self._opts.requeue_signals:
                flags[_F_OTHER_REQUEUE] = 1
            else:
                flags[_F_OTHER] = 1
        left = None
        if self._comm.Get_rank() == self._opts.query_rank:
            left = self.time_left()
            if left is not None and left <= self.margin:
                flags[_F_TIME] = 1
        if periodic:
            n = self._opts.checkpoint_every_steps
            if n is not None and step % n == 0:
                flags[_F_PERIODIC] = 1
            s = self._opts.checkpoint_every_seconds
            if s is not None and self._clock() - self._last_save_time >= s:
                flags[_F_PERIODIC] = 1
        return flags, left

    def _agree(self, step: int, periodic: bool) -> Decision:
        local, left = self._local_flags(step, periodic)
        agreed = np.zeros_like(local)
        self._comm.Allreduce(local, agreed, op=MPI.LOR)
        got = [bool(x) for x in agreed]
        reasons: list[str] = []
        if got[_F_USR1]:
            reasons.append("signal:SIGUSR1")
        if got[_F_TERM]:
            reasons.append("signal:SIGTERM")
        if got[_F_OTHER_REQUEUE] or got[_F_OTHER]:
            reasons.append("signal:other")
        if got[_F_TIME]:
            reasons.append("time")
        if got[_F_PERIODIC]:
            reasons.append("periodic")
        req = set(self._opts.requeue_signals)
        # Which signals are "requeue" signals is configuration, identical on all ranks.
        requeue_sig = (
            (got[_F_USR1] and signal.SIGUSR1 in req)
            or (got[_F_TERM] and signal.SIGTERM in req)
            or got[_F_OTHER_REQUEUE]
        )
        non_requeue_sig = (
            (got[_F_USR1] and signal.SIGUSR1 not in req)
            or (got[_F_TERM] and signal.SIGTERM not in req)
            or got[_F_OTHER]
        )
        stop = (
            got[_F_USR1] or got[_F_TERM] or got[_F_OTHER_REQUEUE] or got[_F_OTHER] or got[_F_TIME]
        )
        requeue_wanted = (
            stop
            and not non_requeue_sig
            and (requeue_sig or (got[_F_TIME] and self._opts.requeue_on_time_limit))
        )
        return Decision(
            step=step,
            checkpoint=stop or got[_F_PERIODIC],
            exit=stop,
            requeue=bool(requeue_wanted),
            reasons=tuple(reasons),
            time_left=left,
            margin=self.margin,
        )

    def check(self, step: int) -> Decision:
        """Agree at a step boundary whether to checkpoint now and whether to exit after.

        Also records the step's duration (time since the previous check, less the
        recorded saves) for the margin. After an exit was agreed, returns that decision
        again without communicating (``checkpoint`` stays true until a save is recorded).

        Collective: call on all ranks, at the same steps.

        Args:
            step: The step number just completed (for ``checkpoint_every_steps``).

        Returns:
            The :class:`Decision`, identical on every rank.
        """
        now = self._clock()
        if self._last_check is not None:
            self._estimator.record_step(
                max(0.0, now - self._last_check - self._save_seconds_since_check)
            )
        self._last_check = now
        self._save_seconds_since_check = 0.0
        if self._stop is not None:
            return Decision(
                step=step,
                checkpoint=self._saves == self._saves_at_stop,
                exit=True,
                requeue=self._stop.requeue,
                reasons=self._stop.reasons,
                time_left=self._stop.time_left,
                margin=self.margin,
            )
        self._checked_since_exit_query = True
        d = self._agree(int(step), periodic=True)
        if d.exit:
            self._stop = d
            self._saves_at_stop = self._saves
        return d

    def should_checkpoint(self, step: int) -> bool:
        """Whether to save now (``SCR_Need_checkpoint``): :meth:`check` ``(step).checkpoint``.

        Collective: call on all ranks, at the same steps.
        """
        return self.check(step).checkpoint

    def should_exit(self) -> bool:
        """Whether to stop now (``SCR_Should_exit``): a signal arrived or time is short.

        Without communicating, returns true once an exit was agreed, and false when a
        :meth:`check` (or :meth:`should_checkpoint`) agreed to go on since the previous
        ``should_exit`` (a signal that arrived in between is seen at the next step), so
        the usual loop costs one allreduce per step. Otherwise it agrees afresh on the
        signals and the time left (periodic checkpoints play no part).

        Collective: call on all ranks.
        """
        checked = self._checked_since_exit_query
        self._checked_since_exit_query = False
        if self._stop is not None:
            return True
        if checked:
            return False
        d = self._agree(-1, periodic=False)
        if d.exit:
            self._stop = d
            self._saves_at_stop = self._saves
        return d.exit

    @property
    def stop_decision(self) -> Decision | None:
        """The agreed exit decision, or ``None`` while the job should go on."""
        return self._stop

    def requeue(self, *, hold: bool = False) -> RequeueResult:
        """:func:`requeue` on this control's communicator.

        Collective: call on all ranks.
        """
        return requeue(self._comm, hold=hold, timeout=max(self._opts.query_timeout, 30.0))
