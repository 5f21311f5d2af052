"""The index format, pure: round trips, the two parser modes agree, hostile documents.

No MPI, no HDF5, no files: these run in the serial pass.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpckpt.errors import CorruptCheckpointError
from hpckpt.io.index import (
    MAX_INDEX_BYTES,
    CheckpointIndex,
    SliceEntry,
    TensorEntry,
    dataset_name_for_key,
    parse_index,
)

DTYPES = ["<f8", "<f4", "<i8", "<i4", "|u1", "|b1", "<c16", "<u2"]
names = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
keys = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/\\."),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=3,
).map(lambda parts: "/".join(parts) + "/.ATTRIBUTES/VARIABLE_VALUE")


@st.composite
def tensor_entries(draw: st.DrawFn, key: str, offset: int) -> tuple[TensorEntry, int]:
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    mesh_names = tuple(draw(st.lists(names, min_size=1, max_size=2, unique=True)))
    mesh_shape = tuple(
        draw(st.lists(st.integers(1, 4), min_size=len(mesh_names), max_size=len(mesh_names)))
    )
    specs = []
    free = list(mesh_names)
    for _ in range(ndim):
        choice = draw(st.sampled_from(["unsharded", *free]))
        if choice != "unsharded":
            free.remove(choice)
        specs.append(choice)
    nslices = draw(st.integers(0, 3))
    slices = []
    for _ in range(nslices):
        start = tuple(draw(st.integers(0, n)) for n in shape)
        sshape = tuple(draw(st.integers(0, n - s)) for n, s in zip(shape, start, strict=True))
        slices.append(SliceEntry(start, sshape, draw(st.integers(0, (1 << 32) - 1))))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    entry = TensorEntry(
        key=key,
        dataset=dataset_name_for_key(key),
        dtype=dtype,
        shape=shape,
        offset=offset if nbytes else None,
        sharding_specs=tuple(specs),
        mesh_dim_names=mesh_names,
        mesh_shape=mesh_shape,
        slices=tuple(slices),
    )
    return entry, nbytes


tokens = st.text("0123456789abcdef", min_size=8, max_size=16)


@st.composite
def indexes(draw: st.DrawFn) -> CheckpointIndex:
    ks = draw(st.lists(keys, min_size=0, max_size=5, unique=True))
    tensors = {}
    offset = 4096
    for k in ks:
        entry, nbytes = draw(tensor_entries(k, offset))
        tensors[k] = entry
        offset += nbytes
    graph = draw(
        st.none()
        | st.just({"nodes": [{"children": [], "slots": [], "key": None, "kind": "object"}]})
    )
    return CheckpointIndex(
        data_file=f"ckpt-{draw(st.integers(0, 99))}.data-{draw(tokens)}.h5",
        data_size=offset + draw(st.integers(0, 100)),
        tensors=tensors,
        nprocs=draw(st.integers(1, 10_000)),
        created=draw(st.floats(0, 2e9, allow_nan=False)),
        graph=graph,
        library={"hpckpt": "0.1.0"},
        checksum=draw(st.sampled_from(["crc32c", "crc32"])),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(indexes())
def test_parse_of_serialize_is_identity_in_both_modes(index: CheckpointIndex) -> None:
    text = index.to_json()
    validated = parse_index(text)
    trusted = parse_index(text, trusted=True)
    assert validated == index
    assert trusted == validated  # the two modes of the one parser agree


def test_dataset_names_are_flat_and_distinct() -> None:
    ks = ["a/b/.ATTRIBUTES/VARIABLE_VALUE", "a.b/.ATTRIBUTES/VARIABLE_VALUE", "a/b", "a%2Eb"]
    ds = [dataset_name_for_key(k) for k in ks]
    assert len(set(ds)) == len(ds)
    assert all("/" not in d for d in ds)
    assert dataset_name_for_key("net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE") == "net.l1.kernel"


def _good() -> dict:
    entry = TensorEntry(
        "w/.ATTRIBUTES/VARIABLE_VALUE",
        "w",
        np.dtype("<f8"),
        (6, 4),
        4096,
        ("x", "unsharded"),
        ("x",),
        (2,),
        (SliceEntry((0, 0), (3, 4), 7), SliceEntry((3, 0), (3, 4), 9)),
    )
    index = CheckpointIndex("ckpt-1.data-0123456789abcdef.h5", 8192, {entry.key: entry}, 2, 1.0)
    return json.loads(index.to_json())


W = "w/.ATTRIBUTES/VARIABLE_VALUE"


def _set(path: list, value: object):
    def apply(doc: dict) -> None:
        d = doc
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value

    return apply


def _del(path: list):
    def apply(doc: dict) -> None:
        d = doc
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]

    return apply


HOSTILE = {
    "not an object": (lambda d: d.clear() or d.update(format="nope"), "not an hpckpt index"),
    "version 2": (_set(["version"], 2), "version 2"),
    "version is a bool": (_set(["version"], True), "wrong type"),
    "unknown checksum": (_set(["checksum"], "md5"), "unknown checksum"),
    "data file with ..": (
        _set(["data_file", "name"], "../x.data-0123456789abcdef.h5"),
        "bad data file name",
    ),
    "absolute data file": (
        _set(["data_file", "name"], "/tmp/x.data-0123456789abcdef.h5"),
        "bad data file name",
    ),
    "hidden data file": (
        _set(["data_file", "name"], ".x.data-0123456789abcdef.h5"),
        "bad data file name",
    ),
    "negative size": (_set(["data_file", "size"], -1), "bad data file size"),
    "no tensors": (_del(["tensors"]), "lacks 'tensors'"),
    "NUL key": (lambda d: d["tensors"].update({"a\x00b": d["tensors"].pop(W)}), "NUL"),
    "key with ..": (lambda d: d["tensors"].update({"a/../b": d["tensors"].pop(W)}), "'..'"),
    "absolute key": (lambda d: d["tensors"].update({"/etc": d["tensors"].pop(W)}), "absolute"),
    "dataset with slash": (_set(["tensors", W, "dataset"], "a/b"), "not a flat name"),
    "dataset ..": (_set(["tensors", W, "dataset"], ".."), "'..'"),
    "object dtype": (_set(["tensors", W, "dtype"], "|O"), "unsupported dtype"),
    "structured dtype": (_set(["tensors", W, "dtype"], [["a", "<f8"]]), "unsupported dtype"),
    "huge shape": (_set(["tensors", W, "shape"], [1 << 40, 4]), "more than the data file"),
    "negative dim": (_set(["tensors", W, "shape"], [-6, 4]), "bad shape"),
    "too many dims": (_set(["tensors", W, "shape"], [1] * 40), "bad shape"),
    "nbytes disagrees": (_set(["tensors", W, "nbytes"], 8), "nbytes disagrees"),
    "offset outside": (_set(["tensors", W, "offset"], 8190), "outside the data file"),
    "negative offset": (_set(["tensors", W, "offset"], -1), "not a valid offset"),
    "layout missing": (_del(["tensors", W, "layout"]), "no layout"),
    "layout rank": (_set(["tensors", W, "layout", "sharding_specs"], ["x"]), "layout rank"),
    "spec names no mesh dim": (
        _set(["tensors", W, "layout", "sharding_specs"], ["q", "unsharded"]),
        "names no dimension",
    ),
    "mesh dim twice": (_set(["tensors", W, "layout", "sharding_specs"], ["x", "x"]), "used twice"),
    "mesh zero size": (_set(["tensors", W, "layout", "mesh", "shape"], [0]), "malformed layout"),
    "duplicate mesh names": (
        lambda d: d["tensors"][W]["layout"]["mesh"].update(dim_names=["x", "x"], shape=[1, 2]),
        "bad mesh",
    ),
    "slices not a list": (_set(["tensors", W, "slices"], {}), "no slice list"),
    "negative slice": (_set(["tensors", W, "slices", 0, "start"], [-1, 0]), "bad value"),
    "slice outside": (_set(["tensors", W, "slices", 0, "start"], [5, 0]), "outside the tensor"),
    "slice rank": (_set(["tensors", W, "slices", 0, "start"], [0]), "rank differs"),
    "checksum too big": (_set(["tensors", W, "slices", 0, "crc32c"], 1 << 33), "bad checksum"),
    "checksum missing": (_del(["tensors", W, "slices", 0, "crc32c"]), "malformed"),
    "graph not an object": (_set(["graph"], [1, 2]), "graph is not an object"),
    "bad library": (_set(["library"], {"a": 1}), "bad library"),
    "duplicate dataset": (
        lambda d: d["tensors"].update({"v": dict(d["tensors"][W])}),
        "used twice",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_documents_are_refused_with_a_clear_error(case: str) -> None:
    edit, text = HOSTILE[case]
    doc = _good()
    parse_index(json.dumps(doc))  # the unedited document is fine
    edit(doc)
    with pytest.raises(CorruptCheckpointError, match=None) as info:
        parse_index(json.dumps(doc), source="the-index")
    assert text in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "text,message",
    [
        (b"\xff\xfe garbage", "not valid JSON"),
        (b'{"format": "hpckpt", "version": 1', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"", "not valid JSON"),
    ],
    ids=["binary", "truncated", "nesting bomb", "empty"],
)
def test_unparseable_text_is_corrupt(text: bytes, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        parse_index(text)


def test_oversized_text_is_refused_before_parsing() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_INDEX_BYTES + 1

    with pytest.raises(CorruptCheckpointError, match="larger than"):
        parse_index(Huge(b"{}"))
