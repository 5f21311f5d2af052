"""Fault injection for tests: make a chosen rank fail at a chosen phase of a save or restore.

Set ``HPCKPT_FAULT="phase:rank:action[:arg]"`` (several separated by ``,``) or call
:func:`inject` from a test. Actions:

* ``raise`` — raise ``RuntimeError("injected fault ...")`` (the rank survives);
* ``exit`` — ``os._exit(arg or 17)`` (the process vanishes without cleanup);
* ``kill`` — ``SIGKILL`` to itself;
* ``hang`` — sleep ``arg`` seconds (default 3600), then continue;
* ``signal`` — send itself the signal ``arg`` (a name such as ``SIGTERM``, the default),
  so that its handler runs at this point of the operation.

Phases of a save: ``plan``, ``create``, ``before_data``, ``mid_data``,
``after_data``, ``before_commit`` (rank 0, before the index is written),
``after_commit`` (rank 0: index committed, state file not yet updated), ``state``
(rank 0: state file written, old checkpoints not yet deleted), ``remove`` (rank 0's
background removal of an old file, before it unlinks). Of a restore:
``read_index``, ``read_data``. Of a local-tier save (multi-level checkpointing):
``local_create``, ``local_data`` (own pieces written), ``partner`` (during the
partner copy), ``local_commit`` (rank 0, before any marker is written),
``local_marker`` (a node leader, its marker written).
``rank`` may be ``*`` for every rank.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["PHASES", "clear", "inject", "point"]

PHASES = (
    "plan",
    "create",
    "before_data",
    "mid_data",
    "after_data",
    "before_commit",
    "after_commit",
    "state",
    "remove",
    "read_index",
    "read_data",
    "local_create",
    "local_data",
    "partner",
    "local_commit",
    "local_marker",
)
_ACTIONS = ("raise", "exit", "kill", "hang", "signal")
_programmatic: list[tuple[str, str, str, str]] = []


def _parse(spec: str) -> list[tuple[str, str, str, str]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if len(parts) < 3 or parts[0] not in PHASES or parts[2] not in _ACTIONS:
            raise ValueError(f"bad HPCKPT_FAULT entry {item!r}: want phase:rank:action[:arg]")
        out.append((parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return out


def inject(phase: str, rank: int | str, action: str, arg: str = "") -> None:
    """Arm a fault for this process (tests)."""
    _programmatic.extend(_parse(f"{phase}:{rank}:{action}:{arg}"))


def clear() -> None:
    """Disarm the faults armed by :func:`inject`."""
    _programmatic.clear()


def point(phase: str, rank: int) -> None:
    """A fault-injection point: act if a fault is armed for ``phase`` on ``rank``."""
    spec = os.environ.get("HPCKPT_FAULT")
    if not spec and not _programmatic:
        return
    for ph, r, action, arg in (_parse(spec) if spec else []) + _programmatic:
        if ph != phase or (r != "*" and int(r) != rank):
            continue
        if action == "raise":
            raise RuntimeError(f"injected fault at {phase} on rank {rank}")
        if action == "exit":
            os._exit(int(arg or 17))
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "hang":
            time.sleep(float(arg or 3600))
        if action == "signal":
            os.kill(os.getpid(), getattr(signal, arg or "SIGTERM"))
