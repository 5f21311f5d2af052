"""Signals during a collective operation: their handlers run where every rank can agree.

A Python signal handler runs in the main thread between two bytecodes, wherever the
thread is. If it raises (``sys.exit`` in a SIGTERM handler, ``KeyboardInterrupt`` from
SIGINT) in the middle of a save, that rank leaves the protocol while the other ranks
wait for it in a collective call: a hang, or mismatched collectives.

While a collective operation runs (:func:`deferred`, entered by every public
operation of hpckpt), the Python handlers of :data:`SIGNALS` are replaced by one that
only records the signal. The recorded signals' handlers run at the operation's next
agreement (:func:`deliver`, called by :func:`hpckpt._dist.agree`): an exception they
raise becomes this rank's failure, every rank agrees on it, this rank raises the
original exception and the others a ``CheckpointError`` naming it. Signals still
pending when the operation ends are delivered then (the operation has completed on
every rank).

Ways out when the agreement does not come (the other ranks were stopped outside the
operation and never arrive): a second arrival of the same signal runs its handler at
once, and a signal left pending for :func:`grace` seconds while this rank waits for
others runs its handler there (:func:`escape_if_due`). If the handler then raises,
this rank cannot leave the operation without leaving the others waiting for it, and
cannot finish it either: the job is aborted (``MPI_Abort``, through the function
given to :func:`set_abort`), with the exit status the handler asked for. The same
holds for a handler that ran at an agreement and raised, when the other ranks do not
come to that agreement within :func:`grace` seconds (they may have exited already).

Only the main thread receives signals; everywhere else this module does nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NoReturn, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "SIGNALS",
    "set_abort",
    "active",
    "agreed",
    "broken",
    "deferred",
    "deferring",
    "deliver",
    "escape_if_due",
    "grace",
]

SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, n)
    for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, n)
)
"""The signals whose Python handlers are deferred during a collective operation."""

_DEFAULT_GRACE = 10.0


def _no_abort(status: int, message: str) -> None:
    return None


class _State:
    def __init__(self) -> None:
        self.abort: Callable[[int, str], None] = _no_abort
        self.depth = 0
        self.saved: dict[int, Any] = {}
        self.pending: list[tuple[int, FrameType | None, float]] = []
        # a handler that raised at an agreement whose other ranks have not arrived yet:
        # (signal, what it raised, when the signal came)
        self.unagreed: tuple[int, BaseException, float] | None = None
        self.broken = False


_st = _State()


def grace() -> float:
    """Seconds a pending signal waits for an agreement while this rank waits for others.

    ``HPCKPT_SIGNAL_GRACE`` (default 10).
    """
    try:
        return max(0.0, float(os.environ.get("HPCKPT_SIGNAL_GRACE", _DEFAULT_GRACE)))
    except ValueError:
        return _DEFAULT_GRACE


def _in_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def active() -> bool:
    """Whether signals are being deferred (a collective operation runs on the main thread)."""
    return _st.depth > 0 and _in_main()


def broken() -> bool:
    """Whether a deferred handler had to run in the middle of a collective operation."""
    return _st.broken


def _run(signum: int, frame: FrameType | None, handler: Any) -> None:
    if callable(handler):
        handler(signum, frame)


def set_abort(abort: Callable[[int, str], None]) -> None:
    """How to end the whole job when a handler raises in the middle of an operation."""
    _st.abort = abort


def _status(e: BaseException) -> int:
    if isinstance(e, SystemExit):
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(e, KeyboardInterrupt):
        return 128 + int(signal.SIGINT)
    return 1


def _end_job(e: BaseException, message: str) -> NoReturn:
    """A handler raised ``e`` where this rank can neither leave the operation nor finish
    it: end the whole job with the status the handler asked for, and raise ``e``."""
    _st.broken = True
    _st.abort(_status(e), message)
    raise e


def _run_now(signum: int, frame: FrameType | None) -> None:
    """Run a deferred handler outside an agreement; if it raises, end the job."""
    try:
        _run(signum, frame, _st.saved.get(signum))
    except BaseException as e:
        _end_job(
            e,
            f"signal {signal.Signals(signum).name} arrived during a checkpoint operation that "
            f"the other ranks do not complete, and its handler raised {type(e).__name__}({e}): "
            f"ending the job",
        )


def _record(signum: int, frame: FrameType | None) -> None:
    """The handler installed during an operation: note the signal (a second one acts now)."""
    if any(s == signum for s, _, _ in _st.pending):
        _st.pending = [p for p in _st.pending if p[0] != signum]
        _run_now(signum, frame)
        return
    _st.pending.append((signum, frame, time.monotonic()))


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Defer the Python handlers of :data:`SIGNALS` for the duration of a collective operation.

    Re-entrant; a no-op outside the main thread. On leaving the outermost one, the
    original handlers are back and the signals still pending are delivered (their
    handlers may raise here).
    """
    if not _in_main():
        yield
        return
    if _st.depth:
        _st.depth += 1
        try:
            yield
        finally:
            _st.depth -= 1
        return
    saved: dict[int, Any] = {}
    for s in SIGNALS:
        try:
            h = signal.getsignal(s)
            if callable(h) and h is not _record:
                signal.signal(s, _record)
                saved[s] = h
        except (ValueError, OSError):  # not the main interpreter, or not a settable signal
            continue
    _st.saved = saved
    _st.depth = 1
    try:
        yield
    finally:
        _st.depth = 0
        for s, h in saved.items():
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(s) is _record:  # unless the program installed another meanwhile
                    signal.signal(s, h)
        pending, _st.pending = _st.pending, []
        _st.saved = {}
        _st.unagreed = None
        for s, f, _ in pending:
            _run(s, f, saved.get(s))


def deliver() -> BaseException | None:
    """Run the handlers of the signals deferred so far; return what the first one raised.

    Called at an agreement point: the exception becomes this rank's failure. Signals
    after a raising one stay pending.
    """
    if not _st.pending or not active():
        return None
    while _st.pending:
        s, f, since = _st.pending.pop(0)
        try:
            _run(s, f, _st.saved.get(s))
        except BaseException as e:
            _st.unagreed = (s, e, since)  # until the agreement completes (:func:`agreed`)
            return e
    return None


def agreed() -> None:
    """The agreement that carried a delivered handler's exception has completed."""
    _st.unagreed = None


def escape_if_due(waiting_since: float) -> None:
    """While waiting for other ranks: run a pending handler that has waited :func:`grace` seconds.

    The handler's exception leaves the operation in the middle (see :func:`broken`).
    """
    if not active() or not (_st.pending or _st.unagreed):
        return
    now = time.monotonic()
    limit = grace()
    if _st.unagreed is not None:
        # the handler ran at an agreement and raised: this rank wants to leave, and the
        # others have not come to agree on it (stopped outside the operation, perhaps
        # already exited); after the grace it cannot wait longer, nor finish the operation
        s, e, since = _st.unagreed
        if now - max(since, waiting_since) < limit:
            return
        _st.unagreed = None
        _end_job(
            e,
            f"signal {signal.Signals(s).name} arrived during a checkpoint operation, its "
            f"handler raised {type(e).__name__}({e}), and the other ranks did not come to "
            f"agree on it within {limit} s: ending the job",
        )
    s, f, since = _st.pending[0]
    if now - max(since, waiting_since) < limit:
        return
    _st.pending.pop(0)
    _run_now(s, f)


def deferring(fn: F) -> F:
    """Decorate a collective operation: it runs with signals deferred (:func:`deferred`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with deferred():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
