"""Options of checkpoint operations."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .io.options import IOOptions

__all__ = ["CheckpointOptions", "call_write_callback", "check_options", "io_options"]


def _positional_arity(fn: Callable[..., Any]) -> tuple[int, bool]:
    """(required positional parameters, whether it takes one more) of ``fn``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: give it the path
        return 1, True
    required, takes = 0, False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            takes = True
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            takes = True
            if p.default is p.empty:
                required += 1
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            required += 2  # cannot be called with the path alone
    return required, takes


def call_write_callback(fn: Callable[..., Any], path: str) -> None:
    """Call a write callback with the committed path, or with nothing if it takes none."""
    _, takes = _positional_arity(fn)
    if takes:
        fn(path)
    else:
        fn()


@dataclass(frozen=True)
class CheckpointOptions:
    """Options for save, write, restore and read.

    Attributes:
        enable_async: Snapshot the state into host memory and write it in the
            background: ``save``/``write`` return as soon as the snapshot is
            taken; the next checkpoint call (or ``Checkpoint.sync()``) waits for
            it and raises its error, the same on every rank.
        collective: Move the data in one collective IO phase in which every rank
            takes part: two-phase collective MPI-IO (``Write_all``/``Read_all``,
            one call for many datasets) for strided or small pieces, and direct
            ``pwrite``/``preadv`` by the owning rank for pieces of at least
            ``direct_io_threshold`` bytes that are one contiguous run of the file,
            where aggregation only adds copies (and, for reads, strided pieces
            whose span in the file is at most twice their size: one ``preadv``
            per span, the gaps into a scratch buffer). ``False``: every rank moves all its
            pieces with ``pwrite``/``preadv`` (no MPI-IO).
        mpi_info: MPI-IO hints passed to ``MPI.File.Open`` (e.g.
            ``{"cb_nodes": "4", "romio_cb_write": "enable"}``). File striping
            hints do not apply (rank 0 creates the file): stripe the directory
            with ``lfs setstripe`` instead.
        verify_checksums: On restore, check the checksum of every saved slice
            that the read covers.
        timeout: Seconds to wait for other ranks at each agreement step; on
            expiry every rank that is still reachable raises ``CheckpointError``.
        restore_in_place: Read each variable's slice straight into its
            ``Variable.local`` (no second buffer, no copy). A restore that fails
            while the data moves (an IO error, a checksum mismatch) may then leave
            the variables it was restoring partly overwritten; failures found
            earlier (a missing or invalid checkpoint, a shape mismatch, any rank's
            error before the read) change nothing. ``False``: read into new
            buffers and assign only after every rank succeeded (all or nothing,
            at the cost of a second copy of the restored state in memory).
        direct_io_threshold: With ``collective``, contiguous pieces of at least
            this many bytes bypass MPI-IO aggregation (see ``collective``).
            ``None``: everything goes through collective MPI-IO.
        alignment: Datasets of at least ``alignment_threshold`` bytes start at a
            multiple of this many bytes (match the file system block or stripe).
        alignment_threshold: See ``alignment``.
        async_memory_budget: Most bytes one rank may hold for an asynchronous
            snapshot; a save that needs more runs synchronously. The snapshot's
            buffers are kept for the next asynchronous save (so that it copies
            into memory that is already mapped). ``None``: no limit.
        write_callbacks: Callables run on rank 0, in order, after each ``save``,
            ``write`` or ``CheckpointManager.save`` has committed (and updated the
            state file), with the checkpoint's path if they take one argument
            (TensorFlow's ``experimental_write_callbacks``). After an asynchronous
            save they run in the background thread, once the save committed. An
            exception in one is raised on every rank as ``WriteCallbackError``; the
            checkpoint stays committed.
    """

    enable_async: bool = False
    collective: bool = True
    mpi_info: dict[str, str] | None = None
    verify_checksums: bool = True
    timeout: float | None = None
    restore_in_place: bool = field(default=True, kw_only=True)
    direct_io_threshold: int | None = field(default=1 << 20, kw_only=True)
    alignment: int = field(default=1 << 20, kw_only=True)
    alignment_threshold: int = field(default=1 << 20, kw_only=True)
    async_memory_budget: int | None = field(default=None, kw_only=True)
    write_callbacks: tuple[Callable[..., Any], ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        callbacks = self.write_callbacks
        if callbacks is None:
            callbacks = ()
        if callable(callbacks) or not isinstance(callbacks, (list, tuple)):
            raise TypeError(
                f"write_callbacks must be a list or tuple of callables, got {callbacks!r:.80}"
            )
        for fn in callbacks:
            if not callable(fn):
                raise TypeError(f"write callback {fn!r:.80} is not callable")
            if _positional_arity(fn)[0] > 1:
                raise ValueError(
                    f"write callback {fn!r:.80} must take the checkpoint path or no argument"
                )
        object.__setattr__(self, "write_callbacks", tuple(callbacks))
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not self.timeout > 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.mpi_info is not None and not isinstance(self.mpi_info, dict):
            raise TypeError(f"mpi_info must be a dict of hints, got {type(self.mpi_info).__name__}")
        if self.async_memory_budget is not None and (
            isinstance(self.async_memory_budget, bool)
            or not isinstance(self.async_memory_budget, int)
            or self.async_memory_budget < 0
        ):
            raise ValueError(
                f"async_memory_budget must be a non-negative int or None, got "
                f"{self.async_memory_budget!r}"
            )
        t = self.direct_io_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise ValueError(f"direct_io_threshold must be a positive int or None, got {t!r}")
        for name in ("alignment", "alignment_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")


def io_options(options: CheckpointOptions) -> IOOptions:
    """The storage layer's options for ``options``."""
    return IOOptions(
        collective=options.collective,
        mpi_info=options.mpi_info,
        verify_checksums=options.verify_checksums,
        direct_io_threshold=options.direct_io_threshold,
        alignment=options.alignment,
        alignment_threshold=options.alignment_threshold,
    )


def check_options(options: CheckpointOptions | None) -> CheckpointOptions:
    """``options``, or the defaults for ``None``.

    Raises:
        TypeError: ``options`` is not a :class:`CheckpointOptions`.
    """
    if options is None:
        return CheckpointOptions()
    if not isinstance(options, CheckpointOptions):
        raise TypeError(f"options must be a CheckpointOptions, got {type(options).__name__}")
    return options
