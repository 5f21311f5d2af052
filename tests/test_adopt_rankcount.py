"""Issue 13 across rank counts (mpirun jobs of different sizes, tests/programs/adopt.py and
torch_resume.py): every pair of {default blocks, splits, per-rank boxes} restores into
every other on another rank count, zero-copy into ghosted arrays; RankState on the same
and another rank count; bfloat16/float8 bit-identical; TorchState (Adam + StepLR,
bfloat16 parameters) bit-identical after a resume on another rank count."""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest
from launch import run_mpi
from mpi4py import MPI

import hpckpt

pytestmark = pytest.mark.skipif(
    MPI.COMM_WORLD.Get_size() > 1, reason="serial test: starts its own mpirun jobs"
)

HERE = os.path.join(os.path.dirname(__file__), "programs")


def job(n, program, *args, timeout=300):
    r = run_mpi(n, os.path.join(HERE, program), *args, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def saved4(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("adopt4"))
    job(4, "adopt.py", "save", d)
    return d


@pytest.mark.parametrize("n", [3, 1], ids=["4->3", "4->1"])
def test_every_kind_into_every_kind(saved4, n):
    out = job(n, "adopt.py", "restore", saved4, "4")
    assert f"ADOPT-OK {n}" in out, out


def test_reader_gives_the_logical_dtypes(saved4):
    r = hpckpt.load_checkpoint(saved4)
    for key, name in [("bf16", "bfloat16"), ("e4m3", "float8_e4m3fn"), ("e5m2", "float8_e5m2")]:
        a = r.get_tensor(f"{key}/.ATTRIBUTES/VARIABLE_VALUE")
        dt = np.dtype(getattr(ml_dtypes, name))
        want = np.linspace(-3, 3, 91).reshape(13, 7).astype(dt)
        assert a.dtype == dt and a.tobytes() == want.tobytes()
    e = r.index.tensors["bf16/.ATTRIBUTES/VARIABLE_VALUE"]
    assert e.dtype == np.uint16 and e.logical_dtype == "bfloat16"
    import h5py

    with h5py.File(os.path.join(saved4, r.index.data_file), "r") as f:
        assert f[e.dataset].attrs["hpckpt_dtype"] == "bfloat16"
        assert f[e.dataset].dtype == np.uint16


def test_torch_state_resumes_bit_identical_on_another_rank_count(tmp_path):
    d = str(tmp_path)
    job(2, "torch_resume.py", "save", d)
    out = job(3, "torch_resume.py", "resume", d)
    assert "TORCH-OK 3" in out, out
