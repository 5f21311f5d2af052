"""The porting example (docs/examples/heat_solver.py) restarts bit for bit on another grid,
and the PyTorch example (docs/examples/torch_train.py) resumes on another rank count."""

from __future__ import annotations

import os
import re

import pytest
from launch import run_mpi
from mpi4py import MPI

pytestmark = pytest.mark.skipif(
    MPI.COMM_WORLD.Get_size() > 1, reason="serial test: starts its own mpirun jobs"
)

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "docs", "examples")


def run(n, script, *args):
    r = run_mpi(n, os.path.join(EXAMPLES, script), *args, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def crc(out):
    m = re.search(r"FIELD-CRC ([0-9a-f]{8}) after 40 steps", out)
    assert m, out
    return m.group(1)


def test_heat_solver_restarts_bit_identical_on_another_grid(tmp_path):
    whole = crc(run(1, "heat_solver.py", str(tmp_path / "one"), "--steps", "40"))
    d = str(tmp_path / "restart")
    first = run(4, "heat_solver.py", d, "--steps", "40", "--stop-at", "20")
    assert "FIELD-CRC" not in first  # it stopped at step 20
    second = run(3, "heat_solver.py", d, "--steps", "40")
    assert "at step 20 on a [3, 1] grid" in second
    assert crc(second) == whole


def test_torch_example_resumes_on_another_rank_count(tmp_path):
    d = str(tmp_path)
    first = run(1, "torch_train.py", d, "--steps", "6", "--stop-at", "3")
    assert "step 3:" in first and "step 4:" not in first
    second = run(2, "torch_train.py", d, "--steps", "6")
    assert "resumed, lr 0.005" in second and "step 4:" in second and "step 3:" not in second
