"""Port of the reader cases of TensorFlow's ``tensorflow/python/training/checkpoint_utils_test.py``.

Sources: tensorflow/tensorflow, that file at commit 0304934138cbfabd338ec432a630a9c3c1191564
(``CheckpointsTest`` reader cases, ``WaitForNewCheckpointTest``), and, for
``CheckpointIteratorTest`` (which that revision no longer has), an earlier TF 2.x revision of
the same file. Every test keeps TF's name (snake_case) and class, and names the TF test it
ports. The ``init_from_checkpoint`` cases (graph mode, variable scopes, partitioned
variables) are listed in SKIPPED.md.

Translation: TF's ``_create_checkpoints`` saves four variables with a v1 ``Saver`` under
their variable names (``var1``, ``useful_scope/var4``) as ``model-0`` and writes the state
file. The hpckpt counterpart saves the same variables in an object graph through a
``CheckpointManager`` (``checkpoint_name="model"``, ``checkpoint_number=0``), so each name
becomes the object-graph key ``var1/.ATTRIBUTES/VARIABLE_VALUE`` and the listing also holds
``save_counter``. ``load_variable``, ``checkpoints_iterator`` and ``wait_for_new_checkpoint``
are called by TF's names. These readers run on one process; every rank calls them.
"""

# TF's own idioms are kept as they are (the port is line by line):
# ruff: noqa: RUF059

from __future__ import annotations

import os
import pathlib
import time

import numpy as np
import pytest
from _tfport import Agreed, V, all_ranks
from mpi4py import MPI

import hpckpt

pytestmark = [pytest.mark.mpi(min_size=1), pytest.mark.timeout(120)]

COMM = MPI.COMM_WORLD


def _key(name: str) -> str:
    """The key of TF's v1 variable ``name`` in an object-based checkpoint."""
    return name + "/.ATTRIBUTES/VARIABLE_VALUE"


def _create_checkpoints(checkpoint_dir):
    """Four variables, saved as ``checkpoint_dir/model-0`` with the state file (collective)."""
    rng = np.random.default_rng(1234)  # the same values on every rank
    v1_value = rng.standard_normal([1, 10]).astype(np.float32)
    v2_value = rng.standard_normal([10, 10]).astype(np.float32)
    v3_value = rng.standard_normal([100, 100]).astype(np.float32)
    v4_value = rng.standard_normal([9, 9]).astype(np.float32)
    useful_scope = hpckpt.Module()
    useful_scope.var4 = V(v4_value)
    root = hpckpt.Checkpoint(
        var1=V(v1_value), var2=V(v2_value), var3=V(v3_value), useful_scope=useful_scope
    )
    manager = hpckpt.CheckpointManager(
        root, checkpoint_dir, max_to_keep=None, checkpoint_name="model"
    )
    manager.save(checkpoint_number=0)  # saver.save(sess, prefix, global_step=0)
    return v1_value, v2_value, v3_value, v4_value


_ALL_VARIABLES = [
    ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", []),  # not in TF's v1 checkpoint
    (_key("useful_scope/var4"), [9, 9]),
    (_key("var1"), [1, 10]),
    (_key("var2"), [10, 10]),
    (_key("var3"), [100, 100]),
]


class TestCheckpointsTest:
    # ports CheckpointsTest.testNoCheckpoints
    def test_no_checkpoints(self, shared_dir):
        checkpoint_dir = shared_dir + "/no_checkpoints"
        # TF: errors_impl.OpError (a NotFoundError) -> hpckpt.NotFoundError
        with pytest.raises(hpckpt.NotFoundError):
            np.testing.assert_array_equal(hpckpt.load_variable(checkpoint_dir, _key("var1")), [])

    # ports CheckpointsTest.testNoTensor
    def test_no_tensor(self, shared_dir):
        checkpoint_dir = shared_dir
        _, _, _, _ = _create_checkpoints(checkpoint_dir)
        # TF: errors_impl.OpError (NotFoundError: key not in checkpoint). hpckpt raises
        # KeyNotFoundError, a NotFoundError that is also a KeyError.
        with pytest.raises(hpckpt.NotFoundError):
            np.testing.assert_array_equal(hpckpt.load_variable(checkpoint_dir, _key("var5")), [])

    # ports CheckpointsTest.testGetTensor
    def test_get_tensor(self, shared_dir):
        checkpoint_dir = shared_dir
        v1, v2, v3, v4 = _create_checkpoints(checkpoint_dir)
        with Agreed():
            np.testing.assert_array_equal(hpckpt.load_variable(checkpoint_dir, _key("var1")), v1)
            np.testing.assert_array_equal(hpckpt.load_variable(checkpoint_dir, _key("var2")), v2)
            np.testing.assert_array_equal(hpckpt.load_variable(checkpoint_dir, _key("var3")), v3)
            np.testing.assert_array_equal(
                hpckpt.load_variable(checkpoint_dir, _key("useful_scope/var4")), v4
            )

    # ports CheckpointsTest.testGetAllVariables
    def test_get_all_variables(self, shared_dir):
        checkpoint_dir = shared_dir
        _create_checkpoints(checkpoint_dir)
        assert all_ranks(hpckpt.list_variables(checkpoint_dir) == _ALL_VARIABLES)

    # ports CheckpointsTest.testFSPath
    def test_fs_path(self, shared_dir):
        checkpoint_dir = pathlib.Path(shared_dir)
        v1, v2, v3, v4 = _create_checkpoints(checkpoint_dir)

        reader = hpckpt.load_checkpoint(checkpoint_dir)
        with Agreed():
            np.testing.assert_array_equal(reader.get_tensor(_key("var1")), v1)

            np.testing.assert_array_equal(hpckpt.load_variable(checkpoint_dir, _key("var1")), v1)

            assert hpckpt.list_variables(checkpoint_dir) == _ALL_VARIABLES


