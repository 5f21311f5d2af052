"""Port of TensorFlow's ``tensorflow/python/checkpoint/checkpoint_management_test.py``.

Source: tensorflow/tensorflow, that file at commit 0304934138cbfabd338ec432a630a9c3c1191564.
Every test keeps TF's name (snake_case) and class, and names the TF test it ports.
TF tests that are not here are listed, with the reason, in SKIPPED.md.

Translation: ``checkpoint_management.X`` -> ``hpckpt.X`` (``checkpoint_exists``,
``get_checkpoint_state``, ``update_checkpoint_state``, ``remove_checkpoint``). The state
is read like TF's ``CheckpointState`` proto (``model_checkpoint_path``,
``all_model_checkpoint_paths``, ``all_model_checkpoint_timestamps``,
``last_preserved_timestamp``). The helpers that change files run on one process; the
ports call them on every rank at once, through ``agreed_call`` (an error on any rank is
raised on every rank): they must be, and are, idempotent and atomic.

Time: TF patches ``checkpoint_management.time``. The ports patch ``time.time`` itself,
identically on every rank (the manager reads it at each call unless given ``clock=``).
"""

# TF's own idioms are kept as they are (the port is line by line):
# ruff: noqa: UP031

from __future__ import annotations

import json
import os
import pathlib
from unittest import mock

import numpy as np
import pytest
from _tfport import V, agreed_call, all_ranks, capture_warnings, chdir
from mpi4py import MPI

import hpckpt

pytestmark = [pytest.mark.mpi(min_size=1), pytest.mark.timeout(120)]

COMM = MPI.COMM_WORLD


OUTSIDE_DIRECTORY = (
    "deliberate difference (docs/api.md, Differences from TensorFlow): hpckpt's state file "
    "records paths relative to its directory, which must contain them (a moved directory "
    "still resolves, and no state file can make a manager delete files elsewhere), so "
    "update_checkpoint_state raises ValueError for TF's absolute path outside the "
    "directory (save_dir/model-0 for the directory save_dir/train), which TF records as it is"
)


def _mkdir(path) -> str:
    """Make a directory on rank 0; every rank sees it after the barrier."""
    if COMM.rank == 0:
        os.makedirs(path, exist_ok=True)
    COMM.Barrier()
    return os.fspath(path)


def _write_file(path: str, text: str) -> None:
    if COMM.rank == 0:
        with open(path, "w") as f:
            f.write(text)
    COMM.Barrier()


@pytest.fixture
def patched_time():
    """``mock.patch.object(checkpoint_management, "time")``: a settable clock, every rank."""
    with mock.patch("time.time") as clock:
        clock.return_value = 0.0
        yield clock


class TestLatestCheckpointWithRelativePaths:
    # ports LatestCheckpointWithRelativePaths.testRelativePath
    def test_relative_path(self, shared_dir):
        # Make sure we have a clean directory to work in; jump to that directory until
        # this test is done (on every rank).
        with chdir(shared_dir):
            # Save training snapshots to a relative path.
            traindir = "train"
            _mkdir(traindir)

            filename = "snapshot"
            filepath = os.path.join(traindir, filename)

            # TF: a v1 Saver({"v0": v0}) saving with global_step 0, 1, 2 (which writes the
            # state file as Checkpoint.save() does).
            v0 = V(0.0)
            save = hpckpt.Checkpoint(v0=v0)
            # Record a short training history.
            save.save(filepath)
            v0.assign(v0.numpy() + 1.0)
            save.save(filepath)
            v0.assign(v0.numpy() + 1.0)
            save.save(filepath)

            # Build a new graph with different initialization.
            v0 = V(-1.0)
            save = hpckpt.Checkpoint(v0=v0)

            # Get the most recent checkpoint name from the training history file.
            name = hpckpt.latest_checkpoint(traindir)
            assert name is not None

            # Restore "v0" from that checkpoint.
            save.restore(name)
            assert all_ranks(v0.numpy() == 2.0)


