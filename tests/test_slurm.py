"""hpckpt.slurm: time-left parsing, margin learning, agreed decisions, and a real Slurm cycle.

The unit tests need no Slurm. The ``slurm``-marked tests bring up a real single-node
cluster with ``slurm/local-cluster.sh`` (installing ``slurm-wlm`` and ``munge`` with
apt-get when running as root), run ``slurm/train.sbatch`` and ``slurm/mpirun.sbatch``,
preempt them (``scancel --batch --signal=USR1``, a short time limit), and check that each
job checkpointed, requeued itself and finished from its checkpoint with parameters
bit-identical to an uninterrupted run on another number of ranks. They are skipped only
when the cluster cannot be installed or started here (set ``HPCKPT_REQUIRE_SLURM=1`` to
make that a failure).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launch import mpirun_cmd
from mpi4py import MPI

from hpckpt import slurm as hs

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "slurm" / "local-cluster.sh"
TRAIN = REPO / "slurm" / "train_job.py"
STEPS = 50  # every training run below goes to this step, so all checksums must agree
TRAIN_ARGS = ["--log-every", "5", "--save-every", "25"]


# --- fakes ------------------------------------------------------------------------


class FakeRunner:
    """Answers Slurm commands from a table ``{argv[0:2] joined: CommandResult}``."""

    def __init__(self, answers: dict[str, hs.CommandResult]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv, timeout):
        self.calls.append(list(argv))
        key = " ".join(argv[:2])
        return self.answers.get(key, hs.CommandResult(1, "", f"{key}: not faked"))


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


SCONTROL_JOB = """\
JobId=42 JobName=train
   UserId=alice(1000) GroupId=alice(1000) MCS_label=N/A
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   RunTime=00:10:00 TimeLimit=01:00:00 TimeMin=N/A
   SubmitTime=2024-05-01T12:00:00 EligibleTime=2024-05-01T12:00:00
   StartTime=2024-05-01T12:45:00 EndTime=2024-05-01T13:45:00 Deadline=N/A
   Command=/home/alice/train.sbatch --steps 10
