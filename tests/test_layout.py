"""Layout math and validation (no MPI needed beyond a 1-rank world)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from mpi4py import MPI

import hpckpt
from hpckpt.layout import block_range, replica_position, shard_slices, validate_specs


@pytest.mark.parametrize("n,k", [(10, 3), (3, 4), (0, 2), (7, 7), (1, 1), (5, 2)])
def test_block_range_covers_exactly_once(n, k):
    covered = np.zeros(n, dtype=int)
    sizes = []
    for i in range(k):
        a, b = block_range(n, k, i)
        assert 0 <= a <= b <= n
        covered[a:b] += 1
        sizes.append(b - a)
    assert (covered == 1).all()
    # the first n % k blocks are one element larger
    assert sizes == [n // k + (1 if i < n % k else 0) for i in range(k)]


def test_empty_shards_for_small_tensor():
    assert [block_range(3, 4, i) for i in range(4)] == [(0, 1), (1, 2), (2, 3), (3, 3)]


def test_shard_slices_2d_tile_the_array():
    gshape = (7, 5)
    names, mshape = ("x", "y"), (2, 3)
    seen = np.zeros(gshape, dtype=int)
    for coords in itertools.product(range(2), range(3)):
        sl = shard_slices(gshape, ("y", "x"), names, mshape, coords)
        seen[sl] += 1
    assert (seen == 1).all()


def test_replicated_dims_give_replicas():
    names, mshape = ("x", "y"), (2, 2)
    # tensor sharded over x only: positions differing in y are replicas
    got = {
        c: replica_position(("x",), names, mshape, c) for c in itertools.product(range(2), range(2))
    }
    assert got[(0, 0)] == (0, 2) and got[(0, 1)] == (1, 2)
    assert got[(1, 0)] == (0, 2) and got[(1, 1)] == (1, 2)
    assert replica_position(("x", "y"), names, mshape, (1, 1)) == (0, 1)
    assert replica_position(("unsharded",), names, mshape, (1, 1)) == (3, 4)


@pytest.mark.parametrize(
    "specs,match",
    [(("z",), "'z'"), (("x", "x"), "'x' is used twice"), ((3,), "3")],
)
def test_bad_specs_name_the_value(specs, match):
    with pytest.raises(ValueError, match=match):
        validate_specs(specs, ("x", "y"))


def test_mesh_validation_names_the_value():
    size = MPI.COMM_WORLD.Get_size()
    with pytest.raises(ValueError, match=r"\(3,\)"):
        hpckpt.Mesh(("x",), (size + 2,) if size != 1 else (3,))
    with pytest.raises(ValueError, match="duplicate"):
        hpckpt.create_mesh([("x", 1), ("x", size)])
    with pytest.raises(ValueError, match="0"):
        hpckpt.create_mesh([("x", 0)])


def test_mesh_and_layout_on_self():
    mesh = hpckpt.create_mesh([("x", 1), ("y", 1)], comm=MPI.COMM_SELF)
    assert mesh.dim_names == ("x", "y") and mesh.shape == (1, 1) and mesh.size == 1
    assert mesh.coords == (0, 0) and mesh.dim_size("y") == 1 and mesh.coord("x") == 0
    lay = hpckpt.Layout(["x", hpckpt.UNSHARDED], mesh)
    assert lay.rank == 2 and lay.sharding_specs == ("x", "unsharded") and lay.mesh is mesh
    assert lay.local_shape((4, 6)) == (4, 6)
    assert lay.local_slices((4, 6)) == (slice(0, 4), slice(0, 6))
    assert hpckpt.Layout.replicated(mesh, rank=2).sharding_specs == ("unsharded", "unsharded")
    assert hpckpt.Layout.batch_sharded(mesh, "y", rank=3).sharding_specs == (
        "y",
        "unsharded",
        "unsharded",
    )
    with pytest.raises(ValueError, match="'q'"):
        hpckpt.Layout(["q"], mesh)
    with pytest.raises(ValueError, match="'x' is used twice"):
        hpckpt.Layout(["x", "x"], mesh)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        lay.local_shape((4,))
