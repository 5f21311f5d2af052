"""Damaged and hostile checkpoints under MPI: the same clean error on every rank, never a
hang, and nothing assigned. Every case runs once in the serial pass (test_hostile.py);
here a few cases that different ranks detect in different places check the agreement."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import all_ranks
from hostile import CASES, DATA_DAMAGE, flip_byte, model, rank0
from mpi4py import MPI

import hpckpt

pytestmark = pytest.mark.mpi(min_size=2)

# rank 0 validates the index, up to 8 ranks share the data file's structure, every
# rank checks the checksums of what it reads
AGREEMENT_CASES = ["garbage index", "missing data file", "external link", "flipped byte"]


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "staged"])
@pytest.mark.parametrize("case", AGREEMENT_CASES)
def test_damaged_checkpoint_gives_clean_error_everywhere(shared_dir, case, in_place):
    comm = MPI.COMM_WORLD
    tamper, error, text = CASES[case]
    p = hpckpt.Checkpoint(**model()).write(os.path.join(shared_dir, "victim"))
    rank0(lambda: tamper(p))
    target = model(fill=-1)
    caught = None
    try:
        hpckpt.Checkpoint(**target).read(
            p, options=hpckpt.CheckpointOptions(restore_in_place=in_place)
        )
    except Exception as e:
        caught = e
    assert all_ranks(isinstance(caught, error)), f"{case}: {caught!r}"
    assert all_ranks(text in str(caught)), f"{case}: {caught}"
    assert len(set(comm.allgather(f"{type(caught).__name__}: {caught}"))) == 1
    if not (in_place and case in DATA_DAMAGE):
        # nothing was assigned
        assert all_ranks((target["w"].local == -1).all() and (target["b"].local == -1).all())


def test_no_checksum_verification_when_disabled(shared_dir):
    p = hpckpt.Checkpoint(**model()).write(os.path.join(shared_dir, "nv"))
    rank0(lambda: flip_byte(p))
    target = model(fill=-1)
    opts = hpckpt.CheckpointOptions(verify_checksums=False)
    hpckpt.Checkpoint(**target).read(p, options=opts)
    assert all_ranks(not np.array_equal(target["w"].numpy(), np.arange(24.0).reshape(6, 4)))


def test_resharded_read_verifies_saved_slices_it_covers(shared_dir):
    """A replicated restore covers every saved slice, so it catches a flipped byte too."""
    p = hpckpt.Checkpoint(**model()).write(os.path.join(shared_dir, "rs"))
    rank0(lambda: flip_byte(p))
    w = hpckpt.Variable(np.zeros((6, 4)))
    with pytest.raises(hpckpt.CorruptCheckpointError, match="file bytes"):
        hpckpt.Checkpoint(w=w).read(p).expect_partial()


def test_corrupt_state_file(shared_dir):
    v = model()
    mgr = hpckpt.CheckpointManager(hpckpt.Checkpoint(**v), shared_dir, max_to_keep=2)
    mgr.save()

    def bad_state():
        with open(os.path.join(shared_dir, "checkpoint"), "w") as f:
            json.dump(
                {
                    "format": "hpckpt-state",
                    "version": 1,
                    "latest": "../../etc/passwd",
                    "checkpoints": [],
                },
                f,
            )

    rank0(bad_state)
    with pytest.raises(hpckpt.CorruptCheckpointError, match="leaves the directory"):
        hpckpt.latest_checkpoint(shared_dir)
    with pytest.raises(hpckpt.CorruptCheckpointError, match="leaves the directory"):
        hpckpt.CheckpointManager(hpckpt.Checkpoint(**v), shared_dir, max_to_keep=2)


@pytest.mark.parametrize(
    "opts",
    [
        hpckpt.CheckpointOptions(direct_io_threshold=16),  # direct reads, CRC per chunk
        hpckpt.CheckpointOptions(collective=False),
        hpckpt.CheckpointOptions(direct_io_threshold=None),  # all through MPI-IO
    ],
    ids=["direct", "independent", "mpiio"],
)
def test_flipped_byte_is_caught_on_every_read_path(shared_dir, opts):
    p = hpckpt.Checkpoint(**model()).write(os.path.join(shared_dir, "fb"))
    rank0(lambda: flip_byte(p))
    target = model(fill=-1)
    caught = None
    try:
        hpckpt.Checkpoint(**target).read(p, options=opts)
    except Exception as e:
        caught = e
    assert all_ranks(isinstance(caught, hpckpt.CorruptCheckpointError)), repr(caught)
    assert all_ranks("checksum mismatch in tensor 'w/" in str(caught)), str(caught)