class TestCheckpointStateTest:
    @staticmethod
    def _get_test_dir(shared_dir, dirname):
        return _mkdir(os.path.join(shared_dir, dirname))

    # ports CheckpointStateTest.testUpdateCheckpointState
    @pytest.mark.xfail(
        strict=True,
        reason=OUTSIDE_DIRECTORY,
    )
    def test_update_checkpoint_state(self, shared_dir):
        save_dir = self._get_test_dir(shared_dir, "update_checkpoint_state")
        with chdir(save_dir):
            # Make a temporary train directory.
            train_dir = "train"
            _mkdir(train_dir)
            abs_path = os.path.join(save_dir, "model-0")
            rel_path = os.path.join("train", "model-2")
            agreed_call(
                hpckpt.update_checkpoint_state,
                train_dir,
                rel_path,
                all_model_checkpoint_paths=[abs_path, rel_path],
            )
            COMM.Barrier()
            ckpt = hpckpt.get_checkpoint_state(train_dir)
            assert ckpt.model_checkpoint_path == rel_path
            assert len(ckpt.all_model_checkpoint_paths) == 2
            assert ckpt.all_model_checkpoint_paths[-1] == rel_path
            assert ckpt.all_model_checkpoint_paths[0] == abs_path

    # ports CheckpointStateTest.testFSPath
    @pytest.mark.xfail(
        strict=True,
        reason=OUTSIDE_DIRECTORY,
    )
    def test_fs_path(self, shared_dir):
        save_dir = self._get_test_dir(shared_dir, "fspath")
        with chdir(save_dir):
            # Make a temporary train directory.
            train_dir = "train"
            _mkdir(train_dir)
            abs_path = os.path.join(save_dir, "model-0")
            rel_path = os.path.join("train", "model-2")
            agreed_call(
                hpckpt.update_checkpoint_state,
                train_dir,
                rel_path,
                all_model_checkpoint_paths=[abs_path, rel_path],
            )
            COMM.Barrier()
            ckpt = hpckpt.get_checkpoint_state(pathlib.Path(train_dir))
            assert ckpt.model_checkpoint_path == rel_path

    # ports CheckpointStateTest.testUpdateCheckpointStateSaveRelativePaths
    def test_update_checkpoint_state_save_relative_paths(self, shared_dir):
        save_dir = self._get_test_dir(shared_dir, "update_checkpoint_state")
        with chdir(save_dir):
            abs_path2 = os.path.join(save_dir, "model-2")
            rel_path2 = "model-2"
            abs_path0 = os.path.join(save_dir, "model-0")
            rel_path0 = "model-0"
            # TF: update_checkpoint_state_internal(..., save_relative_paths=True). hpckpt's
            # state file always stores paths relative to the directory.
            agreed_call(
                hpckpt.update_checkpoint_state,
                save_dir,
                abs_path2,
                all_model_checkpoint_paths=[rel_path0, abs_path2],
            )
            COMM.Barrier()

            # File should contain relative paths (hpckpt's state file is JSON: "latest" and
            # "checkpoints": [{"path": ...}, ...]).
            with open(os.path.join(save_dir, "checkpoint")) as f:
                state = json.load(f)
            assert state["latest"] == rel_path2
            assert len(state["checkpoints"]) == 2
            assert state["checkpoints"][-1]["path"] == rel_path2
            assert state["checkpoints"][0]["path"] == rel_path0

            # get_checkpoint_state should return absolute paths.
            ckpt = hpckpt.get_checkpoint_state(save_dir)
            assert ckpt.model_checkpoint_path == abs_path2
            assert len(ckpt.all_model_checkpoint_paths) == 2
            assert ckpt.all_model_checkpoint_paths[-1] == abs_path2
            assert ckpt.all_model_checkpoint_paths[0] == abs_path0

    # ports CheckpointStateTest.testCheckPointStateFailsWhenIncomplete
    def test_check_point_state_fails_when_incomplete(self, shared_dir):
        save_dir = self._get_test_dir(shared_dir, "checkpoint_state_fails_when_incomplete")
        with chdir(save_dir):
            ckpt_path = os.path.join(save_dir, "checkpoint")
            _write_file(ckpt_path, "")
            with pytest.raises(ValueError):
                hpckpt.get_checkpoint_state(save_dir)

    # ports CheckpointStateTest.testCheckPointCompletesRelativePaths
    def test_check_point_completes_relative_paths(self, shared_dir):
        save_dir = self._get_test_dir(shared_dir, "checkpoint_completes_relative_paths")
        with chdir(save_dir):
            ckpt_path = os.path.join(save_dir, "checkpoint")
            # TF writes a text-format CheckpointState; this is the same state in hpckpt's
            # JSON state file format (which requires a time per entry).
            state = {
                "format": "hpckpt-state",
                "version": 1,
                "latest": "./model.ckpt-687529",
                "checkpoints": [
                    {"path": "./model.ckpt-687500", "time": 0.0},
                    {"path": "./model.ckpt-687529", "time": 0.0},
                ],
                "last_preserved_timestamp": 0.0,
            }
            _write_file(ckpt_path, json.dumps(state))
            ckpt = hpckpt.get_checkpoint_state(save_dir)
            assert ckpt.model_checkpoint_path == os.path.join(save_dir, "./model.ckpt-687529")
            assert ckpt.all_model_checkpoint_paths[0] == os.path.join(
                save_dir, "./model.ckpt-687500"
            )
            assert ckpt.all_model_checkpoint_paths[1] == os.path.join(
                save_dir, "./model.ckpt-687529"
            )