class TestCheckpointIteratorTest:
    # ports CheckpointIteratorTest.testReturnsEmptyIfNoCheckpointsFound
    def test_returns_empty_if_no_checkpoints_found(self, shared_dir):
        checkpoint_dir = os.path.join(shared_dir, "no_checkpoints_found")

        num_found = 0
        for _ in hpckpt.checkpoints_iterator(checkpoint_dir, timeout=0):
            num_found += 1
        assert all_ranks(num_found == 0)

    # ports CheckpointIteratorTest.testReturnsSingleCheckpointIfOneCheckpointFound
    def test_returns_single_checkpoint_if_one_checkpoint_found(self, shared_dir):
        checkpoint_dir = os.path.join(shared_dir, "one_checkpoint_found")
        if COMM.rank == 0:
            os.makedirs(checkpoint_dir, exist_ok=True)
        COMM.Barrier()

        save_path = os.path.join(checkpoint_dir, "model.ckpt")

        a = V(5)
        checkpoint = hpckpt.Checkpoint(a=a)
        checkpoint.save(file_prefix=save_path)

        num_found = 0
        for _ in hpckpt.checkpoints_iterator(checkpoint_dir, timeout=0):
            num_found += 1
        assert all_ranks(num_found == 1)

    # ports CheckpointIteratorTest.testReturnsSingleCheckpointIfOneShardedCheckpoint
    # (TF: a v1 sharded Saver over two CPU devices writes 3 shard files; hpckpt: variables
    # sharded over the ranks, one checkpoint)
    def test_returns_single_checkpoint_if_one_sharded_checkpoint(self, shared_dir):
        checkpoint_dir = os.path.join(shared_dir, "one_checkpoint_found_sharded")
        if COMM.rank == 0:
            os.makedirs(checkpoint_dir, exist_ok=True)
        COMM.Barrier()

        mesh = hpckpt.create_mesh([("x", COMM.size)])
        sharded = hpckpt.Layout(["x"], mesh)
        global_step = V(0)
        v1 = V(np.full(2 * COMM.size, 10), layout=sharded)
        v2 = V(np.full(2 * COMM.size, 20), layout=sharded)
        checkpoint = hpckpt.Checkpoint(v0=global_step, v1=v1, v2=v2)

        save_path = os.path.join(checkpoint_dir, "model.ckpt")
        checkpoint.save(save_path)

        num_found = 0
        for _ in hpckpt.checkpoints_iterator(checkpoint_dir, timeout=0):
            num_found += 1
        assert all_ranks(num_found == 1)

    # ports CheckpointIteratorTest.testTimeoutFn
    def test_timeout_fn(self):
        timeout_fn_calls = [0]

        def timeout_fn():
            timeout_fn_calls[0] += 1
            return timeout_fn_calls[0] > 3

        results = list(
            hpckpt.checkpoints_iterator("/non-existent-dir", timeout=0.1, timeout_fn=timeout_fn)
        )
        with Agreed():
            assert [] == results
            assert 4 == timeout_fn_calls[0]


class TestWaitForNewCheckpointTest:
    # ports WaitForNewCheckpointTest.testReturnsNoneAfterTimeout
    def test_returns_none_after_timeout(self):
        start = time.time()
        ret = hpckpt.wait_for_new_checkpoint(
            "/non-existent-dir", "foo", timeout=1.0, seconds_to_sleep=0.5
        )
        end = time.time()
        with Agreed():
            assert ret is None

            # We've waited one second.
            assert end > start + 0.5

            # The timeout kicked in.
            assert end < start + 1.1
