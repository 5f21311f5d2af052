"""``hpckpt export PATH OUT.npz``: every tensor's global array into a NumPy ``.npz`` archive."""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import secrets
import zipfile
from typing import Any

import numpy as np

from .common import (
    EXIT_IO,
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    dump_json,
    emit,
    fmt_bytes,
    load,
)
from .progress import Progress

__all__ = ["add_parser", "export_checkpoint", "run"]


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``export``."""
    p = sub.add_parser(
        "export",
        parents=parents,
        help="write every tensor's global array into an .npz file",
        description=(
            "Read every tensor (checksum-verified) and write its global array into OUT, a "
            "NumPy .npz archive (the format of numpy.savez) whose keys are the checkpoint "
            "keys; load it with numpy.load(OUT) (no pickle needed: every array is numeric; "
            "bfloat16 and float8 tensors are written as their bits, same-width unsigned "
            "integers: view them with ml_dtypes). "
            "A key that is not valid Unicode (a lone surrogate) is written with \\uXXXX "
            "escapes. OUT is written to a temporary file and renamed when complete."
        ),
    )
    p.add_argument("path", metavar="PATH", help="checkpoint prefix, .index.json or directory")
    p.add_argument("out", metavar="OUT.npz", help="the archive to write (replaced if it exists)")
    p.add_argument(
        "--compress", action="store_true", help="deflate the arrays (like numpy.savez_compressed)"
    )
    p.add_argument(
        "--include",
        metavar="GLOB",
        action="append",
        help="export only keys matching this shell pattern (repeatable)",
    )
    p.set_defaults(run=run)


def _archive_name(key: str) -> str:
    """The key of a tensor in the archive: its checkpoint key, or, for a key that is not
    valid Unicode (a lone surrogate, which no zip file can name), the key with those
    characters written as ``\\uXXXX`` escapes."""
    try:
        key.encode("utf-8")
        return key
    except UnicodeEncodeError:
        return key.encode("utf-8", "backslashreplace").decode("utf-8")


def export_checkpoint(
    path: str,
    out: str,
    *,
    compress: bool = False,
    include: list[str] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write the tensors of checkpoint ``path`` into the ``.npz`` archive ``out``.

    Arrays are streamed one at a time (as ``numpy.savez`` writes them) so memory
    holds one tensor at a time; ``allow_pickle=False`` guarantees no object arrays.

    Raises:
        NotFoundError: No checkpoint at ``path``.
        CorruptCheckpointError: It is damaged (or a tensor fails its checksum).
        OSError: ``out`` cannot be written.
    """
    loaded = load(path, graph=False)
    entries = list(loaded.index.tensors.values())
    if include:
        entries = [e for e in entries if any(fnmatch.fnmatchcase(e.key, g) for g in include)]
        if not entries:
            raise CliError(
                f"no tensor of {loaded.prefix!r} matches {', '.join(include)}",
                EXIT_NOT_FOUND,
                "not_found",
            )
    if os.path.isdir(out):
        raise CliError(f"output {out!r} is a directory", EXIT_NOT_FOUND, "usage")
    tmp = f"{out}.tmp-{secrets.token_hex(4)}"
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    total = sum(e.nbytes for e in entries)
    written: list[dict[str, Any]] = []
    try:
        with (
            Progress(total, "export", enabled=progress) as bar,
            zipfile.ZipFile(tmp, mode="w", compression=mode, allowZip64=True) as zf,
        ):
            names: set[str] = set()
            for e in entries:
                name = _archive_name(e.key)
                if name in names:
                    raise CliError(
                        f"two tensors map to the archive name {name!r} (one key is not valid "
                        f"Unicode); export them apart with --include",
                        EXIT_IO,
                        "io",
                    )
                names.add(name)
                arr = loaded.read(e, on_bytes=bar.update)
                if arr.dtype.kind not in "biufc":  # never write an object (pickled) array
                    raise CliError(
                        f"tensor {e.key!r} has a non-numeric dtype {arr.dtype}", EXIT_IO, "io"
                    )
                with zf.open(name + ".npy", mode="w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
                written.append(
                    {
                        "key": e.key,
                        "archive_key": name,
                        "dtype": arr.dtype.name,
                        "shape": list(arr.shape),
                        "nbytes": e.nbytes,
                        "logical_dtype": e.logical_dtype,
                    }
                )
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return {
        "checkpoint": loaded.prefix,
        "output": out,
        "compressed": compress,
        "tensors": written,
        "tensor_bytes": total,
        "file_bytes": os.path.getsize(out),
    }


def run(args: argparse.Namespace) -> int:
    """Run ``export``."""
    report = export_checkpoint(
        args.path, args.out, compress=args.compress, include=args.include, progress=args.progress
    )
    if args.json:
        dump_json(report)
    else:
        emit(
            [
                f"exported {len(report['tensors'])} tensors ({report['tensor_bytes']} bytes, "
                f"{fmt_bytes(report['tensor_bytes'])}) from {report['checkpoint']} to "
                f"{report['output']} ({report['file_bytes']} bytes)"
            ]
        )
    return EXIT_OK
