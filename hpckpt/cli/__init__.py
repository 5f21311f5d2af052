"""The ``hpckpt`` command line: one module per command, shared helpers in :mod:`.common`.

Runs on one process without an MPI launcher (``hpckpt ...`` or ``python -m hpckpt.cli ...``).
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
