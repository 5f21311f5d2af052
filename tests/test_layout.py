"""Layout math and validation (no MPI needed beyond a 1-rank world)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


@st.composite
def layouts(draw):
    ndim_mesh = draw(st.integers(1, 3))
    mesh_names = [f"m{i}" for i in range(ndim_mesh)]
    mesh_shape = draw(st.lists(st.integers(1, 4), min_size=ndim_mesh, max_size=ndim_mesh))
    ndim = draw(st.integers(0, 3))
    shape = draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim))
    free = list(mesh_names)
    specs = []
    for _ in range(ndim):
        s = draw(st.sampled_from(["unsharded", *free]))
        if s != "unsharded":
            free.remove(s)
        specs.append(s)
    return tuple(shape), tuple(specs), tuple(mesh_names), tuple(mesh_shape)


@settings(max_examples=300)
@given(layouts())
def test_any_layout_tiles_the_tensor_exactly_once_per_replica(case):
    """Every element is held by exactly ``replicas`` ranks, each replica group tiles it once."""
    shape, specs, names, mshape = case
    count = np.zeros(shape, dtype=np.int64)
    groups: dict[int, np.ndarray] = {}
    for coords in itertools.product(*(range(n) for n in mshape)):
        sl = shard_slices(shape, specs, names, mshape, coords)
        count[sl] += 1
        index, _ = replica_position(specs, names, mshape, coords)
        g = groups.setdefault(index, np.zeros(shape, dtype=np.int64))
        g[sl] += 1
    unused = math.prod(n for name, n in zip(names, mshape, strict=True) if name not in specs)
    assert (count == unused).all()
    assert len(groups) == unused
    assert all((g == 1).all() for g in groups.values())


@given(st.integers(1, 50), st.integers(1, 12))
def test_block_of_inverts_block_range(n, k):
    from hpckpt.io.slicing import block_of

    for i in range(k):
        a, b = block_range(n, k, i)
        for x in range(a, b):
            assert block_of(n, k, x) == i
