"""Damaged and hostile checkpoints: the tampering functions and the cases, shared by the
serial tests (every case, once) and the MPI tests (a few cases, for agreement)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout


def model(fill=None):
    mesh = hpckpt.create_mesh([("x", MPI.COMM_WORLD.size)])
    w = np.arange(24.0).reshape(6, 4) if fill is None else np.full((6, 4), float(fill))
    b = np.arange(5, dtype=np.int32) if fill is None else np.full(5, int(fill), np.int32)
    return {
        "w": hpckpt.Variable(w, Layout(["x", "unsharded"], mesh)),
        "b": hpckpt.Variable(b, Layout(["x"], mesh)),
    }


W_KEY = "w/.ATTRIBUTES/VARIABLE_VALUE"


def rank0(fn):
    """Run ``fn`` on rank 0 only, then synchronize."""
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        fn()
    comm.Barrier()


def load_index(p):
    with open(p + ".index.json") as f:
        return json.load(f)


def save_index(p, doc):
    with open(p + ".index.json", "w") as f:
        json.dump(doc, f)


def data_path(p):
    return os.path.join(os.path.dirname(p), load_index(p)["data_file"]["name"])


def edit_index(fn):
    def apply(p):
        doc = load_index(p)
        fn(doc)
        save_index(p, doc)

    return apply


def rebuild(make):
    """Replace the data file by one made by ``make(h5file, index)``; fix sizes/offsets."""

    def apply(p):
        doc = load_index(p)
        path = data_path(p)
        os.remove(path)
        with h5py.File(path, "w") as f:
            make(f, doc)
        with h5py.File(path, "r") as f:
            for t in doc["tensors"].values():
                # a forger points the index at plausible bytes of the file
                ds = f.get(t["dataset"], getlink=False) if t["dataset"] in f else None
                t["offset"] = (ds.id.get_offset() if isinstance(ds, h5py.Dataset) else 0) or 0
        doc["data_file"]["size"] = size = os.path.getsize(path)
        for t in doc["tensors"].values():
            if t["offset"] + t["nbytes"] > size:
                t["offset"] = 0
        save_index(p, doc)

    return apply


def good_copy(f, doc, skip=None, **kw):
    src = {"w": np.arange(24.0).reshape(6, 4), "b": np.arange(5, dtype=np.int32)}
    for key, t in doc["tensors"].items():
        if t["dataset"] == skip:
            continue
        name = key.split("/")[0]
        value = src[name] if name in src else np.zeros(t["shape"], t["dtype"])
        f.create_dataset(t["dataset"], data=value, **kw)


def truncate(p):
    path = data_path(p)
    os.truncate(path, os.path.getsize(path) // 2)


def flip_byte(p):
    t = load_index(p)["tensors"][W_KEY]
    with open(data_path(p), "r+b") as f:
        f.seek(t["offset"] + 17)
        b = f.read(1)
        f.seek(t["offset"] + 17)
        f.write(bytes([b[0] ^ 0x40]))


def garbage_index(p):
    with open(p + ".index.json", "wb") as f:
        f.write(os.urandom(300))


def truncated_index(p):
    with open(p + ".index.json", "rb") as f:
        text = f.read()
    with open(p + ".index.json", "wb") as f:
        f.write(text[: len(text) // 2])


def index_is_directory(p):
    os.remove(p + ".index.json")
    os.mkdir(p + ".index.json")


def external_link(f, doc):
    good_copy(f, doc)
    f["evil"] = h5py.ExternalLink("/etc/passwd", "/x")


def soft_link(f, doc):
    good_copy(f, doc)
    f["evil"] = h5py.SoftLink("/w")


def external_storage(f, doc):
    t = doc["tensors"][W_KEY]
    good_copy(f, doc, skip=t["dataset"])
    raw = os.path.join(os.path.dirname(f.filename), "raw.bin")
    np.arange(24.0).tofile(raw)
    f.create_dataset(t["dataset"], shape=(6, 4), dtype="<f8", external=[(raw, 0, 192)])


def virtual(f, doc):
    t = doc["tensors"][W_KEY]
    good_copy(f, doc, skip=t["dataset"])
    layout = h5py.VirtualLayout(shape=(6, 4), dtype="<f8")
    f.create_virtual_dataset(t["dataset"], layout, fillvalue=0)


def compressed(f, doc):
    good_copy(f, doc, compression="gzip")


def chunked(f, doc):
    good_copy(f, doc, chunks=True)


def wrong_shape(f, doc):
    t = doc["tensors"][W_KEY]
    good_copy(f, doc, skip=t["dataset"])
    f.create_dataset(t["dataset"], data=np.zeros((4, 6)))


def wrong_dtype(f, doc):
    t = doc["tensors"][W_KEY]
    good_copy(f, doc, skip=t["dataset"])
    f.create_dataset(t["dataset"], data=np.zeros((6, 4), np.float32))


def missing_dataset(f, doc):
    good_copy(f, doc, skip=doc["tensors"][W_KEY]["dataset"])


def not_hdf5(p):
    path = data_path(p)
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(os.urandom(size))


CASES = {
    # name: (tamper, expected error, text in message)
    "truncated data file": (truncate, hpckpt.CorruptCheckpointError, "truncated"),
    "missing data file": (lambda p: os.remove(data_path(p)), hpckpt.NotFoundError, "missing"),
    "data file not HDF5": (not_hdf5, hpckpt.CorruptCheckpointError, "not a readable HDF5"),
    "flipped byte": (flip_byte, hpckpt.CorruptCheckpointError, "checksum mismatch in tensor 'w/"),
    "garbage index": (garbage_index, hpckpt.CorruptCheckpointError, "index"),
    "truncated index": (truncated_index, hpckpt.CorruptCheckpointError, "not valid JSON"),
    "index is a directory": (index_is_directory, hpckpt.CorruptCheckpointError, "directory"),
    "missing index": (
        lambda p: os.remove(p + ".index.json"),
        hpckpt.NotFoundError,
        "does not exist",
    ),
    "data file name with ..": (
        edit_index(lambda d: d["data_file"].update(name="../evil.data-0123456789abcdef.h5")),
        hpckpt.CorruptCheckpointError,
        "bad data file name",
    ),
    "absolute data file name": (
        edit_index(lambda d: d["data_file"].update(name="/tmp/x.data-0123456789abcdef.h5")),
        hpckpt.CorruptCheckpointError,
        "bad data file name",
    ),
    "NUL in key": (
        edit_index(lambda d: d["tensors"].update({"a\x00b": d["tensors"].pop(W_KEY)})),
        hpckpt.CorruptCheckpointError,
        "NUL",
    ),
    "dataset name with slash": (
        edit_index(lambda d: d["tensors"][W_KEY].update(dataset="../../w")),
        hpckpt.CorruptCheckpointError,
        "dataset",
    ),
    "huge shape": (
        edit_index(lambda d: d["tensors"][W_KEY].update(shape=[1 << 40, 4], nbytes=(1 << 45))),
        hpckpt.CorruptCheckpointError,
        "more than the data file",
    ),
    "object dtype": (
        edit_index(lambda d: d["tensors"][W_KEY].update(dtype="|O")),
        hpckpt.CorruptCheckpointError,
        "unsupported dtype",
    ),
    "offset outside the file": (
        edit_index(lambda d: d["tensors"][W_KEY].update(offset=d["data_file"]["size"] - 8)),
        hpckpt.CorruptCheckpointError,
        "outside the data file",
    ),
    "offset disagrees with dataset": (
        edit_index(lambda d: d["tensors"][W_KEY].update(offset=0)),
        hpckpt.CorruptCheckpointError,
        "offset",
    ),
    "negative slice": (
        edit_index(lambda d: d["tensors"][W_KEY].update(slices=[[-1, 0, 6, 4]])),
        hpckpt.CorruptCheckpointError,
        "bad value",
    ),
    "slice removed": (
        edit_index(lambda d: d["tensors"][W_KEY].update(slices=[[0, 0, 3, 4]])),
        hpckpt.CorruptCheckpointError,
        "do not cover it exactly once",
    ),
    "checksums removed": (
        edit_index(lambda d: d["tensors"][W_KEY].update(checksums="")),
        hpckpt.CorruptCheckpointError,
        "checksums",
    ),
    "unknown format version": (
        edit_index(lambda d: d.update(version=3)),
        hpckpt.CorruptCheckpointError,
        "version 3",
    ),
    "graph names unknown tensor": (
        edit_index(lambda d: d["graph"]["nodes"][1].update(key="nope")),
        hpckpt.CorruptCheckpointError,
        "does not have",
    ),
    "graph bad node id": (
        edit_index(lambda d: d["graph"]["nodes"][0]["children"].append(["x", 999])),
        hpckpt.CorruptCheckpointError,
        "bad node",
    ),
    "external link": (rebuild(external_link), hpckpt.CorruptCheckpointError, "links"),
    "soft link": (rebuild(soft_link), hpckpt.CorruptCheckpointError, "links"),
    "external storage": (
        rebuild(external_storage),
        hpckpt.CorruptCheckpointError,
        "external storage",
    ),
    "virtual dataset": (rebuild(virtual), hpckpt.CorruptCheckpointError, "contiguous"),
    "compressed dataset": (rebuild(compressed), hpckpt.CorruptCheckpointError, "contiguous"),
    "chunked dataset": (rebuild(chunked), hpckpt.CorruptCheckpointError, "contiguous"),
    "dataset shape differs": (rebuild(wrong_shape), hpckpt.CorruptCheckpointError, "shape"),
    "dataset dtype differs": (rebuild(wrong_dtype), hpckpt.CorruptCheckpointError, "dtype"),
    "dataset missing": (rebuild(missing_dataset), hpckpt.CorruptCheckpointError, "is missing"),
}


# Damage found only while the data moves: a default (in-place) restore may have
# overwritten part of its variables by then; restore_in_place=False assigns nothing.
DATA_DAMAGE = {"flipped byte"}
