"""Options of checkpoint operations."""

from __future__ import annotations

from dataclasses import dataclass, field

from .io.options import IOOptions

__all__ = ["CheckpointOptions", "check_options", "io_options"]


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

    def __post_init__(self) -> None:
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
