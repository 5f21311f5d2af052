"""``JobControl``: agreed checkpoint and exit decisions at step boundaries."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np
from mpi4py import MPI

from .._dist import allreduce_max
from .margin import MarginEstimator
from .query import job_end_time
from .requeue import RequeueResult, requeue

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

    def checkpoint(
        self, manager: Any, decision: Decision, checkpoint_number: Any = None
    ) -> str | None:
        """Save with ``manager`` as ``decision`` asks, timed for the margin.

        A save after which the job exits (``decision.exit``) is persisted: with a
        multi-level manager (``local_tier``) it is written to the parallel file system
        (``manager.save(persist=True)``) and waited for (``manager.sync()``) before this
        returns, because the job's node-local storage does not outlive the job. Other
        saves go to the local tier only (or as ``persist_every`` says); their recorded
        duration adds the manager's last measured flush (``persist_seconds``), so that
        the margin leaves time for the final, persisted save.

        Returns:
            The saved path, or ``None`` when ``decision.checkpoint`` is false.

        Collective: call on all ranks.
        """
        if not decision.checkpoint:
            return None
        t0 = self._clock()
        if decision.exit:
            path = manager.save(checkpoint_number=checkpoint_number, persist=True)
            manager.sync()
            self.record_save(self._clock() - t0)
            return path
        path = manager.save(checkpoint_number=checkpoint_number)
        flush = getattr(manager, "persist_seconds", None)
        self.record_save(self._clock() - t0 + (flush or 0.0))
        return path

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
        agreed = allreduce_max(self._comm, local)
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
