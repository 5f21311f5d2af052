"""Parallel HDF5 checkpoints as files (issue 14): saved by a 3-rank job (an odd count,
uneven rows, strided columns), compressed or written with io="hdf5", they restore
bit-identically in jobs of 1, 2 and 4 ranks on other decompositions; HDF5's own tools
read them (``h5ls -v`` shows the filters); the launcher-free reader and ``hpckpt verify``
read them; a data file whose storage differs from what the index records is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from launch import run_mpi

import hpckpt

HERE = os.path.dirname(__file__)
W = "field/.ATTRIBUTES/VARIABLE_VALUE"


def mpirun(n, *args):
    return run_mpi(n, os.path.join(HERE, "programs", "phdf5_rc.py"), *args, timeout=180)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for kind in ("gzip", "hdf5"):
        d = str(tmp_path_factory.mktemp(f"p{kind}"))
        r = mpirun(3, "save", d, kind)
        assert r.returncode == 0 and "SAVED 3" in r.stdout, r.stdout + r.stderr
        out[kind] = d
    return out


def _values():
    sys.path.insert(0, os.path.join(HERE, "programs"))
    from phdf5_rc import values

    return values()


@pytest.mark.parametrize(
    "kind,n,io",
    [("gzip", 1, "auto"), ("gzip", 2, "hdf5"), ("gzip", 4, "posix"), ("hdf5", 2, "mpiio")],
)
def test_restore_on_other_rank_counts_and_layouts(saved, kind, n, io):
    r = mpirun(n, "restore", saved[kind], io)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"RESTORED-OK {n}" in r.stdout, r.stdout + r.stderr


def _data_file(d):
    prefix = hpckpt.latest_checkpoint(d)
    with open(prefix + ".index.json") as f:
        doc = json.load(f)
    return prefix, doc, os.path.join(d, doc["data_file"]["name"])


def test_hdf5_tools_and_plain_h5py_read_compressed_checkpoints(saved):
    _prefix, doc, data = _data_file(saved["gzip"])
    values = _values()
    t = doc["tensors"][W]
    assert t["offset"] is None and t["filters"][-1]["filter"] == "deflate"
    with h5py.File(data, "r") as f:
        ds = f[t["dataset"]]
        assert ds.compression == "gzip" and ds.shuffle and ds.chunks == tuple(t["chunks"])
        assert np.array_equal(ds[()], values["field"])
        # compression pays on the smooth field, not on random floats
        field_ratio = ds.id.get_storage_size() / values["field"].nbytes
        noise = f[doc["tensors"]["noise/.ATTRIBUTES/VARIABLE_VALUE"]["dataset"]]
        noise_ratio = noise.id.get_storage_size() / values["noise"].nbytes
        assert field_ratio < noise_ratio
    for tool in ("h5ls", "h5dump"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/setup.sh installs hdf5-tools)")
    ls = subprocess.run(["h5ls", "-v", data], capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0, ls.stderr
    block = ls.stdout.split(t["dataset"], 1)[1].split("Type:", 1)[0]
    assert "shuffle" in block and "deflate" in block and "Chunks:" in block, block
    dump = subprocess.run(
        ["h5dump", "-m", "%.17g", "-d", "/" + t["dataset"], "-s", "0,0", "-c", "1,2", data],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dump.returncode == 0, dump.stderr
    first = values["field"][0, :2]
    body = dump.stdout.split("DATA {", 1)[1].split("}", 1)[0]
    got = [float(line.split(":", 1)[1].strip(" ,")) for line in body.strip().splitlines()]
    assert got == first.tolist(), (got, first)  # printed with 17 digits: exact


@pytest.mark.parametrize("kind", ["gzip", "hdf5"])
def test_reader_and_verify_without_a_launcher(saved, kind):
    values = _values()
    reader = hpckpt.load_checkpoint(saved[kind])
    for k, v in values.items():
        assert np.array_equal(reader.get_tensor(f"{k}/.ATTRIBUTES/VARIABLE_VALUE"), v), k
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    env["MPI4PY_RC_INITIALIZE"] = "0"
    r = subprocess.run(
        [sys.executable, "-m", "hpckpt.cli", "verify", saved[kind]],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_verify_finds_changed_values_in_a_compressed_chunk(saved, tmp_path):
    from test_mpi_phdf5 import _rewrite_chunk_values

    d = tmp_path / "c"
    shutil.copytree(saved["gzip"], d)
    _prefix, doc, data = _data_file(str(d))
    _rewrite_chunk_values(data, doc["tensors"][W]["dataset"], 8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    env["MPI4PY_RC_INITIALIZE"] = "0"
    r = subprocess.run(
        [sys.executable, "-m", "hpckpt.cli", "verify", str(d)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0
    assert "checksum mismatch in tensor 'field/" in r.stdout + r.stderr
    with pytest.raises(hpckpt.CorruptCheckpointError, match="checksum mismatch"):
        hpckpt.load_checkpoint(str(d)).get_tensor(W)


def _rebuild(data, doc, name, **kw):
    """Rewrite dataset ``name`` of ``data`` with the same values and other storage."""
    with h5py.File(data, "r") as f:
        value = f[name][()]
    tmp = data + ".tmp"
    with h5py.File(data, "r") as src, h5py.File(tmp, "w") as dst:
        for k in src:
            if k != name:
                src.copy(k, dst)
        dst.create_dataset(name, data=value, **kw)
    os.replace(tmp, data)
    doc["data_file"]["size"] = os.path.getsize(data)
    with h5py.File(data, "r") as f:  # a forger points the index at the new offsets
        for t in doc["tensors"].values():
            if "filters" not in t and t["nbytes"]:
                t["offset"] = f[t["dataset"]].id.get_offset() or 0


CASES = {
    "contiguous where compressed": ({}, "not chunked storage"),
    "another deflate level": (
        {"compression": "gzip", "compression_opts": 9, "shuffle": True},
        "filters",
    ),
    "no shuffle": ({"compression": "gzip", "compression_opts": 1}, "filters"),
    "other chunks": (
        {"compression": "gzip", "compression_opts": 1, "shuffle": True, "chunks": (7, 5)},
        "chunks",
    ),
    "lossy scale-offset": ({"scaleoffset": 3}, "filters"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_storage_that_differs_from_the_index_is_refused(saved, tmp_path, case):
    kw, match = CASES[case]
    d = tmp_path / "h"
    shutil.copytree(saved["gzip"], d)
    prefix, doc, data = _data_file(str(d))
    t = doc["tensors"][W]
    if case == "other chunks":
        kw = dict(kw, chunks=tuple(max(1, c - 1) for c in t["chunks"]))
    elif kw:
        kw = dict(kw, chunks=tuple(t["chunks"]))  # only the filters differ
    _rebuild(data, doc, t["dataset"], **kw)
    with open(prefix + ".index.json", "w") as f:
        json.dump(doc, f)
    with pytest.raises(hpckpt.CorruptCheckpointError, match=match):
        hpckpt.load_checkpoint(str(d))


def test_a_chunked_dataset_the_index_calls_contiguous_is_refused(saved, tmp_path):
    d = tmp_path / "u"
    shutil.copytree(saved["hdf5"], d)
    prefix, doc, data = _data_file(str(d))
    t = doc["tensors"][W]
    assert "filters" not in t and t["offset"] is not None
    _rebuild(data, doc, t["dataset"], compression="gzip", chunks=True)
    with open(prefix + ".index.json", "w") as f:
        json.dump(doc, f)
    with pytest.raises(hpckpt.CorruptCheckpointError, match="not contiguous"):
        hpckpt.load_checkpoint(str(d))
