"""Hostile and odd files met by readers outside a job (issue 11, items 7, 9 and 11).

Each reader must refuse cleanly, and quickly, what is not a checkpoint file: a FIFO
(which would block an ``open()`` forever), a device (``/dev/zero``: endless), a huge
sparse file, a JSON nesting bomb, a path that leaves the directory through a symbolic
link, an HDF5 group where only datasets belong. And it must handle what is odd but
legal: a key that is not valid Unicode, an empty tensor with huge dimensions.
The collective (MPI) readers are tested in test_mpi_trust.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import hpckpt
from hpckpt.errors import CorruptCheckpointError

KEY = "w/.ATTRIBUTES/VARIABLE_VALUE"


def hp(*args, ulimit_kib: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m hpckpt.cli ARGS`` without an MPI launcher (and without MPI at all),
    optionally with its virtual memory bounded (``ulimit -v``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    env["MPI4PY_RC_INITIALIZE"] = "0"
    cmd = [sys.executable, "-m", "hpckpt.cli", *map(str, args)]
    if ulimit_kib is not None:
        cmd = ["bash", "-c", f'ulimit -v {ulimit_kib}; exec "$@"', "bash", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def run(tmp_path):
    """A directory with two saves of a small model; returns the directory."""
    d = tmp_path / "run"
    w = hpckpt.Variable(np.arange(12.0).reshape(3, 4))
    mgr = hpckpt.CheckpointManager(hpckpt.Checkpoint(w=w), str(d), max_to_keep=3)
    mgr.save()
    w.assign(np.arange(12.0).reshape(3, 4) * 2)
    mgr.save()
    getattr(mgr, "close", lambda: None)()  # (the lease goes with it)
    return d


def replace_with_fifo(path) -> None:
    os.remove(path)
    os.mkfifo(path)


# --- item 7: a FIFO never hangs a reader ------------------------------------------


@pytest.mark.parametrize("what", ["index", "state"])
def test_a_fifo_never_hangs_the_command_line(run, what):
    target = run / ("ckpt-2.index.json" if what == "index" else "checkpoint")
    replace_with_fifo(target)
    for cmd in (["ls", run], ["verify", run / "ckpt-2"], ["inspect", run / "ckpt-2"]):
        t0 = time.monotonic()
        r = hp(*cmd, timeout=60)  # a blocked open() would time out here
        assert time.monotonic() - t0 < 60
        if what == "index" or cmd[0] == "ls":
            assert r.returncode == 1, (cmd, r.stdout, r.stderr)
            assert "not a regular file" in r.stdout + r.stderr, (cmd, r.stdout, r.stderr)
        else:  # the state file is not read for an explicit checkpoint path
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)


def test_a_fifo_never_hangs_latest_checkpoint_or_the_reader(run):
    replace_with_fifo(run / "checkpoint")
    with pytest.raises(CorruptCheckpointError, match="not a regular file"):
        hpckpt.latest_checkpoint(str(run))
    replace_with_fifo(run / "ckpt-2.index.json")
    with pytest.raises(CorruptCheckpointError, match="not a regular file"):
        hpckpt.load_checkpoint(str(run / "ckpt-2"))


def test_a_fifo_in_place_of_the_data_file_never_hangs(run):
    """With an index that says the data file is empty, only the file type stops HDF5 from
    opening a FIFO (and blocking for ever)."""
    prefix = run / "ckpt-2"
    doc = json.loads((run / "ckpt-2.index.json").read_text())
    doc["tensors"], doc["graph"], doc["data_file"]["size"] = {}, None, 0
    (run / "ckpt-2.index.json").write_text(json.dumps(doc))
    replace_with_fifo(run / doc["data_file"]["name"])
    with pytest.raises(CorruptCheckpointError, match="not a regular file"):
        hpckpt.load_checkpoint(str(prefix))
    r = hp("verify", prefix, timeout=60)
    assert r.returncode == 1 and "not a regular file" in r.stdout, (r.stdout, r.stderr)


# --- item 9: bounded reads -----------------------------------------------------------


def test_an_index_that_is_dev_zero_is_refused_within_bounded_memory(run):
    index = run / "ckpt-2.index.json"
    os.remove(index)
    os.symlink("/dev/zero", index)
    for cmd in (["ls", run], ["verify", run / "ckpt-2"], ["inspect", run / "ckpt-2"]):
        r = hp(*cmd, ulimit_kib=1 << 20, timeout=60)  # 1 GiB of address space in all
        assert r.returncode == 1, (cmd, r.returncode, r.stdout, r.stderr)
        assert "not a regular file" in r.stdout + r.stderr, (cmd, r.stdout, r.stderr)


def test_a_2gib_sparse_index_is_refused_without_reading_it(run):
    index = run / "ckpt-2.index.json"
    os.truncate(index, 2 << 30)
    r = hp("verify", run / "ckpt-2", ulimit_kib=1 << 20, timeout=60)
    assert r.returncode == 1 and "more than the limit" in r.stdout, (r.stdout, r.stderr)
    with pytest.raises(CorruptCheckpointError, match="more than the limit"):
        hpckpt.load_checkpoint(str(run / "ckpt-2"))


# --- item 11 -------------------------------------------------------------------------


def test_json_nesting_bombs_are_damaged_files(run):
    bomb = "[" * 50000 + "]" * 50000
    (run / "checkpoint").write_text(bomb)
    with pytest.raises(CorruptCheckpointError):
        hpckpt.latest_checkpoint(str(run))
    r = hp("ls", run)
    assert r.returncode == 1 and "state file DAMAGED" in r.stdout, (r.stdout, r.stderr)
    (run / "ckpt-2.index.json").write_text('{"format": "hpckpt", "graph": ' + bomb + "}")
    for cmd in (["verify", run / "ckpt-2"], ["inspect", run / "ckpt-2"]):
        r = hp(*cmd)
        assert r.returncode == 1 and "nested too deeply" in r.stdout + r.stderr, (cmd, r)


def test_a_deep_object_graph_is_shown_cut(run):
    """A graph that is a chain of 5,000 nodes: no recursion error, a bounded report."""
    prefix = run / "ckpt-2"
    doc = json.loads((run / "ckpt-2.index.json").read_text())
    nodes = doc["graph"]["nodes"]
    leaf = len(nodes)
    chain = [
        {"kind": "object", "key": None, "children": [["n", leaf + i + 1]], "slots": []}
        for i in range(5000)
    ]
    chain[-1]["children"] = []
    nodes[0]["children"].append(["deep", leaf])
    nodes.extend(chain)
    (run / "ckpt-2.index.json").write_text(json.dumps(doc))
    hpckpt.load_checkpoint(str(prefix))  # the reader does not walk the graph
    r = hp("inspect", prefix)
    assert r.returncode == 0, (r.stdout[-500:], r.stderr)
    assert "not shown" in r.stdout
    r = hp("inspect", "--json", prefix)
    assert r.returncode == 0 and json.loads(r.stdout)["totals"]["unreachable_nodes"] > 4000, (
        r.stderr
    )


def test_a_state_file_entry_through_a_symlinked_directory_does_not_escape(run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    w = hpckpt.Variable(np.full((3, 4), 666.0))
    hpckpt.Checkpoint(w=w).write(str(elsewhere / "ckpt-9"))
    os.symlink(elsewhere, run / "sub")
    state = json.loads((run / "checkpoint").read_text())
    state["latest"] = "sub/ckpt-9"
    state["checkpoints"].append({"path": "sub/ckpt-9", "time": time.time()})
    (run / "checkpoint").write_text(json.dumps(state))
    with pytest.raises(CorruptCheckpointError, match="outside the directory"):
        hpckpt.latest_checkpoint(str(run))
    with pytest.raises(CorruptCheckpointError, match="outside the directory"):
        hpckpt.CheckpointManager(hpckpt.Checkpoint(w=w), str(run), max_to_keep=3)
    r = hp("ls", run)
    assert r.returncode == 1 and "outside the directory" in r.stdout, (r.stdout, r.stderr)
    # a real subdirectory is fine
    os.remove(run / "sub")
    os.rename(elsewhere, run / "sub")
    assert hpckpt.latest_checkpoint(str(run)) == str(run / "sub" / "ckpt-9")


def test_a_group_at_the_root_of_the_data_file_is_refused(run):
    doc = json.loads((run / "ckpt-2.index.json").read_text())
    with h5py.File(run / doc["data_file"]["name"], "r+") as f:
        g = f.create_group("sneaky")
        g["x"] = h5py.ExternalLink("/etc/passwd", "/")
    size = os.path.getsize(run / doc["data_file"]["name"])
    doc["data_file"]["size"] = size  # the index agrees with the file's size
    (run / "ckpt-2.index.json").write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpointError, match="groups or other objects at its root"):
        hpckpt.load_checkpoint(str(run / "ckpt-2"))
    r = hp("verify", run / "ckpt-2")
    assert r.returncode == 1 and "sneaky" in r.stdout, (r.stdout, r.stderr)


def test_export_of_a_key_that_is_not_valid_unicode(run, tmp_path):
    index = run / "ckpt-2.index.json"
    text = index.read_text().replace('"w/.ATTRIBUTES/VARIABLE_VALUE"', '"w\\ud800"')
    index.write_text(text)
    out = tmp_path / "out.npz"
    r = hp("export", run / "ckpt-2", out)
    assert r.returncode == 0, (r.stdout, r.stderr)
    with np.load(out) as z:
        assert np.array_equal(z["w\\ud800"], np.arange(12.0).reshape(3, 4) * 2)


def test_verify_an_empty_tensor_with_huge_dimensions(run):
    prefix = run / "ckpt-2"
    doc = json.loads((run / "ckpt-2.index.json").read_text())
    data = run / doc["data_file"]["name"]
    with h5py.File(data, "r+") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.CONTIGUOUS)
        space = h5py.h5s.create_simple((0, 2**61))
        h5py.h5d.create(f.id, b"empty", h5py.h5t.py_create(np.dtype("<f8")), space, dcpl=dcpl)
    doc["data_file"]["size"] = os.path.getsize(data)
    # as hpckpt records an empty tensor (format 2): one derived slice, checksum 0
    doc["layouts"].append(
        {"sharding_specs": ["unsharded", "unsharded"], "mesh": {"dim_names": ["x"], "shape": [1]}}
    )
    doc["tensors"]["empty"] = {
        "dataset": "empty",
        "dtype": "<f8",
        "shape": [0, 2**61],
        "offset": None,
        "nbytes": 0,
        "layout": len(doc["layouts"]) - 1,
        "slices": None,
        "checksums": "AAAAAA==",
    }
    (run / "ckpt-2.index.json").write_text(json.dumps(doc))
    r = hp("verify", prefix)
    assert r.returncode == 0 and r.stdout.startswith("OK:"), (r.stdout, r.stderr)
    # the reader cannot build such an array: a clean error, naming the shape
    with pytest.raises(CorruptCheckpointError, match="numpy cannot hold"):
        hpckpt.load_checkpoint(str(prefix)).get_tensor("empty")
