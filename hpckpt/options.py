"""Options of checkpoint operations."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CheckpointOptions"]


@dataclass(frozen=True)
class CheckpointOptions:
    """Options for save, write, restore and read.

    Attributes:
        enable_async: Snapshot the state and write it in the background
            (reserved; saves are synchronous in this version).
        collective: Use collective MPI-IO (``Write_all``/``Read_all``); ``False``
            uses independent IO at the same offsets.
        mpi_info: MPI-IO hints passed to ``MPI.File.Open`` (e.g.
            ``{"cb_nodes": "4", "striping_factor": "8"}``).
        verify_checksums: On restore, check the checksum of every saved slice
            that the read covers.
        timeout: Seconds to wait for other ranks at each agreement step; on
            expiry every rank that is still reachable raises ``CheckpointError``.
        alignment: Datasets of at least ``alignment_threshold`` bytes start at a
            multiple of this many bytes (match the file system block or stripe).
        alignment_threshold: See ``alignment``.
    """

    enable_async: bool = False
    collective: bool = True
    mpi_info: dict[str, str] | None = None
    verify_checksums: bool = True
    timeout: float | None = None
    alignment: int = field(default=1 << 20, kw_only=True)
    alignment_threshold: int = field(default=1 << 20, kw_only=True)

    def __post_init__(self) -> None:
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not self.timeout > 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.mpi_info is not None and not isinstance(self.mpi_info, dict):
            raise TypeError(f"mpi_info must be a dict of hints, got {type(self.mpi_info).__name__}")
        for name in ("alignment", "alignment_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
