"""Port of TensorFlow's ``tensorflow/python/checkpoint/checkpoint_view_test.py``.

Not one of the files in the porting brief, which names ``CheckpointView`` among the helpers
to port but whose listed TF files never use it: its tests are here. Sources: that file in
tensorflow/tensorflow (``test_children``, ``test_all_nodes``, ``test_match``,
``test_match_overlapping_nodes``), and ``test_diff`` from a later revision of the same file.
Every test keeps TF's name and names the TF test it ports.

Translation: ``checkpoint_view.CheckpointView(path)`` -> ``hpckpt.CheckpointView(path)``, a
read-only view of a checkpoint's object graph: node ids are
the saved graph's (0 is the root, then breadth first, as in TF), ``children(node_id)``
maps names to node ids, ``descendants()`` lists node ids, ``match(obj)`` maps node ids to
live objects, ``diff(obj)`` returns (matched, unmatched node ids, unmatched live objects).
It runs on one process; every rank calls it.
"""

from __future__ import annotations

import os

import pytest
from _tfport import Agreed, capture_warnings
from mpi4py import MPI

import hpckpt

pytestmark = [pytest.mark.mpi(min_size=1), pytest.mark.timeout(120)]

COMM = MPI.COMM_WORLD


class TestCheckpointViewTest:
    # ports CheckpointViewTest.test_children
    def test_children(self, shared_dir):
        root = hpckpt.Module()
        root.leaf = hpckpt.Module()
        root_ckpt = hpckpt.Checkpoint(root=root)
        root_save_path = root_ckpt.save(os.path.join(shared_dir, "root_ckpt"))
        current_name, node_id = next(
            iter(hpckpt.CheckpointView(root_save_path).children(0).items())
        )
        with Agreed():
            assert "leaf" == current_name
            assert 1 == node_id

    # ports CheckpointViewTest.test_all_nodes
    def test_all_nodes(self, shared_dir):
        root = hpckpt.Module()
        root.leaf = hpckpt.Module()
        root_ckpt = hpckpt.Checkpoint(root=root)
        root_save_path = root_ckpt.save(os.path.join(shared_dir, "root_ckpt"))
        all_nodes = hpckpt.CheckpointView(root_save_path).descendants()
        with Agreed():
            assert 3 == len(all_nodes)
            assert 0 == all_nodes[0]
            assert 1 == all_nodes[1]

    # ports CheckpointViewTest.test_match
    def test_match(self, shared_dir):
        root1 = hpckpt.Module()
        leaf1 = root1.leaf1 = hpckpt.Module()
        leaf2 = root1.leaf2 = hpckpt.Module()
        leaf1.leaf3 = hpckpt.Module()
        leaf1.leaf4 = hpckpt.Module()
        leaf2.leaf5 = hpckpt.Module()
        root_ckpt = hpckpt.Checkpoint(root=root1)
        root_save_path = root_ckpt.save(os.path.join(shared_dir, "root_ckpt"))

        root2 = hpckpt.Module()
        leaf11 = root2.leaf1 = hpckpt.Module()
        leaf12 = root2.leaf2 = hpckpt.Module()
        leaf13 = leaf11.leaf3 = hpckpt.Module()
        leaf15 = leaf12.leaf5 = hpckpt.Module()
        matching_nodes = hpckpt.CheckpointView(root_save_path).match(root2)
        with Agreed():
            assert matching_nodes == {0: root2, 1: leaf11, 2: leaf12, 4: leaf13, 6: leaf15}

    # ports CheckpointViewTest.test_match_overlapping_nodes
    def test_match_overlapping_nodes(self, shared_dir):
        root1 = hpckpt.Module()
        root1.a = root1.b = hpckpt.Module()
        root_ckpt = hpckpt.Checkpoint(root=root1)
        root_save_path = root_ckpt.save(os.path.join(shared_dir, "root_ckpt"))

        root2 = hpckpt.Module()
        a1 = root2.a = hpckpt.Module()
        root2.b = hpckpt.Module()
        with capture_warnings() as logs:  # TF: self.assertLogs(level="WARNING")
            matching_nodes = hpckpt.CheckpointView(root_save_path).match(root2)
        with Agreed():
            assert matching_nodes == {
                0: root2,
                1: a1,
                # Only the first element at the same position will be matched.
            }
            expected_message = (
                "Inconsistent references when matching the checkpoint into this object graph."
            )
            assert logs and expected_message in logs[0]

    # ports CheckpointViewTest.test_diff (later revision of the TF file)
    def test_diff(self, shared_dir):
        root1 = hpckpt.Module()
        leaf1 = root1.leaf1 = hpckpt.Module()
        leaf2 = root1.leaf2 = hpckpt.Module()
        leaf1.leaf3 = hpckpt.Module()
        leaf1.leaf4 = hpckpt.Module()
        leaf2.leaf5 = hpckpt.Module()
        root_ckpt = hpckpt.Checkpoint(root=root1)
        root_save_path = root_ckpt.save(os.path.join(shared_dir, "root_ckpt"))

        root2 = hpckpt.Module()
        leaf11 = root2.leaf1 = hpckpt.Module()
        leaf12 = root2.leaf2 = hpckpt.Module()
        leaf13 = leaf11.leaf3 = hpckpt.Module()
        leaf15 = leaf12.leaf5 = hpckpt.Module()
        leaf16 = leaf12.leaf6 = hpckpt.Module()
        diff = hpckpt.CheckpointView(root_save_path).diff(root2)
        with Agreed():
            assert len(diff) == 3
            assert diff[0] == {0: root2, 1: leaf11, 2: leaf12, 4: leaf13, 6: leaf15}
            assert diff[1] == [3, 5]
            assert diff[2] == [leaf16]
