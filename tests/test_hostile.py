"""Damaged and hostile checkpoints, every case once, in the serial pass (a 1-rank job):
a clean ``CorruptCheckpointError`` or ``NotFoundError`` — never a crash or a raw
h5py/KeyError trace — and nothing assigned."""

from __future__ import annotations

import os

import pytest
from hostile import CASES, DATA_DAMAGE, model
from mpi4py import MPI

import hpckpt

pytestmark = pytest.mark.skipif(
    MPI.COMM_WORLD.Get_size() > 1, reason="serial test: run without mpirun"
)


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "staged"])
@pytest.mark.parametrize("case", list(CASES))
def test_damaged_checkpoint_gives_a_clean_error(tmp_path, case, in_place):
    tamper, error, text = CASES[case]
    p = hpckpt.Checkpoint(**model()).write(os.path.join(tmp_path, "victim"))
    tamper(p)
    target = model(fill=-1)
    with pytest.raises(error) as info:
        hpckpt.Checkpoint(**target).read(
            p, options=hpckpt.CheckpointOptions(restore_in_place=in_place)
        )
    assert text in str(info.value), f"{case}: {info.value}"
    if not (in_place and case in DATA_DAMAGE):
        assert (target["w"].local == -1).all() and (target["b"].local == -1).all()
