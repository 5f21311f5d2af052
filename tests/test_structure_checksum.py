"""The data file's structure checksum (``data_file.structure_checksum`` in the index).

A save records the checksum of every byte of its data file outside the tensors' raw
data (the HDF5 structure); a restore that reads raw bytes compares it instead of
opening every dataset with HDF5, and falls back to the per-dataset check whenever the
bytes differ. Serial tests (a 1-rank job); real files, real HDF5.
"""

from __future__ import annotations

import json
import os

import crc32c
import h5py
import numpy as np
import pytest
from mpi4py import MPI

import hpckpt
from hpckpt.io import hdf5
from hpckpt.io.template import gaps

pytestmark = pytest.mark.skipif(
    MPI.COMM_WORLD.Get_size() > 1, reason="serial test: run without mpirun"
)

ALIGNED = hpckpt.CheckpointOptions(alignment=4096, alignment_threshold=1024)


def model(fill: float | None = None) -> dict[str, hpckpt.Variable]:
    big = np.arange(64 * 32, dtype=np.float64).reshape(64, 32)  # 16 KiB: aligned
    vs = {
        "big": big,
        "small": np.arange(5, dtype=np.int32),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.float64(2.5),
    }
    if fill is not None:
        vs = {k: np.full_like(v, fill) for k, v in vs.items()}
    return {k: hpckpt.Variable(v) for k, v in vs.items()}


def index_doc(prefix: str) -> dict:
    with open(prefix + ".index.json", "rb") as f:
        return json.load(f)


def data_file(prefix: str) -> str:
    return os.path.join(os.path.dirname(prefix), index_doc(prefix)["data_file"]["name"])


def raw_ranges(path: str) -> list[tuple[int, int]]:
    """Each dataset's raw data ``(offset, nbytes)``, as HDF5 itself reports them."""
    out = []
    with h5py.File(path, "r") as f:
        for name in f:
            off = f[name].id.get_offset()
            if off is not None:
                out.append((off, f[name].id.get_storage_size()))
    return out


def non_raw_checksum(path: str) -> int:
    """CRC32C of the file's bytes outside every dataset's raw data, in file order."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    keep = np.ones(len(data), dtype=bool)
    for off, n in raw_ranges(path):
        keep[off : off + n] = False
    return crc32c.crc32c(bytes(np.frombuffer(bytes(data), np.uint8)[keep]))


def restore(prefix: str, options: hpckpt.CheckpointOptions | None = None) -> dict:
    target = model(fill=-1)
    hpckpt.Checkpoint(**target).read(prefix, options=options).assert_consumed()
    return {k: v.numpy() for k, v in target.items()}


@pytest.fixture
def dataset_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the per-dataset checks of data files (the real function runs)."""
    calls: list[int] = []
    real = hdf5.validate_data_file

    def counted(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(hdf5, "validate_data_file", counted)
    return calls


def test_gaps_are_the_complement_of_the_raw_ranges() -> None:
    assert gaps([], 10) == [(0, 10)]
    assert gaps([(2, 3), (5, 1)], 10) == [(0, 2), (6, 10)]  # adjacent ranges
    assert gaps([(4, 4), (2, 4)], 8) == [(0, 2)]  # overlapping, unsorted, up to the end
    assert gaps([(3, 0), (0, 10)], 10) == []  # an empty range; all raw
    assert gaps([(0, 1)], 0) == []


def test_a_save_records_the_checksum_of_its_data_files_structure(tmp_path) -> None:
    """Fresh and template-made data files (the second save of the same structure)
    both record the CRC32C of exactly the bytes outside the datasets' raw data."""
    vs = model()
    for n in range(2):
        p = hpckpt.Checkpoint(**vs).write(str(tmp_path / f"c{n}"), options=ALIGNED)
        recorded = index_doc(p)["data_file"]["structure_checksum"]
        assert recorded == non_raw_checksum(data_file(p)), n


def test_a_restore_checks_datasets_one_by_one_only_when_the_structure_changed(
    tmp_path, dataset_checks
) -> None:
    want = {k: v.numpy() for k, v in model().items()}
    p = hpckpt.Checkpoint(**model()).write(str(tmp_path / "c"), options=ALIGNED)

    got = restore(p)
    assert dataset_checks == []  # unchanged: the checksum stands for the datasets' checks
    assert all(np.array_equal(got[k], want[k]) for k in want)

    got = restore(p, hpckpt.CheckpointOptions(io="hdf5"))
    assert dataset_checks == [4]  # read through HDF5: every dataset checked
    assert all(np.array_equal(got[k], want[k]) for k in want)

    # A byte of the alignment padding before the aligned dataset: not raw data and
    # not used by HDF5. The structure checksum no longer matches, the datasets are
    # checked one by one, they are sound, and the restore goes on.
    path = data_file(p)
    off = dict((o, n) for o, n in raw_ranges(path))
    start = max(off)  # the aligned "big" tensor, after the padding
    with open(path, "r+b") as f:
        f.seek(start - 1)
        assert f.read(1) == b"\0"
        f.seek(start - 1)
        f.write(b"\x5a")
    dataset_checks.clear()
    got = restore(p)
    assert dataset_checks == [4]
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_changed_structure_of_the_same_size_is_still_refused(tmp_path) -> None:
    """A dataset renamed in place (same file size, same raw data): the structure
    checksum differs and the per-dataset check refuses the file."""
    p = hpckpt.Checkpoint(**model()).write(str(tmp_path / "c"), options=ALIGNED)
    path = data_file(p)
    name = index_doc(p)["tensors"]["small/.ATTRIBUTES/VARIABLE_VALUE"]["dataset"].encode()
    with open(path, "rb") as f:
        data = f.read()
    assert data.count(name) >= 1 and len(name) >= 1
    renamed = name[:-1] + (b"Q" if name[-1:] != b"Q" else b"R")
    with open(path, "r+b") as f:
        f.write(data.replace(name, renamed))
    assert os.path.getsize(path) == len(data)
    with pytest.raises(hpckpt.CorruptCheckpointError) as info:
        restore(p)
    assert "data file" in str(info.value)