def _variable(sharded: bool) -> hpckpt.Variable:
    """TF's ``Variable(1.0, name="v")`` under a ``Saver(sharded=...)``: hpckpt shards by
    layout, so the sharded case is a vector split over the ranks."""
    if not sharded:
        return V(1.0)
    mesh = hpckpt.create_mesh([("x", COMM.size)])
    return V(np.ones(2 * COMM.size), layout=hpckpt.Layout(["x"], mesh))


class TestSaverUtilsTest:
    @pytest.fixture
    def base_dir(self, shared_dir):
        return _mkdir(os.path.join(shared_dir, "saver_utils_test"))

    # ports SaverUtilsTest.testCheckpointExists (TF's loop over the V1/V2 file formats
    # has no analogue: hpckpt has one format)
    def test_checkpoint_exists(self, base_dir):
        for sharded in (False, True):
            checkpoint = hpckpt.Checkpoint(v=_variable(sharded))
            path = os.path.join(base_dir, "%s-%s" % (sharded, "V2"))
            assert not hpckpt.checkpoint_exists(path)  # Not saved yet.

            ckpt_prefix = checkpoint.save(path)
            assert hpckpt.checkpoint_exists(ckpt_prefix)

            ckpt_prefix = hpckpt.latest_checkpoint(base_dir)
            assert hpckpt.checkpoint_exists(ckpt_prefix)

    # ports SaverUtilsTest.testRemoveCheckpoint (TF also passes the format version)
    def test_remove_checkpoint(self, base_dir):
        for sharded in (False, True):
            checkpoint = hpckpt.Checkpoint(v=_variable(sharded))
            path = os.path.join(base_dir, "%s-%s" % (sharded, "V2"))
            ckpt_prefix = checkpoint.save(path)
            assert hpckpt.checkpoint_exists(ckpt_prefix)
            agreed_call(hpckpt.remove_checkpoint, ckpt_prefix)
            COMM.Barrier()
            assert not hpckpt.checkpoint_exists(ckpt_prefix)


