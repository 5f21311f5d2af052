"""Multi-level checkpointing (issue 16): the local tier, partner copies, background
persistence, and which tier a restore reads.

Nodes are emulated with ``HPCKPT_RANKS_PER_NODE``: 4 ranks are 2 nodes of 2 ranks,
3 ranks are 3 nodes of 1 rank, 2 ranks are 2 nodes. Losing a node is deleting its
directory; damage is a flipped byte inside a saved slice.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import warnings

import numpy as np
import pytest
from conftest import Agreed, all_ranks
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout, _faults
from hpckpt.io import parse_local_index, wait_removals

pytestmark = pytest.mark.mpi(min_size=2)

COMM = MPI.COMM_WORLD


def ranks_per_node() -> int:
    return 2 if COMM.size == 4 else 1


@pytest.fixture(autouse=True)
def nodes(monkeypatch):
    """Every test runs on emulated nodes (4 ranks: 2 nodes of 2; 3 ranks: 3 nodes)."""
    monkeypatch.setenv("HPCKPT_RANKS_PER_NODE", str(ranks_per_node()))
    yield COMM.size // ranks_per_node()
    _faults.clear()


class Position(hpckpt.PythonState):
    def __init__(self) -> None:
        self.step = 0

    def serialize(self) -> str:
        return json.dumps({"step": self.step})

    def deserialize(self, s: str) -> None:
        self.step = json.loads(s)["step"]


class Model:
    """Sharded, replicated (small and split-by-rows large) tensors, columns saved in row
    bands by the standard format, the caller's strided buffer (zero copy), per-rank
    boxes, and Python state."""

    def __init__(self) -> None:
        n = COMM.size
        mesh = hpckpt.create_mesh([("x", n)])
        self.w = hpckpt.Variable(np.zeros((11, 6)), Layout(["x", UNSHARDED], mesh))
        self.b = hpckpt.Variable(np.zeros(7, np.int32), Layout.replicated(mesh, 1))
        self.big = hpckpt.Variable(np.zeros((700, 500), np.float32), Layout.replicated(mesh, 2))
        self.s = hpckpt.Variable(np.float64(0), Layout.replicated(mesh, 0))
        self.cols = hpckpt.Variable(
            np.zeros((800, 1500), np.float32), Layout([UNSHARDED, "x"], mesh)
        )
        self.field = np.zeros((5, 8))  # 3 x 6 interior, ghost cells around
        self.ghost = hpckpt.Variable.from_local(
            self.field[1:-1, 1:-1], Layout(["x", UNSHARDED], mesh), (3 * n, 6), copy=False
        )
        self.box = hpckpt.Variable.from_local(
            np.zeros((2, 3)), global_shape=(2 * n, 3), offset=(2 * COMM.rank, 0)
        )
        self.pos = Position()
        self.ckpt = hpckpt.Checkpoint(
            w=self.w, b=self.b, big=self.big, s=self.s, cols=self.cols, ghost=self.ghost,
            box=self.box, pos=self.pos,
        )  # fmt: skip

    @staticmethod
    def values(k: int) -> dict[str, np.ndarray]:
        n = COMM.size
        return {
            "w": np.arange(66.0).reshape(11, 6) * k + 0.5,
            "b": (np.arange(7, dtype=np.int32) + 1) * k,
            "big": np.arange(350000, dtype=np.float32).reshape(700, 500) * k,
            "s": np.float64(k) / 3,
            "cols": np.arange(1_200_000, dtype=np.float32).reshape(800, 1500) * k,
            "ghost": np.arange(18.0 * n).reshape(3 * n, 6) * k - 1,
            "box": np.arange(6.0 * n).reshape(2 * n, 3) * k + 2,
        }

    def set(self, k: int) -> None:
        for n, v in self.values(k).items():
            getattr(self, n).assign(v)
        self.pos.step = k

    def clear(self) -> None:
        for n in self.values(0):
            getattr(self, n).local[...] = 0
        self.pos.step = -1

    def holds(self, k: int) -> bool:
        """Bit-identical to the values of save ``k`` (gathered: collective)."""
        ok = self.pos.step == k
        for n, want in self.values(k).items():
            got = getattr(self, n).numpy()
            ok = ok and got.dtype == np.asarray(want).dtype and np.array_equal(got, want)
        return all_ranks(ok)


def manager(d: str, model: Model, **kw) -> hpckpt.CheckpointManager:
    tier = hpckpt.LocalTier(
        os.path.join(d, "local-{node}"), keep=kw.pop("keep", 2), redundancy=kw.pop("red", "partner")
    )
    return hpckpt.CheckpointManager(
        model.ckpt,
        os.path.join(d, "pfs"),
        max_to_keep=kw.pop("max_to_keep", 3),
        local_tier=tier,
        **kw,
    )


def node_dir(d: str, node: int) -> str:
    return os.path.join(d, f"local-{node}")


def on_rank0(fn) -> None:
    """Run a file operation on rank 0 while the others wait (its failure fails all).

    Every rank first finishes its background removals (node leaders remove old local
    data files in the background)."""
    wait_removals()
    COMM.Barrier()
    with Agreed():
        if COMM.rank == 0:
            fn()


def damage(d: str, name: str, node: int, copy: str) -> None:
    """Flip one byte inside a slice that a rank of ``node`` wrote (rank 0 only)."""
    holder = node if copy == "own" else (node + 1) % (COMM.size // ranks_per_node())
    with open(os.path.join(node_dir(d, holder), f"{name}.local.json"), "rb") as f:
        li = parse_local_index(f.read())
    for loc in li.locations.values():
        for r, off in zip(loc.ranks, loc.offsets, strict=True):
            if r >= 0 and li.nodes.node_of[r] == node:
                path = os.path.join(node_dir(d, holder), li.data_file(node, copy))
                with open(path, "r+b") as f:
                    f.seek(int(off))
                    byte = f.read(1)
                    f.seek(int(off))
                    f.write(bytes([byte[0] ^ 0xFF]))
                return
    raise AssertionError(f"no slice of node {node} found")


def restore_with_warnings(m: hpckpt.CheckpointManager) -> tuple[str | None, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = m.restore_or_initialize()
    return path, [str(w.message) for w in caught]


def test_local_saves_with_partner_copies(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model, keep=2)
    for k in (1, 2, 3):
        model.set(k)
        p = m.save()
        assert p == os.path.join(shared_dir, "local-{node}", f"ckpt-{k}")
    assert m.latest_checkpoint == p
    assert m.local_checkpoints == [p.replace("ckpt-3", "ckpt-2"), p]
    listing: dict = {}

    def look() -> None:
        for n in range(nodes):
            listing[n] = sorted(os.listdir(node_dir(shared_dir, n)))
        pfs = os.path.join(shared_dir, "pfs")
        listing["pfs"] = os.listdir(pfs) if os.path.exists(pfs) else []

    on_rank0(look)
    with Agreed():
        if COMM.rank == 0:
            for n in range(nodes):
                names = listing[n]
                for c in ("ckpt-2", "ckpt-3"):
                    assert f"{c}.local.json" in names, names
                    assert sum(x.startswith(f"{c}.node-{n}.own-") for x in names) == 1, names
                    origin = (n - 1) % nodes
                    partner = f"{c}.node-{origin}.partner-"
                    assert sum(x.startswith(partner) for x in names) == 1, names
                assert not any(x.startswith("ckpt-1.") for x in names), names  # keep=2
                assert len(names) == 6, names
            assert not any(x.endswith(".index.json") for x in listing["pfs"]), listing["pfs"]
    model.clear()
    path, _ = restore_with_warnings(m)
    assert path == p
    assert model.holds(3)
    # TensorFlow's idiom works on a local path too
    model.clear()
    model.ckpt.restore(m.latest_checkpoint).assert_consumed()
    assert model.holds(3)


def test_lost_node_restores_from_partner_bit_identical(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model)
    for k in (1, 2):
        model.set(k)
        m.save()
    lost = nodes - 1
    on_rank0(lambda: shutil.rmtree(node_dir(shared_dir, lost)))
    model.clear()
    m2 = manager(shared_dir, model)  # a restarted job
    assert m2.latest_checkpoint == os.path.join(shared_dir, "local-{node}", "ckpt-2")
    path, warned = restore_with_warnings(m2)
    assert path == m2.latest_checkpoint
    assert model.holds(2)
    with Agreed():
        if COMM.rank == 0:
            assert any(
                f"node {lost}" in w and "missing" in w and "partner copy" in w for w in warned
            ), warned
    # the next save has full redundancy again
    model.set(3)
    assert m2.save().endswith("ckpt-3")
    on_rank0(lambda: shutil.rmtree(node_dir(shared_dir, 0)))
    model.clear()
    restore_with_warnings(manager(shared_dir, model))
    assert model.holds(3)


def test_all_local_directories_lost_restores_newest_persisted(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model, persist_every=2)
    for k in (1, 2, 3):
        model.set(k)
        m.save()
    m.sync()
    on_rank0(lambda: [shutil.rmtree(p) for p in glob.glob(os.path.join(shared_dir, "local-*"))])
    model.clear()
    m2 = manager(shared_dir, model, persist_every=2)
    pfs = os.path.join(shared_dir, "pfs", "ckpt-2")
    assert m2.latest_checkpoint == pfs
    path, _ = restore_with_warnings(m2)
    assert path == pfs
    assert model.holds(2)
    assert int(model.ckpt.save_counter.local) == 2


def test_damaged_own_copy_falls_back_to_partner_with_warning(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    m.save()
    on_rank0(lambda: damage(shared_dir, "ckpt-1", 0, "own"))
    model.clear()
    path, warned = restore_with_warnings(manager(shared_dir, model))
    assert path.endswith("local-{node}/ckpt-1")
    assert model.holds(1)
    with Agreed():
        if COMM.rank == 0:
            assert any(
                "node 0" in w and "damaged" in w and "checksum mismatch" in w and "partner" in w
                for w in warned
            ), warned


def test_damaged_local_copies_fall_back_to_the_parallel_fs(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model, persist_every=1)
    model.set(1)
    m.save()
    model.set(2)
    m.save()
    m.sync()

    def ruin() -> None:
        damage(shared_dir, "ckpt-2", 1, "own")
        damage(shared_dir, "ckpt-2", 1, "partner")

    on_rank0(ruin)
    model.clear()
    path, warned = restore_with_warnings(manager(shared_dir, model, persist_every=1))
    assert path == os.path.join(shared_dir, "pfs", "ckpt-2")
    assert model.holds(2)
    with Agreed():
        if COMM.rank == 0:
            assert any("local-{node}/ckpt-2" in w and "skipped" in w for w in warned), warned


def test_persisting_runs_in_the_background(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    pfs = os.path.join(shared_dir, "pfs", "ckpt-1")
    if COMM.rank == 0:  # the flush's commit waits; the save must not
        _faults.inject("before_commit", 0, "hang", "4")
    local = m.save(persist=True)
    assert all_ranks(not os.path.exists(pfs + ".index.json"))
    assert m.latest_checkpoint == local
    m.sync()
    assert all_ranks(os.path.exists(pfs + ".index.json"))
    assert hpckpt.latest_checkpoint(os.path.join(shared_dir, "pfs")) == pfs
    assert m.checkpoints == [pfs]
    assert m.latest_checkpoint == local  # the same save: the local copy is preferred
    reader = hpckpt.load_checkpoint(pfs)  # the standard format
    assert np.array_equal(reader.get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE"), Model.values(1)["w"])


def test_failed_flush_is_raised_everywhere_and_the_local_copy_survives(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    bad = COMM.size - 1
    if COMM.rank == bad:
        _faults.inject("after_data", bad, "raise")
    m.save(persist=True)
    msg = None
    try:
        m.sync()
    except hpckpt.CheckpointError as e:
        msg = str(e)
    _faults.clear()
    assert all_ranks(msg is not None and f"rank {bad}: RuntimeError: injected fault" in msg)
    assert len(set(COMM.allgather(msg))) == 1
    assert m.checkpoints == []
    assert hpckpt.latest_checkpoint(os.path.join(shared_dir, "pfs")) is None
    model.clear()
    assert m.restore_or_initialize().endswith("local-{node}/ckpt-1")
    assert model.holds(1)
    model.set(2)
    m.save(persist=True)  # the next flush works
    m.sync()
    assert m.checkpoints == [os.path.join(shared_dir, "pfs", "ckpt-2")]


def test_retention_of_each_tier(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model, keep=1, max_to_keep=2, persist_every=1)
    for k in (1, 2, 3):
        model.set(k)
        m.save()
    m.sync()
    pfs = os.path.join(shared_dir, "pfs")
    assert m.checkpoints == [os.path.join(pfs, "ckpt-2"), os.path.join(pfs, "ckpt-3")]
    found: dict = {}
    on_rank0(
        lambda: found.update(
            {n: sorted(os.listdir(node_dir(shared_dir, n))) for n in range(nodes)}
            | {"pfs": sorted(x for x in os.listdir(pfs) if x.endswith(".index.json"))}
        )
    )
    with Agreed():
        if COMM.rank == 0:
            assert found["pfs"] == ["ckpt-2.index.json", "ckpt-3.index.json"]
            for n in range(nodes):
                assert all(x.startswith("ckpt-3.") for x in found[n]), found[n]


def test_no_partner_copies_with_redundancy_none(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model, red="none")
    model.set(1)
    m.save()
    names: list = []
    on_rank0(lambda: names.extend(os.listdir(node_dir(shared_dir, 0))))
    assert all_ranks(COMM.rank != 0 or (names and not any(".partner-" in x for x in names)))
    on_rank0(lambda: shutil.rmtree(node_dir(shared_dir, 1)))
    model.clear()
    path, warned = restore_with_warnings(manager(shared_dir, model, red="none"))
    assert path is None  # nothing complete anywhere
    with Agreed():
        if COMM.rank == 0:
            assert any("node 1 has neither its data" in w for w in warned), warned


def test_one_node_without_emulation(shared_dir, monkeypatch):
    monkeypatch.delenv("HPCKPT_RANKS_PER_NODE")  # every rank shares this machine's memory
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    m.save()
    names: list = []
    on_rank0(lambda: names.extend(sorted(os.listdir(node_dir(shared_dir, 0)))))
    assert all_ranks(
        COMM.rank != 0 or (len(names) == 2 and not os.path.exists(node_dir(shared_dir, 1)))
    ), names
    model.clear()
    m.restore_or_initialize()
    assert model.holds(1)


def test_another_node_layout_restores_from_the_parallel_fs(shared_dir, nodes, monkeypatch):
    model = Model()
    m = manager(shared_dir, model, persist_every=1)
    model.set(1)
    m.save()
    m.sync()
    monkeypatch.setenv("HPCKPT_RANKS_PER_NODE", str(COMM.size))  # now one node
    model.clear()
    m2 = manager(shared_dir, model, persist_every=1)
    assert m2.latest_checkpoint == os.path.join(shared_dir, "pfs", "ckpt-1")
    path, warned = restore_with_warnings(m2)
    assert path == os.path.join(shared_dir, "pfs", "ckpt-1")
    assert model.holds(1)
    with Agreed():
        if COMM.rank == 0:
            assert any("parallel file system" in w for w in warned), warned


def test_bad_arguments():
    model = Model()
    with pytest.raises(ValueError, match="keep"):
        hpckpt.LocalTier("/tmp/x", keep=0)
    with pytest.raises(ValueError, match="redundancy"):
        hpckpt.LocalTier("/tmp/x", redundancy="xor")
    with pytest.raises(ValueError, match="persist_every needs a local_tier"):
        hpckpt.CheckpointManager(model.ckpt, "/tmp/x", 1, persist_every=2)


def test_flush_refuses_a_local_copy_damaged_after_the_save(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    _faults.inject("create", "*", "hang", "3")  # the flush waits before it reads anything
    m.save(persist=True)
    if COMM.rank == 0:
        damage(shared_dir, "ckpt-1", 0, "own")  # while the flush waits
    msg = None
    try:
        m.sync()
    except hpckpt.CorruptCheckpointError as e:
        msg = str(e)
    _faults.clear()
    assert all_ranks(msg is not None and "computed when it was saved" in msg), msg
    assert m.checkpoints == []
    assert not glob.glob(os.path.join(shared_dir, "pfs", "ckpt-1.index.json"))


def test_write_callbacks_run_once_after_the_local_commit(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    seen: list = []
    opts = hpckpt.CheckpointOptions(write_callbacks=[seen.append])
    path = m.save(options=opts, persist=True)
    m.sync()
    assert all_ranks(seen == ([path] if COMM.rank == 0 else []))


@pytest.mark.parametrize(
    "phase", ["local_create", "local_data", "partner", "local_commit", "local_marker"]
)
def test_a_failed_local_save_is_agreed_and_commits_nothing(shared_dir, nodes, phase):
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    first = m.save()
    bad = 0 if phase == "local_commit" else COMM.size - ranks_per_node()  # a node leader
    if COMM.rank == bad:
        _faults.inject(phase, bad, "raise")
    model.set(2)
    msg = None
    try:
        m.save()
    except hpckpt.CheckpointError as e:
        msg = str(e)
    _faults.clear()
    assert all_ranks(msg is not None and f"rank {bad}: RuntimeError: injected fault" in msg), msg
    assert len(set(COMM.allgather(msg))) == 1
    assert int(model.ckpt.save_counter.local) == 1  # rolled back
    assert m.latest_checkpoint == first and m.local_checkpoints == [first]
    left: list = []
    on_rank0(
        lambda: left.extend(
            n for i in range(nodes) for n in os.listdir(node_dir(shared_dir, i)) if "ckpt-2" in n
        )
    )
    assert all_ranks(not left), left
    model.clear()
    assert manager(shared_dir, model).restore_or_initialize() == first
    assert model.holds(1)


ASYNC = hpckpt.CheckpointOptions(enable_async=True)


def test_an_asynchronous_local_save_snapshots_the_state(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    if COMM.rank == 0:  # the background local save waits: the snapshot is what is saved
        _faults.inject("local_create", 0, "hang", "2")
    path = m.save(options=ASYNC, persist=True)
    model.set(5)  # changed while the save runs
    m.sync()
    _faults.clear()
    assert m.local_checkpoints == [path] and m.latest_checkpoint == path
    assert m.checkpoints == [os.path.join(shared_dir, "pfs", "ckpt-1")]
    model.clear()
    assert m.restore_or_initialize() == path
    assert model.holds(1)
    model.clear()
    model.ckpt.restore(m.checkpoints[0]).assert_consumed()  # the persisted copy too
    assert model.holds(1)


def test_a_failed_asynchronous_local_save_rolls_back_and_is_raised(shared_dir, nodes):
    model = Model()
    m = manager(shared_dir, model)
    model.set(1)
    first = m.save()
    bad = COMM.size - 1
    if COMM.rank == bad:
        _faults.inject("local_data", bad, "raise")
    model.set(2)
    m.save(options=ASYNC)
    msg = None
    try:
        m.sync()
    except hpckpt.CheckpointError as e:
        msg = str(e)
    _faults.clear()
    assert all_ranks(msg is not None and f"rank {bad}: RuntimeError: injected fault" in msg)
    assert int(model.ckpt.save_counter.local) == 1  # the save did not happen
    assert m.latest_checkpoint == first
    model.clear()
    assert m.restore_or_initialize() == first
    assert model.holds(1)