"""


def local_epoch(*args: int) -> float:
    return datetime.datetime(*args).timestamp()  # naive: local time, as Slurm prints


# --- parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300.0),  # bare minutes (sbatch --time=5)
        ("2:00", 120.0),  # M:S (squeue %L)
        ("59:59", 3599.0),
        ("1:02:03", 3723.0),  # H:M:S
        ("1-00:00:00", 86400.0),
        ("2-3", 2 * 86400.0 + 3 * 3600.0),  # D-H
        ("1-02:04", 86400.0 + 2 * 3600.0 + 4 * 60.0),  # D-H:M
        ("1-02:04:00", 93840.0),
        (" 0:07 ", 7.0),
    ],
)
def test_parse_duration(text, seconds):
    assert hs.parse_slurm_duration(text) == seconds


@pytest.mark.parametrize("text", [None, "", "UNLIMITED", "INFINITE", "NOT_SET", "INVALID"])
def test_parse_duration_no_limit(text):
    assert hs.parse_slurm_duration(text) is None


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "-5", "1.5", "1-"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a Slurm duration"):
        hs.parse_slurm_duration(text)


def test_parse_timestamp():
    assert hs.parse_slurm_timestamp("2024-05-01T13:45:00") == local_epoch(2024, 5, 1, 13, 45)
    assert hs.parse_slurm_timestamp("2024-05-01 13:45:07") == local_epoch(2024, 5, 1, 13, 45, 7)
    assert hs.parse_slurm_timestamp("1714571100") == 1714571100.0  # SLURM_JOB_END_TIME
    for none in (None, "", "Unknown", "None", "N/A", "NONE"):
        assert hs.parse_slurm_timestamp(none) is None
    with pytest.raises(ValueError, match="not a Slurm time stamp"):
        hs.parse_slurm_timestamp("tomorrow")


def test_parse_scontrol_fields():
    f = hs.parse_scontrol_fields(SCONTROL_JOB + "JobId=43 JobName=other EndTime=Unknown\n")
    assert f["JobId"] == "42"
    assert f["EndTime"] == "2024-05-01T13:45:00"
    assert f["TimeLimit"] == "01:00:00"
    assert f["JobState"] == "RUNNING"
    assert f["RunTime"] == "00:10:00"


# --- job end time and time left ------------------------------------------------------


def test_not_in_slurm_asks_nobody():
    runner = FakeRunner({})
    assert hs.job_id({}) is None
    assert hs.job_end_time(env={}, runner=runner) == (None, "none")
    assert hs.time_left(env={}, runner=runner) is None
    assert runner.calls == []


def test_job_id_variants():
    assert hs.job_id({"SLURM_JOB_ID": "7"}) == "7"
    assert hs.job_id({"SLURM_JOBID": "8"}) == "8"
    assert hs.job_id({"SLURM_JOB_ID": " "}) is None


def test_end_time_from_env_wins():
    runner = FakeRunner({})
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_END_TIME": "1714571100"}
    assert hs.job_end_time(env=env, runner=runner) == (1714571100.0, "env")
    assert runner.calls == []
    assert hs.time_left(env=env, runner=runner, now=1714571000.0) == 100.0
    assert hs.time_left(env=env, runner=runner, now=1714572000.0) == 0.0  # never negative


def test_end_time_from_scontrol():
    runner = FakeRunner({"scontrol show": hs.CommandResult(0, SCONTROL_JOB)})
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_END_TIME": "garbage"}
    end, source = hs.job_end_time(env=env, runner=runner)
    assert (end, source) == (local_epoch(2024, 5, 1, 13, 45), "scontrol")
    assert runner.calls == [["scontrol", "show", "job", "42"]]


def test_end_time_falls_back_to_squeue_end_then_time_left():
    env = {"SLURM_JOB_ID": "42"}
    runner = FakeRunner(
        {
            "scontrol show": hs.CommandResult(1, "", "slurm_load_jobs error: timeout"),
            "squeue -h": hs.CommandResult(0, "2024-05-01T13:45:00|1:00:00\n"),
        }
    )
    assert hs.job_end_time(env=env, runner=runner) == (local_epoch(2024, 5, 1, 13, 45), "squeue")
    assert runner.calls[1] == ["squeue", "-h", "-j", "42", "-o", "%e|%L"]
    runner = FakeRunner(
        {
            "scontrol show": hs.CommandResult(127, "", "no scontrol"),
            "squeue -h": hs.CommandResult(0, "N/A|1:02:03\n"),
        }
    )
    assert hs.job_end_time(env=env, runner=runner, now=1000.0) == (4723.0, "squeue-left")
    assert hs.time_left(env=env, runner=runner, now=1000.0) == 3723.0


def test_end_time_unlimited_and_unknown():
    env = {"SLURM_JOB_ID": "42"}
    unlimited = SCONTROL_JOB.replace("TimeLimit=01:00:00", "TimeLimit=UNLIMITED")
    runner = FakeRunner({"scontrol show": hs.CommandResult(0, unlimited)})
    assert hs.job_end_time(env=env, runner=runner)[0] is None
    runner = FakeRunner(
        {
            "scontrol show": hs.CommandResult(1, "", "Invalid job id specified"),
            "squeue -h": hs.CommandResult(1, "", "Invalid job id specified"),
        }
    )
    assert hs.job_end_time(env=env, runner=runner) == (None, "none")


def test_run_command_never_raises():
    r = hs.run_command(["/nonexistent/scontrol-xyz"], 5.0)
    assert r.returncode == 127
    r = hs.run_command([sys.executable, "-c", "import time; time.sleep(5)"], 0.2)
    assert r.returncode == 124
    r = hs.run_command([sys.executable, "-c", "print('EndTime=x')"], 10.0)
    assert (r.returncode, r.stdout.strip()) == (0, "EndTime=x")


# --- margin learning ----------------------------------------------------------------


def test_margin_before_any_measurement():
    m = hs.MarginEstimator(safety_factor=2.0, floor=30.0, initial_save_seconds=60.0)
    assert m.save_estimate == 60.0
    assert m.step_estimate == 0.0
    assert m.margin == 30.0 + 2.0 * 60.0


def test_margin_learns_max_and_ewma_of_saves():
    m = hs.MarginEstimator(
        safety_factor=2.0, floor=10.0, ewma_alpha=0.5, window=3, include_step_time=False
    )
    m.record_save(4.0)
    assert (m.ewma, m.save_estimate, m.margin) == (4.0, 4.0, 18.0)
    m.record_save(8.0)
    assert m.ewma == 6.0
    assert m.save_estimate == 8.0  # the max of the window dominates the average
    for _ in range(3):
        m.record_save(2.0)
    assert m.saves == (2.0, 2.0, 2.0)  # the slow save left the window
    assert m.ewma == pytest.approx(2.5)  # the average still remembers it
    assert m.save_estimate == pytest.approx(2.5)
    assert m.margin == pytest.approx(15.0)


def test_margin_includes_the_longest_recent_step():
    m = hs.MarginEstimator(safety_factor=3.0, floor=5.0, window=2)
    m.record_save(1.0)
    m.record_step(4.0)
    m.record_step(2.0)
    assert m.step_estimate == 4.0
    assert m.margin == 5.0 + 3.0 * (1.0 + 4.0)
    m.record_step(1.0)
    assert m.step_estimate == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"safety_factor": -1},
        {"floor": float("nan")},
        {"ewma_alpha": 0.0},
        {"ewma_alpha": 1.5},
        {"window": 0},
        {"window": True},
        {"initial_save_seconds": -2},
    ],
)
def test_margin_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        hs.MarginEstimator(**kwargs)


def test_margin_rejects_bad_durations():
    m = hs.MarginEstimator()
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            m.record_save(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"checkpoint_every_steps": 0},
        {"checkpoint_every_seconds": -1.0},
        {"end_time_refresh": 0},
        {"query_rank": -1},
        {"window": 0},
        {"margin_floor": -5},
    ],
)
def test_options_reject_bad_values(kwargs):
    with pytest.raises(ValueError):
        hs.JobControlOptions(**kwargs)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        hs.JobControlOptions(2.0)  # type: ignore[misc]


# --- JobControl decisions (one rank: COMM_SELF) ------------------------------------------


def make_control(end_time, clock, wall, **opts):
    calls = []

    def end_time_fn():
        calls.append(1)
        return end_time(), "fake"

    opts.setdefault("install_signal_handlers", False)
    jc = hs.JobControl(
        MPI.COMM_SELF,
        options=hs.JobControlOptions(**opts),
        end_time_fn=end_time_fn,
        clock=clock,
        wallclock=wall,
    )
    return jc, calls


def test_checkpoint_and_exit_when_time_runs_short():
    clock, wall = FakeClock(), FakeClock(10_000.0)
    jc, calls = make_control(
        lambda: 10_000.0 + 200.0,
        clock,
        wall,
        margin_floor=20.0,
        safety_factor=2.0,
        initial_save_seconds=10.0,
        end_time_refresh=60.0,
    )
    # margin = 20 + 2 * (10 + step); steps take 5 s.
    d = jc.check(1)
    assert (d.checkpoint, d.exit) == (False, False)
    assert d.time_left == 200.0 and d.margin == 40.0
    for step in range(2, 100):
        clock.t += 5.0
        wall.t += 5.0
        d = jc.check(step)
        if d.exit:
            break
    # It stops as soon as the time left (200 - 5 * (step - 1)) is under 20 + 2 * (10 + 5).
    assert 200.0 - 5.0 * (step - 1) <= 50.0 < 200.0 - 5.0 * (step - 2)
    assert d.checkpoint and d.requeue and d.reasons == ("time",)
    assert jc.should_exit() and jc.stop_decision == d
    assert len(calls) <= 3  # the end time was cached, re-asked once a minute at most
    # Sticky: still exiting; checkpoint until a save is recorded.
    assert jc.check(step + 1).checkpoint
    jc.record_save(1.0)
    d2 = jc.check(step + 2)
    assert d2.exit and not d2.checkpoint


def test_margin_grows_with_measured_saves():
    clock, wall = FakeClock(), FakeClock(0.0)
    jc, _ = make_control(
        lambda: 1000.0,
        clock,
        wall,
        margin_floor=10.0,
        safety_factor=2.0,
        initial_save_seconds=1.0,
        include_step_time=False,
    )
    assert jc.margin == 12.0
    with jc.timed_save():
        clock.t += 30.0
    assert jc.estimator.saves == (30.0,)
    assert jc.margin == 70.0
    assert jc.save(lambda x: x * 2, 21) == 42
    wall.t = 1000.0 - 69.0  # 69 s left < 70 s of margin
    assert jc.should_checkpoint(5)


def test_no_time_limit_means_no_time_decision():
    jc, calls = make_control(lambda: None, FakeClock(), FakeClock(), end_time_refresh=1000.0)
    for step in range(1, 5):
        d = jc.check(step)
        assert not d.checkpoint and not d.exit and d.time_left is None
    assert not jc.should_exit()
    assert len(calls) == 1


def test_end_time_errors_do_not_kill_the_job():
    def broken():
        raise RuntimeError("slurmctld is down")

    jc = hs.JobControl(
        MPI.COMM_SELF,
        options=hs.JobControlOptions(install_signal_handlers=False),
        end_time_fn=broken,
    )
    assert jc.time_left() is None
    assert "slurmctld is down" in jc.time_left_source
    assert not jc.check(1).exit


def test_periodic_checkpoints_by_steps_and_seconds():
    clock = FakeClock()
    jc, _ = make_control(lambda: None, clock, FakeClock(), checkpoint_every_steps=3)
    got = [s for s in range(1, 10) if jc.should_checkpoint(s)]
    assert got == [3, 6, 9]
    assert not jc.should_exit()
    jc, _ = make_control(lambda: None, clock, FakeClock(), checkpoint_every_seconds=10.0)
    assert not jc.should_checkpoint(1)
    clock.t += 10.0
    d = jc.check(2)
    assert d.checkpoint and not d.exit and d.reasons == ("periodic",)
    jc.record_save(0.5)
    assert not jc.should_checkpoint(3)


def test_sigusr1_sets_a_flag_then_ranks_agree_to_checkpoint_exit_and_requeue():
    jc, _ = make_control(lambda: None, FakeClock(), FakeClock(), install_signal_handlers=True)
    try:
        assert not jc.check(1).exit
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler only records it
        assert jc.signals_received == (signal.SIGUSR1,)
        d = jc.check(2)
        assert (d.checkpoint, d.exit, d.requeue) == (True, True, True)
        assert d.reasons == ("signal:SIGUSR1",)
        assert jc.should_exit()
    finally:
        jc.close()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_sigterm_stops_without_requeue():
    with hs.JobControl(
        MPI.COMM_SELF, options=hs.JobControlOptions(), end_time_fn=lambda: (None, "none")
    ) as jc:
        os.kill(os.getpid(), signal.SIGTERM)
        assert jc.should_exit()  # agreed without a check()
        d = jc.stop_decision
        assert d is not None and d.exit and not d.requeue and d.reasons == ("signal:SIGTERM",)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_should_exit_reuses_the_last_check_then_agrees_afresh():
    jc, _ = make_control(lambda: None, FakeClock(), FakeClock())
    assert not jc.check(1).exit
    jc.notify(signal.SIGUSR1)  # arrives after the step's agreement...
    assert not jc.should_exit()  # ...so this step's answer stands (no extra allreduce)
    assert jc.should_exit()  # no check since: agrees afresh and sees it
    d = jc.check(2)
    assert d.exit and d.checkpoint and d.reasons == ("signal:SIGUSR1",)


def test_requeue_signals_are_configurable():
    jc, _ = make_control(
        lambda: None, FakeClock(), FakeClock(), requeue_signals=(signal.SIGUSR1, signal.SIGTERM)
    )
    jc.notify(signal.SIGTERM)
    assert jc.check(1).requeue
    jc, _ = make_control(lambda: None, FakeClock(), FakeClock(), requeue_signals=())
    jc.notify(signal.SIGUSR1)
    d = jc.check(1)
    assert d.exit and not d.requeue


def test_query_rank_must_exist():
    with pytest.raises(ValueError, match="query_rank"):
        hs.JobControl(
            MPI.COMM_SELF, options=hs.JobControlOptions(query_rank=1, install_signal_handlers=False)
        )


def test_requeue_runs_scontrol_and_reports():
    ok = FakeRunner({"scontrol requeue": hs.CommandResult(0, "")})
    r = hs.requeue(MPI.COMM_SELF, env={"SLURM_JOB_ID": "42"}, runner=ok)
    assert r and r.ok and "scontrol requeue 42" in r.message
    assert ok.calls == [["scontrol", "requeue", "42"]]
    held = FakeRunner({"scontrol requeuehold": hs.CommandResult(0, "")})
    assert hs.requeue(MPI.COMM_SELF, job="43", hold=True, runner=held)
    assert held.calls == [["scontrol", "requeuehold", "43"]]
    bad = FakeRunner(
        {"scontrol requeue": hs.CommandResult(1, "", "Requested operation is presently disabled")}
    )
    r = hs.requeue(MPI.COMM_SELF, env={"SLURM_JOB_ID": "42"}, runner=bad)
    assert not r and "presently disabled" in r.message
    r = hs.requeue(MPI.COMM_SELF, env={}, runner=ok)
    assert not r and "not in a Slurm job" in r.message


def test_module_imports_neither_h5py_nor_the_io_layer():
    for f in (REPO / "hpckpt" / "slurm").glob("*.py"):
        src = f.read_text()
        assert not re.search(r"^\s*(import|from)\s+(h5py|\.\.io|hpckpt\.io)", src, re.M), f


# --- real runs ----------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the Slurm variables of any job that runs this test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONDONTWRITEBYTECODE="1"
    )
    env.update(extra)
    return env


def mpirun(n: int, *args: str) -> list[str]:
    return mpirun_cmd(n, str(TRAIN), *args)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on 3 ranks (uneven shards): the expected result of every run."""
    d = tmp_path_factory.mktemp("reference")
    p = subprocess.run(
        mpirun(3, str(STEPS), *TRAIN_ARGS),
        env=clean_env(HPCKPT_CKPT_DIR=str(d)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads((d / "result.json").read_text())
    assert result["step"] == STEPS and result["start_step"] == 0 and result["ranks"] == 3
    assert f"FINAL step={STEPS} checksum={result['checksum']}" in p.stdout
    return result


def wait_for(pred, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@pytest.mark.timeout(300)
def rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of MPI rank ``rank`` among the children of ``launcher_pid`` (Open MPI's env)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            environ = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
            return int(d.name)
    return None


def test_train_job_stops_on_sigusr1_and_resumes_on_other_rank_count(tmp_path, reference):
    """Outside Slurm: SIGUSR1 to ONE rank -> all agree to checkpoint -> exit 75; rerun finishes.

    Only rank 1 gets the signal, and rank 0 (which logs) stops at the same step: the
    flags were combined by the allreduce. The rerun on 4 ranks ends bit-identical.
    """
    env = clean_env(HPCKPT_CKPT_DIR=str(tmp_path / "ckpt"))
    log = tmp_path / "run1.log"
    with open(log, "w") as out:
        p = subprocess.Popen(
            mpirun(2, str(STEPS), *TRAIN_ARGS, "--step-sleep", "0.1"),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: "STEP step=10 " in read(log), 120, "step 10")
            pid = wait_for(lambda: rank_pid(p.pid, 1), 30, "the pid of rank 1")
            os.kill(pid, signal.SIGUSR1)
            rc = p.wait(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = read(log)
    assert rc == 75, text
    m = re.search(r"CHECKPOINT step=(\d+) \S+ \S+ reasons=signal:SIGUSR1", text)
    assert m, text
    stopped = int(m.group(1))
    assert 10 <= stopped < STEPS and "FINAL" not in text
    p = subprocess.run(
        mpirun(4, str(STEPS), *TRAIN_ARGS),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads((tmp_path / "ckpt" / "result.json").read_text())
    assert result["start_step"] == stopped and result["ranks"] == 4
    assert result["checksum"] == reference["checksum"]
    assert result["state_checksum"] == reference["state_checksum"]


def test_multilevel_job_persists_its_final_save_on_sigusr1(tmp_path, reference):
    """Multi-level: SIGUSR1 -> the agreed final save is persisted before the job exits.

    The job (4 ranks as 2 emulated nodes) saves to a node-local tier and persists every
    4th save. After the signal its nodes are gone (the local tier is deleted): the
    rerun, on 3 ranks, resumes from the parallel file system at the step it stopped,
    and ends bit-identical to the uninterrupted run.
    """
    ckpt, local = tmp_path / "ckpt", tmp_path / "local-{node}"
    env = clean_env(HPCKPT_CKPT_DIR=str(ckpt), HPCKPT_RANKS_PER_NODE="2")
    args = [*TRAIN_ARGS[:2], "--save-every", "3", "--local-tier", str(local)]
    log = tmp_path / "run1.log"
    with open(log, "w") as out:
        p = subprocess.Popen(
            mpirun(4, str(STEPS), *args, "--step-sleep", "0.1"),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: "STEP step=10 " in read(log), 120, "step 10")
            pid = wait_for(lambda: rank_pid(p.pid, 2), 30, "the pid of rank 2")
            os.kill(pid, signal.SIGUSR1)
            rc = p.wait(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = read(log)
    assert rc == 75, text
    m = re.search(r"CHECKPOINT step=(\d+) path=(\S+) \S+ reasons=signal:SIGUSR1", text)
    assert m, text
    stopped = int(m.group(1))
    assert "{node}" in m.group(2)  # saved to the local tier, and persisted:
    assert hs_latest(ckpt) == str(ckpt / f"ckpt-{stopped}")
    for d in tmp_path.glob("local-*"):
        shutil.rmtree(d)  # the job's nodes are gone
    p = subprocess.run(
        mpirun(3, str(STEPS), *args),
        env=clean_env(HPCKPT_CKPT_DIR=str(ckpt), HPCKPT_RANKS_PER_NODE="1"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads((ckpt / "result.json").read_text())
    assert result["start_step"] == stopped and result["restored_from"].startswith(str(ckpt))
    assert result["checksum"] == reference["checksum"]
    assert result["state_checksum"] == reference["state_checksum"]


def hs_latest(directory: Path) -> str | None:
    import hpckpt

    return hpckpt.latest_checkpoint(str(directory))


# --- the real Slurm cycle ------------------------------------------------------------------


def cluster(cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER), cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        check=False,
    )


@pytest.fixture(scope="module")
def slurm_env():
    """A running local Slurm; yields the environment for its clients; brings it down after."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    was_up = cluster("status", 60).returncode == 0
    t0 = time.monotonic()
    up = cluster("up")
    if up.returncode != 0:
        msg = (
            f"Slurm could not be installed or started here (slurm/local-cluster.sh up "
            f"exited {up.returncode}): {up.stderr.strip()[-1500:]}"
        )
        if os.environ.get("HPCKPT_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    m = re.search(r"^export SLURM_CONF=(\S+)$", up.stdout, re.M)
    assert m, up.stdout
    print(f"local Slurm up in {time.monotonic() - t0:.1f} s: {m.group(1)}")
    try:
        yield clean_env(SLURM_CONF=m.group(1))
    finally:
        if not was_up:
            down = cluster("down", 120)
            assert down.returncode == 0, down.stderr


def sbatch(env, script: str, out: Path, ckpt: Path, sbatch_args, job_args) -> str:
    env = dict(
        env, HPCKPT_PYTHON=sys.executable, HPCKPT_TRAIN=str(TRAIN), HPCKPT_CKPT_DIR=str(ckpt)
    )
    p = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--output={out}",
            *sbatch_args,
            str(REPO / "slurm" / script),
            *job_args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().split(";")[0]


def job_fields(env, job: str) -> dict[str, str]:
    p = subprocess.run(
        ["scontrol", "show", "job", job],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return hs.parse_scontrol_fields(p.stdout) if p.returncode == 0 else {}


def check_cycle(text: str, result: dict, reference: dict, reason: str, ranks: int) -> int:
    """The log shows stop -> checkpoint -> requeue -> restart -> restore -> finish."""
    m = re.search(rf"STOP step=(\d+) reasons=[\w:,]*{reason}", text)
    assert m, text
    stopped = int(m.group(1))
    assert re.search(rf"CHECKPOINT step={stopped} path=\S+/ckpt-{stopped} ", text), text
    assert "REQUEUE ok=True message=scontrol requeue" in text, text
    assert f"EXIT preempted step={stopped} code=0" in text, text
    assert re.search(
        r"\[train\.sbatch\] job=\d+ restart=1 |\[mpirun\.sbatch\] job=\d+ restart=1 ", text
    ), text
    assert re.search(
        rf"START job=\d+ restart=[1-9]\d* ranks={ranks} mesh=\([\d, ]+\) step=\d+ target={STEPS} "
        rf"restored=\S+/ckpt-\d+ ",
        text,
    ), text
    assert text.count(f"FINAL step={STEPS} checksum={reference['checksum']}") == 1, text
    assert result["restart_count"] >= 1 and result["ranks"] == ranks
    assert 0 < stopped <= result["start_step"] < STEPS
    assert result["restored_from"].endswith(f"/ckpt-{result['start_step']}")
    assert result["checksum"] == reference["checksum"]  # bit-identical parameters
    assert result["state_checksum"] == reference["state_checksum"]  # and Adam slots
    return stopped


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_slurm_preempt_checkpoint_requeue_resume(slurm_env, reference, tmp_path):
    """Two real jobs at once: USR1 through the batch shell (srun), and the time limit (mpirun)."""
    env = slurm_env
    t0 = time.monotonic()
    a_out, a_ckpt = tmp_path / "a.out", tmp_path / "a-ckpt"
    b_out, b_ckpt = tmp_path / "b.out", tmp_path / "b-ckpt"
    # A: 4 ranks, preempted by SIGUSR1 sent to the batch shell, which forwards it to srun.
    a = sbatch(
        env,
        "train.sbatch",
        a_out,
        a_ckpt,
        ["--ntasks=4", "--time=10"],
        [str(STEPS), *TRAIN_ARGS, "--step-sleep", "0.2"],
    )
    # B: 2 ranks with mpirun, a 2-minute limit and a 110 s margin floor: it stops on time
    # at most ~8 s after it starts (before step 30 of 50 at 0.3 s a step). Once it has
    # requeued itself the test gives it 10 minutes, so the next run finishes.
    b = sbatch(
        env,
        "mpirun.sbatch",
        b_out,
        b_ckpt,
        ["--ntasks=2", "--time=2", "--signal=B:USR1@5"],
        [
            str(STEPS),
            *TRAIN_ARGS,
            "--step-sleep",
            "0.3",
            "--margin-floor",
            "110",
            "--initial-save-seconds",
            "1",
        ],
    )
    try:
        wait_for(lambda: "STEP step=10 " in read(a_out), 120, "job A to reach step 10")
        p = subprocess.run(
            ["scancel", "--batch", "--signal=USR1", a],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert p.returncode == 0, p.stderr
        t_signal = time.monotonic() - t0
        wait_for(lambda: "REQUEUE ok=True" in read(b_out), 150, "job B to requeue itself")
        p = subprocess.run(
            ["scontrol", "update", f"JobId={b}", "TimeLimit=10"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert p.returncode == 0, p.stderr
        for job, out, ckpt in ((a, a_out, a_ckpt), (b, b_out, b_ckpt)):
            wait_for(
                lambda out=out, ckpt=ckpt: "FINAL" in read(out) and (ckpt / "result.json").exists(),
                150,
                f"job {job} to finish",
            )
            wait_for(
                lambda job=job: job_fields(env, job).get("JobState") in (None, "COMPLETED"),
                60,
                f"job {job} to complete",
            )
    finally:
        subprocess.run(["scancel", a, b], env=env, capture_output=True, timeout=30, check=False)
    elapsed = time.monotonic() - t0
    a_text, b_text = read(a_out), read(b_out)
    assert "[train.sbatch] got SIGUSR1" in a_text, a_text
    pmix = subprocess.run(
        ["srun", "--mpi=list"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    launcher = "srun" if "pmix" in pmix.stdout + pmix.stderr else "mpirun"
    assert f"launcher={launcher} " in a_text, a_text
    stopped_a = check_cycle(
        a_text, json.loads((a_ckpt / "result.json").read_text()), reference, "signal:SIGUSR1", 4
    )
    stopped_b = check_cycle(
        b_text, json.loads((b_ckpt / "result.json").read_text()), reference, "time", 2
    )
    assert re.search(r"START job=\d+ restart=0 .* time_left=\d+s source=scontrol", b_text), b_text
    for job in (a, b):
        f = job_fields(env, job)
        if f:  # still in slurmctld's memory (MinJobAge)
            assert f["JobState"] == "COMPLETED" and int(f["Restarts"]) >= 1, f
    print(
        f"Slurm cycle: A (srun, USR1 at {t_signal:.1f} s) stopped at step {stopped_a}, "
        f"B (mpirun, time limit) at step {stopped_b}; both finished in {elapsed:.1f} s"
    )


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_slurm_multilevel_job_persists_on_preemption_and_resumes(slurm_env, reference, tmp_path):
    """slurm/multilevel.sbatch: node-local tier (4 ranks as 2 emulated nodes), SIGUSR1 ->
    the final save is persisted -> requeue. The requeued run (here on the same node, whose
    local tier Slurm's requeue left in place) resumes from that save and ends
    bit-identical; the local tier is removed when the last step ends."""
    out, ckpt, local = tmp_path / "ml.out", tmp_path / "ckpt", tmp_path / "local-{node}"
    env = dict(slurm_env, HPCKPT_LOCAL_TIER=str(local), HPCKPT_RANKS_PER_NODE="2")
    job = sbatch(
        env,
        "multilevel.sbatch",
        out,
        ckpt,
        ["--ntasks=4", "--time=10"],
        [str(STEPS), *TRAIN_ARGS, "--step-sleep", "0.2"],
    )
    try:
        wait_for(lambda: "STEP step=10 " in read(out), 120, "the job to reach step 10")
        p = subprocess.run(
            ["scancel", "--batch", "--signal=USR1", job],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert p.returncode == 0, p.stderr
        wait_for(
            lambda: "FINAL" in read(out) and (ckpt / "result.json").exists(), 200, "the job to end"
        )
        wait_for(
            lambda: job_fields(env, job).get("JobState") in (None, "COMPLETED"),
            60,
            "the job to complete",
        )
    finally:
        subprocess.run(["scancel", job], env=env, capture_output=True, timeout=30, check=False)
    text = read(out)
    result = json.loads((ckpt / "result.json").read_text())
    stopped = check_cycle(text, result, reference, "signal:SIGUSR1", 4)
    assert re.search(rf"CHECKPOINT step={stopped} path=\S+/local-{{node}}/ckpt-{stopped} ", text)
    assert (ckpt / f"ckpt-{stopped}.index.json").exists()  # persisted before the requeue
    assert result["restored_from"].endswith(f"/ckpt-{stopped}")  # either tier: the same save
    assert text.count("[train.sbatch] removing the local tier") == 1, text
    assert not list(tmp_path.glob("local-*"))
