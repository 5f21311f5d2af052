"""Asking Slurm about the job: its id, its end time, the time left (parsing is pure)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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
