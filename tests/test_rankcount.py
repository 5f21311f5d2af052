"""A checkpoint written by a 4-rank job restores in jobs of 1, 2 and 3 ranks with
other layouts, and is readable without any MPI launcher."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from launch import run_mpi

import hpckpt

HERE = os.path.dirname(__file__)


def mpirun(n, *args):
    return run_mpi(n, os.path.join(HERE, "programs", "rankcount.py"), *args, timeout=120)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("rc"))
    r = mpirun(4, "save", d)
    assert r.returncode == 0, r.stderr
    return d


@pytest.mark.parametrize("n", [1, 2, 3])
def test_restore_on_other_rank_counts(saved, n):
    r = mpirun(n, "restore", saved)
    assert r.returncode == 0, r.stderr
    assert f"RESTORED-OK {n}" in r.stdout


def test_reader_without_launcher(saved):
    sys.path.insert(0, os.path.join(HERE, "programs"))
    from rankcount import values

    reader = hpckpt.load_checkpoint(saved)  # a directory resolves to its latest
    assert reader.prefix.endswith("ckpt-1")
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    assert shapes["w/.ATTRIBUTES/VARIABLE_VALUE"] == [13, 7]
    assert dtypes["b/.ATTRIBUTES/VARIABLE_VALUE"] == np.int16
    assert dtypes["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] == np.int64
    for k, want in values().items():
        key = f"{k}/.ATTRIBUTES/VARIABLE_VALUE"
        assert reader.has_tensor(key)
        assert np.array_equal(reader.get_tensor(key), want)
    assert not reader.has_tensor("nope")
    info = reader.tensor_info("w/.ATTRIBUTES/VARIABLE_VALUE")
    assert info.sharding_specs == ("x", "y") and info.mesh_shape == (2, 2)
    assert info.mesh_dim_names == ("x", "y")
    assert hpckpt.list_variables(saved)[0][0] == "b/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(KeyError, match="nope"):
        reader.get_tensor("nope")
    with pytest.raises(hpckpt.NotFoundError):
        hpckpt.load_checkpoint(os.path.join(saved, "missing"))


@pytest.mark.parametrize(
    "saved_n,restored_n,row",
    [(2, 3, 6), (4, 3, 7), (3, 2, 6), (3, 2, 0), (1, 3, 12)],
    ids=["2->3", "4->3", "3->2", "3->2-first-row", "1->3"],
)
def test_bit_rot_after_a_reshard_is_caught_on_every_rank(tmp_path, saved_n, restored_n, row):
    """A flipped byte in a saved slice that no new slice contains whole is still caught:
    every byte a restore hands over was verified, whatever the change of rank count."""
    d = str(tmp_path)
    r = mpirun(saved_n, "save-rows", d)
    assert r.returncode == 0, r.stderr
    ok = mpirun(restored_n, "restore-rows", d)
    assert f"RESTORED-OK {restored_n}" in ok.stdout, ok.stdout + ok.stderr
    reader = hpckpt.load_checkpoint(d)
    e = reader.index.tensors["w/.ATTRIBUTES/VARIABLE_VALUE"]
    path = os.path.join(d, reader.index.data_file)
    pos = e.offset + row * 7 * 4 + 5  # a byte of row ``row``
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x10]))
    bad = mpirun(restored_n, "restore-rows-corrupt", d)
    assert f"CORRUPT-DETECTED {restored_n}" in bad.stdout, bad.stdout + bad.stderr
    assert "checksum mismatch in tensor 'w/" in bad.stdout
