"""HDF5 C functions that h5py does not wrap, called with ctypes.

h5py wraps neither collective metadata (``H5Pset_all_coll_metadata_ops``,
``H5Pset_coll_metadata_write``) nor the MPI-IO transfer diagnostics
(``H5Pget_mpio_actual_io_mode``, ``H5Pget_mpio_no_collective_cause``) nor
``H5Pset_dxpl_mpio_collective_opt``. They take a property list id, and h5py's
objects expose theirs (``PropID.id``), so these functions call the C library on
those ids. They must call the very library h5py uses (identifiers are per
library instance): :func:`library` finds the ``libhdf5*.so`` mapped into this
process after h5py is imported (``/proc/self/maps``), else the one the dynamic
linker finds (``hdf5_openmpi``, ``hdf5_mpich``, ``hdf5``), and checks that its
version is h5py's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import threading
from collections.abc import Iterator

import h5py
from mpi4py import MPI

from ..errors import CheckpointError

__all__ = [
    "ACTUAL_IO_MODES",
    "actual_io_mode",
    "get_collective_metadata",
    "library",
    "library_path",
    "mpi_file_hints",
    "no_collective_cause",
    "set_collective_metadata",
    "set_individual_io",
]

# H5D_mpio_actual_io_mode_t (H5Ppublic.h)
ACTUAL_IO_MODES = {
    0: "no collective",
    1: "chunk independent",
    2: "chunk collective",
    3: "chunk mixed",
    4: "contiguous collective",
}
H5FD_MPIO_COLLECTIVE_IO = 0
H5FD_MPIO_INDIVIDUAL_IO = 1

_NAME = re.compile(r"^libhdf5(?:_openmpi|_mpich|_serial)?(?:-[0-9a-f]+)?\.so(?:\.[0-9]+)*$")
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_path: str | None = None


def _mapped_candidates() -> list[str]:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out: list[str] = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            p = parts[5].strip()
            if _NAME.match(os.path.basename(p)) and p not in out:
                out.append(p)
    return out


def _load() -> tuple[ctypes.CDLL, str]:
    import h5py.h5

    want = tuple(h5py.version.hdf5_version_tuple[:3])

    def candidates() -> Iterator[str]:
        yield from _mapped_candidates()
        # find_library may run ldconfig or a compiler: only when nothing is mapped
        for n in ("hdf5_openmpi", "hdf5_mpich", "hdf5"):
            p = ctypes.util.find_library(n)
            if p:
                yield p

    tried = []
    for p in candidates():
        try:
            lib = ctypes.CDLL(p)
            major, minor, rel = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
            if (
                lib.H5get_libversion(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(rel))
                < 0
            ):
                continue
            got = (major.value, minor.value, rel.value)
        except (OSError, AttributeError):
            tried.append(p)
            continue
        if got != want or not hasattr(lib, "H5Pset_all_coll_metadata_ops"):
            tried.append(f"{p} (HDF5 {'.'.join(map(str, got))})")
            continue
        _declare(lib)
        return lib, p
    raise CheckpointError(
        f"cannot find the parallel HDF5 library h5py uses (HDF5 "
        f"{'.'.join(map(str, want))}, with H5Pset_all_coll_metadata_ops); tried: "
        f"{', '.join(tried) or 'nothing found'}. io='hdf5' and compression need h5py built "
        f"against parallel HDF5 (h5py.get_config().mpi)"
    )


def _declare(lib: ctypes.CDLL) -> None:
    hid, herr, hbool = ctypes.c_int64, ctypes.c_int, ctypes.c_bool
    for name, args in (
        ("H5Pset_all_coll_metadata_ops", [hid, hbool]),
        ("H5Pset_coll_metadata_write", [hid, hbool]),
        ("H5Pget_all_coll_metadata_ops", [hid, ctypes.POINTER(hbool)]),
        ("H5Pget_coll_metadata_write", [hid, ctypes.POINTER(hbool)]),
        ("H5Pset_dxpl_mpio_collective_opt", [hid, ctypes.c_int]),
        ("H5Fget_vfd_handle", [hid, hid, ctypes.POINTER(ctypes.c_void_p)]),
        ("H5Pget_mpio_actual_io_mode", [hid, ctypes.POINTER(ctypes.c_int)]),
        (
            "H5Pget_mpio_no_collective_cause",
            [hid, ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32)],
        ),
    ):
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = herr


def library() -> ctypes.CDLL:
    """The HDF5 library h5py uses (loaded once).

    Raises:
        CheckpointError: No parallel HDF5 library of h5py's version is found.
    """
    global _lib, _path
    with _lock:
        if _lib is None:
            _lib, _path = _load()
        return _lib


def library_path() -> str:
    """The file :func:`library` loaded."""
    library()
    assert _path is not None
    return _path


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise CheckpointError(f"HDF5 {what} failed")


def set_collective_metadata(fapl: h5py.h5p.PropFAID, ops: bool = True, write: bool = True) -> None:
    """Make metadata reads (``ops``) and writes (``write``) collective on a file access list."""
    lib = library()
    _check(lib.H5Pset_all_coll_metadata_ops(fapl.id, ops), "H5Pset_all_coll_metadata_ops")
    _check(lib.H5Pset_coll_metadata_write(fapl.id, write), "H5Pset_coll_metadata_write")


def get_collective_metadata(plist: h5py.h5p.PropID) -> tuple[bool, bool]:
    """``(all_coll_metadata_ops, coll_metadata_write)`` of a file access list."""
    lib = library()
    ops, write = ctypes.c_bool(False), ctypes.c_bool(False)
    _check(lib.H5Pget_all_coll_metadata_ops(plist.id, ctypes.byref(ops)), "get metadata ops")
    _check(lib.H5Pget_coll_metadata_write(plist.id, ctypes.byref(write)), "get metadata write")
    return bool(ops.value), bool(write.value)


def set_individual_io(dxpl: h5py.h5p.PropDXID, individual: bool) -> None:
    """Collective ``H5Dwrite``/``H5Dread`` calls whose data moves with independent MPI-IO
    (``individual``) or with collective MPI-IO (two-phase; the default)."""
    mode = H5FD_MPIO_INDIVIDUAL_IO if individual else H5FD_MPIO_COLLECTIVE_IO
    _check(
        library().H5Pset_dxpl_mpio_collective_opt(dxpl.id, mode), "H5Pset_dxpl_mpio_collective_opt"
    )


def actual_io_mode(dxpl: h5py.h5p.PropDXID) -> int:
    """How the last ``H5Dwrite``/``H5Dread`` with ``dxpl`` moved its data (``ACTUAL_IO_MODES``)."""
    mode = ctypes.c_int(-1)
    _check(library().H5Pget_mpio_actual_io_mode(dxpl.id, ctypes.byref(mode)), "actual io mode")
    return int(mode.value)


def no_collective_cause(dxpl: h5py.h5p.PropDXID) -> tuple[int, int]:
    """``(local, global)`` bit masks of why the last transfer with ``dxpl`` was not collective
    (0: it was)."""
    local, glob = ctypes.c_uint32(0), ctypes.c_uint32(0)
    _check(
        library().H5Pget_mpio_no_collective_cause(dxpl.id, ctypes.byref(local), ctypes.byref(glob)),
        "no collective cause",
    )
    return int(local.value), int(glob.value)


def mpi_file_hints(fid: h5py.h5f.FileID) -> dict[str, str]:
    """The hints of the ``MPI_File`` under a file opened with the ``mpio`` driver, as the
    MPI library holds them (``MPI_File_get_info`` on HDF5's own handle)."""
    handle = ctypes.c_void_p()
    fapl = fid.get_access_plist()
    _check(library().H5Fget_vfd_handle(fid.id, fapl.id, ctypes.byref(handle)), "H5Fget_vfd_handle")
    if not handle.value:
        return {}
    raw = ctypes.cast(handle, ctypes.POINTER(ctypes.c_void_p)).contents.value or 0
    fh = MPI.File.fromhandle(raw)  # a view of HDF5's handle: never closed here
    info = fh.Get_info()
    try:
        return {
            info.Get_nthkey(i): info.Get(info.Get_nthkey(i)) or "" for i in range(info.Get_nkeys())
        }
    finally:
        info.Free()