class TestCheckpointManagerTest:
    # ports CheckpointManagerTest.testDeletion
    def test_deletion(self, shared_dir):
        checkpoint = hpckpt.Checkpoint()
        manager = hpckpt.CheckpointManager(checkpoint, shared_dir, max_to_keep=3)
        first_path = manager.save()
        second_path = manager.save()
        third_path = manager.save()
        fourth_path = manager.save()
        assert hpckpt.checkpoint_exists(fourth_path)
        assert hpckpt.checkpoint_exists(third_path)
        assert hpckpt.checkpoint_exists(second_path)
        assert not hpckpt.checkpoint_exists(first_path)

    # ports CheckpointManagerTest.testKeepAll
    def test_keep_all(self, shared_dir):
        checkpoint = hpckpt.Checkpoint()
        # (TF names the directory after the execution mode)
        directory = os.path.join(shared_dir, "True")
        manager = hpckpt.CheckpointManager(checkpoint, directory, max_to_keep=None)
        first_path = manager.save()
        second_path = manager.save()
        third_path = manager.save()
        assert hpckpt.checkpoint_exists(third_path)
        assert hpckpt.checkpoint_exists(second_path)
        assert hpckpt.checkpoint_exists(first_path)
        assert third_path == manager.latest_checkpoint
        assert [first_path, second_path, third_path] == manager.checkpoints
        del manager
        manager = hpckpt.CheckpointManager(checkpoint, directory, max_to_keep=None)
        fourth_path = manager.save()
        assert [first_path, second_path, third_path, fourth_path] == manager.checkpoints
        del manager
        manager = hpckpt.CheckpointManager(checkpoint, directory, max_to_keep=3)
        assert [first_path, second_path, third_path, fourth_path] == manager.checkpoints
        assert hpckpt.checkpoint_exists(fourth_path)
        assert hpckpt.checkpoint_exists(third_path)
        assert hpckpt.checkpoint_exists(second_path)
        assert hpckpt.checkpoint_exists(first_path)
        fifth_path = manager.save()
        assert [third_path, fourth_path, fifth_path] == manager.checkpoints
        assert hpckpt.checkpoint_exists(fifth_path)
        assert hpckpt.checkpoint_exists(fourth_path)
        assert hpckpt.checkpoint_exists(third_path)
        assert not hpckpt.checkpoint_exists(second_path)
        assert not hpckpt.checkpoint_exists(first_path)

    # ports CheckpointManagerTest.testSaveRestoreState
    def test_save_restore_state(self, shared_dir, patched_time):
        mock_time = patched_time
        directory = shared_dir
        mock_time.return_value = 3.0
        checkpoint = hpckpt.Checkpoint()
        first_manager = hpckpt.CheckpointManager(checkpoint, directory, max_to_keep=2)
        first_time = 10000.0
        first_name = os.path.join(directory, "ckpt-1")
        mock_time.return_value = first_time
        first_manager.save()
        state = hpckpt.get_checkpoint_state(directory)
        second_time = first_time + 3610.0
        second_name = os.path.join(directory, "ckpt-2")
        mock_time.return_value = second_time
        first_manager.save()
        state = hpckpt.get_checkpoint_state(directory)
        assert [first_time, second_time] == list(state.all_model_checkpoint_timestamps)
        assert [first_name, second_name] == first_manager.checkpoints
        assert second_name == first_manager.latest_checkpoint
        del first_manager

        second_manager = hpckpt.CheckpointManager(
            checkpoint, directory, max_to_keep=2, keep_checkpoint_every_n_hours=1.5
        )
        assert [first_name, second_name] == second_manager.checkpoints
        assert second_name == second_manager.latest_checkpoint
        third_name = os.path.join(directory, "ckpt-3")
        third_time = second_time + 3600.0 * 0.2
        mock_time.return_value = third_time
        second_manager.save()
        assert hpckpt.checkpoint_exists(first_name)
        assert hpckpt.checkpoint_exists(second_name)
        assert [second_name, third_name] == second_manager.checkpoints
        state = hpckpt.get_checkpoint_state(directory)
        assert first_time == state.last_preserved_timestamp
        fourth_time = third_time + 3600.0 * 0.5
        mock_time.return_value = fourth_time
        fourth_name = os.path.join(directory, "ckpt-4")
        second_manager.save()
        assert hpckpt.checkpoint_exists(first_name)
        assert not hpckpt.checkpoint_exists(second_name)
        assert [third_name, fourth_name] == second_manager.checkpoints
        fifth_time = fourth_time + 3600.0 * 0.5
        mock_time.return_value = fifth_time
        fifth_name = os.path.join(directory, "ckpt-5")
        second_manager.save()
        assert [fourth_name, fifth_name] == second_manager.checkpoints
        state = hpckpt.get_checkpoint_state(directory)
        assert first_time == state.last_preserved_timestamp
        del second_manager
        third_manager = hpckpt.CheckpointManager(
            checkpoint, directory, max_to_keep=2, keep_checkpoint_every_n_hours=1.5
        )
        assert fifth_name == third_manager.latest_checkpoint
        mock_time.return_value += 10.0
        third_manager.save()
        sixth_name = os.path.join(directory, "ckpt-6")
        state = hpckpt.get_checkpoint_state(directory)
        assert fourth_time == state.last_preserved_timestamp
        assert hpckpt.checkpoint_exists(first_name)
        assert hpckpt.checkpoint_exists(fourth_name)
        assert hpckpt.checkpoint_exists(fifth_name)
        assert hpckpt.checkpoint_exists(sixth_name)
        assert not hpckpt.checkpoint_exists(second_name)
        assert not hpckpt.checkpoint_exists(third_name)
        assert [fifth_name, sixth_name] == third_manager.checkpoints

    # ports CheckpointManagerTest.testContinueFromUnmanaged
    def test_continue_from_unmanaged(self, shared_dir):
        directory = shared_dir
        prefix = os.path.join(directory, "unusual_prefix")
        checkpoint = hpckpt.Checkpoint()
        first_path = checkpoint.save(prefix)
        second_path = checkpoint.save(prefix)
        del checkpoint
        checkpoint = hpckpt.Checkpoint()
        manager = hpckpt.CheckpointManager(checkpoint, directory, max_to_keep=2)
        checkpoint.restore(manager.latest_checkpoint).run_restore_ops()
        assert all_ranks(checkpoint.save_counter.numpy() == 2)
        third_path = manager.save()
        assert [third_path] == manager.checkpoints
        fourth_path = manager.save()
        assert [third_path, fourth_path] == manager.checkpoints
        fifth_path = manager.save()
        assert [fourth_path, fifth_path] == manager.checkpoints
        assert hpckpt.checkpoint_exists(first_path)
        assert hpckpt.checkpoint_exists(second_path)
        assert not hpckpt.checkpoint_exists(third_path)
        assert hpckpt.checkpoint_exists(fourth_path)
        assert hpckpt.checkpoint_exists(fifth_path)

    # ports CheckpointManagerTest.testClockReset
    def test_clock_reset(self, shared_dir, patched_time):
        mock_time = patched_time
        directory = shared_dir
        mock_time.return_value = 10000.0
        checkpoint = hpckpt.Checkpoint()
        first_manager = hpckpt.CheckpointManager(
            checkpoint, directory, max_to_keep=1, keep_checkpoint_every_n_hours=1.0
        )
        first_path = first_manager.save()
        mock_time.return_value += 3600.0
        second_path = first_manager.save()
        mock_time.return_value += 3600.0
        third_path = first_manager.save()
        assert not hpckpt.checkpoint_exists(first_path)
        assert hpckpt.checkpoint_exists(second_path)
        assert hpckpt.checkpoint_exists(third_path)
        assert [third_path] == first_manager.checkpoints
        state = hpckpt.get_checkpoint_state(directory)
        assert 13600.0 == state.last_preserved_timestamp
        # Set the clock back in time
        mock_time.return_value = 5000.0
        del first_manager
        with capture_warnings() as messages:
            second_manager = hpckpt.CheckpointManager(checkpoint, directory, max_to_keep=1)
        # (one warning per job is enough: look at every rank's)
        assert "behind the last preserved checkpoint timestamp" in str(COMM.allgather(messages))
        # We should err on the side of keeping checkpoints around when we're not
        # sure whether they were preserved or not due to clock funkiness.
        assert hpckpt.checkpoint_exists(second_path)
        # We know about the existing checkpoints, but they'll never be deleted and
        # so won't go in the CheckpointState proto on save.
        assert third_path == second_manager.latest_checkpoint
        assert [] == second_manager.checkpoints
        mock_time.return_value += 10.0
        fourth_path = second_manager.save()
        assert hpckpt.checkpoint_exists(second_path)
        assert hpckpt.checkpoint_exists(third_path)
        assert fourth_path == second_manager.latest_checkpoint
        assert [fourth_path] == second_manager.checkpoints
        mock_time.return_value += 10.0
        fifth_path = second_manager.save()
        assert hpckpt.checkpoint_exists(second_path)
        assert hpckpt.checkpoint_exists(third_path)
        assert [fifth_path] == second_manager.checkpoints
        state = hpckpt.get_checkpoint_state(directory)
        assert 5000.0 == state.last_preserved_timestamp
        assert [5020.0] == list(state.all_model_checkpoint_timestamps)

    # ports CheckpointManagerTest.testCustomNumbering
    def test_custom_numbering(self, shared_dir):
        directory = shared_dir
        step = V(0, dtype=np.int64)
        checkpoint = hpckpt.Checkpoint(step=step)
        manager = hpckpt.CheckpointManager(checkpoint, directory, max_to_keep=2)
        for i in range(5):
            path = manager.save(checkpoint_number=step)
            expected_suffix = "-%d" % (2 * i,)
            assert path.endswith(expected_suffix), f"{path} should have suffix {expected_suffix}"
            step.assign(step.numpy() + 2)  # step.assign_add(2)
        assert all_ranks(checkpoint.save_counter.numpy() == 5)
        # Test regular integers
        last_path = manager.save(checkpoint_number=32)
        assert "-32" in last_path
        assert last_path == manager.latest_checkpoint
        assert last_path == hpckpt.latest_checkpoint(directory)
        state = hpckpt.get_checkpoint_state(directory)
        # Only the most recent two checkpoints are saved
        assert [path, last_path] == list(state.all_model_checkpoint_paths)

    # ports CheckpointManagerTest.testCustomCheckpointPrefix
    def test_custom_checkpoint_prefix(self, shared_dir):
        directory = shared_dir
        checkpoint = hpckpt.Checkpoint()
        manager = hpckpt.CheckpointManager(
            checkpoint, directory, max_to_keep=2, checkpoint_name="ckpt_name"
        )
        path = manager.save(checkpoint_number=5)
        assert os.path.basename(path) == "ckpt_name-5"
        manager = hpckpt.CheckpointManager(checkpoint, directory, max_to_keep=2)
        path = manager.save(checkpoint_number=5)
        assert os.path.basename(path) == "ckpt-5"

    # ports CheckpointManagerTest.testRestoreOrInitialize
    def test_restore_or_initialize(self, shared_dir):
        directory = shared_dir

        # Create a checkpoint for initializing.
        init_prefix = os.path.join(directory, "init")
        init_v = V(2.0)
        init_ckpt = hpckpt.Checkpoint(v=init_v)
        init_path = init_ckpt.save(init_prefix)

        # Create the checkpoint manager.
        ckpt_dir = os.path.join(directory, "ckpt")
        v = V(1.0)
        checkpoint = hpckpt.Checkpoint(v=v)
        manager = hpckpt.CheckpointManager(
            checkpoint,
            ckpt_dir,
            max_to_keep=None,
            init_fn=lambda: checkpoint.restore(init_path).run_restore_ops(),
        )

        # First call should call `init_fn`.
        assert manager.restore_or_initialize() is None
        assert all_ranks(v.numpy() == 2.0)

        # Save a checkpoint and second call should restore from the checkpoints.
        manager.save()
        assert manager.restore_or_initialize() is not None

    # ports CheckpointManagerTest.testCheckpointManagerFSpathDirectory
    def test_checkpoint_manager_f_spath_directory(self, shared_dir):
        directory = pathlib.Path(shared_dir)
        v = V(0.0)
        checkpoint = hpckpt.Checkpoint(v=v)
        manager = hpckpt.CheckpointManager(
            checkpoint, directory, max_to_keep=2, checkpoint_name="ckpt_name"
        )
        save_path = manager.save()
        expected = str(directory / "ckpt_name-1")
        assert expected == save_path

        restore_path = manager.restore_or_initialize()
        assert str(directory / "ckpt_name-1") == restore_path

    # ports CheckpointManagerTest.testLatestCheckpointFSpathDirectory
    def test_latest_checkpoint_f_spath_directory(self, shared_dir):
        directory = pathlib.Path(shared_dir)
        checkpoint = hpckpt.Checkpoint()
        manager = hpckpt.CheckpointManager(
            checkpoint, directory, max_to_keep=2, checkpoint_name="ckpt_name"
        )
        manager.save()

        cp_dir = hpckpt.latest_checkpoint(directory)
        assert str(directory / "ckpt_name-1") == cp_dir

    # ports CheckpointManagerTest.testCheckpointInterval
    def test_checkpoint_interval(self, shared_dir):
        v = V(1.0)
        step_counter = V(0)
        checkpoint = hpckpt.Checkpoint(v=v)
        manager = hpckpt.CheckpointManager(
            checkpoint,
            shared_dir,
            max_to_keep=None,
            step_counter=step_counter,
            checkpoint_interval=2,
        )

        # step_counter: 0, save an initial checkpoint.
        path = manager.save(check_interval=True)
        assert hpckpt.checkpoint_exists(path)

        # step_counter: 1, no checkpoint saved.
        step_counter.assign(step_counter.numpy() + 1)
        path = manager.save(check_interval=True)
        assert path is None

        # step_counter: 2, checkpoint saved.
        step_counter.assign(step_counter.numpy() + 1)
        path = manager.save(check_interval=True)
        assert hpckpt.checkpoint_exists(path)

        # no checkpoint saved when calling `save` with the same step counter.
        path = manager.save(check_interval=True)
        assert path is None

        # step_counter: 3, no checkpoint saved.
        step_counter.assign(step_counter.numpy() + 1)
        path = manager.save(check_interval=True)
        assert path is None

        # Always save the checkpoint.
        path = manager.save(check_interval=False)
        assert hpckpt.checkpoint_exists(path)

    # ports CheckpointManagerTest.testCheckpointIntervalWithLastCheckpointStep
    def test_checkpoint_interval_with_last_checkpoint_step(self, shared_dir):
        v = V(1.0)
        step_counter = V(1)
        checkpoint = hpckpt.Checkpoint(v=v)
        manager = hpckpt.CheckpointManager(
            checkpoint,
            shared_dir,
            max_to_keep=None,
            step_counter=step_counter,
            checkpoint_interval=2,
            last_checkpoint_step=1,
        )

        # step_counter: 1, no checkpoint saved.
        path = manager.save(check_interval=True)
        assert path is None

        # step_counter: 2, no checkpoint saved since the interval starts at 1.
        step_counter.assign(step_counter.numpy() + 1)
        path = manager.save(check_interval=True)
        assert path is None

        # step_counter: 3, checkpoint saved.
        step_counter.assign(step_counter.numpy() + 1)
        path = manager.save(check_interval=True)
        assert hpckpt.checkpoint_exists(path)

    # ports CheckpointManagerTest.testCheckpointIntervalWithRestore
    def test_checkpoint_interval_with_restore(self, shared_dir):
        directory = shared_dir
        v = V(1.0)
        step_counter = V(0)

        # Prepare a checkpoint.
        checkpoint = hpckpt.Checkpoint(v=v)
        checkpoint.save(os.path.join(directory, "ckpt"))

        manager = hpckpt.CheckpointManager(
            checkpoint,
            directory,
            max_to_keep=None,
            step_counter=step_counter,
            checkpoint_interval=2,
        )

        # Restore from the checkpoint.
        assert manager.restore_or_initialize() is not None

        # step_counter: 0, no checkpoint saved because it is restored from the
        # checkpoint with the same step.
        path = manager.save()
        assert path is None
